"""Raw results next to the picture: arrays in `.npz`, everything a reader needs to interpret them in `.json`.

The picture is for people; these files are for re-plotting, comparing runs and checking numbers later
without re-running the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from krypton.outputs.maps import caption, drop_map, effect_size, label_of
from krypton.scores import probabilities


def _plain(value: Any) -> Any:
    """JSON-safe copy of stats values (tensors, numpy scalars, tuples)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def summary(explanation: Any, class_names: list[str] | None = None, top: int = 5) -> dict[str, Any]:
    """The explanation's metadata as a JSON-ready dict (target, label, probability, top classes, settings)."""
    class_names = class_names if class_names is not None else explanation.class_names
    probs = probabilities(explanation.clean_scores)
    best = torch.argsort(probs, descending=True)[:top].tolist()
    heat = explanation.heatmap
    return {
        "target": explanation.target,
        "label": label_of(explanation.target, class_names),
        "probability": explanation.probability,
        "top": [{"index": i, "label": label_of(i, class_names), "probability": float(probs[i])} for i in best],
        "heatmap_min": float(heat.min()),
        "heatmap_max": float(heat.max()),
        "effect_size": effect_size(explanation),  # largest per-pixel drop in P(target)
        "patch": list(explanation.patch),
        "stride": list(explanation.stride),
        "image_size": list(explanation.image_size),
        "grid": list(heat.shape),
        "mode": explanation.mode,
        "caption": caption(explanation),
        "stats": _plain(explanation.stats or {}),
    }


def raw_arrays(explanation: Any) -> dict[str, np.ndarray]:
    """The arrays of a raw result file: scores, clean_scores, positions, heatmap, drop map (and drilled cells)."""
    arrays = {
        "scores": explanation.scores.numpy(),
        "clean_scores": explanation.clean_scores.numpy(),
        "positions": explanation.positions.numpy(),
        "heatmap": explanation.heatmap.numpy(),
        "drop_map": drop_map(explanation).astype(np.float32),
    }
    drilled = explanation.drilled
    if drilled is not None:
        arrays["drilled"] = drilled.numpy()
    return arrays


def save_raw(
    explanation: Any, stem: str | Path, class_names: list[str] | None = None, meta: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write STEM.npz (scores, clean_scores, positions, heatmap, drop map) and STEM.json (summary + meta)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    arrays = raw_arrays(explanation)
    npz = stem.with_name(stem.name + ".npz")
    np.savez_compressed(npz, **arrays)  # type: ignore[arg-type]  # numpy stub mistypes **arrays
    info = summary(explanation, class_names)
    info["arrays"] = {k: list(v.shape) for k, v in arrays.items()}
    if meta:
        info.update(_plain(meta))
    path = stem.with_name(stem.name + ".json")
    path.write_text(json.dumps(info, indent=2) + "\n")
    return npz, path

"""Tuning profiles: the approximate settings `krypton.tune` chose for a model, patch and stride, with the
evidence, kept as small JSON files so that `--quality 0.9` does not tune again.

Where: `KRYPTON_PROFILES` if set, else `~/.cache/krypton/profiles`; bundled demos ship theirs in the
package (`krypton/models/profiles/`), tuned on images other than the one each demo shows by default.
A profile answers for a target SSIM up to the one it was tuned for.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "profiles"


def user_dir() -> Path:
    return Path(os.environ.get("KRYPTON_PROFILES") or Path.home() / ".cache" / "krypton" / "profiles")


def profile_name(model: str, patch: int, stride: int) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).name if Path(model).suffix else model).strip("_")
    return f"{slug}-p{patch}-s{stride}.json"


def to_profile(result: Any, model: str, patch: int, stride: int, sample_count: int) -> dict[str, Any]:
    """The JSON record of a `TuneResult`: settings, the quality promised and the evidence behind it."""
    return {
        "model": model,
        "patch": patch,
        "stride": stride,
        "target_ssim": result.target_ssim,
        "settings": result.settings,
        "predicted_speedup": result.predicted_speedup,
        "sample_images": sample_count,
        "heldout_ssim": [round(float(s), 4) for s in result.heldout_ssim],
        "heldout_met": None if not result.heldout_ssim else float(result.heldout_met),
        "candidates": [
            {
                **c.settings,
                "predicted_speedup": round(c.predicted_speedup, 3),
                "measured_speedup": round(float(c.measured_speedup), 3),
                "ssim": [round(float(v), 4) for v in c.ssim],
                "rendered_ssim": [round(float(v), 4) for v in c.rendered_ssim],
            }
            for c in result.candidates
        ],  # fmt: skip
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def save(profile: dict[str, Any], path: str | Path | None = None) -> Path:
    path = Path(path) if path else user_dir() / profile_name(profile["model"], profile["patch"], profile["stride"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile, indent=1) + "\n")
    return path


def read(path: Any) -> dict[str, Any]:
    """A profile from its JSON file, with a clear error for anything else."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot read tuning profile {path!r}: {exc}") from None


def find(model: str, patch: int, stride: int, quality: float) -> tuple[dict[str, Any], Path] | None:
    """The user's profile, else the bundled one, for this model/patch/stride that promises >= `quality`."""
    name = profile_name(model, patch, stride)
    for folder in (user_dir(), BUNDLED):
        path = folder / name
        if path.exists():
            profile = json.loads(path.read_text())
            if profile.get("target_ssim", 0) >= quality:
                return profile, path
    return None


def expectation(profile: dict[str, Any]) -> str:
    """The quality a profile promises, in words for stats, captions and the CLI; a promise its own held-out
    images did not keep is said to be unverified, with the numbers."""
    held = profile.get("heldout_ssim") or []
    target, tuned_on = profile["target_ssim"], profile["sample_images"]
    if held and min(held) < target:
        return (
            f"not verified: tuned for SSIM >= {target} on {tuned_on} image(s), but held-out min "
            f"{min(held):.3f} on {len(held)} image(s) missed it"
        )
    evidence = f", held-out min {min(held):.3f} on {len(held)} image(s)" if held else ""
    return f"expected: SSIM >= {target} (tuned on {tuned_on} image(s){evidence})"


def settings_of(profile: dict[str, Any]) -> dict[str, Any]:
    settings = dict(profile["settings"])
    settings["tau"] = float(np.clip(settings.get("tau", 1.0), 1e-6, 1.0))
    settings.setdefault("drilldown", None)
    settings["local_gates"] = bool(settings.get("local_gates", False))
    return settings

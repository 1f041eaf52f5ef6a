"""Per-pixel maps and the words around them, shared by every output: the drop map (one home for
spreading a per-position value over the input), the effect size, the symmetric colour scale, captions.

No plotting here (matplotlib is imported only inside `overlay_rgba`): pictures (`render`, `volumes`,
`animation`) and raw files (`raw`) build on these, and `Explanation.attribution` uses `per_element_mean`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

AUTO_FLOOR = 0.05  # smallest automatic colour-scale limit, in probability drop


def per_element_mean(explanation: Any, values: np.ndarray) -> np.ndarray:
    """(*image_size): each element's mean of `values` (*grid) over the patch positions covering it (0 where
    none does). The one home of "spread a per-position map over the input" (attribution, drop map)."""
    size, patch = tuple(explanation.image_size), tuple(explanation.patch)
    total, count = np.zeros(size), np.zeros(size)
    corners = explanation.positions.reshape(-1, len(size)).numpy()
    for corner, value in zip(corners, np.asarray(values, dtype=np.float64).reshape(-1)):
        where = tuple(slice(int(c), int(c) + p) for c, p in zip(corner, patch))
        total[where] += value
        count[where] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def label_of(index: int, class_names: list[str] | None) -> str:
    return class_names[index] if class_names and 0 <= index < len(class_names) else f"class {index}"


def drop_map(explanation: Any) -> np.ndarray:
    """(*image_size) per-element mean drop in the target's probability over the patches covering it."""
    return per_element_mean(explanation, (explanation.probability - explanation.heatmap.double()).numpy())


def effect_size(explanation: Any) -> float:
    """Largest per-pixel change of P(target) under occlusion (the overlay's |drop|)."""
    return float(np.abs(drop_map(explanation)).max())


def colour_limit(explanation: Any, scale: float | str = "auto") -> float:
    """The overlay's symmetric colour limit: `scale` itself, or "auto" = max(effect size, AUTO_FLOOR)."""
    if scale == "auto":
        return max(effect_size(explanation), AUTO_FLOOR)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise ValueError(f"scale must be 'auto' or a number in (0, 1] (a probability drop), got {scale!r}")
    return float(scale)


def caption(explanation: Any) -> str:
    """'patch 16x16, stride 8, mode exact, 289 positions in 12.3 s, 1.1x fewer MACs than naive'."""
    patch, strides = tuple(explanation.patch), tuple(explanation.stride)
    stats = explanation.stats or {}
    stride = f"{strides[0]}" if len(set(strides)) == 1 else "x".join(map(str, strides))
    parts = [f"patch {'x'.join(map(str, patch))}", f"stride {stride}", f"mode {explanation.mode}"]
    positions = stats.get("positions", int(np.prod(explanation.positions.shape[:-1])))
    timing = f" in {stats['wall_time_s']:.1f} s" if "wall_time_s" in stats else ""
    parts.append(f"{positions} positions{timing}")
    if stats.get("theoretical_speedup"):
        parts.append(f"{stats['theoretical_speedup']:.1f}x fewer MACs than naive")
    if stats.get("quality"):
        parts.append(f"approximate map, quality {stats['quality']}")
    return ", ".join(parts)


def overlay_rgba(drop: np.ndarray, limit: float, alpha: float) -> tuple[np.ndarray, Any]:
    """Drops in RdBu_r on a symmetric scale, opacity growing with |drop| so unaffected regions stay
    visible; with the colour bar's mappable. Shared by every overlay (images, volume slices)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    norm, cmap = Normalize(-limit, limit), colormaps["RdBu_r"]
    rgba = cmap(norm(drop))
    rgba[..., 3] = alpha * np.clip(np.abs(drop) / limit, 0.0, 1.0) ** 0.5
    return rgba, ScalarMappable(norm=norm, cmap=cmap)

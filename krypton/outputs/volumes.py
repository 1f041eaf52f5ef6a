"""Pictures of signal and volume explanations, and the heat map as NIfTI.

A volume is shown as three orthogonal slices through the voxel whose occlusion lowers the target most,
plus a montage of evenly spaced slices along the first axis, each with the per-voxel drop overlaid
(same colour scale as the 2-D overlay). A signal is drawn with its importance curve under it. The
NIfTI output keeps the input's affine, so the map opens aligned in 3D Slicer or ITK-SNAP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MONTAGE = 8  # slices in the volume montage


def plot_volume(  # noqa: ANN201 - matplotlib.figure.Figure, imported lazily
    explanation: Any, volume: np.ndarray | None, limit: float, head: str, foot: str, alpha: float = 0.6
):
    """Figure: orthogonal slices through the peak (top row) and a slice montage (two rows below)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from krypton.outputs.maps import drop_map

    drop = drop_map(explanation)
    shown = _volume_pixels(volume, drop.shape)
    peak = np.unravel_index(int(np.argmax(drop)), drop.shape)
    fig = Figure(figsize=(12.0, 9.0), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 4, height_ratios=[1.3, 1, 1], top=0.9, bottom=0.07, left=0.03, right=0.92,
                            hspace=0.25, wspace=0.05)  # fmt: skip
    names = ("axis 0", "axis 1", "axis 2")
    mappable = None
    for axis in range(3):
        ax = fig.add_subplot(grid[0, axis])
        index: list[slice | int] = [slice(None)] * 3
        index[axis] = int(peak[axis])
        mappable = _overlay(ax, shown[tuple(index)], drop[tuple(index)], limit, alpha)
        ax.set_title(f"{names[axis]} = {peak[axis]} (peak drop)", fontsize=9)
    sizes = fig.add_subplot(grid[0, 3])
    sizes.axis("off")
    sizes.text(0, 0.5, f"volume {'x'.join(map(str, drop.shape))}\npeak at {tuple(int(p) for p in peak)}\n"
               f"largest drop {float(drop.max()):.3g}", fontsize=10, va="center")  # fmt: skip
    for n, z in enumerate(np.linspace(0, drop.shape[0] - 1, MONTAGE).round().astype(int)):
        ax = fig.add_subplot(grid[1 + n // 4, n % 4])
        _overlay(ax, shown[z], drop[z], limit, alpha)
        ax.set_title(f"slice {z}", fontsize=8)
    bar = fig.add_axes((0.94, 0.25, 0.015, 0.5))
    assert mappable is not None
    fig.colorbar(mappable, cax=bar).set_label("drop in P(target) when occluded", fontsize=9)
    fig.suptitle(head, fontsize=12)
    fig.text(0.5, 0.01, foot, ha="center", va="bottom", fontsize=9, color="0.25")
    return fig


def plot_signal(explanation: Any, signal: np.ndarray | None, limit: float, head: str, foot: str):  # noqa: ANN201
    """Figure: the signal (each channel) above its importance curve (per-sample drop in P(target))."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from krypton.outputs.maps import drop_map

    drop = drop_map(explanation)
    fig = Figure(figsize=(12.0, 5.2), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1], "hspace": 0.08})
    x = np.arange(drop.shape[0])
    if signal is not None:
        values = np.asarray(signal, dtype=np.float64).reshape(-1, drop.shape[0])
        for c, row in enumerate(values):
            top.plot(x, row, lw=0.8, label=f"channel {c}")
        if len(values) > 1:
            top.legend(fontsize=8, loc="upper right")
    top.set_ylabel("signal")
    bottom.fill_between(x, drop, 0, where=drop >= 0, color="tab:red", alpha=0.7, step="mid")
    bottom.fill_between(x, drop, 0, where=drop < 0, color="tab:blue", alpha=0.7, step="mid")
    bottom.set_ylim(-limit, limit)
    bottom.set_ylabel("drop in P(target)")
    bottom.set_xlabel("sample")
    fig.suptitle(head, fontsize=12)
    fig.text(0.5, 0.01, foot, ha="center", va="bottom", fontsize=9, color="0.25")
    fig.subplots_adjust(bottom=0.17, top=0.88)
    return fig


def save_nifti(explanation: Any, path: str | Path, affine: np.ndarray | None = None) -> Path:
    """The per-voxel drop in P(target) as a float32 NIfTI with the input's affine (identity if unknown)."""
    import nibabel

    from krypton.outputs.maps import drop_map

    if explanation.rank != 3:
        raise ValueError(f"a NIfTI heat map needs a volume explanation (3 spatial axes), got {explanation.rank}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nibabel.Nifti1Image(drop_map(explanation).astype(np.float32), np.eye(4) if affine is None else affine)
    nibabel.save(image, str(path))
    return path


def _volume_pixels(volume: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """(D, H, W) grey values in [0, 1] (first channel), min-max scaled when not already in range."""
    if volume is None:
        return np.full(shape, 0.5)
    values = np.asarray(volume, dtype=np.float64)
    values = values.reshape(-1, *shape)[0] if values.size != np.prod(shape) else values.reshape(shape)
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return values


def _overlay(ax: Any, pixels: np.ndarray, drop: np.ndarray, limit: float, alpha: float) -> Any:
    from krypton.outputs.maps import overlay_rgba

    rgba, mappable = overlay_rgba(drop, limit, alpha)
    ax.imshow(pixels, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    ax.imshow(rgba, interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    return mappable

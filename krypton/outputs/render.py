"""Pictures of an explanation: the image with the occlusion heat map overlaid, as a figure or a file.

Two styles. "overlay" (default): per pixel, how much occluding it lowers the target's probability
(mean over the patches covering it), warm where the drop is largest, transparent where nothing changes,
so the anatomy stays readable. Its colour scale is symmetric: `scale=` a fixed limit (maps comparable
across images and modes) or "auto", this map's largest effect but never below AUTO_FLOOR, so that a
0.001 change is not drawn as vividly as a 0.9 one. The caption states the scale and the effect size.
"paper": the Krypton paper's map, the probability itself at each patch
position in jet_r clipped to [0.75 p, min(1, 1.25 p)] (red = occlusion lowers the probability).
Matplotlib is used without pyplot so that rendering works headless and in threads.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from krypton.choices import STYLES
from krypton.outputs.maps import (  # noqa: F401 - re-exported: render's public names
    AUTO_FLOOR,
    caption,
    colour_limit,
    drop_map,
    effect_size,
    label_of,
    overlay_rgba,
)
from krypton.scores import probabilities

FIGSIZE = (10.0, 5.2)  # inches; with DPI gives the PNG size in pixels
DPI = 100


def display_pixels(image: Any) -> np.ndarray | None:
    """(H, W, 3) floats in [0, 1] for showing: [0, 1] pixels as they are, model tensors min-max scaled."""
    if image is None:
        return None
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().double().numpy()
        array = array[0] if array.ndim == 4 else array
        array = array.transpose(1, 2, 0) if array.ndim == 3 else array
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    else:
        array = np.asarray(image, dtype=np.float64)
        if array.max() > 1.0:
            array = array / 255.0
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(array[..., :3], 0.0, 1.0)


def title(explanation: Any, class_names: list[str] | None) -> str:
    target = explanation.target
    probs = probabilities(explanation.clean_scores)
    top = int(probs.argmax())
    text = f"{label_of(target, class_names)}  (p = {explanation.probability:.3f})"
    if top != target:
        text = f"target {text}; predicted {label_of(top, class_names)} (p = {float(probs[top]):.3f})"
    return text


def plot(
    explanation: Any,
    image: Any = None,
    *,
    class_names: list[str] | None = None,
    style: str = "overlay",
    alpha: float = 0.6,
    name: str | None = None,
    scale: float | str = "auto",
):  # noqa: ANN201 - matplotlib.figure.Figure, imported lazily
    """A matplotlib Figure: the image (left) and the heat map over it (right), title, colorbar, caption.

    image: the displayed image, (H, W, C) [0, 1] pixels or the model's (C, H, W) input tensor; defaults
    to `explanation.display_image` when set. name: optional model/image line for the title. scale: the
    overlay's colour limit ("auto" or a fixed probability drop, see the module docstring).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    limit = colour_limit(explanation, scale)
    class_names = class_names if class_names is not None else explanation.class_names
    shown = image if image is not None else explanation.display_image
    if explanation.rank != 2:  # signals and volumes have their own pictures
        return _plot_other_rank(explanation, shown, limit, class_names, name, scale)
    pixels = display_pixels(shown)
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 1, 0.05], left=0.03, right=0.9, wspace=0.08, top=0.86, bottom=0.13)
    left, right, bar = fig.add_subplot(grid[0]), fig.add_subplot(grid[1]), fig.add_subplot(grid[2])
    h, w = explanation.image_size
    if pixels is not None:
        left.imshow(pixels, extent=(0, w, h, 0), interpolation="bilinear")
        left.set_title("input", fontsize=10)
        right.imshow(pixels, extent=(0, w, h, 0), interpolation="bilinear")
    else:  # no image known (e.g. `_repr_png_` of a bare Explanation): show the raw grid instead
        left.imshow(explanation.heatmap.numpy(), cmap="jet_r", extent=(0, w, h, 0), interpolation="nearest")
        left.set_title("P(target) per patch position", fontsize=10)
        right.imshow(np.full((h, w, 3), 0.5), extent=(0, w, h, 0))
        right.text(w / 2, h - 2, "no image attached: use .plot(image)", ha="center", va="bottom", fontsize=8)
    mappable = _paper(explanation, right) if style == "paper" else _overlay(explanation, right, alpha, limit)
    right.set_title("occlusion heat map" if style == "overlay" else "P(target) with the patch here", fontsize=10)
    for ax in (left, right):
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_xticks([])
        ax.set_yticks([])
    cb = fig.colorbar(mappable, cax=bar)
    label = "drop in P(target) when occluded" if style == "overlay" else "P(target) when occluded"
    cb.set_label(label, fontsize=9)
    head = title(explanation, class_names)
    fig.suptitle(head if not name else f"{head}\n{name}", fontsize=12)
    scale_note = f"colour scale ±{limit:.3g}" + (" (auto)" if scale == "auto" else " (fixed)")
    if style == "paper":
        scale_note = "colour scale: the paper's [0.75 p, 1.25 p]"
    effect = f"largest drop in P(target) {effect_size(explanation):.3g}"
    fig.text(
        0.5,
        0.012,
        f"{caption(explanation)}\n{effect}; {scale_note}",
        ha="center",
        va="bottom",
        fontsize=9,
        color="0.25",
    )
    return fig


def _overlay(explanation: Any, ax: Any, alpha: float, limit: float) -> Any:
    rgba, mappable = overlay_rgba(drop_map(explanation), limit, alpha)
    h, w = explanation.image_size
    ax.imshow(rgba, extent=(0, w, h, 0), interpolation="bilinear")
    return mappable


def _plot_other_rank(explanation: Any, shown: Any, limit: float, class_names: Any, name: Any, scale: Any):  # noqa: ANN202
    """A signal's or a volume's picture (`krypton.outputs.volumes`) with the same title and caption."""
    from krypton.outputs.volumes import plot_signal, plot_volume

    values = shown.detach().cpu().numpy() if isinstance(shown, torch.Tensor) else shown
    head = title(explanation, class_names)
    head = head if not name else f"{head}\n{name}"
    note = f"colour scale ±{limit:.3g}" + (" (auto)" if scale == "auto" else " (fixed)")
    foot = f"{caption(explanation)}\nlargest drop in P(target) {effect_size(explanation):.3g}; {note}"
    if explanation.rank == 3:
        return plot_volume(explanation, values, limit, head, foot)
    return plot_signal(explanation, values, limit, head, foot)


def _paper(explanation: Any, ax: Any) -> Any:
    """The grid of P(target) at each patch centre, jet_r clipped to [0.75 p, min(1, 1.25 p)]."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    p = explanation.probability
    low, high = 0.75 * p, min(1.0, 1.25 * p)
    heat = explanation.heatmap.numpy()
    ph, pw = explanation.patch
    sh, sw = explanation.stride
    y0, x0 = (int(v) for v in explanation.positions[0, 0])
    rows, cols = heat.shape
    extent = (
        x0 + pw / 2 - sw / 2,
        x0 + pw / 2 + (cols - 0.5) * sw,
        y0 + ph / 2 + (rows - 0.5) * sh,
        y0 + ph / 2 - sh / 2,
    )
    norm = Normalize(low, high, clip=True)
    ax.imshow(np.clip(heat, low, high), cmap="jet_r", norm=norm, extent=extent, alpha=0.55, interpolation="nearest")
    return ScalarMappable(norm=norm, cmap="jet_r")


def png_bytes(explanation: Any, image: Any = None, dpi: int = DPI, **kwargs: Any) -> bytes:
    """The figure as PNG bytes (for `_repr_png_` and web use)."""
    fig = plot(explanation, image, **kwargs)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save(explanation: Any, path: str | Path, image: Any = None, **kwargs: Any) -> Path:
    """Write a picture (.png/.jpg/.pdf/.svg) or the raw results (.npz or .json: both files are written)."""
    from krypton.outputs.raw import save_raw

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".json"):
        meta = kwargs.get("meta")
        save_raw(explanation, path.with_suffix(""), class_names=kwargs.get("class_names"), meta=meta)
        return path
    if suffix not in (".png", ".jpg", ".jpeg", ".pdf", ".svg"):
        raise ValueError(f"cannot save {path.name}: use .png, .jpg, .pdf, .svg (picture) or .npz/.json (raw)")
    kwargs.pop("meta", None)
    fig = plot(explanation, image, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path

"""Heat-map quality: SSIM between two maps (an approximate one against the exact one).

`ssim` is computed with scikit-image on the raw probability maps (H_M x W_M, float64), not on rendered
colour images: data_range is the larger of the two maps' value ranges (at least 1e-6), the Gaussian-free
uniform window is 7x7, or the largest odd size that fits a smaller map (at least 3). The paper's numbers
were taken on colour-mapped, range-clipped, resized renderings - a different (usually higher) number.
"""

from __future__ import annotations

import numpy as np
import torch


def ssim(reference: torch.Tensor | np.ndarray, other: torch.Tensor | np.ndarray) -> float:
    """Structural similarity of two heat maps of the same shape (1.0 = identical)."""
    a = np.asarray(reference.detach().cpu() if isinstance(reference, torch.Tensor) else reference, dtype=np.float64)
    b = np.asarray(other.detach().cpu() if isinstance(other, torch.Tensor) else other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two 2-D maps of the same shape, got {a.shape} and {b.shape}")
    side = min(a.shape)
    if side < 3:
        raise ValueError(f"ssim needs maps of at least 3x3 cells, got {a.shape}")
    win = min(7, side if side % 2 else side - 1)
    span = max(float(a.max() - a.min()), float(b.max() - b.min()), 1e-6)
    from skimage.metrics import structural_similarity  # here: scikit-image costs an exact run 0.13 s

    return float(structural_similarity(a, b, data_range=span, win_size=win))


def rendered_ssim(
    reference: torch.Tensor | np.ndarray, other: torch.Tensor | np.ndarray, probability: float, size: int = 224
) -> float:
    """The paper's kind of SSIM: both maps drawn as jet_r colour images clipped to [0.75 p, min(1, 1.25 p)]
    (p = the clean probability), resized to `size` (nearest) and compared as RGB images. Usually higher
    than `ssim` on raw maps, because clipping and colour mapping hide small differences."""
    from matplotlib import colormaps
    from PIL import Image

    low, high = 0.75 * probability, min(1.0, 1.25 * probability)
    span = max(high - low, 1e-6)
    images = []
    for heat in (reference, other):
        values = np.asarray(heat.detach().cpu() if isinstance(heat, torch.Tensor) else heat, dtype=np.float64)
        rgb = colormaps["jet_r"](np.clip((values - low) / span, 0.0, 1.0))[..., :3]
        picture = Image.fromarray((rgb * 255).round().astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
        images.append(np.asarray(picture, dtype=np.float64) / 255.0)
    from skimage.metrics import structural_similarity

    return float(structural_similarity(images[0], images[1], data_range=1.0, channel_axis=-1))

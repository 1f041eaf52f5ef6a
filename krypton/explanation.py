"""The result of an occlusion explanation: scores at every position, the heat map, and run statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Explanation:
    """Model outputs for every occlusion position of one image.

    scores: (H_M, W_M, K) model outputs with the patch at each grid position;
    base: (K,) output for the clean image; target: the explained class;
    positions: (H_M, W_M, 2) top-left (y, x) of the patch at each grid cell.
    With adaptive drill-down, cells outside `drilled` hold log-probabilities interpolated from the
    coarse pass (softmax of them is the interpolated distribution), not raw model outputs.
    """

    scores: torch.Tensor
    base: torch.Tensor
    target: int
    positions: torch.Tensor
    patch: tuple[int, int]
    stride: tuple[int, int]
    image_size: tuple[int, int]
    mode: str
    stats: dict[str, Any] = field(default_factory=dict)
    drilled: torch.Tensor | None = None  # (H_M, W_M) bool: cells computed at the fine stride (drill-down)

    @property
    def heatmap(self) -> torch.Tensor:
        """(H_M, W_M): softmax probability of the target with the patch at each position (the paper's map)."""
        return torch.softmax(self.scores.double(), dim=-1)[..., self.target].float()

    @property
    def probability(self) -> float:
        """Softmax probability of the target on the clean image."""
        return float(torch.softmax(self.base.double(), dim=-1)[self.target])

    def attribution(self, target: int | None = None) -> torch.Tensor:
        """(H, W) per-pixel map: mean over the windows covering a pixel of (clean - occluded) output.

        The same definition as Captum's `Occlusion` for a single image and target.
        """
        t = self.target if target is None else int(target)
        k = self.scores.shape[-1]
        if not 0 <= t < k:
            raise ValueError(f"target must be in [0, {k}), got {t}")
        h, w = self.image_size
        drop = (self.base[t] - self.scores[..., t]).double()
        total = torch.zeros(h, w, dtype=torch.float64)
        count = torch.zeros(h, w, dtype=torch.float64)
        ph, pw = self.patch
        for i in range(self.positions.shape[0]):
            for j in range(self.positions.shape[1]):
                y, x = (int(v) for v in self.positions[i, j])
                total[y : y + ph, x : x + pw] += drop[i, j]
                count[y : y + ph, x : x + pw] += 1
        return (total / count.clamp(min=1)).float()

    def plot(self, image: Any = None, **kwargs: Any) -> Any:
        """Matplotlib figure of the heat map over `image` (see `krypton.outputs.render.plot`)."""
        from krypton.outputs.render import plot

        return plot(self, image, **kwargs)

    def save(self, path: Any, image: Any = None, **kwargs: Any) -> Any:
        """Write a picture (.png/.pdf/.svg) or raw results (.npz + .json); see `krypton.outputs.render.save`."""
        from krypton.outputs.render import save

        return save(self, path, image, **kwargs)

    def _repr_png_(self) -> bytes:
        """Notebook display."""
        from krypton.outputs.render import png_bytes

        return png_bytes(self)

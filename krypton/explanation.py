"""The result of an occlusion explanation: scores at every position, the heat map, and run statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from krypton.scores import check_target, class_logit, probabilities


@dataclass
class Explanation:
    """Model outputs for every occlusion position of one image.

    scores: (H_M, W_M, K) model outputs with the patch at each grid position;
    base: (K,) output for the clean image; target: the explained class;
    positions: (H_M, W_M, 2) top-left (y, x) of the patch at each grid cell.
    `scores` are the model's logits; with adaptive drill-down, cells outside `drilled` hold logits
    interpolated from the coarse pass (still logits, so `heatmap` and `attribution` treat every cell
    alike). A one-logit model is a binary classifier: classes 0 = negative, 1 = positive (see
    `krypton.scores`).
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
        """(H_M, W_M): probability of the target with the patch at each position (the paper's map)."""
        return probabilities(self.scores)[..., self.target].float()

    @property
    def probability(self) -> float:
        """Probability of the target on the clean image."""
        return float(probabilities(self.base)[self.target])

    @property
    def probabilities(self) -> torch.Tensor:
        """(classes,) class probabilities on the clean image (float64)."""
        return probabilities(self.base)

    def attribution(self, target: int | None = None) -> torch.Tensor:
        """(H, W) per-pixel map: mean over the windows covering a pixel of (clean - occluded) output.

        The same definition as Captum's `Occlusion` for a single image and target.
        """
        t = self.target if target is None else check_target(target, self.base)
        h, w = self.image_size
        drop = (class_logit(self.base, t) - class_logit(self.scores, t)).double()
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

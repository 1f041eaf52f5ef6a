"""The result of an occlusion explanation: scores at every position, the heat map, and run statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from krypton.outputs.maps import per_element_mean
from krypton.scores import check_target, class_logit, probabilities


@dataclass
class Explanation:
    """Model outputs for every occlusion position of one input (signal, image or volume).

    scores: (*grid, K) model outputs with the patch at each grid position, e.g. (H_M, W_M, K) for an
    image, (L_M, K) for a signal, (D_M, H_M, W_M, K) for a volume;
    clean_scores: (K,) output for the clean input; target: the explained class;
    positions: (*grid, rank) first corner of the patch at each grid cell; image_size: the spatial shape.
    `scores` are the model's logits; with adaptive drill-down, cells outside `drilled` hold logits
    interpolated from the coarse pass (still logits, so `heatmap` and `attribution` treat every cell
    alike). A one-logit model is a binary classifier: classes 0 = negative, 1 = positive (see
    `krypton.scores`).
    """

    scores: torch.Tensor
    clean_scores: torch.Tensor
    target: int
    positions: torch.Tensor
    patch: tuple[int, ...]
    stride: tuple[int, ...]
    image_size: tuple[int, ...]
    mode: str
    stats: dict[str, Any] = field(default_factory=dict)
    drilled: torch.Tensor | None = None  # (*grid) bool: cells computed at the fine stride (drill-down)
    class_names: list[str] | None = None  # names of the K classes, when the model says them
    display_image: Any = None  # the picture the input was made from ((H, W[, 3]) in [0, 1]), for rendering

    @property
    def base(self) -> torch.Tensor:
        """The clean input's output (the older name of `clean_scores`)."""
        return self.clean_scores

    @property
    def rank(self) -> int:
        """Spatial axes: 1 (signal), 2 (image) or 3 (volume)."""
        return len(self.image_size)

    @property
    def heatmap(self) -> torch.Tensor:
        """(*grid): probability of the target with the patch at each position (the paper's map)."""
        return probabilities(self.scores)[..., self.target].float()

    @property
    def probability(self) -> float:
        """Probability of the target on the clean image."""
        return float(probabilities(self.clean_scores)[self.target])

    @property
    def probabilities(self) -> torch.Tensor:
        """(classes,) class probabilities on the clean image (float64)."""
        return probabilities(self.clean_scores)

    def attribution(self, target: int | None = None) -> torch.Tensor:
        """(*image_size) per-element map: mean over the windows covering an element of (clean - occluded)
        output. The same definition as Captum's `Occlusion` for a single input and target.
        """
        t = self.target if target is None else check_target(target, self.clean_scores)
        drop = class_logit(self.clean_scores, t) - class_logit(self.scores, t)
        return torch.from_numpy(per_element_mean(self, drop.double().numpy())).float()

    def plot(self, image: Any = None, **kwargs: Any) -> Any:
        """Matplotlib figure of the heat map over `image` (see `krypton.outputs.render.plot`)."""
        from krypton.outputs.render import plot

        return plot(self, image, **kwargs)

    def save(self, path: Any, image: Any = None, **kwargs: Any) -> Any:
        """Write a picture (.png/.pdf/.svg) or raw results (.npz + .json); see `krypton.outputs.render.save`."""
        from krypton.outputs.render import save

        return save(self, path, image, **kwargs)

    def animate(self, path: Any, image: Any = None, **kwargs: Any) -> Any:
        """Write the sweep (the patch sliding over the image while the map fills in) as a GIF or MP4;
        see `krypton.outputs.animation.animate`."""
        from krypton.outputs.animation import animate

        return animate(self, path, image, **kwargs)

    def _repr_png_(self) -> bytes:
        """Notebook display."""
        from krypton.outputs.render import png_bytes

        return png_bytes(self)

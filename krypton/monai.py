"""MONAI-compatible occlusion sensitivity: change `from monai.visualize import OcclusionSensitivity` to
`from krypton.monai import OcclusionSensitivity`.

Same constructor, call and result as `monai.visualize.OcclusionSensitivity` (MONAI 1.6.1): windows of
`mask_size` placed by MONAI's own sliding-window scheme (`overlap`), each window's prediction spread over
the voxels it covers and blended with MONAI's own `sliding_window_inference` (Gaussian weights in
"gaussian" mode). What differs is how the occluded copies are evaluated: through krypton's run
pipeline, incrementally where that measures faster, instead of one full forward pass each.

The windows are found by a first, model-free pass of `sliding_window_inference`; the occluded outputs
are then computed in one `evaluate` call; a second pass hands them back to MONAI's blending, so the
placement and the blending are MONAI's code, not a re-implementation. The occluded values follow
MONAI exactly, including its quirks: "mean_patch" multiplies the window by its mean (MONAI 1.6.1
does not replace it), and `activate=True` applies a sigmoid when the *input* has one channel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from krypton._borrow import borrowed
from krypton.modes.occlusions import Occlusions
from krypton.pipeline import PATHS, evaluate

MODES = ("gaussian", "mean_patch", "mean_img")


class OcclusionSensitivity:
    """Drop-in for `monai.visualize.OcclusionSensitivity`; `path` ("auto", "incremental", "naive") as in
    `krypton.explain`. After a call, `stats` holds the run's record (path, reason, MACs)."""

    def __init__(
        self,
        nn_module: nn.Module,
        mask_size: int | Sequence = 16,
        n_batch: int = 16,  # MONAI's own default (windows per forward pass there)
        verbose: bool = True,
        mode: str | float | Callable = "gaussian",
        overlap: float = 0.6,
        activate: bool | Callable = True,
        *,
        path: str = "auto",
    ) -> None:
        if isinstance(mode, str) and mode not in MODES:
            raise NotImplementedError(f"mode must be one of {', '.join(MODES)}, a float or a callable; got {mode!r}")
        if isinstance(mode, int) and not isinstance(mode, bool):
            mode = float(mode)  # MONAI fails on an int fill deep inside; the intent is clear
        if not isinstance(nn_module, nn.Module):
            raise ValueError(f"nn_module must be a torch.nn.Module, got {type(nn_module).__name__}")
        if path not in PATHS:
            raise ValueError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
        self.nn_module, self.mask_size, self.n_batch, self.verbose = nn_module, mask_size, n_batch, verbose
        self.mode, self.overlap, self.activate, self.path = mode, overlap, activate, path
        self.stats: dict[str, Any] = {}

    def __call__(self, x: torch.Tensor, b_box: Sequence | None = None, **kwargs: Any) -> tuple[Any, Any]:
        """(occlusion map (1, K, *spatial), most probable class (1, 1, *spatial)), as MONAI returns them."""
        from monai.data.meta_tensor import MetaTensor
        from monai.inferers import sliding_window_inference
        from monai.transforms import SpatialCrop
        from monai.utils import ensure_tuple_rep
        from monai.visualize import OcclusionSensitivity as Monai

        if not isinstance(x, torch.Tensor) or x.dim() < 3:
            raise ValueError("x must be a tensor (1, C, *spatial) with 1 to 3 spatial axes")
        if x.shape[0] > 1:
            raise ValueError("Expected batch size of 1.")
        sd = x.ndim - 2
        mask_size: Sequence = ensure_tuple_rep(self.mask_size, sd)
        coords = np.stack(np.meshgrid(*[np.arange(0, i) for i in x.shape[2:]], indexing="ij"))[None]
        grid = MetaTensor(coords, device=x.device, dtype=x.dtype)
        if b_box is not None:
            grid, cropper, mask_size = Monai.crop_meshgrid(grid, b_box, mask_size)
        if any(m > g for g, m in zip(grid.shape[2:], mask_size)):
            raise ValueError(f"Image (spatial shape) {grid.shape[2:]} should be bigger than mask {mask_size}.")
        mask_size = tuple(int(m) for m in mask_size)
        blend: dict[str, Any] = dict(roi_size=mask_size, sw_batch_size=self.n_batch, overlap=self.overlap,
                     mode="gaussian" if self.mode == "gaussian" else "constant", progress=False)  # fmt: skip

        corners: list[tuple[int, ...]] = []
        sliding_window_inference(grid, predictor=_recorder(corners, mask_size), **blend)
        order = sorted(set(corners))
        probabilities = self._probabilities(x, np.asarray(order, dtype=np.int64), mask_size, kwargs)
        rows = {corner: i for i, corner in enumerate(order)}
        sensitivity = sliding_window_inference(grid, predictor=_replayer(rows, probabilities, mask_size), **blend)
        if b_box is not None:  # as MONAI: undo the grid crop, then crop to the box itself
            sensitivity = cropper.inverse(sensitivity[0])[None]  # type: ignore[arg-type]  # a MetaTensor at run time
            low = [max(b, 0) for b in b_box[::2]]
            high = [b if b > 0 else s for b, s in zip(b_box[1::2], x.shape[2:])]
            sensitivity = SpatialCrop(roi_start=low, roi_end=high)(sensitivity[0])[None]
        assert isinstance(sensitivity, torch.Tensor)
        return sensitivity, sensitivity.argmax(dim=1, keepdim=True)

    def _probabilities(
        self, x: torch.Tensor, corners: np.ndarray, mask_size: tuple[int, ...], kwargs: dict[str, Any]
    ) -> torch.Tensor:
        """(P, K) activated outputs with the occlusion at each window corner, through the run pipeline."""
        image = x.detach()
        channels = image.shape[1]
        lo = np.concatenate([np.zeros((len(corners), 1), np.int64), corners], axis=1)
        hi = lo + np.asarray((channels, *mask_size))
        occ = Occlusions(image, lo, hi, **self._occlusion(image, mask_size))
        model, path = self.nn_module, self.path
        if kwargs:  # the captured graph has no room for extra arguments: full inference with them
            model, path = _WithArguments(model, kwargs), "naive"
        bar = _bar(self.verbose, occ.count)
        with borrowed(self.nn_module), torch.no_grad():
            outputs, stats = evaluate(model, occ, mode="exact", batch_size=None, path=path,
                                      progress=None if bar is None else bar.update)  # fmt: skip
        if bar is not None:
            bar.close()
        self.stats = stats.as_dict()
        if callable(self.activate):
            return self.activate(outputs)
        if self.activate:
            return outputs.sigmoid() if channels == 1 else outputs.softmax(1)
        return outputs

    def _occlusion(self, x: torch.Tensor, mask_size: tuple[int, ...]) -> dict[str, Any]:
        """The occluded window as MONAI computes it (`window * mul + add`), vectorised over the batch."""
        from monai.visualize import OcclusionSensitivity as Monai

        shape = (x.shape[1], *mask_size)
        if isinstance(self.mode, float):
            return {"patch": torch.full(shape, self.mode, dtype=x.dtype, device=x.device)}
        if self.mode == "mean_img":
            return {"patch": torch.full(shape, x.mean().item(), dtype=x.dtype, device=x.device)}
        if self.mode == "gaussian":
            mul, _ = Monai.gaussian_occlusion(x, mask_size)
            mul = torch.as_tensor(mul).to(x.device, x.dtype)
            return {"occluder": lambda windows: windows * mul}
        if self.mode == "mean_patch":  # MONAI 1.6.1 multiplies by the window's mean (see module docstring)
            axes = tuple(range(1, 2 + len(mask_size)))
            return {"occluder": lambda windows: windows * windows.mean(dim=axes, keepdim=True)}
        mode: Any = self.mode  # a callable of (x, window (1, C, *mask)): called per window, as MONAI does
        return {"occluder": lambda windows: torch.cat([mode(x, windows[i : i + 1]) for i in range(len(windows))])}


class _WithArguments(nn.Module):
    """The model called with the user's extra keyword arguments (MONAI's `**kwargs`)."""

    def __init__(self, model: nn.Module, kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.model, self.kwargs = model, kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, **self.kwargs)


def _corners(cropped_grid: torch.Tensor) -> list[tuple[int, ...]]:
    """Each window's first voxel in image coordinates (the grid holds coordinates, as in MONAI)."""
    sd = cropped_grid.ndim - 2
    first = cropped_grid[(slice(None), slice(None)) + (0,) * sd]
    return [tuple(int(v) for v in row) for row in first.tolist()]


def _spread(values: torch.Tensor, mask_size: tuple[int, ...]) -> torch.Tensor:
    """(B, K) -> (B, K, *mask_size): one value over the whole window, as MONAI's predictor returns it."""
    return values.reshape(*values.shape, *([1] * len(mask_size))).expand(*values.shape, *mask_size).clone()


def _recorder(corners: list[tuple[int, ...]], mask_size: tuple[int, ...]) -> Callable[..., torch.Tensor]:
    def predictor(cropped_grid: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        corners.extend(_corners(cropped_grid))
        return _spread(cropped_grid.new_zeros((cropped_grid.shape[0], 1)), mask_size)

    return predictor


def _replayer(
    rows: dict[tuple[int, ...], int], probabilities: torch.Tensor, mask_size: tuple[int, ...]
) -> Callable[..., torch.Tensor]:
    def predictor(cropped_grid: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        index = torch.tensor([rows[c] for c in _corners(cropped_grid)], device=probabilities.device)
        return _spread(probabilities[index].to(cropped_grid.dtype), mask_size)

    return predictor


def _bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="window", desc="Occlusion sensitivity")

"""Occlusion at a chosen part of the grid: explain only the positions inside a rectangle, coarse cells first.

`krypton.explain` always covers the whole image. The paper's demo also explains just a region the user
drags; the patch still occludes the whole image the model sees, but only grid positions whose patch
centre lies inside the rectangle are evaluated, with the engine's own occlusions, planner and batched
incremental executor (or full re-inference in naive mode, which `explain` does not report per batch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from krypton.explanation import Explanation
from krypton.modes.drilldown import subset
from krypton.modes.occlusions import Occlusions, grid_occlusions
from krypton.modes.progressive import Update, fill_missing, levels
from krypton.pipeline import evaluate, guarded_call
from krypton.scores import probabilities


@dataclass(frozen=True)
class Region:
    """A rectangle in model-input pixels: rows y .. y + height, columns x .. x + width."""

    x: int
    y: int
    width: int
    height: int


def region_cells(
    positions: torch.Tensor, patch: tuple[int, int], region: Region | None
) -> tuple[np.ndarray, np.ndarray]:
    """Grid rows and columns whose patch centre lies inside `region` (all of them without one)."""
    ys = positions[:, 0, 0].numpy() + patch[0] / 2
    xs = positions[0, :, 1].numpy() + patch[1] / 2
    if region is None:
        return np.arange(len(ys)), np.arange(len(xs))
    rows = np.nonzero((ys >= region.y) & (ys <= region.y + region.height))[0]
    cols = np.nonzero((xs >= region.x) & (xs <= region.x + region.width))[0]
    return rows, cols


def layout(shape: tuple[int, ...], patch: int, stride: int, region: Region | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (ys, xs) of the grid rows and columns a sweep evaluates, without building anything."""
    ys = np.arange(0, shape[0] - patch + 1, stride)
    xs = np.arange(0, shape[1] - patch + 1, stride)
    grid = torch.from_numpy(np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1))
    rows, cols = region_cells(grid, (patch, patch), region)
    return ys[rows], xs[cols]


def count_positions(shape: tuple[int, ...], patch: int, stride: int, region: Region | None) -> int:
    ys, xs = layout(shape, patch, stride, region)
    return len(ys) * len(xs)


def sweep(
    model: nn.Module,
    image: torch.Tensor,
    *,
    target: int,
    patch: int,
    stride: int,
    fill: list[float],
    mode: str = "exact",
    tau: float = 1.0,
    region: Region | None = None,
    on_update: Callable[[Update], None] | None = None,
) -> Explanation:
    """Occlusion explanation of the positions in `region` (naive, exact, or approximate with `tau`).

    Exceptions raised by `on_update` (e.g. a cancellation) propagate, as in `krypton.explain`.
    """
    image = image[None] if image.dim() == 3 else image
    pair = (patch, patch)
    fill_t = torch.tensor(fill, dtype=image.dtype).view(-1, 1, 1).expand(image.shape[1], patch, patch).contiguous()
    occ, positions = grid_occlusions(image, pair, (stride, stride), fill_t)
    rows, cols = region_cells(positions, pair, region)
    if len(rows) == 0 or len(cols) == 0:
        raise ValueError("no patch position has its centre inside the region: drag a larger region or lower the stride")
    grid = (len(rows), len(cols))
    width = positions.shape[1]
    chosen = (rows[:, None] * width + cols[None, :]).reshape(-1)
    part = subset(occ, chosen)
    clean_scores = guarded_call(model, image)[0].detach()
    progress = _Progress(grid, target, on_update)
    started = time.perf_counter()
    outputs, stats = _evaluate(model, part, grid, mode, tau, progress)
    stats.update(
        wall_time_s=time.perf_counter() - started,
        positions=part.count,
        tau=tau if mode == "approximate" else None,
        region=None if region is None else [region.x, region.y, region.width, region.height],
    )
    return Explanation(
        scores=outputs.reshape(*grid, -1).detach().cpu(),
        clean_scores=clean_scores.cpu(),
        target=int(target),
        positions=positions[rows][:, cols].clone(),
        patch=pair,
        stride=(stride, stride),
        image_size=(int(image.shape[2]), int(image.shape[3])),
        mode=stats["mode"],
        stats=stats,
    )


class _Progress:
    """Turns per-batch outputs into `Update`s of the whole (sub-)grid map, missing cells from neighbours."""

    def __init__(self, grid: tuple[int, int], target: int, on_update: Callable[[Update], None] | None) -> None:
        self.values, self.done = np.zeros(grid), np.zeros(grid, dtype=bool)
        self.target, self.on_update, self.started = target, on_update, time.perf_counter()

    def __call__(self, index: np.ndarray, outputs: torch.Tensor) -> None:
        probs = probabilities(outputs)[:, self.target].cpu().numpy()
        self.values.reshape(-1)[index] = probs
        self.done.reshape(-1)[index] = True
        if self.on_update is not None:
            shown = fill_missing(self.values, self.done).astype(np.float32)
            elapsed = time.perf_counter() - self.started
            self.on_update(
                Update(
                    torch.from_numpy(shown.copy()),
                    torch.from_numpy(self.done.copy()),
                    int(self.done.sum()),
                    self.done.size,
                    elapsed,
                )
            )


def _evaluate(model, part: Occlusions, grid, mode: str, tau: float, progress: _Progress):
    """The run pipeline (the same decisions as `krypton.explain`), coarse cells first."""
    outputs, stats = evaluate(
        model,
        part,
        mode=mode,
        tau=tau,
        levels=levels(grid).reshape(-1),  # every 8th cell first, then 4th, 2nd, the rest
        on_batch=lambda index, out: progress(index, out[index]),
    )
    return outputs, stats.as_dict()

"""What to occlude: the image, one box per position, and the fill (patch values or a baseline)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from krypton.box import Boxes
from krypton.engine.gather import PaddedCache, read_window
from krypton.engine.incremental import OccludedInput, Occluder


@dataclass
class Occlusions:
    """P occluded copies of one input, described by boxes over its (C, *spatial) axes (any rank)."""

    image: torch.Tensor  # (1, C, *spatial)
    lo: np.ndarray  # (P, 1 + rank)
    hi: np.ndarray  # (P, 1 + rank)
    patch: torch.Tensor | None = None  # values relative to each box's corner (all boxes equal size)
    baseline: torch.Tensor | None = None  # absolute values broadcastable to the image
    occluder: Occluder | None = None  # occluded windows from the clean ones under them (all boxes equal size)

    @property
    def count(self) -> int:
        return self.lo.shape[0]

    def boxes(self) -> Boxes:
        return Boxes.make(self.lo, self.hi, tuple(self.image.shape[1:]))

    def occluded_input(self) -> OccludedInput:
        return OccludedInput(self.image, self.lo, self.hi, self.patch, self.baseline, self.occluder)

    def subset(self, rows: np.ndarray) -> Occlusions:
        """The same occlusions at some positions only."""
        return Occlusions(self.image, self.lo[rows], self.hi[rows], self.patch, self.baseline, self.occluder)

    def images(
        self, index: np.ndarray, cache: PaddedCache | None = None, layout: torch.memory_format | None = None
    ) -> torch.Tensor:
        """The occluded inputs themselves (B, C, *spatial), for full re-inference, in the caller's memory
        layout unless `layout` names another (made in it directly: no second copy)."""
        cache = cache or PaddedCache()
        occluded = self.occluded_input().window(index, cache)
        body = tuple(self.image.shape[1:])
        start = np.zeros((len(index), len(body)), dtype=np.int64)
        images = read_window(self.image, occluded, start, body, 0.0, cache)
        return images.contiguous(memory_format=layout or _layout(self.image))


def _layout(image: torch.Tensor) -> torch.memory_format:
    """channels_last (4-D) or channels_last_3d (5-D) when the caller's image is laid out so."""
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(image.dim())
    if fmt is not None and not image.is_contiguous() and image.is_contiguous(memory_format=fmt):
        return fmt
    return torch.contiguous_format


def grid_occlusions(
    image: torch.Tensor, patch: tuple[int, ...], stride: tuple[int, ...], fill: torch.Tensor
) -> tuple[Occlusions, torch.Tensor]:
    """The paper's grid on any rank: patch fully inside, corners 0, S, 2S, ... per spatial axis ->
    occlusions and the (*grid, rank) corners."""
    c, size = image.shape[1], image.shape[2:]
    axes = [np.arange(0, n - p + 1, s) for n, p, s in zip(size, patch, stride)]
    mesh = np.meshgrid(*axes, indexing="ij")
    corners = np.stack([m.ravel() for m in mesh], axis=1).astype(np.int64)
    zeros = np.zeros((len(corners), 1), dtype=np.int64)
    lo = np.concatenate([zeros, corners], axis=1)
    hi = np.concatenate([zeros + c, corners + np.asarray(patch)], axis=1)
    positions = torch.from_numpy(np.stack(mesh, axis=-1).astype(np.int64))
    return Occlusions(image, lo, hi, patch=fill), positions


Progress = Callable[[int], None]


class Collector:
    """Gathers per-batch outputs into one (P, K) tensor in position order, reporting as it goes."""

    def __init__(self, count: int, progress: Progress | None = None, on_batch: Callable | None = None):
        self.count, self.progress, self.on_batch = count, progress, on_batch
        self.outputs: torch.Tensor | None = None
        self.done = np.zeros(count, dtype=bool)  # positions whose outputs are in

    def add(self, index: np.ndarray, out: torch.Tensor) -> None:
        if self.outputs is None:
            self.outputs = out.new_empty((self.count,) + tuple(out.shape[1:]))
        self.outputs[torch.from_numpy(index).to(self.outputs.device)] = out.to(self.outputs.dtype)
        self.done[index] = True
        if self.progress:
            self.progress(len(index))
        if self.on_batch:
            self.on_batch(index, self.outputs)

    def forget(self, index: np.ndarray) -> None:
        """Mark positions as not done (their outputs are to be recomputed); progress counts back."""
        index = index[self.done[index]]
        self.done[index] = False
        if self.progress and len(index):
            self.progress(-len(index))

    def result(self) -> torch.Tensor:
        if self.outputs is None:
            raise ValueError("no positions to evaluate")
        return self.outputs

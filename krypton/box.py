"""Region algebra: where occluded copies of a tensor can differ from the clean run.

Stage 2 of the pipeline (capture → **box** → rules → plan → execute). A `Boxes` holds one half-open
box per occlusion position, vectorised as two int64 arrays `lo`, `hi` of shape (P, ndim) over the
tensor's non-batch axes. Invariant: a row is either a non-empty box inside the tensor or the empty
box (all zeros); rules never see boxes outside the tensor's shape.

The single-position case is simply P == 1; there is no second, scalar algebra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Boxes:
    """Per-position changed regions `[lo, hi)` of one tensor (non-batch axes only)."""

    lo: np.ndarray  # (P, ndim) int64
    hi: np.ndarray  # (P, ndim) int64

    @staticmethod
    def make(lo: np.ndarray, hi: np.ndarray, shape: tuple[int, ...]) -> Boxes:
        """Clip to `shape` and normalise empty rows to all-zero rows."""
        size = np.asarray(shape, dtype=np.int64)
        lo = np.clip(np.asarray(lo, dtype=np.int64), 0, size)
        hi = np.clip(np.asarray(hi, dtype=np.int64), 0, size)
        empty = np.asarray((hi <= lo).any(axis=1))
        lo = np.where(empty[:, None], 0, lo)
        hi = np.where(empty[:, None], 0, hi)
        return Boxes(lo, hi)

    @staticmethod
    def full(count: int, shape: tuple[int, ...], where: np.ndarray | None = None) -> Boxes:
        """The whole tensor for every position (or only where `where` is true)."""
        lo = np.zeros((count, len(shape)), dtype=np.int64)
        hi = np.tile(np.asarray(shape, dtype=np.int64), (count, 1))
        if where is not None:
            hi = np.where(where[:, None], hi, 0)
        return Boxes(lo, hi)

    @property
    def count(self) -> int:
        return self.lo.shape[0]

    @property
    def ndim(self) -> int:
        return self.lo.shape[1]

    @property
    def nonempty(self) -> np.ndarray:
        """(P,) bool: positions whose box is not empty."""
        return np.asarray((self.hi > self.lo).all(axis=1))

    def any(self) -> bool:
        return bool(self.nonempty.any())

    def sizes(self) -> np.ndarray:
        return self.hi - self.lo

    def take(self, index: np.ndarray) -> Boxes:
        return Boxes(self.lo[index], self.hi[index])

    def union(self, other: Boxes, shape: tuple[int, ...]) -> Boxes:
        """Bounding box of the two (the paper's Eq. 20), ignoring empty rows."""
        a, b = self.nonempty[:, None], other.nonempty[:, None]
        big = np.iinfo(np.int64).max
        lo = np.minimum(np.where(a, self.lo, big), np.where(b, other.lo, big))
        hi = np.maximum(np.where(a, self.hi, 0), np.where(b, other.hi, 0))
        return Boxes.make(np.where(a | b, lo, 0), np.where(a | b, hi, 0), shape)

    def widen(self, axes: tuple[int, ...], shape: tuple[int, ...]) -> Boxes:
        """Cover the whole extent of `axes` for every non-empty position."""
        lo, hi = self.lo.copy(), self.hi.copy()
        ne = self.nonempty
        for a in axes:
            lo[ne, a] = 0
            hi[ne, a] = shape[a]
        return Boxes(lo, hi)

    def volume(self) -> np.ndarray:
        return self.sizes().prod(axis=1)

    def __repr__(self) -> str:
        rows = [
            "[" + ", ".join(f"{a}:{b}" for a, b in zip(lo, hi)) + "]"
            for lo, hi in zip(self.lo[:3].tolist(), self.hi[:3].tolist())
        ]
        more = f" … ({self.count} positions)" if self.count > 3 else ""
        return "Boxes(" + " ".join(rows) + more + ")"


def union_all(boxes: Sequence[Boxes | None], shape: tuple[int, ...]) -> Boxes | None:
    """Bounding box over several optional boxes; None when nothing changed."""
    present = [b for b in boxes if b is not None]
    if not present:
        return None
    out = present[0]
    for b in present[1:]:
        out = out.union(b, shape)
    return out


@dataclass(frozen=True)
class Window:
    """The region a batch actually computes for one tensor: one size per axis, a start per item.

    Every item's box fits inside its window; windows are shifted to stay inside the tensor
    (the paper's Eq. 31), so all items share one shape and run as one batched call.
    """

    start: np.ndarray  # (B, ndim) int64
    size: tuple[int, ...]

    @staticmethod
    def cover(boxes: Boxes, shape: tuple[int, ...], full_axes: tuple[int, ...] = ()) -> Window:
        size = boxes.sizes().max(axis=0)
        size = np.maximum(size, 1)
        for a in full_axes:
            size[a] = shape[a]
        limit = np.asarray(shape, dtype=np.int64) - size
        start = np.clip(boxes.lo, 0, limit)
        for a in full_axes:
            start[:, a] = 0
        return Window(start, tuple(int(s) for s in size))

    @staticmethod
    def whole(batch: int, shape: tuple[int, ...]) -> Window:
        return Window(np.zeros((batch, len(shape)), dtype=np.int64), tuple(shape))

    @property
    def batch(self) -> int:
        return self.start.shape[0]

    def numel(self) -> int:
        return math.prod(self.size)  # a tuple of ints: math.prod is ~20x cheaper than np.prod per step

    def is_whole(self, shape: tuple[int, ...]) -> bool:
        return tuple(self.size) == tuple(shape)

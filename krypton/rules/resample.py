"""Ops that pick or spread cells along an axis: slices (the pieces of split/chunk), nearest and linear
upsampling, and softmax over one axis.

Slices and nearest upsampling map each output cell to one input cell through a monotone index
(`src[j]`), so a changed input range maps to a contiguous output range found by `searchsorted`; the
index is read off the op itself (run on coordinates), never re-derived from PyTorch's formulas.
Linear upsampling reads two neighbours per axis. Softmax changes its whole axis where any cell did.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from krypton.box import Boxes, Window
from krypton.rules.registry import Changes, Computed, Frame, Rule, Site, Unsupported, call_op, register

aten = torch.ops.aten


def _map_box(
    box: Boxes, axis: int, first: np.ndarray, last: np.ndarray, out_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Output range [lo, hi) on `axis` of the cells j whose sources [first[j], last[j]] meet the input box."""
    lo = np.searchsorted(last, box.lo[:, axis], side="left")
    hi = np.searchsorted(first, box.hi[:, axis], side="left")
    return np.clip(lo, 0, out_size), np.clip(hi, 0, out_size)


def _gather_axis(x: torch.Tensor, axis: int, local: np.ndarray) -> torch.Tensor:
    """Pick cells `local` (B, n) along `axis` (a body axis) of x (B, ...), per item."""
    index = torch.from_numpy(local).to(x.device)
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[axis + 1] = local.shape[1]
    sizes = list(x.shape)
    sizes[axis + 1] = local.shape[1]
    return torch.gather(x, axis + 1, index.reshape(shape).expand(sizes))


class Slice(Rule):
    """`x[..., start:end:step, ...]` on one non-batch axis (split, chunk and narrow pieces export as this)."""

    name = "slice"
    precise = True
    exact = True

    def _spec(self, site: Site) -> tuple[int, int, int, int]:
        """(body axis or -1 for the batch axis, start, step, output length)."""
        shape = site.shape(site.args["self"])
        axis = site.args["dim"] % len(shape)
        n, step = shape[axis], site.args.get("step", 1) or 1
        start, end = site.args.get("start"), site.args.get("end")
        start = 0 if start is None else (start + n if start < 0 else start)
        end = n if end is None else (end + n if end < 0 else end)
        start, end = min(max(start, 0), n), min(max(end, 0), n)
        if axis == 0:
            if start == 0 and end >= 1 and step == 1:
                return -1, 0, 1, 1  # the whole batch axis: a no-op view
            raise Unsupported(f"{site.call.name}: slice of the batch axis")
        return axis - 1, start, step, site.shape()[axis]

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["self"]
        if box is None:
            return (None,)
        axis, start, step, out = self._spec(site)
        if axis < 0:
            return (Boxes(box.lo.copy(), box.hi.copy()),)
        src = start + step * np.arange(out)
        lo, hi = box.lo.copy(), box.hi.copy()
        lo[:, axis], hi[:, axis] = _map_box(box, axis, src, src, out)
        return (Boxes.make(lo, hi * box.nonempty[:, None], site.body()),)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        axis, start, step, _ = self._spec(site)
        if axis < 0:
            return (frame.assemble(site.args["self"], window.start, tuple(window.size)),)
        begin = window.start.copy()
        begin[:, axis] = start + step * window.start[:, axis]
        size = list(window.size)
        size[axis] = (window.size[axis] - 1) * step + 1
        x = frame.assemble(site.args["self"], begin, tuple(size))
        return (x if step == 1 else x.narrow(axis + 1, 0, size[axis]).unfold(axis + 1, 1, step).squeeze(-1),)


class Upsample(Rule):
    """upsample_nearest{1,2,3}d / upsample_{linear1d,bilinear2d,trilinear3d} on the spatial axes.

    Per spatial axis, output cell j reads input cells [first[j], last[j]] (one cell for nearest, two
    neighbours for linear); both are found by running the op on coordinate ramps.
    """

    name = "upsample"
    precise = True
    exact = False  # linear: a neighbour with weight 0 at the border still counts

    def __init__(self, linear: bool):
        self.linear = linear

    def _axes(self, site: Site) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Per spatial axis: (body axis, first source, last source, weight of the last source)."""
        in_shape, out_shape = site.shape(site.call.inputs[0]), site.shape()
        rank = len(in_shape) - 2
        result = []
        for k in range(rank):
            ramp = torch.zeros((1, 1, *in_shape[2:]), dtype=torch.float64)
            coords = torch.arange(in_shape[2 + k], dtype=torch.float64)
            view = [1, 1] + [1] * rank
            view[2 + k] = in_shape[2 + k]
            ramp = ramp + coords.reshape(view)
            args = dict(site.args)
            args[next(iter(site.args))] = ramp
            probed = call_op(site.call.target, args)
            index: list[int | slice] = [0] * (2 + rank)
            index[2 + k] = slice(None)
            c = probed[tuple(index)].numpy()
            first = np.clip(np.floor(c + 1e-9).astype(np.int64), 0, in_shape[2 + k] - 1)
            weight = c - first
            last = np.minimum(first + (weight > 1e-12), in_shape[2 + k] - 1) if self.linear else first
            result.append((1 + k, first, last, weight))
        if len(out_shape) != len(in_shape):
            raise Unsupported(f"{site.call.name}: upsampling changes the rank")
        return result

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes[next(iter(site.args))]
        if box is None:
            return (None,)
        lo, hi = box.lo.copy(), box.hi.copy()
        for axis, first, last, _ in self._axes(site):
            lo[:, axis], hi[:, axis] = _map_box(box, axis, first, last, site.body()[axis])
        return (Boxes.make(lo, hi * box.nonempty[:, None], site.body()),)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        source = site.call.inputs[0]
        in_body = site.body(source)
        axes = self._axes(site)
        start = window.start.copy()
        size = list(window.size)
        picks = []
        for axis, first, last, weight in axes:
            cells = window.start[:, axis : axis + 1] + np.arange(window.size[axis])  # (B, n) output cells
            lo_cells, hi_cells = first[cells], last[cells]
            span = int((hi_cells.max(axis=1) - lo_cells.min(axis=1)).max()) + 1
            begin = np.minimum(lo_cells.min(axis=1), in_body[axis] - span)
            start[:, axis], size[axis] = begin, span
            picks.append((axis, lo_cells - begin[:, None], hi_cells - begin[:, None], weight[cells]))
        x = frame.assemble(source, start, tuple(size))
        for axis, lo_local, hi_local, w in picks:
            low = _gather_axis(x, axis, lo_local)
            if not self.linear:
                x = low
                continue
            high = _gather_axis(x, axis, hi_local)
            shape = [window.batch] + [1] * (x.dim() - 1)
            shape[axis + 1] = w.shape[1]
            weights = torch.from_numpy(w).to(x.device, x.dtype).reshape(shape)
            x = low + (high - low) * weights
        return (x,)


class Softmax(Rule):
    """softmax / log_softmax over one non-batch axis: the whole axis changes where any cell did."""

    name = "softmax"
    precise = True
    exact = True

    def _axis(self, site: Site) -> int:
        axis = site.args["dim"] % len(site.shape())
        if axis == 0:
            raise Unsupported(f"{site.call.name}: softmax over the batch axis")
        return axis - 1

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["self"]
        if box is None:
            return (None,)
        return (box.widen((self._axis(site),), site.body()),)

    def full_axes(self, site: Site) -> tuple[int, ...]:
        return (self._axis(site),)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        x = frame.assemble(site.args["self"], window.start, tuple(window.size))
        return (call_op(site.call.target, {**site.args, "self": x}),)


register(aten.slice.Tensor, Slice())
# The forms core-ATen capture keeps (1-D and 3-D upsampling decompose into index ops and views).
register(aten.upsample_nearest2d.vec, Upsample(linear=False))
register(aten.upsample_bilinear2d.vec, Upsample(linear=True))
register([aten._softmax.default, aten._log_softmax.default], Softmax())

"""Sliding-window ops: convolution (1-3 spatial axes), max and average pooling, constant padding.

They share one geometry (`Geometry`), the paper's Eqs. 13-16 made exact per position:
an input change on `[lo, hi)` along an axis with kernel k, stride s, padding p, dilation d reaches the
outputs `o` whose receptive field `[o*s - p, o*s - p + d*(k-1)]` meets it:

    lo' = ceil((lo + p - d*(k-1)) / s)        hi' = floor((hi - 1 + p) / s) + 1      (clipped to [0, O))

and an output window `[o, o + n)` reads the input context `[o*s - p, o*s - p + (n-1)*s + d*(k-1) + 1)`,
padding included (Eqs. 15-16). Worked example: k=3, s=1, p=1, change rows [8, 24) -> rows [7, 25).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from krypton.box import Boxes, Window
from krypton.rules.registry import FULL, Changes, Computed, Frame, Rule, Site, output_shapes, register

aten = torch.ops.aten


def _per_axis(value: Any, k: int, default: int | list[int]) -> list[int]:
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        value = default
    if isinstance(value, int):
        return [value] * k
    value = list(value)
    return value * k if len(value) == 1 else value


@dataclass(frozen=True)
class Geometry:
    """Kernel geometry over the trailing `len(kernel)` axes of a tensor."""

    kernel: list[int]
    stride: list[int]
    padding: list[int]
    dilation: list[int]

    @property
    def rank(self) -> int:
        return len(self.kernel)

    def out_box(self, box: Boxes, out_body: tuple[int, ...], lead: Boxes | None = None) -> Boxes:
        """Changed outputs for changed inputs; leading (non-spatial) axes come from `lead`."""
        k = self.rank
        lo, hi = box.lo.copy(), box.hi.copy()
        kk, s, p, d = (np.asarray(v) for v in (self.kernel, self.stride, self.padding, self.dilation))
        span = d * (kk - 1)
        lo[:, -k:] = -((-(lo[:, -k:] + p - span)) // s)
        hi[:, -k:] = (hi[:, -k:] - 1 + p) // s + 1
        if lead is not None:
            lo[:, :-k], hi[:, :-k] = lead.lo[:, :-k], lead.hi[:, :-k]
        out = Boxes.make(lo, hi, out_body)
        return Boxes.make(np.where(box.nonempty[:, None], out.lo, 0), out.hi * box.nonempty[:, None], out_body)

    def context(self, window: Window, in_body: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
        """Input region (start per item, common size) that the output window reads."""
        k = self.rank
        start = window.start.copy()
        size = list(window.size)
        for i in range(k):
            a = len(in_body) - k + i
            start[:, a] = window.start[:, a] * self.stride[i] - self.padding[i]
            size[a] = (window.size[a] - 1) * self.stride[i] + self.dilation[i] * (self.kernel[i] - 1) + 1
        return start, tuple(size)


class Sliding(Rule):
    """Base of the sliding-window rules: the trailing `rank` axes are spatial."""

    def geometry(self, site: Site) -> Geometry:
        raise NotImplementedError

    def spatial_axes(self, site: Site) -> tuple[int, ...]:
        nd, k = len(site.body()), self.geometry(site).rank
        return tuple(range(nd - k, nd))

    def tight(self, site: Site) -> bool:
        """Dilated kernels skip cells: a change between two taps reaches fewer outputs than Eq. 13 says."""
        return self.exact and all(d == 1 for d in self.geometry(site).dilation)


class Convolution(Sliding):
    """Convolution (not transposed): every output channel of a group reads all its input channels."""

    name = "convolution"
    precise = True
    exact = True

    def geometry(self, site: Site) -> Geometry:
        weight = site.shape(site.args["weight"])
        k = len(weight) - 2
        return Geometry(
            list(weight[2:]),
            _per_axis(site.args["stride"], k, 1),
            _per_axis(site.args["padding"], k, 0),
            _per_axis(site.args["dilation"], k, 1),
        )

    def applies(self, site: Site) -> bool:
        return not site.args["transposed"]

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["input"]
        if box is None:
            return FULL.forward(site, boxes)  # only weights changed: never happens for images
        out = site.body()
        lead = Boxes(box.lo.copy(), box.hi.copy())
        groups = site.args["groups"]
        cin_g = site.body(site.args["input"])[0] // groups
        cout_g = out[0] // groups
        lead.lo[:, 0] = (box.lo[:, 0] // cin_g) * cout_g
        lead.hi[:, 0] = (-(-box.hi[:, 0] // cin_g)) * cout_g
        return (self.geometry(site).out_box(box, out, lead),)

    def full_axes(self, site: Site) -> tuple[int, ...]:
        return (0,)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        geo = self.geometry(site)
        x = site.args["input"]
        start, size = geo.context(window, site.body(x))
        start[:, 0] = 0  # every output channel reads all input channels (of its group)
        size = (site.body(x)[0],) + size[1:]
        ctx = frame.assemble(x, start, size, 0.0)
        bias = site.args["bias"]
        out = aten.convolution(
            ctx,
            frame.clean(site.args["weight"]),
            None if bias is None else frame.clean(bias),
            geo.stride,
            [0] * geo.rank,
            geo.dilation,
            False,
            [0] * geo.rank,
            site.args["groups"],
        )
        return (out,)

    def macs_per_element(self, site: Site) -> int:
        weight = site.shape(site.args["weight"])
        return int(np.prod(weight[1:]))


class Pool(Sliding):
    """Pooling: each output cell reads one window of its own channel; boxes keep their channels."""

    precise = True
    exact = True

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["self"]
        if box is None:
            return (None,) * len(output_shapes(site))
        out = self.geometry(site).out_box(box, site.body(), lead=box)
        return (out,) + (None,) * (len(output_shapes(site)) - 1)  # max pool's indices: never read


class MaxPool(Pool):
    """Max pooling, any padding/dilation/ceil_mode: padding reads as -inf."""

    name = "max_pool"
    primary_output_only = True

    def geometry(self, site: Site) -> Geometry:
        k = len(site.args["kernel_size"])
        kernel = list(site.args["kernel_size"])
        return Geometry(
            kernel,
            _per_axis(site.args["stride"], k, kernel),
            _per_axis(site.args["padding"], k, 0),
            _per_axis(site.args.get("dilation"), k, 1),
        )

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        geo = self.geometry(site)
        x = site.args["self"]
        start, size = geo.context(window, site.body(x))
        ctx = frame.assemble(x, start, size, float("-inf"))
        op = aten.max_pool2d_with_indices if geo.rank == 2 else aten.max_pool3d_with_indices
        values, _ = op(ctx, geo.kernel, geo.stride, [0] * geo.rank, geo.dilation, False)
        return (values, None)


class AvgPool(Pool):
    """Average pooling: a sum over the zero-padded context divided by PyTorch's per-cell count.

    The count is separable: per axis, the taps of window o inside [-p, N+p) (count_include_pad) or
    [0, N) (not), which also covers ceil_mode's windows that run past the padding.
    """

    name = "avg_pool"

    def geometry(self, site: Site) -> Geometry:
        k = len(site.args["kernel_size"])
        kernel = list(site.args["kernel_size"])
        return Geometry(
            kernel, _per_axis(site.args["stride"], k, kernel), _per_axis(site.args["padding"], k, 0), [1] * k
        )

    def _counts(self, site: Site, geo: Geometry, in_body: tuple[int, ...]) -> list[np.ndarray]:
        include = site.args.get("count_include_pad", True)
        counts = []
        for i in range(geo.rank):
            n_in = in_body[len(in_body) - geo.rank + i]
            n_out = site.body()[len(in_body) - geo.rank + i]
            p, s, k = geo.padding[i], geo.stride[i], geo.kernel[i]
            begin = np.arange(n_out) * s - p
            lo_bound, hi_bound = (-p, n_in + p) if include else (0, n_in)
            c = np.minimum(begin + k, hi_bound) - np.maximum(begin, lo_bound)
            counts.append(np.maximum(c, 1).astype(np.float64))
        return counts

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        geo = self.geometry(site)
        x = site.args["self"]
        in_body = site.body(x)
        start, size = geo.context(window, in_body)
        ctx = frame.assemble(x, start, size, 0.0)
        op = aten.avg_pool2d if geo.rank == 2 else aten.avg_pool3d
        counts = self._counts(site, geo, in_body)
        override = site.args.get("divisor_override")
        if not override and all((c == c[0]).all() for c in counts):  # every cell divides by the same count
            override = int(np.prod([c[0] for c in counts]))  # (no padding reached): one kernel, no division
        if _channels_last_3d(ctx):  # PyTorch's CPU kernel is 6-20x slower on this layout than a strided sum
            sums = _strided_sum(ctx, geo.kernel, geo.stride)
            if override:
                return (sums.div_(override),)
        elif override:
            return (op(ctx, geo.kernel, geo.stride, [0] * geo.rank, False, True, override),)
        else:
            sums = op(ctx, geo.kernel, geo.stride, [0] * geo.rank, False, True, 1)
        return (sums / self._divisor(counts, geo, in_body, window).to(sums.device, sums.dtype),)

    def _divisor(
        self, counts: list[np.ndarray], geo: Geometry, in_body: tuple[int, ...], window: Window
    ) -> torch.Tensor:
        lead = len(in_body) - geo.rank
        total = np.ones((window.batch,) + (1,) * lead + (1,) * geo.rank)
        for i, c in enumerate(counts):
            a = lead + i
            idx = window.start[:, a : a + 1] + np.arange(window.size[a])
            shape = [window.batch] + [1] * (lead + geo.rank)
            shape[1 + a] = window.size[a]
            total = total * c[idx].reshape(shape)
        return torch.from_numpy(total)


def _channels_last_3d(x: torch.Tensor) -> bool:
    return x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)


def _strided_sum(x: torch.Tensor, kernel: list[int], stride: list[int]) -> torch.Tensor:
    """Sum pooling without padding as one strided slice per kernel tap: each slice reads rows of all
    channels in channels-last layout (avg_pool3d on a (6, 128, 24^3) channels-last window: 61 ms, this:
    3 ms). The result keeps the input's layout."""
    out = [(n - k) // s + 1 for n, k, s in zip(x.shape[2:], kernel, stride)]
    total: torch.Tensor | None = None
    for offset in itertools.product(*(range(k) for k in kernel)):
        picks = tuple(slice(o, o + s * (m - 1) + 1, s) for o, s, m in zip(offset, stride, out))
        taps = x[(slice(None), slice(None)) + picks]
        total = taps.clone(memory_format=torch.channels_last_3d) if total is None else total.add_(taps)
    assert total is not None  # a kernel has at least one tap
    return total


class AdaptiveAvgPool(Pool):
    """Adaptive average pooling whose bins are uniform (input size divisible by output size); other
    bin layouts are computed whole."""

    name = "adaptive_avg_pool"

    def applies(self, site: Site) -> bool:
        rank = len(site.args["output_size"])
        ins, outs = site.body(site.args["self"])[-rank:], site.body()[-rank:]
        return all(o > 0 and i % o == 0 for i, o in zip(ins, outs))

    def geometry(self, site: Site) -> Geometry:
        rank = len(site.args["output_size"])
        ins, outs = site.body(site.args["self"])[-rank:], site.body()[-rank:]
        k = [i // max(o, 1) for i, o in zip(ins, outs)]
        return Geometry(k, k, [0] * rank, [1] * rank)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        geo = self.geometry(site)
        x = site.args["self"]
        start, size = geo.context(window, site.body(x))
        ctx = frame.assemble(x, start, size, 0.0)
        op = aten.avg_pool2d if geo.rank == 2 else aten.avg_pool3d
        return (op(ctx, geo.kernel, geo.stride, [0] * geo.rank, False, True, None),)


class ConstantPad(Rule):
    """Constant padding (negative = crop): boxes shift by the leading pad; the context is the window."""

    name = "constant_pad"
    precise = True
    exact = True

    def _before(self, site: Site) -> list[int]:
        pad = list(site.args["pad"])
        nd = len(site.body())
        before = [0] * nd
        for i in range(len(pad) // 2):
            before[nd - 1 - i] = pad[2 * i]
        return before

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["self"]
        if box is None:
            return (None,)
        shift = np.asarray(self._before(site))
        out = Boxes.make(box.lo + shift, box.hi + shift, site.body())
        return (Boxes.make(out.lo, out.hi * box.nonempty[:, None], site.body()),)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        start = window.start - np.asarray(self._before(site))
        return (frame.assemble(site.args["self"], start, window.size, float(site.args["value"])),)


register(aten.convolution.default, Convolution())
register([aten.max_pool2d_with_indices.default, aten.max_pool3d_with_indices.default], MaxPool())
register([aten.avg_pool2d.default, aten.avg_pool3d.default], AvgPool())
register([aten._adaptive_avg_pool2d.default, aten._adaptive_avg_pool3d.default], AdaptiveAvgPool())
register(aten.constant_pad_nd.default, ConstantPad())

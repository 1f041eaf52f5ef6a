"""Reductions over axes (global pooling) and everything computed in full (linear layers).

A mean over axes is updated, not recomputed: mean(occluded) = mean(clean) + sum(changed window of
occluded - same window of clean) / N. Only the changed window is read, so global average pooling costs
no more than the window it follows. Linear/matmul ops fall to the full-recompute rule (`FULL`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from krypton.box import Boxes, Window
from krypton.rules.registry import FULL, Changes, Computed, Frame, Rule, Site, Unsupported, register

aten = torch.ops.aten


class Reduce(Rule):
    """Sum or mean over `dim` (keepdim either way); the reduced axes change whole when any input did."""

    name = "reduce"
    precise = True
    exact = True

    def __init__(self, mean: bool):
        self.mean = mean

    def _axes(self, site: Site) -> list[int]:
        rank = len(site.shape(site.args["self"]))
        dims = site.args["dim"]
        dims = list(range(rank)) if dims is None or len(dims) == 0 else [d % rank for d in dims]
        if 0 in dims:
            raise Unsupported(f"{site.call.name}: reduction over the batch axis")
        return sorted(d - 1 for d in dims)

    def _kept(self, site: Site) -> tuple[list[int], list[int]]:
        """For each output axis: the input axis it comes from (reduced axes map to themselves)."""
        reduced = self._axes(site)
        nd = len(site.body(site.args["self"]))
        if site.args["keepdim"]:
            return list(range(nd)), reduced
        return [a for a in range(nd) if a not in reduced], reduced

    def applies(self, site: Site) -> bool:
        return site.args.get("dtype") is None  # a cast inside the sum: computed whole

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["self"]
        if box is None:
            return (None,)
        kept, reduced = self._kept(site)
        lo, hi = box.lo[:, kept].copy(), box.hi[:, kept].copy()
        for j, a in enumerate(kept):
            if a in reduced:
                lo[:, j], hi[:, j] = 0, 1
        return (Boxes.make(lo, hi * box.nonempty[:, None], site.body()),)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        x = site.args["self"]
        kept, reduced = self._kept(site)
        source = frame.window_of(x)
        start = source.start.copy()
        size = list(source.size)
        for j, a in enumerate(kept):
            if a not in reduced:
                start[:, a], size[a] = window.start[:, j], window.size[j]
        occluded = frame.assemble(x, start, tuple(size))
        clean = frame.assemble(x, start, tuple(size), clean=True)
        delta = (occluded - clean).sum(dim=[a + 1 for a in reduced], keepdim=site.args["keepdim"])
        if self.mean:
            delta = delta / int(np.prod([site.body(x)[a] for a in reduced]))
        return (frame.assemble(site.call.node, window.start, window.size, clean=True) + delta,)


register(aten.mean.dim, Reduce(mean=True))
register(aten.sum.dim_IntList, Reduce(mean=False))


class Linear(Rule):
    """Matrix products (fully-connected layers): every output reads every input, so computed whole."""

    name = "linear"

    def macs_per_element(self, site: Site) -> int:
        first = site.args["mat1"] if "mat1" in site.args else site.args["self"]
        return int(site.shape(first)[-1])


register([aten.addmm.default, aten.mm.default, aten.bmm.default], Linear())


class RowLinear(Rule):
    """`linear` over the last axis (channels-last MLPs): per position on the other axes."""

    name = "row_linear"
    precise = True
    exact = True

    def _last(self, site: Site) -> int:
        return len(site.body()) - 1

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["input"]
        if box is None:
            return FULL.forward(site, boxes)  # only the weights changed: never for images
        out = site.body()
        lo, hi = box.lo.copy(), box.hi.copy()
        lo[:, -1], hi[:, -1] = 0, out[-1]
        return (Boxes.make(lo, hi * box.nonempty[:, None], out),)

    def full_axes(self, site: Site) -> tuple[int, ...]:
        return (self._last(site),)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        x = site.args["input"]
        start = window.start.copy()
        size = list(window.size)
        size[-1] = site.body(x)[-1]
        inputs = frame.assemble(x, start, tuple(size))
        bias = site.args["bias"]
        return (aten.linear(inputs, frame.clean(site.args["weight"]), None if bias is None else frame.clean(bias)),)

    def macs_per_element(self, site: Site) -> int:
        return int(site.shape(site.args["weight"])[-1])


register(aten.linear.default, RowLinear())

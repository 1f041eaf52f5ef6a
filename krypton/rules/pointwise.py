"""Element-wise ops (relu, sigmoid, add, mul, where, batch norm in eval, ...): one rule for all.

The output box is the bounding box of the changed inputs' boxes after broadcasting; a changed input
with a size-1 axis that broadcasts (a squeeze-excitation gate) changes the output's whole extent on it.
Any op tagged `torch.Tag.pointwise` uses this rule; `EXTRA` lists the untagged ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import fx

from krypton.box import Boxes, Window, union_all
from krypton.rules.registry import Changes, Computed, Frame, Rule, Site, call_op, register, register_family

aten = torch.ops.aten

# Untagged ops that are element-wise all the same (hardswish carries no pointwise tag).
EXTRA = {
    aten.hardswish.default,
    aten.hardsigmoid.default,
    aten._to_copy.default,
    aten.alias.default,
    aten.detach.default,
    aten.lift_fresh_copy.default,
}

# Tagged pointwise but not functions of their inputs alone.
EXCLUDED_TAGS = {torch.Tag.nondeterministic_seeded}


def is_pointwise(op: Any) -> bool:
    if op in EXTRA:
        return True
    tags = set(getattr(op, "tags", ()))
    return torch.Tag.pointwise in tags and not (tags & EXCLUDED_TAGS)


def broadcast_box(box: Boxes, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Boxes:
    """Map an input's box onto the output of a broadcasting op (same rank, batch axis dropped)."""
    grown = [a for a, (i, o) in enumerate(zip(in_shape, out_shape)) if i == 1 and o != 1]
    return Boxes(box.lo, box.hi).widen(tuple(grown), out_shape) if grown else box


def window_for_input(
    window: Window, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Where an input of a broadcasting op must be read: size-1 axes stay at index 0."""
    start = window.start.copy()
    size = list(window.size)
    for a, (i, o) in enumerate(zip(in_shape, out_shape)):
        if i == 1 and o != 1:
            start[:, a] = 0
            size[a] = 1
    return start, tuple(size)


class Pointwise(Rule):
    """out[i] = f(in_1[i], in_2[i], ...) with numpy broadcasting."""

    name = "pointwise"
    precise = True
    exact = True

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        out = site.body()
        mapped = []
        for node in site.call.inputs:
            box = _box_of(boxes, site, node)
            if box is not None:
                mapped.append(broadcast_box(box, site.body(node), out))
        return (union_all(mapped, out),)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        out = site.body()
        args = {}
        for name, value in site.args.items():
            args[name] = self._read(site, frame, window, value, out)
        return (call_op(site.call.target, args),)

    def _read(self, site: Site, frame: Frame, window: Window, value: Any, out: tuple[int, ...]) -> Any:
        if not isinstance(value, fx.Node):
            return value
        shape = site.shape(value)
        if shape is None or len(shape) == 0:
            return frame.clean(value)
        full_rank = (1,) * (len(out) + 1 - len(shape)) + tuple(shape)
        if all(s == 1 for s in full_rank[1:]):  # a per-batch scalar or plain constant
            return frame.clean(value).reshape(full_rank)
        start, size = window_for_input(window, full_rank[1:], out)
        return frame.assemble(value, start, size)


def _box_of(boxes: dict[str, Any], site: Site, node: fx.Node) -> Boxes | None:
    for name, value in site.args.items():
        if value is node:
            return boxes.get(name)
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                if v is node:
                    return boxes[name][i]
    return None


POINTWISE = register_family(is_pointwise, Pointwise())


class Normalisation(Rule):
    """Normalisation with statistics over some axes, applied element-wise elsewhere: a change anywhere
    in a normalised group changes the whole group, so windows span the normalised axes.

    Only output 0 is computed in windows (`primary_output_only`): the planner sends the call to the
    full-recompute rule when the saved statistics (outputs 1, 2) are read.
    """

    precise = True
    exact = True
    primary_output_only = True

    def normalised_axes(self, site: Site) -> tuple[int, ...]:
        raise NotImplementedError

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["input"]
        if box is None:
            return (None, None, None)
        return (box.widen(self.normalised_axes(site), site.body(site.args["input"])), None, None)

    def full_axes(self, site: Site) -> tuple[int, ...]:
        return self.normalised_axes(site)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        args = {k: frame.clean(v) for k, v in site.args.items()}
        args["input"] = frame.assemble(site.args["input"], window.start, window.size)
        return (call_op(site.call.target, args)[0], None, None)


class BatchNormEval(Normalisation):
    """Batch norm with running statistics: per channel, so channels are read whole."""

    name = "batch_norm_eval"

    def normalised_axes(self, site: Site) -> tuple[int, ...]:
        return (0,)


register(aten._native_batch_norm_legit_no_training.default, BatchNormEval())


class LayerNorm(Normalisation):
    """Layer norm over the trailing `normalized_shape` axes."""

    name = "layer_norm"

    def normalised_axes(self, site: Site) -> tuple[int, ...]:
        nd = len(site.shape(site.args["input"])) - 1
        k = len(site.args["normalized_shape"])
        return tuple(range(nd - k, nd))


register(aten.native_layer_norm.default, LayerNorm())

"""The rule table: one record per op, holding both directions of its geometry and its execution.

The contract, per call of an op (a `Site`):
- `applies(site)`: the one decision whether this rule handles this call precisely. The planner asks it
  once; when it says no, `FULL`'s forward and compute stand in (this rule still counts the MACs), so
  `forward` and `compute` never re-test it. A call the engine cannot batch at all raises `Unsupported`.
- `forward(site, boxes) -> Changes`: given where each tensor input changed (`Boxes` or None per
  argument), where each output can change - one entry per output, even for one-output ops (the
  paper's Eqs. 13-14, generalised);
- `full_axes(site)`: which axes of output 0 a computed window must always span (channels of a conv);
- `compute(site, frame, window) -> Computed`: each output's values inside `window` for a batch, reading
  inputs through `frame.assemble` (the paper's Eqs. 15-19); outputs the rule does not compute are None;
- `macs_per_element(site)`: the cost model shared by `analyze` and execution.
Declared flags: `precise` (the default answer of `applies`), `exact` (forward's box is tight: the
registry-driven tightness test checks every cell in it can change) and `primary_output_only` (only
output 0 is computed in windows: the planner uses `FULL` when another output is read).

Lookup is `lookup(op)`: the table, then ops tagged `pointwise`, then `FULL` - the sound default
that recomputes the whole output whenever any input changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import fx

from krypton.box import Boxes, Window
from krypton.capture import Call

# Where each output of a call can change, one entry per output (None: that output never changes).
Changes = tuple[Boxes | None, ...]
# Each output's values inside a batch's window, one entry per output (None: not computed).
Computed = tuple[torch.Tensor | None, ...]


class Unsupported(Exception):
    """The graph does something the engine cannot batch (e.g. moves the batch axis): run naive instead."""


@dataclass
class Site:
    """A call plus the static shapes a rule needs (shapes include the batch axis, size 1)."""

    call: Call
    shapes: dict[fx.Node, Any]
    static: Any = None  # callable node -> value, for nodes that do not depend on the image

    @property
    def args(self) -> dict[str, Any]:
        return self.call.args

    def shape(self, node: fx.Node | None = None) -> tuple[int, ...]:
        """Full shape of `node` (default: this call's output; output 0 of a multi-output op)."""
        shape = self.shapes[node if node is not None else self.call.node]
        return shape[0] if is_multi_output(shape) else shape

    def body(self, node: fx.Node | None = None) -> tuple[int, ...]:
        """Shape without the batch axis: the axes boxes live on."""
        return tuple(self.shape(node)[1:])


class Frame(Protocol):
    """What the executor offers a rule while it computes one call for one batch."""

    batch: int

    def assemble(
        self,
        node: fx.Node,
        start: np.ndarray,
        size: tuple[int, ...],
        pad_value: float = 0.0,
        clean: bool = False,
        output: int = 0,
    ) -> torch.Tensor:
        """Values of output `output` of `node` for every item over a window (B, *size): the batch's
        computed values where it has them, the clean run's elsewhere (only the clean run's when
        `clean`); cells outside the tensor read `pad_value`."""
        ...

    def clean(self, value: Any) -> Any:
        """The clean (batch-1) value of a node, or a non-tensor argument unchanged."""
        ...

    def whole(self, node: fx.Node) -> torch.Tensor:
        """The whole tensor for every item (B, ...); constants come back as they are."""
        ...

    def window_of(self, node: fx.Node) -> Window:
        """Where this batch computed `node` (the window of its changed values)."""
        ...


class Rule:
    """Base rule: recompute everything when anything changed (always correct)."""

    name: str = "full"
    precise: bool = False  # False: the output is recomputed whole whenever an input changed
    exact: bool = False  # forward's box is tight (checked by tests/test_rule_tightness.py)
    primary_output_only: bool = False  # computes output 0 only; other outputs must be unread

    def applies(self, site: Site) -> bool:
        """Whether this call is handled precisely (False: `FULL` stands in for forward and compute)."""
        return self.precise

    def tight(self, site: Site) -> bool:
        """Whether forward's box is tight at this call (the declared `exact`, unless a site says less)."""
        return self.exact

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        changed = _any_changed(boxes)
        if changed is None:
            return _unchanged(site)
        return _full_like(site, changed)

    def full_axes(self, site: Site) -> tuple[int, ...]:
        return ()

    def spatial_axes(self, site: Site) -> tuple[int, ...]:
        """Axes along which the op's receptive field grows (where projective-field thresholding cuts)."""
        return ()

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        """Run the op on whole, batched inputs; `window` is the whole tensor here."""
        args = {name: _whole_batch(frame, value) for name, value in site.args.items()}
        if site.call.target in VIEWS:  # our windows may be strided differently from the original tensors
            args["self"] = args["self"].contiguous()
        for name in SIZE_ARGS & args.keys():  # shapes captured at batch 1, e.g. view(x, [1, 512])
            size = args[name]
            if isinstance(size, (list, tuple)) and size and size[0] == 1:
                args[name] = [frame.batch] + list(size[1:])
        if site.call.target is torch.ops.aten.native_group_norm.default:
            args["N"] = frame.batch  # the batch size, captured as 1 (PoolFormer, MobileViTv2)
        if site.call.target in JOINS:  # values that do not depend on the image have batch 1 (ViT's class token)
            tensors = args["tensors"]
            args["tensors"] = [v.expand(frame.batch, *v.shape[1:]) if _batch_one(v, frame) else v for v in tensors]
        result = call_op(site.call.target, args)
        return tuple(result) if isinstance(result, (tuple, list)) else (result,)

    def macs_per_element(self, site: Site) -> int:
        return 0


def call_op(target: Any, args: dict[str, Any]) -> Any:
    """Call an op with schema-bound arguments (keyword-only ones passed by keyword)."""
    if not hasattr(target, "_schema"):
        return target(*args.values())
    positional, keywords = [], {}
    for arg in target._schema.arguments:
        if arg.kwarg_only:
            keywords[arg.name] = args[arg.name]
        else:
            positional.append(args[arg.name])
    return target(*positional, **keywords)


def _batch_one(value: Any, frame: Frame) -> bool:
    return isinstance(value, torch.Tensor) and frame.batch > 1 and value.dim() > 0 and value.shape[0] == 1


def _whole_batch(frame: Frame, value: Any) -> Any:
    if isinstance(value, fx.Node):
        return frame.whole(value)
    if isinstance(value, (list, tuple)) and any(isinstance(v, fx.Node) for v in value):
        return [frame.whole(v) if isinstance(v, fx.Node) else v for v in value]
    return value


def _any_changed(boxes: dict[str, Any]) -> np.ndarray | None:
    """(P,) bool of positions where any input changed, or None when no input can change."""
    flags = None
    for value in boxes.values():
        items = value if isinstance(value, list) else [value]
        for b in items:
            if b is None:
                continue
            flags = b.nonempty if flags is None else (flags | b.nonempty)
    return flags


def output_shapes(site: Site) -> list[tuple[int, ...] | None]:
    """Shape of each output of the call (a multi-output op's shapes are recorded as a tuple of tuples)."""
    shape = site.shapes[site.call.node]
    return list(shape) if is_multi_output(shape) else [shape]


def is_multi_output(shape: Any) -> bool:
    """Whether a recorded shape is that of a multi-output op (a tuple of shapes, None for non-tensors)."""
    return bool(shape) and not isinstance(shape[0], int)


def _unchanged(site: Site) -> Changes:
    return (None,) * len(output_shapes(site))


def _full_like(site: Site, where: np.ndarray) -> Changes:
    count = where.shape[0]
    return tuple(Boxes.full(count, tuple(s[1:]), where) if s else None for s in output_shapes(site))


# Arguments holding a full output shape whose leading 1 is the batch axis.
SIZE_ARGS = {"size", "shape"}
JOINS = {torch.ops.aten.cat.default, torch.ops.aten.stack.default}  # batch-1 inputs do not broadcast
VIEWS = {torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default, torch.ops.aten.as_strided.default}

FULL = Rule()
RULES: dict[Any, Rule] = {}


def register(ops: Any, rule: Rule) -> Rule:
    """Add `rule` for one op overload or a list of them; a duplicate is a bug."""
    for op in ops if isinstance(ops, (list, tuple)) else [ops]:
        if op in RULES:
            raise ValueError(f"duplicate rule for {op}")
        RULES[op] = rule
    return rule


# Rules for whole families of ops recognised by a predicate (e.g. ops tagged pointwise), asked in order
# after the table; the modules defining them register here, so the registry imports none of them.
FAMILIES: list[tuple[Any, Rule]] = []


def register_family(predicate: Any, rule: Rule) -> Rule:
    """Use `rule` for every op not in the table for which `predicate(op)` is true."""
    FAMILIES.append((predicate, rule))
    return rule


def lookup(op: Any) -> Rule:
    """The rule for `op`: the table, then the families (pointwise-tagged ops), then the full default."""
    if op in RULES:
        return RULES[op]
    for predicate, rule in FAMILIES:
        if predicate(op):
            return rule
    return FULL

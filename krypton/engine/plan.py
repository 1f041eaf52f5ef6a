"""Planning: propagate occlusion boxes through the graph for every position, then batch positions.

Stage 3 of the pipeline (capture → box → rules → **plan** → execute). `propagate` walks the captured
calls once, vectorised over all P positions, and records each call's rule and output boxes. `window`
turns a batch's boxes into the one window per tensor that the batch computes; `cost` counts the
multiply-accumulates (MACs) of a batch from the same windows, so `analyze` and execution never disagree.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import fx

from krypton.box import Boxes, Window
from krypton.capture import Call, Graph
from krypton.engine.materialize import static_values
from krypton.rules import FULL, Rule, Site, lookup
from krypton.rules.registry import Changes, Unsupported, is_multi_output

# A window covering at least this fraction of its tensor is computed whole (plain batched op).
DENSE_FRACTION = 0.9


@dataclass
class Step:
    """One call with its rule and, for every position, the box where each output can change."""

    call: Call
    site: Site
    rule: Rule  # the op's rule (its name, cost and spatial axes)
    boxes: Changes
    body: tuple[int, ...]  # shape (no batch axis) of output 0, the one windows are computed for
    full_axes: tuple[int, ...]
    macs: int  # multiply-accumulates per output element
    precise: bool  # the rule's one `applies` decision; False: computed whole whenever a batch changes it
    windows: dict[bytes, Window | None] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def primary(self) -> Boxes | None:
        """Boxes of output 0 (other outputs are computed whole, or not at all)."""
        return self.boxes[0]

    @property
    def computes(self) -> Rule:
        """The rule that computes this call: its own when it applies, else the full-recompute default."""
        return self.rule if self.precise else FULL

    @property
    def whole_macs(self) -> int:
        return self.macs * int(np.prod(self.body))


@dataclass
class Plan:
    graph: Graph
    image_boxes: Boxes
    steps: list[Step]
    fallbacks: list[tuple[str, str]] = field(default_factory=list)  # (node, op) computed in full
    untouched_macs: int = 0  # calls that depend on parameters only (run once, clean)
    suffix: list[Call] = field(default_factory=list)  # image-dependent calls run per position (partial graph)
    suffix_macs: int = 0  # MACs of the suffix for one position
    suffix_reads: list[fx.Node] = field(default_factory=list)  # values from before the cut the suffix reads
    _naive_macs: int | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def count(self) -> int:
        return self.image_boxes.count

    def naive_macs(self) -> int:
        """MACs of one full forward pass (convolutions and matrix products); summed once (every run's
        statistics ask, and a small model's run is a few dozen milliseconds)."""
        if self._naive_macs is None:
            self._naive_macs = sum(s.whole_macs for s in self.steps) + self.untouched_macs + self.suffix_macs
        return self._naive_macs


def choose_rule(call: Call) -> Rule:
    """The call's rule; multi-output rules computing only output 0 yield when others are used."""
    rule = lookup(call.target)
    if rule.primary_output_only:
        for user in call.node.users:
            if user.target is operator.getitem and user.args[1] != 0 and user.users:
                return FULL
    return rule


def _boxes_for_args(call: Call, env: dict[fx.Node, Changes], shapes: dict[fx.Node, Any]) -> dict[str, Any]:
    """Per tensor argument, where it changed: `Boxes | None` (a list for tensor lists); the argument of a
    `getitem` - a multi-output op - gets all its outputs' `Changes`."""

    def changes(node: fx.Node) -> Any:
        found = env.get(node)
        if found is None or is_multi_output(shapes[node]):
            return found
        return found[0]

    boxes: dict[str, Any] = {}
    for name, value in call.args.items():
        if isinstance(value, fx.Node):
            boxes[name] = changes(value)
        elif isinstance(value, (list, tuple)) and any(isinstance(v, fx.Node) for v in value):
            boxes[name] = [changes(v) if isinstance(v, fx.Node) else None for v in value]
    return boxes


def _primary_body(shape: Any) -> tuple[int, ...]:
    if is_multi_output(shape):
        return tuple(shape[0][1:])
    return tuple(shape[1:]) if shape else ()


# (site, rule, output boxes, input boxes by argument name) -> output boxes: approximations live here
BoxTransform = Callable[[Site, Rule, Boxes, dict[str, Any]], Boxes]


def propagate(graph: Graph, image_boxes: Boxes, transform: BoxTransform | None = None) -> Plan:
    """Boxes of every call for every position (one walk over the graph, vectorised over positions).

    `transform`, when given, rewrites each call's output boxes between rules: approximations
    (projective-field thresholding) live there, never inside the rules.
    """
    env: dict[fx.Node, Changes] = {graph.image: (image_boxes,)}
    static = static_values(graph)
    steps: list[Step] = []
    fallbacks: list[tuple[str, str]] = []
    untouched = 0
    for call in graph.calls:
        site = Site(call, graph.shapes, static)
        rule = choose_rule(call)
        boxes_in = _boxes_for_args(call, env, graph.shapes)
        if graph.shapes[call.node] is None:
            continue  # returns no tensor (e.g. aten._assert_tensor_metadata): nothing to track
        if not any(v is not None and (not isinstance(v, list) or any(v)) for v in boxes_in.values()):
            untouched += rule.macs_per_element(site) * int(np.prod(_primary_body(graph.shapes[call.node])))
            continue  # depends on parameters only: computed once, in the clean pass
        try:
            precise = rule.applies(site)
            out = (rule if precise else FULL).forward(site, boxes_in)
        except Unsupported as exc:  # the batch axis moves here: the rest of the graph runs per position
            reason = f"{exc} [at {call.node.format_node()}]"
            plan = Plan(graph, image_boxes, steps, fallbacks)
            plan.untouched_macs = untouched
            return _with_suffix(plan, graph.calls[graph.calls.index(call) :], set(env), static, reason)
        except Exception as exc:
            raise type(exc)(f"{exc} [at {call.node.format_node()}]") from exc
        if all(b is None for b in out):
            continue
        if transform is not None and out[0] is not None:
            out = (transform(site, rule, out[0], boxes_in),) + out[1:]
        env[call.node] = out
        if not precise:
            fallbacks.append((call.name, call.op_name))
        body = _primary_body(graph.shapes[call.node])
        macs = rule.macs_per_element(site)
        steps.append(Step(call, site, rule, out, body, rule.full_axes(site), macs, precise))
    plan = Plan(graph, image_boxes, steps, fallbacks)
    plan.untouched_macs = untouched
    return plan


def _with_suffix(plan: Plan, rest: list[Call], changed: set[fx.Node], static: Any, reason: str) -> Plan:
    """A partial graph: the steps so far run incrementally, `rest` (from the call whose rule cannot keep
    the batch axis, e.g. attention folding it into heads) runs per position at batch 1, as captured.

    Raises Unsupported (whole run naive) when the cut would read a multi-output value."""
    graph = plan.graph
    for call in rest:
        if graph.shapes[call.node] is None:
            continue
        body = int(np.prod(_primary_body(graph.shapes[call.node])))
        try:
            macs = lookup(call.target).macs_per_element(Site(call, graph.shapes, static)) * body
        except Exception:  # noqa: BLE001 - an op the rules do not describe costs what its MACs say: none
            macs = 0
        if any(n in changed for n in call.inputs):
            changed.add(call.node)
            plan.suffix.append(call)
            plan.suffix_macs += macs
        else:
            plan.untouched_macs += macs
    before = {s.call.node for s in plan.steps} | {graph.image}
    reads = {n: None for call in plan.suffix for n in call.inputs if n in before and n in changed}
    if any(is_multi_output(graph.shapes[n]) for n in reads) or graph.output not in changed:
        raise Unsupported(reason)
    plan.suffix_reads = list(reads)
    first = rest[0]
    plan.fallbacks.append((first.name, f"{first.op_name} and the {len(plan.suffix)} image-dependent calls after it, "
                                       f"per position (batch axis folded)"))  # fmt: skip
    return plan


WINDOWS_KEPT = 128  # windows remembered per step: a run's batches (2 x 41 for Inception3: grouped, row-major)


def window(step: Step, index: np.ndarray) -> Window | None:
    """The window a batch of positions computes for `step`'s output; None if none of them changes it.

    Remembered per step and batch: grouping, the shared tail and execution each ask for every batch,
    and on a small model those small-array computations cost as much as the batch's arithmetic (a
    Conv1d net at 1 ms/position). The window's start is read-only, shared by every asker."""
    key = np.asarray(index, dtype=np.int64).tobytes()
    if key not in step.windows:
        if len(step.windows) >= WINDOWS_KEPT:
            step.windows.clear()
        found = _window(step, index)
        if found is not None:
            found.start.setflags(write=False)
        step.windows[key] = found
    return step.windows[key]


def _window(step: Step, index: np.ndarray) -> Window | None:
    boxes = step.primary
    if boxes is None:
        return None
    picked = boxes.take(index)
    if not picked.any():
        return None
    if not step.precise:
        return Window.whole(len(index), step.body)
    win = Window.cover(picked, step.body, step.full_axes)
    if win.numel() >= DENSE_FRACTION * int(np.prod(step.body)):
        return Window.whole(len(index), step.body)
    return win


def shared_tail(plan: Plan, groups: list[np.ndarray]) -> int:
    """Index of the first step of the shared tail of a batching (len(steps) if there is none).

    From there on every batch of `groups` computes a window of the same size for each step (whole
    tensors in deep layers of exact runs, capped regions under thresholding). Merging batches then
    changes no item's window - each item's start stays where its own batch put it - so the tail can
    run on many batches at once for the same MACs: VGG16's fully-connected head reads 400 MB of
    weights per call, and ResNet18's last stage under thresholding runs its 5x5 windows faster per
    MAC at 128 positions than at 32. Values the tail reads from before it must be single tensors
    (not tuples of a multi-output op).
    """
    start = len(plan.steps)
    while start > 0 and _same_size_in_every_batch(plan.steps[start - 1], groups):
        start -= 1
    while start < len(plan.steps) and any(is_multi_output(plan.graph.shapes[n]) for n in tail_reads(plan, start)):
        start += 1
    return start


def _same_size_in_every_batch(step: Step, groups: list[np.ndarray]) -> bool:
    if step.primary is None:
        return True  # never computed: consumers read the clean value in any batch
    sizes = set()
    for index in groups:
        win = window(step, index)
        if win is None:
            return False  # merging would compute it for positions that do not change it
        sizes.add(win.size)
        if len(sizes) > 1:
            return False
    return True


def tail_reads(plan: Plan, start: int) -> list[fx.Node]:
    """Image-dependent values computed before step `start` that steps from `start` on read."""
    before = {s.call.node for s in plan.steps[:start]} | {plan.graph.image}
    reads: dict[fx.Node, None] = {}
    for step in plan.steps[start:]:
        reads.update((n, None) for n in step.call.inputs if n in before)
    if start == len(plan.steps) and plan.graph.output in before:
        reads[plan.graph.output] = None
    return list(reads)


def batch_macs(plan: Plan, index: np.ndarray) -> int:
    """MACs that computing these positions as one batch costs."""
    total = plan.suffix_macs * len(index)
    for step in plan.steps:
        if step.macs == 0:
            continue
        win = window(step, index)
        if win is not None:
            total += step.macs * win.numel() * len(index)
    return total


def position_macs(plan: Plan) -> np.ndarray:
    """(P,) MACs of each position computed alone with its exact boxes (the per-position limit)."""
    total = np.full(plan.count, float(plan.suffix_macs))
    for step in plan.steps:
        if step.macs == 0 or step.primary is None:
            continue
        if not step.precise:
            total += step.whole_macs * step.primary.nonempty
        else:
            widened = step.primary.widen(step.full_axes, step.body)
            total += step.macs * widened.volume()
    return total


def batches(plan: Plan, batch_size: int, subset: np.ndarray | None = None) -> list[np.ndarray]:
    """Split positions into batches, grouping positions whose windows have the same shape.

    One window per batch pays for its largest member; positions at the same distance from the border
    have equal windows at every layer, so grouping them keeps most of the border saving. Row-major
    order is kept when it is predicted to be cheaper.
    """
    members = np.arange(plan.count) if subset is None else np.asarray(subset)
    count = len(members)
    row_major = [members[i : i + batch_size] for i in range(0, count, batch_size)]
    if count <= batch_size:
        return row_major
    sizes = [s.primary.widen(s.full_axes, s.body).sizes() for s in plan.steps if s.macs and s.primary is not None]
    if not sizes:
        return row_major
    signature = np.concatenate(sizes, axis=1)[members]
    _, group = np.unique(signature, axis=0, return_inverse=True)
    group = group.reshape(-1)
    cost = position_macs(plan)[members]
    order = members[np.lexsort((np.arange(count), group, -cost))]
    grouped = [order[i : i + batch_size] for i in range(0, count, batch_size)]
    grouped_cost = sum(batch_macs(plan, b) for b in grouped)
    row_cost = sum(batch_macs(plan, b) for b in row_major)
    return grouped if grouped_cost <= row_cost else row_major

"""Batched incremental inference: compute only each batch's windows, read the rest from the clean run.

Stage 4b of the pipeline. For every batch of positions the walker visits the planned steps in graph
order; each step's rule computes the step's window from its inputs' windows (through `read_window`)
and the materialised clean values. A step whose window and inputs are whole runs as a plain batched op.
Values are dropped after their last use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import fx

from krypton.box import Boxes, Window
from krypton.capture import constant
from krypton.engine.gather import PaddedCache, WindowValues, read_window
from krypton.engine.plan import Plan, Step, shared_tail, tail_reads, window
from krypton.rules import FULL
from krypton.rules.registry import Computed, is_multi_output


class BatchFrame:
    """The executor's side of `rules.Frame` for one batch: each computed node's values (one
    `WindowValues` per output, None where an output was not computed) over the clean run's."""

    def __init__(self, clean: dict[fx.Node, Any], batch: int, cache: PaddedCache, derived: set[fx.Node]):
        self.clean_values = clean
        self.batch = batch
        self.cache = cache
        self.image_derived = derived  # nodes that depend on the image (they have a batch axis)
        self.state: dict[fx.Node, tuple[WindowValues | None, ...]] = {}

    def clean(self, value: Any) -> Any:
        return self.clean_values[value] if isinstance(value, fx.Node) else value

    def computed(self, node: fx.Node, output: int = 0) -> WindowValues | None:
        """What this batch computed for one output of `node` (None: it reads the clean run's)."""
        found = self.state.get(node)
        return None if found is None else found[output]

    def window_of(self, node: fx.Node) -> Window:
        values = self.computed(node)
        assert values is not None, f"{node} was not computed in this batch"
        return Window(values.start, values.size)

    def assemble(
        self,
        node: fx.Node,
        start: np.ndarray,
        size: tuple[int, ...],
        pad_value: float = 0.0,
        clean: bool = False,
        output: int = 0,
    ) -> torch.Tensor:
        value = self.clean(node)
        if isinstance(value, (tuple, list)):
            value = value[output]
        if value.dim() < len(size) + 1:
            value = value.reshape((1,) * (len(size) + 1 - value.dim()) + tuple(value.shape))
        computed = None if clean else self.computed(node, output)
        return read_window(value, computed, start, size, pad_value, self.cache)

    def whole(self, node: fx.Node) -> torch.Tensor:
        computed = self.computed(node)
        clean = self.clean_values[node]
        if computed is not None and computed.size == tuple(clean.shape[1:]):
            return computed.data
        if computed is None and node not in self.image_derived:
            return clean
        size = tuple(clean.shape[1:])
        return self.assemble(node, np.zeros((self.batch, len(size)), dtype=np.int64), size)


def _placed(result: Computed, win: Window) -> tuple[WindowValues | None, ...]:
    """Place each computed output at the batch's window (an output computed whole - a secondary output
    of a whole op - at the origin)."""
    placed: list[WindowValues | None] = []
    for values in result:
        if not isinstance(values, torch.Tensor):
            placed.append(None)
        elif tuple(values.shape[1:]) != tuple(win.size):
            placed.append(WindowValues(values, np.zeros((win.batch, values.dim() - 1), dtype=np.int64)))
        else:
            placed.append(WindowValues(values, win.start))
    return tuple(placed)


def _last_uses(plan: Plan) -> dict[fx.Node, list[fx.Node]]:
    """For each step, the values whose last reader it is (to free them early)."""
    order = {s.call.node: i for i, s in enumerate(plan.steps)}
    last: dict[fx.Node, int] = {}
    for i, step in enumerate(plan.steps):
        for node in step.call.inputs:
            if node in order:
                last[node] = i
    for kept in [plan.graph.output, *plan.suffix_reads]:  # read after the steps: never freed
        if kept in order:
            last[kept] = len(plan.steps)
    freed: dict[fx.Node, list[fx.Node]] = {}
    for node, i in last.items():
        if i < len(plan.steps):
            freed.setdefault(plan.steps[i].call.node, []).append(node)
    return freed


class IncrementalRunner:
    """Runs batches of positions of one plan against one set of materialised values.

    Given the batching (`groups`), `run_head(index)` walks a batch up to
    its shared tail (the steps whose window has the same size in every batch) and returns the whole
    tensors the tail reads; `run_tail` then runs the tail once for several heads, as one larger batch.
    """

    def __init__(
        self,
        plan: Plan,
        clean: dict[fx.Node, Any],
        occluded: OccludedInput,
        groups: list[np.ndarray] | None = None,
        cache: PaddedCache | None = None,
    ):
        self.plan = plan
        self.clean = clean
        self.occluded = occluded
        self.cache = cache if cache is not None else PaddedCache()
        self.freed = _last_uses(plan)
        self.derived = {plan.graph.image} | {s.call.node for s in plan.steps}
        self.tail = shared_tail(plan, groups) if groups and not plan.suffix else len(plan.steps)
        self.tail_inputs = plan.suffix_reads if plan.suffix else tail_reads(plan, self.tail)

    @torch.no_grad()
    def run_head(self, index: np.ndarray) -> tuple[list[torch.Tensor], int]:
        """The whole values (B, ...) the shared tail reads, for the positions `index`; MACs spent."""
        frame = BatchFrame(self.clean, len(index), self.cache, self.derived)
        frame.state[self.plan.graph.image] = (self.occluded.window(index, self.cache),)
        macs = self._walk(frame, self.plan.steps[: self.tail], index)
        return [frame.whole(node) for node in self.tail_inputs], macs

    @torch.no_grad()
    def run_tail(self, heads: list[list[torch.Tensor]], indices: list[np.ndarray]) -> tuple[torch.Tensor, int]:
        """Model outputs for the concatenated batches of `heads` (positions `indices`), and the tail's MACs."""
        values = [torch.cat(parts) if len(heads) > 1 else parts[0] for parts in zip(*heads)]
        index = np.concatenate(indices)
        batch = len(index)
        frame = BatchFrame(self.clean, batch, self.cache, self.derived)
        for node, value in zip(self.tail_inputs, values):
            frame.state[node] = (WindowValues(value, np.zeros((batch, value.dim() - 1), dtype=np.int64)),)
        steps = self.plan.steps[self.tail :]
        macs = self._walk(frame, steps, index)
        if self.plan.suffix:
            return self._suffix(frame), macs + self.plan.suffix_macs * batch
        return frame.whole(self.plan.graph.output), macs

    def _suffix(self, frame: BatchFrame) -> torch.Tensor:
        """A partial graph's rest, position by position at batch 1 (the captured shapes fold the batch
        axis, so only batch 1 is right): each item's values at the cut, the clean ones elsewhere."""
        cut = {node: frame.whole(node) for node in self.tail_inputs}

        weights = _own_constants(self.plan)

        def at_cut(i: int) -> dict[fx.Node, Any]:
            return weights | {node: _laid_out_as(value[i : i + 1], self.clean[node]) for node, value in cut.items()}

        return torch.cat([_run_suffix(self.plan, at_cut(i), self.clean) for i in range(frame.batch)])

    def _walk(self, frame: BatchFrame, steps: list[Step], index: np.ndarray) -> int:
        """Compute `steps` for the positions `index` (the frame's batch); MACs spent."""
        macs = 0
        for step in steps:
            win = window(step, index)
            if win is None:
                continue
            frame.state[step.call.node] = self._step(step, frame, win)
            macs += step.macs * win.numel() * frame.batch
            for node in self.freed.get(step.call.node, []):
                frame.state.pop(node, None)
        return macs

    def _step(self, step: Step, frame: BatchFrame, win: Window) -> tuple[WindowValues | None, ...]:
        rule = step.computes
        if win.is_whole(step.body) and all(self._whole_or_clean(frame, n) for n in step.call.inputs):
            rule = FULL  # whole window, whole inputs: the plain batched op is the fastest way
        return _placed(rule.compute(step.site, frame, win), win)

    def _whole_or_clean(self, frame: BatchFrame, node: fx.Node) -> bool:
        if is_multi_output(self.plan.graph.shapes[node]):
            return False  # read per output, through the getitem rule
        computed = frame.computed(node)
        return computed is None or computed.size == tuple(self.clean[node].shape[1:])


def _laid_out_as(value: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """`value` with the clean value's strides: the suffix replays captured ops, and a captured `view`
    fails on the engine's channels-last windows where the model's own tensor was contiguous (MobileViT)."""
    if value.stride() == clean.stride():
        return value
    return torch.empty_strided(clean.shape, clean.stride(), dtype=value.dtype, device=value.device).copy_(value)


def _own_constants(plan: Plan) -> dict[fx.Node, Any]:
    """The model's own values of the constants the suffix reads. The suffix replays captured ops as the
    model ran them; the clean values hold channels-last copies of convolution weights instead, whose
    outputs a captured `view` cannot take (MobileViT)."""
    return {n: constant(plan.graph, n) for call in plan.suffix for n in call.inputs if n.op == "get_attr"}


def _run_suffix(plan: Plan, env: dict[fx.Node, Any], clean: dict[fx.Node, Any]) -> torch.Tensor:
    """The suffix for one item: `env` holds its values at the cut and the model's own constants
    (`_own_constants`); everything else reads `clean`."""
    for call in plan.suffix:
        node, target = call.node, call.target  # call_function nodes: the target is the op
        args = _values(tuple(node.args), env, clean)
        env[node] = target(*args, **_values(dict(node.kwargs), env, clean))
    return env[plan.graph.output]


@torch.no_grad()
def suffix_seconds(plan: Plan, clean: dict[fx.Node, Any]) -> float:
    """Seconds one position spends in a partial graph's suffix (run once on the clean values, at batch 1
    as the engine runs it): a floor under the engine's time per position that MACs do not show (LeViT-
    128s: a plan saving 1.89x of the MACs ran at 15.7 ms/position against naive's 7.1)."""
    started = time.perf_counter()
    _run_suffix(plan, _own_constants(plan) | {node: clean[node] for node in plan.suffix_reads}, clean)
    return time.perf_counter() - started


def _values(arg: Any, env: dict[fx.Node, Any], clean: dict[fx.Node, Any]) -> Any:
    """An fx argument with its nodes replaced by this item's values (`env`) or the clean run's."""
    if isinstance(arg, fx.Node):
        return env[arg] if arg in env else clean[arg]
    if isinstance(arg, (list, tuple)):
        return type(arg)(_values(a, env, clean) for a in arg)
    if isinstance(arg, dict):
        return {k: _values(v, env, clean) for k, v in arg.items()}
    return arg


Occluder = Callable[[torch.Tensor], torch.Tensor]  # clean windows (B, C, *size) -> occluded windows


class OccludedInput:
    """The occluded part of the input for each position (the values the first layer's windows read).

    Either a `patch` (values relative to each box's corner, all boxes the same size: the paper's
    occlusion patch), a `baseline` (absolute values broadcastable to the image: Captum's baselines,
    boxes of any size, e.g. cropped at the border) or an `occluder` (a function of the clean window
    under each box, vectorised over the batch, all boxes the same size: MONAI's Gaussian and
    mean-of-patch occlusions, whose values depend on the image under the mask).
    """

    def __init__(
        self,
        image: torch.Tensor,
        lo: np.ndarray,
        hi: np.ndarray,
        patch: torch.Tensor | None = None,
        baseline: torch.Tensor | None = None,
        occluder: Occluder | None = None,
    ):
        self.image = image  # (1, *shape)
        self.lo, self.hi = lo, hi
        self.patch, self.occluder = patch, occluder
        self.baseline = None if baseline is None else baseline.expand_as(image).contiguous()

    def window(self, index: np.ndarray, cache: PaddedCache) -> WindowValues:
        """The occluded values of the positions `index`, over the window that covers each one's box."""
        if self.patch is not None:
            size = tuple(self.patch.shape)
            return WindowValues(self.patch.unsqueeze(0).expand((len(index),) + size), self.lo[index])
        if self.occluder is not None:
            size = tuple(int(n) for n in self.hi[index[0]] - self.lo[index[0]])
            clean = read_window(self.image, None, self.lo[index], size, 0.0, cache)
            return WindowValues(self.occluder(clean), self.lo[index])
        boxes = Boxes(self.lo[index], self.hi[index])
        body = tuple(self.image.shape[1:])
        win = Window.cover(boxes, body)
        clean = read_window(self.image, None, win.start, win.size, 0.0, cache)
        assert self.baseline is not None  # one of patch, occluder, baseline is always given
        filled = read_window(self.baseline, None, win.start, win.size, 0.0, cache)
        inside = torch.ones((len(index),) + (1,) * len(body), dtype=torch.bool)
        for a in range(len(body)):
            cells = win.start[:, a : a + 1] + np.arange(win.size[a])
            axis = (cells >= boxes.lo[:, a : a + 1]) & (cells < boxes.hi[:, a : a + 1])
            shape = [len(index)] + [1] * len(body)
            shape[1 + a] = win.size[a]
            inside = inside & torch.from_numpy(axis).reshape(shape)
        inside = inside.to(clean.device)
        return WindowValues(torch.where(inside, filled, clean), win.start)

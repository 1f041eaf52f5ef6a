"""Batched incremental inference: compute only each batch's windows, read the rest from the clean run.

Stage 4b of the pipeline. For every batch of positions the walker visits the planned steps in graph
order; each step's rule computes the step's window from its inputs' windows (through `read_window`)
and the materialised clean values. A step whose window and inputs are whole runs as a plain batched op.
Values are dropped after their last use.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import fx

from krypton.box import Boxes, Window
from krypton.engine.gather import Delta, PaddedCache, read_window
from krypton.engine.plan import Plan, Step, shared_tail, tail_reads, window
from krypton.rules import FULL


class BatchFrame:
    """The executor's side of `rules.Frame` for one batch."""

    def __init__(self, base: dict[fx.Node, Any], batch: int, cache: PaddedCache, derived: set):
        self.base_values = base
        self.batch = batch
        self.cache = cache
        self.image_derived = derived  # nodes that depend on the image (they have a batch axis)
        self.state: dict[fx.Node, Any] = {}

    def base(self, value: Any) -> Any:
        return self.base_values[value] if isinstance(value, fx.Node) else value

    def window_of(self, node: fx.Node) -> Window:
        delta = self.state[node]
        return Window(delta.start, delta.size)

    def assemble(
        self, node: Any, start: np.ndarray, size: tuple[int, ...], pad_value: float = 0.0, clean: bool = False
    ) -> torch.Tensor:
        base = self.base(node)
        if base.dim() < len(size) + 1:
            base = base.reshape((1,) * (len(size) + 1 - base.dim()) + tuple(base.shape))
        delta = None if clean else self.state.get(node) if isinstance(node, fx.Node) else None
        return read_window(base, delta, start, size, pad_value, self.cache)

    def whole(self, node: fx.Node) -> torch.Tensor:
        delta = self.state.get(node)
        base = self.base_values[node]
        if delta is not None and tuple(delta.size) == tuple(base.shape[1:]):
            return delta.data
        if delta is None and node not in self.image_derived:
            return base
        size = tuple(base.shape[1:])
        return self.assemble(node, np.zeros((self.batch, len(size)), dtype=np.int64), size)


def _wrap(result: Any, win: Window) -> Any:
    """Attach window placement to a rule's output (tuples for multi-output ops)."""
    if isinstance(result, (tuple, list)):
        return tuple(_wrap(r, win) if isinstance(r, torch.Tensor) else None for r in result)
    if not isinstance(result, torch.Tensor):
        return None
    if tuple(result.shape[1:]) != tuple(win.size):  # e.g. a secondary output of a whole op
        return Delta(result, np.zeros((win.batch, result.dim() - 1), dtype=np.int64))
    return Delta(result, win.start)


def _last_uses(plan: Plan) -> dict[fx.Node, list[fx.Node]]:
    """For each step, the values whose last reader it is (to free them early)."""
    order = {s.call.node: i for i, s in enumerate(plan.steps)}
    last: dict[fx.Node, int] = {}
    for i, step in enumerate(plan.steps):
        for node in step.call.inputs:
            if node in order:
                last[node] = i
    out = plan.graph.output
    if out in order:
        last[out] = len(plan.steps)
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
        self, plan: Plan, base: dict[fx.Node, Any], image_delta: ImageDelta, groups: list[np.ndarray] | None = None
    ):
        self.plan = plan
        self.base = base
        self.image_delta = image_delta
        self.cache = PaddedCache()
        self.freed = _last_uses(plan)
        self.derived = {plan.graph.image} | {s.call.node for s in plan.steps}
        self.tail = shared_tail(plan, groups) if groups else len(plan.steps)
        self.tail_inputs = tail_reads(plan, self.tail)

    @torch.no_grad()
    def run_head(self, index: np.ndarray) -> tuple[list[torch.Tensor], int]:
        """The whole values (B, ...) the shared tail reads, for the positions `index`; MACs spent."""
        frame = BatchFrame(self.base, len(index), self.cache, self.derived)
        frame.state[self.plan.graph.image] = self.image_delta.delta(index, self.cache)
        macs = self._walk(frame, self.plan.steps[: self.tail], index)
        return [frame.whole(node) for node in self.tail_inputs], macs

    @torch.no_grad()
    def run_tail(self, heads: list[list[torch.Tensor]], indices: list[np.ndarray]) -> tuple[torch.Tensor, int]:
        """Model outputs for the concatenated batches of `heads` (positions `indices`), and the tail's MACs."""
        values = [torch.cat(parts) if len(heads) > 1 else parts[0] for parts in zip(*heads)]
        index = np.concatenate(indices)
        batch = len(index)
        frame = BatchFrame(self.base, batch, self.cache, self.derived)
        for node, value in zip(self.tail_inputs, values):
            frame.state[node] = Delta(value, np.zeros((batch, value.dim() - 1), dtype=np.int64))
        steps = self.plan.steps[self.tail :]
        macs = self._walk(frame, steps, index)
        return frame.whole(self.plan.graph.output), macs

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

    def _step(self, step: Step, frame: BatchFrame, win: Window) -> Any:
        call = step.call
        if call.target is operator.getitem:
            parent = frame.state.get(call.args["self"])
            return None if parent is None else parent[call.args["index"]]
        if win.is_whole(step.body) and all(self._whole_or_clean(frame, n) for n in call.inputs):
            return _wrap(FULL.compute(step.site, frame, win), win)
        return _wrap(step.rule.compute(step.site, frame, win), win)

    def _whole_or_clean(self, frame: BatchFrame, node: fx.Node) -> bool:
        delta = frame.state.get(node)
        if delta is None:
            return True
        return tuple(delta.size) == tuple(self.base[node].shape[1:])


Occluder = Callable[[torch.Tensor], torch.Tensor]  # clean windows (B, C, *size) -> occluded windows


class ImageDelta:
    """The occluded part of the image for each position.

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

    def delta(self, index: np.ndarray, cache: PaddedCache) -> Delta:
        if self.patch is not None:
            size = tuple(self.patch.shape)
            return Delta(self.patch.unsqueeze(0).expand((len(index),) + size), self.lo[index])
        if self.occluder is not None:
            size = tuple(int(n) for n in self.hi[index[0]] - self.lo[index[0]])
            clean = read_window(self.image, None, self.lo[index], size, 0.0, cache)
            return Delta(self.occluder(clean), self.lo[index])
        boxes = Boxes(self.lo[index], self.hi[index])
        body = tuple(self.image.shape[1:])
        win = Window.cover(boxes, body)
        clean = read_window(self.image, None, win.start, win.size, 0.0, cache)
        filled = read_window(self.baseline, None, win.start, win.size, 0.0, cache)
        inside = torch.ones((len(index),) + (1,) * len(body), dtype=torch.bool)
        for a in range(len(body)):
            cells = win.start[:, a : a + 1] + np.arange(win.size[a])
            axis = (cells >= boxes.lo[:, a : a + 1]) & (cells < boxes.hi[:, a : a + 1])
            shape = [len(index)] + [1] * len(body)
            shape[1 + a] = win.size[a]
            inside = inside & torch.from_numpy(axis).reshape(shape)
        inside = inside.to(clean.device)
        return Delta(torch.where(inside, filled, clean), win.start)

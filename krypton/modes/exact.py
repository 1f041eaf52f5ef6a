"""Exact mode: batched incremental inference over a captured graph; same numbers as naive."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from krypton.capture import Graph
from krypton.engine.gather import PaddedCache
from krypton.engine.incremental import IncrementalRunner
from krypton.engine.materialize import materialize
from krypton.engine.plan import BoxTransform, Plan, batches, propagate
from krypton.modes.occlusions import Collector, Occlusions

MAX_BATCH = 32
MAX_TAIL_BATCH = 128  # positions per call of the shared tail (VGG16's 400 MB fc1 weights are read once per call)
TAIL_BYTES = 16 << 20  # the shared tail's largest tensor, for all positions of one call
MEMORY_BUDGET = 2 << 30  # bytes for one batch's windows, unless batch_size is given


def plan_for(graph: Graph, occlusions: Occlusions, transform: BoxTransform | None = None) -> Plan:
    return propagate(graph, occlusions.boxes(), transform)


def auto_batch(plan: Plan, budget: int = MEMORY_BUDGET) -> int:
    """Largest batch (<= MAX_BATCH) whose windows, all held at once, fit the memory budget."""
    per_item = 0
    for step in plan.steps:
        boxes = step.primary
        if boxes is None or not boxes.any():
            continue
        per_item += int(boxes.widen(step.full_axes, step.body).volume().max()) * 4
    per_item = max(per_item, 1)
    return int(max(1, min(MAX_BATCH, budget // per_item)))


def auto_tail_batch(runner: IncrementalRunner) -> int:
    """Positions the shared tail runs at once: its largest tensor for all of them stays near TAIL_BYTES.

    Large calls pay off for weight-heavy tails (VGG16's fc head); for activation-heavy tails they
    thrash the cache (Inception3's Mixed_6 blocks at 128 positions ran 20 % slower than per batch).
    """
    plan = runner.plan
    bodies = [plan.graph.shapes[n][1:] for n in runner.tail_inputs] + [s.body for s in plan.steps[runner.tail :]]
    largest = max((int(np.prod(b)) for b in bodies), default=1) * 4
    return int(max(1, min(MAX_TAIL_BATCH, TAIL_BYTES // max(1, largest))))


@dataclass
class ExactResult:
    outputs: torch.Tensor  # (P, K)
    macs: int
    batch_size: int


@torch.no_grad()
def run_exact(
    graph: Graph,
    occlusions: Occlusions,
    plan: Plan | None = None,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    groups: list[np.ndarray] | None = None,
    on_batch: Callable[[np.ndarray, torch.Tensor], None] | None = None,
    tail_batch: int | None = None,
    collector: Collector | None = None,
    clean: dict | None = None,
    cache: PaddedCache | None = None,
) -> ExactResult:
    """Outputs for every occlusion by incremental inference, in the occlusions' order.

    `groups` (lists of position indices, in visiting order) overrides the planner's batching;
    `on_batch(done_index, outputs)` is called after each batch with the outputs computed so far.
    The plan's shared tail runs on up to `tail_batch` positions at once (several batches' heads);
    with `on_batch` it runs per batch, so partial results arrive as soon as possible. A `collector`
    (shared with other runs over the same occlusions), the clean pass `clean` and the padded channels-last
    copies of its values (`cache`, built on first use: runs over one clean pass build them once) may be
    passed in.
    """
    plan = plan or plan_for(graph, occlusions)
    batch_size = batch_size or auto_batch(plan)
    clean = clean if clean is not None else materialize(graph, occlusions.image)
    groups = groups if groups is not None else batches(plan, batch_size)
    runner = IncrementalRunner(plan, clean, occlusions.occluded_input(), groups, cache)
    live = on_batch is not None or (collector is not None and collector.on_batch is not None)
    tail_batch = 1 if live else tail_batch or auto_tail_batch(runner)
    collector = collector or Collector(occlusions.count, progress, on_batch)
    macs = 0
    heads: list[list[torch.Tensor]] = []
    pending: list[np.ndarray] = []
    waiting = 0  # positions whose heads wait for the tail

    def flush() -> None:
        nonlocal macs, waiting
        out, spent = runner.run_tail(heads, pending)
        macs += spent
        collector.add(np.concatenate(pending), out)
        heads.clear()
        pending.clear()
        waiting = 0

    for index in groups:
        head, spent = runner.run_head(index)
        macs += spent
        heads.append(head)
        pending.append(index)
        waiting += len(index)
        if waiting >= tail_batch:
            flush()
    if pending:
        flush()
    return ExactResult(collector.result(), macs, batch_size)


def self_check(
    model: Callable, occlusions: Occlusions, outputs: torch.Tensor, among: np.ndarray | None = None, samples: int = 2
) -> float | None:
    """Re-run a few positions (of `among`, default all) in full: None if they agree, else the worst difference.

    "Agree" follows the model's own sensitivity: beyond the fixed tolerance, a difference is accepted
    when it is within ROUNDING_SLACK times the rounding error of full inference itself (float32 against
    float64): a numerically unstable network - large cancellations - turns the engine's different
    summation order into differences of that size, which are not an error of the engine.
    """
    among = np.arange(occlusions.count) if among is None else np.asarray(among)
    if not len(among):
        return None
    index = np.unique(among[np.linspace(0, len(among) - 1, samples).astype(np.int64)])
    images = occlusions.images(index)
    reference = model(images)
    got = outputs[torch.from_numpy(index).to(outputs.device)]
    scale = float(reference.abs().max()) + 1e-6
    if torch.allclose(got, reference, rtol=1e-3, atol=1e-4 * scale):
        return None
    worst = float((got - reference).abs().max())
    if worst <= ROUNDING_SLACK * rounding_sensitivity(model, images, reference):
        return None
    return worst


ROUNDING_SLACK = 10.0


def rounding_sensitivity(model: Callable, images: torch.Tensor, reference: torch.Tensor) -> float:
    """How far full float32 inference is from float64 inference on these images (0 when the model is
    not an nn.Module, already float64, or cannot run in float64)."""
    if not isinstance(model, torch.nn.Module) or images.dtype == torch.float64:
        return 0.0
    try:
        wide = copy.deepcopy(model).double()
        truth = wide(images.double())
    except Exception:  # a model with float32-only parts: no estimate, the fixed tolerance decides
        return 0.0
    return float((truth - reference.double()).abs().max())

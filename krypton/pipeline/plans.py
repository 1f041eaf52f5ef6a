"""Plans of recent runs, kept for the next run with the same graph and the same occlusion geometry.

A plan depends on the graph, the image shape, the boxes and the approximation only, never on pixel
values, so a dataset of same-sized images, Captum's `NoiseTunnel` (one call per noisy copy), the web
demo and the tuner (one exact reference per image) plan once instead of every call. For a small model
the plan is a visible share of a short run (MobileNetV3-small, 25 positions: 8 ms of planning and
2 ms of batch-size choice against ~50 ms of model calls). Only plans of modest size are kept: a plan
holds a box array per step and position.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from krypton.capture import Graph
from krypton.engine.plan import Plan, position_macs
from krypton.modes.approximate import approximation
from krypton.modes.exact import auto_batch, plan_for
from krypton.modes.occlusions import Occlusions

SLOTS = 4
MAX_BOX_ROWS = 400_000  # steps x positions of a plan worth keeping (~20 MB of boxes)


@dataclass
class Measured:
    """What earlier runs of a plan measured. The next run with the same plan (same positions, same
    batches) follows a measured verdict instead of probing and calibrating again: ResNet18, 196 positions,
    spent 24 % of its time on those. Runs that the engine's one-time setup kept naive add up what they were
    expected to save (`forgone_s`), so that a series of short runs does pay the setup once."""

    naive_s: float | None = None  # naive seconds per position
    incremental_s: float | None = None  # incremental seconds per position
    warm: bool = False  # incremental_s was measured after an earlier run had set up the engine's kernels
    engine_runs: int = 0  # runs of this plan that ran incremental batches
    forgone_s: float = 0.0  # expected savings of runs that stayed naive because of the engine's setup

    def verdict(self) -> str | None:
        """The faster path as measured, or None. A first run's figure for the engine includes setting up
        kernels for every new window shape (lcnet_050: 5.9 ms/position in calibration, 1.9 once warm), so
        a verdict against the engine counts only when measured warm; one for it stands either way."""
        if self.naive_s is None or self.incremental_s is None:
            return None
        if self.incremental_s < self.naive_s:
            return "incremental"
        return "naive" if self.warm else None


@dataclass(frozen=True)
class Planned:
    """A plan and what every run derives from it first."""

    plan: Plan
    batch: int  # the largest batch whose windows fit the memory budget
    per_position_macs: float  # MACs of the mean position computed alone (parameter-only calls included)
    measured: Measured = field(default_factory=Measured, compare=False)

    @property
    def limit(self) -> float:
        """The MAC saving at best: full inference over the mean position computed alone."""
        return self.plan.naive_macs() / max(1.0, self.per_position_macs)


_lock = threading.Lock()
_plans: OrderedDict[tuple, Planned] = OrderedDict()


def _key(graph: Graph, occ: Occlusions, tau: float, gates: bool) -> tuple:
    return (id(graph), tuple(occ.image.shape), occ.lo.tobytes(), occ.hi.tobytes(), float(tau), bool(gates))


def planned(graph: Graph, occ: Occlusions, tau: float = 1.0, gates: bool = False) -> Planned:
    """The plan for these occlusions (tau < 1: thresholded; gates: local squeeze-excitation gates), its
    batch and limit: from a recent run when it had the same geometry."""
    key = _key(graph, occ, tau, gates)
    with _lock:
        hit = _plans.get(key)
        if hit is not None and hit.plan.graph is graph:  # the cached plan pins its graph: never a stale id
            _plans.move_to_end(key)
            return hit
    plan = plan_for(graph, occ, approximation(tau, gates))
    made = Planned(plan, auto_batch(plan), float(position_macs(plan).mean()) + plan.untouched_macs)
    if len(plan.steps) * plan.count <= MAX_BOX_ROWS:
        with _lock:
            _plans[key] = made
            while len(_plans) > SLOTS:
                _plans.popitem(last=False)
    return made


def clear() -> None:
    with _lock:
        _plans.clear()

"""The one place that decides how a set of occlusions is evaluated, for every interface.

`evaluate` chooses between full re-inference and incremental inference by measurement, never by hope:
1. refusals known without capturing (remembered failures, recurrent/attention layers) run naive;
2. without a graph at hand, one position is re-inferred and timed (useful work): when the rest would
   clearly cost more than having the graph, the graph is fetched at once; otherwise two naive batches
   refine the figure, and if re-inferring the rest costs less than the predicted capture, the run stays
   naive - until the runs on this model that stayed naive for that reason have together spent the
   capture's price (rent-or-buy: repeated calls then pay at most about twice the better path);
3. otherwise the graph is captured (or loaded), the plan predicts the MAC saving; a saving too small to
   pay runs naive, and so does a modest one whose expected gain on naive's measured rest (EFFICIENCY of
   the MAC saving) does not cover the engine's fixed costs; otherwise a modest saving is calibrated on the
   first incremental batches against naive's measured time per position (a run too short to calibrate
   follows the prediction, timed for the next run), and the faster path finishes the run;
4. incremental outputs are self-checked against full inference; a mismatch re-runs those positions naive.
Exact mode's numbers are the same on either path, so switching part-way is safe. Every decision and its
reason lands in `RunStats`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from krypton.capture import CaptureError, Graph
from krypton.engine.gather import PaddedCache
from krypton.engine.incremental import suffix_seconds
from krypton.engine.plan import Plan, batches
from krypton.modes.exact import run_exact, self_check
from krypton.modes.occlusions import Collector, Occlusions
from krypton.pipeline import graphs, guard, plans
from krypton.pipeline.fastest_naive import FastestNaive
from krypton.pipeline.stats import RunStats

PATHS = ("auto", "incremental", "naive")
MIN_GAIN = 1.15  # below this predicted MAC saving, incremental inference cannot beat full inference
CALIBRATE_BELOW = 4.0  # predicted savings under this are checked against measured naive time
NAIVE_PROBE_BATCHES = 2  # naive batches timed before deciding whether a capture can pay
PROBE_MARGIN = 3.0  # a one-position probe decides alone when the rest costs this many times the capture
WARM_GIVE_UP = 4.0  # a first incremental batch this many times slower than naive ends calibration at once
CLEAR_LOSS = 1.5  # a timed batch this many times slower than naive ends calibration without a second one
EFFICIENCY = 0.6  # the engine's expected share of the plan's MAC saving: measured runs reached 0.34-0.79 of
# it (49-196 positions, first and later calls, RESULTS.md#pipeline); below the MAC saving it stays because
# small windows run at lower throughput than whole tensors and batches share one window per op
MEASURE_MIN_S = 0.5  # a best-case saving (at the plan's full MAC saving) this large is measured even when the
# expected one is not: Xception on the chest X-rays ran the engine 2.0x faster than naive on a plan saving
# 1.45x of the MACs (depthwise convolutions on small windows run at higher throughput than on whole images)
SETUP_S = 0.1  # one-time cost of a plan's first engine run in a process (kernels set up for each new window
# shape): first minus later calls of the engine forced on, 49 positions: 0.08-0.25 s


@dataclass
class Experience:
    """What one `evaluate` call measured, for the next call on the same model, image and mode (the passes
    of a drill-down): without it every pass would probe and calibrate again, and a pass of a few dozen
    positions pays that in full. Only steady-state figures are kept (a small run's trial, clean pass
    included, would speak against the engine for a larger pass)."""

    naive_s: float | None = None  # naive seconds per position, from a batch after the first
    incremental_s: float | None = None  # incremental seconds per position, from calibration
    clean_pass: tuple[object, dict] | None = None  # (graph, every node's clean value): one clean pass
    padded: PaddedCache = field(default_factory=PaddedCache)  # the clean pass's padded copies, built once
    ahead: int = 0  # positions the explanation evaluates after this call (set by the caller)
    checked: bool = False  # the engine passed its self-check on an earlier pass (same graph and settings)

    def verdict(self) -> str | None:
        """ "incremental" or "naive" when both paths were measured, else None."""
        if self.naive_s is None or self.incremental_s is None:
            return None
        return "incremental" if self.incremental_s < self.naive_s else "naive"


def naive_is_enough(model: nn.Module, image: torch.Tensor, naive_seconds: float, path: str = "auto") -> str | None:
    """Why full inference should answer without trying the engine (None: try it).

    For callers that can predict the whole naive run (`naive_seconds`) before any batch, e.g. the Captum
    drop-in, which times the clean call: the same rules as `evaluate`'s first steps.
    """
    if path == "naive":
        return "path='naive' requested"
    refused = graphs.refusal(model, image)
    if refused or path == "incremental":
        return refused
    estimate = graphs.capture_estimate(model, image)
    if naive_seconds <= estimate:
        return f"full inference (~{naive_seconds:.2g} s) costs less than having the graph (~{estimate:.2g} s)"
    return None


def evaluate(
    model: nn.Module,
    occ: Occlusions,
    *,
    mode: str = "exact",
    tau: float = 1.0,
    batch_size: int | None = None,
    path: str = "auto",
    progress: Callable[[int], None] | None = None,
    on_batch: Callable[[np.ndarray, torch.Tensor], None] | None = None,
    levels: np.ndarray | None = None,
    clean: torch.Tensor | None = None,
    on_phase: Callable[[str | None], None] | None = None,
    local_gates: bool = False,
    experience: Experience | None = None,
) -> tuple[torch.Tensor, RunStats]:
    """(P, K) outputs for every occlusion and how they were computed.

    `mode` is "naive", "exact" or "approximate" (with `tau`); `path` "auto" lets measurement choose,
    "incremental" insists on the engine (still falling back on failure), "naive" forbids it.
    `levels` (P,) orders the visit (lower first: coarse grid cells); `on_batch(index, outputs)` sees
    partial results; `clean` is the model's output on the clean image, if the caller has it;
    `on_phase(text)` hears when a slow phase without progress starts (capturing the graph) and ends (None);
    `local_gates` (approximate mode) keeps squeeze-excitation gates' changes local (see
    `modes.approximate.local_gates`); `experience` carries measurements between the calls of one
    explanation (read, and updated with what this call measured).
    """
    run = _Run(model, occ, mode, tau, batch_size, path, progress, on_batch, levels, clean)
    run.on_phase, run.gates = on_phase, local_gates and mode == "approximate"
    run.experience = experience if experience is not None else Experience()
    started = time.perf_counter()
    outputs = run.go()
    if run.naive.measured:
        run.experience.naive_s = run.naive.seconds_per_position
    run.stats.wall_time_s = time.perf_counter() - started
    return outputs, run.stats


class _Run:
    """State of one evaluation: what is done, what each path measured, the record being written."""

    def __init__(
        self,
        model: nn.Module,
        occ: Occlusions,
        mode: str,
        tau: float,
        batch_size: int | None,
        path: str,
        progress: Callable[[int], None] | None,
        on_batch: Callable[[np.ndarray, torch.Tensor], None] | None,
        levels: np.ndarray | None,
        clean: torch.Tensor | None,
    ) -> None:
        self.model, self.occ, self.mode, self.tau = model, occ, mode, tau
        self.batch_size, self.path, self.progress, self.clean = batch_size, path, progress, clean
        self.collector = Collector(occ.count, progress, on_batch)
        self.levels = None if levels is None else np.asarray(levels)
        self.todo = np.arange(occ.count) if levels is None else np.argsort(np.asarray(levels), kind="stable")
        self.naive = FastestNaive(model, occ, self.collector, batch_size, clean)
        self.stats = RunStats(requested_mode=mode, mode=mode, positions=occ.count)
        self.incremental_done: list[np.ndarray] = []
        self.measured = plans.Measured()  # the plan's record of what its runs measured (set with the plan)
        self.on_phase: Callable[[str | None], None] | None = None
        self.gates = False
        self.experience = Experience()
        self.timed_rest = False  # the engine runs the rest of a short run on the plan's prediction alone
        self.predicted = False  # the prediction expects the engine to win (else a trial measures it)

    def go(self) -> torch.Tensor:
        if self.mode == "naive" or self.path == "naive":
            return self._finish_naive("naive mode requested" if self.mode == "naive" else "path='naive' requested")
        refused = graphs.refusal(self.model, self.occ.image)
        if refused:  # known before any work (and warned about when it was first found): no new warning
            self.stats.mode = "naive"  # a fallback, as when the capture fails: say so
            return self._finish_naive(refused)
        known = graphs.in_memory(self.model, self.occ.image)  # one lookup: the key hashes every weight
        if self.path == "auto" and known is None:
            started = time.perf_counter()
            estimate = graphs.capture_estimate(self.model, self.occ.image)
            if self.experience.naive_s is None:  # a big model's batch of 16 could be a minute
                self.naive.run(self.todo, max_batches=1, size=1)
            left = len(self._remaining())
            remaining = (self._naive_s() or 0.0) * left
            if remaining <= PROBE_MARGIN * estimate and self.experience.naive_s is None:  # unclear: time batches
                self._naive_batches(NAIVE_PROBE_BATCHES)
                left = len(self._remaining())
                remaining = (self._naive_s() or 0.0) * left
            spent = graphs.naive_spent(self.model, self.occ.image)
            if spent + remaining <= estimate:  # rent (re-infer) until the rent paid reaches the price
                outputs = self._finish_naive(
                    f"re-inferring the other {left} positions (~{remaining:.2g} s) costs less than "
                    f"having the graph (~{estimate:.2g} s)"
                )
                graphs.add_naive_spent(self.model, self.occ.image, time.perf_counter() - started)
                return outputs
            if remaining <= estimate:
                self.stats.capture_reason = (
                    f"earlier runs re-inferred this model for {spent:.2g} s: the graph (~{estimate:.2g} s) "
                    "pays across runs"
                )
        try:
            return self._engine(known)
        except graphs.StaleGraph:  # a stored graph failed its check, before any incremental result
            return self._engine(None)  # captured afresh this time

    def _engine(self, known: Graph | None) -> torch.Tensor:
        """Have the graph (`known`: already in memory) and the plan, then let `_with_plan` choose and run
        the path."""
        if known is not None:
            found = graphs.Captured(known, "memory", 0.0)
        else:
            if self.on_phase is not None:
                self.on_phase("capturing the model graph")
            try:
                found = graphs.graph_for(self.model, self.occ.image)
            except CaptureError as exc:
                return self._fail(str(exc))
            finally:
                if self.on_phase is not None:
                    self.on_phase(None)
        self.stats.graph_source, self.stats.capture_s = found.source, round(found.seconds, 4)
        try:
            made = plans.planned(found.graph, self.occ, self.tau, self.gates)
        except Exception as exc:  # an op the engine cannot describe (the batch axis moves)
            graphs.remember_failure(self.model, self.occ.image, f"incremental inference cannot run: {exc}")
            return self._fail(f"incremental inference cannot run: {exc}")
        self.plan = made.plan
        self.stats.fallbacks = list(made.plan.fallbacks)
        return self._with_plan(found.graph, made)

    # -- paths ---------------------------------------------------------------------------------------

    def _with_plan(self, graph, made: plans.Planned) -> torch.Tensor:
        plan, limit = made.plan, made.limit
        if self.path == "auto" and limit < MIN_GAIN:
            return self._finish_naive(f"the plan saves at most {limit:.2f}x of the MACs: too little to pay")
        size = self.batch_size or made.batch
        clean_pass = None
        self.measured = before = made.measured  # an earlier run of this plan may have measured both paths
        if self.experience.verdict() is None and before.verdict() is not None:
            self.experience.naive_s, self.experience.incremental_s = before.naive_s, before.incremental_s
        earlier = self.experience.verdict() if self.path == "auto" and limit < CALIBRATE_BELOW else None
        if earlier is not None:
            seen = self.experience
            self.stats.reason = (
                f"an earlier run measured incremental {(seen.incremental_s or 0) * 1e3:.3g} ms/position vs "
                f"naive {(seen.naive_s or 0) * 1e3:.3g} ms"
            )
            if earlier == "naive":
                return self._finish_naive(self.stats.reason)
        try:
            calibrate = earlier is None and self.path == "auto" and limit < CALIBRATE_BELOW  # else measured already
            groups: list[np.ndarray] | None
            if calibrate and self._group_count(size) > 3:
                clean_pass, groups = self._calibrate(graph, plan, size, limit)
            elif calibrate:  # grouping waits until the trial chose the engine: a small run gone naive skips it
                clean_pass, groups = self._trial(graph, plan, size, limit)
            else:
                groups = self._groups(plan, size)
            if groups is None:
                return self._finish(checked=True)
            if groups:
                started, count = time.perf_counter(), sum(len(g) for g in groups)
                self._incremental(graph, plan, size, groups, clean_pass)
                if self.timed_rest:  # what the prediction chose, measured for the next run of this plan
                    self._record((time.perf_counter() - started) / count, self._naive_s(), this_run=False)
        except graphs.StaleGraph:
            raise
        except Exception as exc:  # a rule that cannot run on this batch: answer anyway, in full
            return self._fail(f"incremental inference failed ({exc})")
        if not self.stats.reason:
            self.stats.reason = f"incremental inference: the plan saves {limit:.2f}x of the MACs at best"
        return self._finish(checked=False)

    def _calibrate(self, graph, plan, size, limit):
        """Time incremental batches against naive's time per position; None groups: naive is faster."""
        if not self.naive.measured and self.experience.naive_s is None:
            self.naive.probe(self.todo)  # few positions: each costs naive's price where the engine wins
        groups = self._groups(plan, size)  # after the probe: cutting its positions out of batches grouped
        # before it left many part-filled batches (MobileOne-S0, 196 positions: 26 ms/position vs 23)
        if self._not_worth_trying(limit):  # calibration risks a few slow batches for a saving this small
            return None, None
        warm, timed, rest = groups[:1], groups[1:3], groups[3:]
        clean_pass = self._clean_pass(graph)
        naive = self._naive_s()
        if self._suffix_too_slow(plan, clean_pass, naive):
            return clean_pass, None
        started = time.perf_counter()
        self._incremental(graph, plan, size, warm, clean_pass)
        per_position = (time.perf_counter() - started) / max(1, len(warm[0]))
        if naive is not None and per_position > WARM_GIVE_UP * naive:  # beyond what warming up explains
            return clean_pass, self._naive_wins(per_position, naive, limit, "first batch, warming up")
        spent, count = 0.0, 0
        for i, group in enumerate(timed):  # one batch at a time: a clear loss stops after the first
            started = time.perf_counter()
            self._incremental(graph, plan, size, [group], clean_pass)
            spent, count = spent + time.perf_counter() - started, count + len(group)
            per_position = spent / max(1, count)
            self._record(per_position, naive)
            clear = per_position > CLEAR_LOSS * naive if naive is not None else False
            if naive is not None and (clear or (i == len(timed) - 1 and per_position > naive)):
                return clean_pass, self._naive_wins(per_position, naive, limit, f"{count} positions timed")
        if naive is not None:
            self.stats.reason = (
                f"calibrated: incremental {per_position * 1e3:.3g} ms/position vs naive {naive * 1e3:.3g} ms"
            )
        return clean_pass, rest

    def _naive_wins(self, per_position: float, naive: float, limit: float, basis: str) -> None:
        """Record why (for later passes too), check the incremental positions done so far, and let naive
        finish the run."""
        self._record(per_position, naive)
        self.stats.reason = (
            f"calibrated ({basis}): incremental {per_position * 1e3:.3g} ms/position vs naive "
            f"{naive * 1e3:.3g} ms (plan predicted {limit:.2f}x at best): naive finishes the run"
        )
        self._check_incremental()
        self.naive.run(self._remaining())
        return None

    def _trial(self, graph, plan, size, limit):
        """A small run (too few batches to calibrate on). When the prediction expects the engine to win
        (`_not_worth_trying`), a single pass runs it and times it for the next run of the plan; otherwise
        (the plan allows a saving worth measuring, or passes of a drill-down are to come) the run's first
        batch is the trial, clean pass included, and the faster path finishes (a trial of a few positions
        at a batch shape of their own paid kernel setup the run's batches did not reuse: dla34 at 49
        positions tried 40.7 ms/position against naive's 28.1 where the engine took 0.90 s against 1.37).
        Later passes follow the trial's verdict. None: naive finishes the run."""
        if not self.naive.measured and self.experience.naive_s is None:
            self._naive_batches(1)
        remaining = self._remaining()
        if not len(remaining):
            self.stats.reason = "a small run: the timed naive batch covered every position"
            return None, None
        if self._not_worth_trying(limit):
            return None, None
        started = time.perf_counter()
        clean_pass = self._clean_pass(graph)  # free when an earlier pass of this explanation made it
        if self._suffix_too_slow(plan, clean_pass, self._naive_s()):
            return clean_pass, None
        if not self.experience.ahead and self.predicted:
            self.timed_rest = True
            return clean_pass, self._groups(plan, size)
        fixed, started = time.perf_counter() - started, time.perf_counter()
        groups = self._groups(plan, size)  # the trial is the run's first batch: its kernels serve the rest
        self._incremental(graph, plan, size, groups[:1], clean_pass)
        # the clean pass is spread over the positions left, in this pass and the passes to come
        share = len(remaining) + self.experience.ahead
        per_position = (time.perf_counter() - started) / len(groups[0]) + fixed / share
        naive = self._naive_s()
        self._record(per_position, naive)
        verdict = f"trial: incremental {per_position * 1e3:.3g} ms/position vs naive "
        verdict += f"{naive * 1e3:.3g} ms" if naive is not None else "(untimed)"
        self.stats.reason = verdict
        if naive is not None and per_position > naive:
            self.stats.reason += f" (plan predicted {limit:.2f}x at best): naive finishes the run"
            self._check_incremental()
            self.naive.run(self._remaining())
            return clean_pass, None
        return clean_pass, groups[1:]

    def _suffix_too_slow(self, plan: Plan, clean_pass: dict, naive: float | None) -> bool:
        """A partial graph runs its suffix at batch 1 for every position; when that alone takes longer
        than naive's whole position, naive finishes the run (True) before any incremental batch."""
        if not plan.suffix or naive is None:
            return False
        floor = suffix_seconds(plan, clean_pass)
        if floor < naive:
            return False
        self._record(floor, naive, settled=True)
        self.stats.reason = (
            f"the part of the graph run per position at batch 1 (batch axis folded) alone takes "
            f"{floor * 1e3:.3g} ms/position vs naive {naive * 1e3:.3g} ms: naive finishes the run"
        )
        self.naive.run(self._remaining())
        return True

    def _record(self, incremental: float, naive: float | None, this_run: bool = True, settled: bool = False) -> None:
        """Keep what was measured: for the passes still to come in this explanation (`this_run`), and
        for the next run of the same plan (`settled`: a floor, not a figure that kernel setup inflates)."""
        if this_run:
            self.experience.incremental_s, self.experience.naive_s = incremental, naive
        if naive is not None:
            seen = self.measured
            seen.incremental_s, seen.naive_s, seen.warm = incremental, naive, settled or seen.engine_runs > 0

    def _not_worth_trying(self, limit: float) -> bool:
        """Predict both paths from the plan: naive's rest at its measured speed, the engine's at EFFICIENCY
        of the plan's MAC saving plus the clean pass (about two naive positions) and, on the plan's first
        engine run in this process, SETUP_S. When the engine is not expected to save anything, naive
        finishes the run at once (True): a calibration would cost more than such a run could win.
        Rent or buy: the one-time setup is what keeps a short run naive when the engine is expected to
        win per run; such runs add up the savings they forgo per plan, and once those reach the setup's
        price a run pays it. Where the engine is not expected to win even without setup (a plan saving
        little), no number of runs makes trying pay."""
        remaining, naive = self._remaining(), self._naive_s() or 0.0
        left, seen = naive * (len(remaining) + self.experience.ahead), self.measured
        clean = 0.0 if self.experience.clean_pass else 2 * naive
        setup = 0.0 if seen.engine_runs else SETUP_S
        per_run = left * (1 - 1 / (limit * EFFICIENCY)) - clean  # expected saving once set up
        outlook = (f"the plan saves {limit:.2f}x of the MACs at best, ~{limit * EFFICIENCY:.2f}x expected, less "
                   f"~{clean + setup:.2g} s of fixed costs")  # fmt: skip
        self.predicted = per_run > setup or (per_run > 0 and seen.forgone_s + per_run >= setup)
        if self.predicted or left * (1 - 1 / limit) - clean >= MEASURE_MIN_S:
            self.stats.reason = f"predicted for the other {len(remaining)} positions (~{left:.2g} s naive): {outlook}"
            if not self.predicted:  # the engine's efficiency varies (0.34-1.4 of the MAC saving): measure
                self.stats.reason += f"; the plan allows {limit:.2f}x: measuring"
            elif per_run <= setup:
                self.stats.reason += f"; runs that stayed naive forwent ~{seen.forgone_s:.2g} s: trying"
            return False
        seen.forgone_s += max(0.0, per_run)
        self.stats.reason = (
            f"re-inferring the other {len(remaining)} positions (~{left:.2g} s) costs less than the engine is "
            f"expected to ({outlook})"
        )
        self.naive.run(remaining)
        return True

    def _clean_pass(self, graph) -> dict:
        """The clean pass (a graph from disk is checked on it: StaleGraph when it fails), once per
        explanation: an earlier pass's is reused."""
        kept = self.experience.clean_pass
        if kept is not None and kept[0] is graph:
            return kept[1]
        env = graphs.clean_pass(graph, self.model, self.occ.image, self.clean)
        self.experience.clean_pass = (graph, env)
        self.experience.padded = PaddedCache()
        return env

    def _incremental(self, graph, plan, size, groups, clean_pass) -> None:
        clean_pass = clean_pass if clean_pass is not None else self._clean_pass(graph)
        padded = self.experience.padded  # keyed by tensor (and pinning it): never stale
        result = run_exact(
            graph, self.occ, plan, size, groups=groups, collector=self.collector, clean=clean_pass, cache=padded
        )
        self.stats.macs = (self.stats.macs or 0.0) + result.macs
        self.stats.batch_size = result.batch_size
        self.incremental_done.extend(groups)

    def _groups(self, plan: Plan, size: int) -> list[np.ndarray]:
        """Batches of the remaining positions; with levels, level by level (coarse cells first)."""
        remaining = self._remaining()
        if self.levels is None:
            return batches(plan, size, np.sort(remaining))
        groups: list[np.ndarray] = []
        for level in np.unique(self.levels[remaining]):
            groups += batches(plan, size, np.sort(remaining[self.levels[remaining] == level]))
        return groups

    def _group_count(self, size: int) -> int:
        """How many batches `_groups` would make, without grouping (batches are cut `size` at a time)."""
        remaining = self._remaining()
        if self.levels is None:
            return -(-len(remaining) // size)
        _, counts = np.unique(self.levels[remaining], return_counts=True)
        return int((-(-counts // size)).sum())

    def _naive_s(self) -> float | None:
        """Naive seconds per position: this run's measured batches, else an earlier pass's, else the probe."""
        if self.naive.measured or self.experience.naive_s is None:
            return self.naive.seconds_per_position
        return self.experience.naive_s

    def _naive_batches(self, count: int) -> None:
        self.naive.run(self.todo, max_batches=count)

    def _remaining(self) -> np.ndarray:
        done = self.collector.done
        return self.todo[~done[self.todo]]

    # -- endings -------------------------------------------------------------------------------------

    def _finish_naive(self, reason: str) -> torch.Tensor:
        self.naive.run(self._remaining())
        self.stats.reason = self.stats.reason or reason
        if self.mode == "approximate" and not self.incremental_done:
            self.stats.mode = "naive"  # every number is full inference: say so
        return self._finish(checked=True)

    def _fail(self, reason: str) -> torch.Tensor:
        warnings.warn(f"krypton: {reason}; using naive mode", RuntimeWarning, stacklevel=4)
        self._forget_incremental()
        self.stats.mode = "naive"
        self.stats.reason = reason
        self.naive.run(self._remaining())
        return self._finish(checked=True)

    def _check_incremental(self) -> bool:
        """Self-check the incremental positions; on a mismatch warn and recompute them in full."""
        if not self.incremental_done or self.experience.checked:  # one check per explanation, as for one pass
            return True
        index = np.concatenate(self.incremental_done)
        outputs = self.collector.outputs
        assert outputs is not None  # incremental positions were collected
        if self.tau >= 1 and not self.gates:
            with guard.shared(), torch.no_grad():
                worst = self_check(self.model, self.occ, outputs, among=index)
        else:  # approximations differ from naive by design: check the engine itself on two positions
            worst = self._probe_exact(index)
        if worst is None:
            self.experience.checked = True
            return True
        warnings.warn(
            f"krypton: incremental results differ from full inference by {worst:.3g}; "
            "falling back to naive mode for this model",
            RuntimeWarning,
            stacklevel=5,
        )
        self._forget_incremental()
        self.stats.mode, self.stats.reason = "naive", f"self-check failed (difference {worst:.3g})"
        self.naive.run(self._remaining())
        return False

    def _probe_exact(self, index: np.ndarray) -> float | None:
        found = graphs.graph_for(self.model, self.occ.image)
        probe_index = index[[0, -1]]
        probe = self.occ.subset(probe_index)
        exact = run_exact(found.graph, probe, batch_size=2).outputs
        with guard.shared(), torch.no_grad():
            return self_check(self.model, probe, exact)

    def _forget_incremental(self) -> None:
        if self.incremental_done:
            index = np.concatenate(self.incremental_done)
            self.collector.forget(index)
            self.incremental_done.clear()
            self.stats.macs = None

    def _finish(self, checked: bool = False) -> torch.Tensor:
        if not checked:
            self._check_incremental()
        stats, naive = self.stats, self.naive
        incremental = int(sum(len(g) for g in self.incremental_done))
        if incremental:
            self.measured.engine_runs += 1
        stats.incremental_positions, stats.naive_positions = incremental, self.occ.count - incremental
        stats.naive_layout = naive.layout if naive.positions else None
        if not incremental:
            stats.batch_size = naive.batch_size
        plan = getattr(self, "plan", None)
        if plan is not None:
            per_position = plan.naive_macs()
            stats.macs_naive = float(per_position * self.occ.count)
            spent = (stats.macs or 0.0) + (plan.untouched_macs if incremental else 0)
            stats.macs = float(spent + per_position * stats.naive_positions)
            if incremental and stats.path != "incremental+naive":
                stats.path = "incremental" if not stats.naive_positions else "incremental+naive"
        else:
            stats.macs = None
        if not incremental:
            stats.path = "naive"
        return self.collector.result()

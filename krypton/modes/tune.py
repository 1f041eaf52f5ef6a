"""Auto-tuning: projective-field threshold tau and adaptive drill-down, chosen together for a quality target.

Like the paper (Sec. 4.3), SSIM(exact, approximate) is measured on sample images. Every candidate
setting (a tau from `taus`, with or without one of `drilldowns`) gets a predicted speedup over exact
mode (the plan's MACs for tau times the drill-down's gain in positions). A setting passes when the
lower quantile (default: the 10th percentile) of its sample SSIMs meets the target - a per-image
guarantee rather than the paper's mean; the search walks the frontier of passing settings
(`_staircase`: for each drill-down, the lowest tau that passes) and the fastest predicted one wins.
With `target_speedup` the search turns around: the best quality among settings predicted to reach that
speed. Held-out images then measure what the chosen setting really achieves. Every candidate tried is
kept as evidence (both SSIMs: on raw maps and, as the paper measured, on rendered ones; predicted and
measured speedups).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from krypton.modes.approximate import Drilldown, coarse_stride, drilldown_gain, parse_drilldown, predicted_speedup
from krypton.modes.quality import rendered_ssim, ssim

DEFAULT_TAUS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
DEFAULT_DRILLDOWNS: tuple[dict[str, Any] | None, ...] = (  # the multi-level rule beat both two-stage rules
    None,  # at equal cost on every real model (benchmarks/RESULTS.md#refine), so it is what tune tries
    {"rule": "refine", "speedup": 2.0},
    {"rule": "refine", "speedup": 3.0},
    {"rule": "refine", "speedup": 4.0},
    {"rule": "refine", "speedup": 6.0},
)


MIN_DRILL_CELLS = 12  # drill-down is tried on grids at least this wide per axis: on a 7x7 grid the coarse
# lattice holds 3 cells per axis, and a setting tuned on two faces at SSIM 0.5 got 0.03 on a third


@dataclass
class Candidate:
    """One setting tried: its predictions and what the sample images measured."""

    tau: float
    drilldown: dict[str, Any] | None
    predicted_speedup: float  # over exact mode
    local_gates: bool = False
    ssim: list[float] = field(default_factory=list)  # per sample image, raw maps
    rendered_ssim: list[float] = field(default_factory=list)  # per sample image, the paper's rendered maps
    measured_speedup: float = float("nan")  # exact wall time / this setting's, summed over the samples

    def quality(self, quantile: float) -> float:
        return float(np.quantile(self.ssim, quantile)) if self.ssim else float("nan")

    @property
    def settings(self) -> dict[str, Any]:
        """Keyword arguments for `krypton.explain(..., mode="approximate", **settings)`."""
        return {"tau": self.tau, "drilldown": self.drilldown, "local_gates": self.local_gates}


@dataclass
class TuneResult:
    """The chosen setting and the evidence for it."""

    tau: float
    target_ssim: float
    sample_ssim: dict[float, list[float]]  # tau -> SSIM of each sample image (settings without drill-down)
    fit: list[float]  # quadratic SSIM(tau) coefficients, lowest degree first (the paper's model)
    heldout_ssim: list[float] = field(default_factory=list)
    drilldown: dict[str, Any] | None = None
    candidates: list[Candidate] = field(default_factory=list)
    predicted_speedup: float = 1.0
    target_speedup: float | None = None
    met: bool = True  # whether the chosen setting meets the targets on the samples
    local_gates: bool = False

    @property
    def settings(self) -> dict[str, Any]:
        """Ready to use: `krypton.explain(model, image, mode="approximate", **result.settings)`."""
        return {"tau": self.tau, "drilldown": self.drilldown, "local_gates": self.local_gates}

    @property
    def heldout_met(self) -> float:
        """Share of held-out images whose SSIM met the target (nan without held-out images)."""
        if not self.heldout_ssim:
            return float("nan")
        return float(np.mean([s >= self.target_ssim for s in self.heldout_ssim]))

    def summary(self) -> str:
        rows = [
            f"tau {c.tau:.2f} drill-down {c.drilldown or 'off'}{', local gates' if c.local_gates else ''}: "
            f"predicted {c.predicted_speedup:.2f}x, measured {c.measured_speedup:.2f}x, "
            f"SSIM min {min(c.ssim):.3f} mean {np.mean(c.ssim):.3f} (rendered mean {np.mean(c.rendered_ssim):.3f})"
            for c in self.candidates
            if c.ssim
        ]
        held = ""
        if self.heldout_ssim:
            held = (
                f"; held-out SSIM mean {np.mean(self.heldout_ssim):.3f}, min {min(self.heldout_ssim):.3f}, "
                f"{100 * self.heldout_met:.0f}% >= {self.target_ssim}"
            )
        head = f"tau = {self.tau}, drill-down {self.drilldown or 'off'} for SSIM >= {self.target_ssim}"
        if self.target_speedup:
            head += f" at >= {self.target_speedup}x" + ("" if self.met else " (SSIM target NOT met)")
        return f"{head}{held}\n" + "\n".join(rows)


def _run(model: nn.Module, image: torch.Tensor, settings: dict[str, Any] | None, **kwargs: Any) -> tuple[Any, float]:
    from krypton.api import explain

    started = time.perf_counter()
    if settings is None:
        result = explain(model, image, mode="exact", **kwargs)
    else:  # the approximation itself is measured: on path "auto" a run the pipeline answers by full
        # inference gives the exact map, and its SSIM of 1 would vouch for a setting never tried
        result = explain(model, image, mode="approximate", **settings, path="incremental", **kwargs)
    return result, time.perf_counter() - started


def _predictions(model: nn.Module, image: torch.Tensor, taus: Sequence[float], drilldowns: Sequence[Any],
                 patch: Any, stride: Any, gate_options: Sequence[bool] = (False,)) -> list[Candidate]:  # fmt: skip
    """Every (tau, drill-down, local gates) candidate with its predicted speedup over exact, fastest first.
    Local gates are only tried where they change the plan (the model has squeeze-excitation gates)."""
    from krypton import _validate
    from krypton.api import analyze

    shape = tuple(image.shape[-3:])
    exact_macs = analyze(model, shape, patch=patch, stride=stride).incremental_macs
    pair = _validate.pair("stride", stride)
    grid = [(n - p) // s + 1 for n, p, s in zip(shape[1:], _validate.pair("patch", patch), pair)]
    if min(grid) < MIN_DRILL_CELLS:
        drilldowns = [None]
    candidates = []
    for tau in sorted(set(taus) | {1.0}, reverse=True):
        plain = analyze(model, shape, patch=patch, stride=stride, tau=tau).incremental_macs
        for gates in sorted(set(gate_options)):
            macs = analyze(model, shape, patch=patch, stride=stride, tau=tau, local_gates=True).incremental_macs
            macs = macs if gates else plain
            if gates and macs >= plain:
                continue  # no gates in this model: nothing to approximate
            for spec in drilldowns:
                settings = parse_drilldown(spec)
                if settings is None and tau == 1.0 and not gates:
                    continue  # exact itself
                gain = 1.0 if settings is None else drilldown_gain(settings, pair)
                candidates.append(Candidate(tau, spec, exact_macs / max(macs, 1e-9) * gain, gates))
    return sorted(candidates, key=lambda c: -c.predicted_speedup)


def _staircase(candidates: list[Candidate], passes: Callable[[Candidate], bool]) -> list[Candidate]:
    """The quality frontier, measured along a staircase: for each drill-down (harshest first), the
    lowest tau that still passes. Quality is taken to fall with a lower tau and with a faster
    drill-down, so every tau that passed with a harsher drill-down passes with a milder one (and the
    same tau with the harsher one is faster): the walk never goes back up, and at most
    taus + drill-downs settings are measured per local-gates option instead of all of them."""
    frontier = []
    for gates in sorted({c.local_gates for c in candidates}):
        mine = [c for c in candidates if c.local_gates == gates]
        taus = sorted({c.tau for c in mine} | {1.0}, reverse=True)
        drills = sorted({_key(c.drilldown) for c in mine}, key=lambda k: -_gain(mine, k))
        i = 0
        for drill in drills:
            best = None
            while i < len(taus):
                found = [c for c in mine if c.tau == taus[i] and _key(c.drilldown) == drill]
                if found and not passes(found[0]):
                    break
                best = found[0] if found else best  # tau 1 without drill-down is exact: passes unmeasured
                i += 1
            if best is not None:
                frontier.append(best)
    return frontier


def _key(drilldown: Any) -> str:
    return repr(sorted(drilldown.items())) if isinstance(drilldown, dict) else repr(drilldown)


def _gain(candidates: list[Candidate], key: str) -> float:
    """The drill-down's own predicted gain: the largest candidate's speedup at tau 1 (or any tau). No
    drill-down gains nothing of its own (its tau-1 candidate, exact, is never listed; ranking it by a low
    tau's speedup put it before milder drill-downs, and the walk then skipped their tau 1)."""
    if key == _key(None):
        return 1.0
    mine = [c for c in candidates if _key(c.drilldown) == key]
    at_one = [c.predicted_speedup for c in mine if c.tau == 1.0]
    return max(at_one or [c.predicted_speedup for c in mine])


def tune(
    model: nn.Module,
    sample_images: Sequence[torch.Tensor],
    *,
    patch: int | tuple[int, int] = 16,
    stride: int | tuple[int, int] = 4,
    target_ssim: float = 0.9,
    heldout_images: Sequence[torch.Tensor] = (),
    taus: Sequence[float] = DEFAULT_TAUS,
    drilldowns: Sequence[dict[str, Any] | Drilldown | None] = DEFAULT_DRILLDOWNS,
    local_gates: Sequence[bool] = (False, True),
    target_speedup: float | None = None,
    quantile: float = 0.1,
    fill: Any = 0.0,
    batch_size: int | None = None,
) -> TuneResult:
    """The fastest (tau, drill-down) whose `quantile` of sample SSIMs reaches `target_ssim` (exact if none
    does); with `target_speedup`, the best quality among settings predicted to reach that speed."""
    if isinstance(target_ssim, bool) or not isinstance(target_ssim, (int, float)) or not 0 < target_ssim <= 1:
        raise ValueError(f"target_ssim must be in (0, 1], got {target_ssim!r}")
    if target_speedup is not None:
        if isinstance(target_speedup, bool) or not isinstance(target_speedup, (int, float)) or target_speedup <= 1:
            raise ValueError(f"target_speedup must be a number > 1 (a speedup over exact mode), got {target_speedup!r}")
        if target_ssim >= 1:
            raise ValueError("target_ssim 1.0 means exact maps, which no speedup over exact mode can give; "
                             "lower target_ssim or drop target_speedup")  # fmt: skip
    if not sample_images:
        raise ValueError("sample_images must hold at least one image")
    if not all(0 < t <= 1 for t in taus):
        raise ValueError(f"taus must lie in (0, 1], got {list(taus)}")
    if not 0 <= quantile < 1:
        raise ValueError(f"quantile must be in [0, 1), got {quantile!r}")
    for spec in drilldowns:
        parse_drilldown(spec)  # bad settings fail before any run
    kwargs = {"patch": patch, "stride": stride, "fill": fill, "batch_size": batch_size}
    candidates = _predictions(model, sample_images[0], taus, drilldowns, patch, stride, local_gates)
    exact = [_run(model, image, None, **kwargs) for image in sample_images]
    targets = [result.target for result, _ in exact]

    def measure(candidate: Candidate) -> Candidate:
        if candidate.ssim:
            return candidate
        spent = 0.0
        for (reference, _), image, target in zip(exact, sample_images, targets):
            result, seconds = _run(model, image, candidate.settings, target=target, **kwargs)
            spent += seconds
            candidate.ssim.append(ssim(reference.heatmap, result.heatmap))
            candidate.rendered_ssim.append(rendered_ssim(reference.heatmap, result.heatmap, reference.probability))
        candidate.measured_speedup = sum(seconds for _, seconds in exact) / max(spent, 1e-9)
        return candidate

    chosen: Candidate | None = None
    met = True
    if target_speedup is None:
        frontier = _staircase(candidates, lambda c: measure(c).quality(quantile) >= target_ssim)
        chosen = max(frontier, key=lambda c: c.predicted_speedup, default=None)
    else:
        fast = [measure(c) for c in candidates if c.predicted_speedup >= target_speedup]
        if fast:
            chosen = max(fast, key=lambda c: c.quality(quantile))
            met = chosen.quality(quantile) >= target_ssim
        else:
            met = False
    for t in taus:  # the paper's tau-only curve, for the quadratic fit and `sample_ssim`
        plain = next((c for c in candidates if c.tau == t and c.drilldown is None and not c.local_gates), None)
        if plain is not None and t < 1.0:
            measure(plain)
    sample = {c.tau: c.ssim for c in candidates if c.drilldown is None and not c.local_gates and c.ssim}
    xs = [t for t in sample for _ in sample[t]] + [1.0] * len(sample_images)
    ys = [v for t in sample for v in sample[t]] + [1.0] * len(sample_images)
    fit = np.polynomial.polynomial.polyfit(xs, ys, 2).tolist() if len(set(xs)) > 2 else []
    tried = [c for c in candidates if c.ssim]
    result = TuneResult(
        tau=chosen.tau if chosen else 1.0,
        target_ssim=target_ssim,
        sample_ssim=sample,
        fit=fit,
        drilldown=chosen.drilldown if chosen else None,
        candidates=tried,
        predicted_speedup=chosen.predicted_speedup if chosen else 1.0,
        target_speedup=target_speedup,
        met=met,
        local_gates=chosen.local_gates if chosen else False,
    )
    for image in heldout_images:
        if chosen is None:
            result.heldout_ssim.append(1.0)
            continue
        reference, _ = _run(model, image, None, **kwargs)
        approx, _ = _run(model, image, chosen.settings, target=reference.target, **kwargs)
        result.heldout_ssim.append(ssim(reference.heatmap, approx.heatmap))
    return result


def drilldown_for(speedup: float, fraction: float, stride: int | tuple[int, int]) -> tuple[Drilldown, float]:
    """Drill-down settings reaching `speedup` with re-explained share `fraction`, and the Eq. 28 prediction."""
    from krypton import _validate
    from krypton.modes.approximate import parse_drilldown

    stride = _validate.pair("stride", stride)
    settings = parse_drilldown({"fraction": fraction, "speedup": speedup})
    assert settings is not None  # a dict always parses to settings
    s1 = coarse_stride(settings, stride)
    return Drilldown(fraction, speedup, s1), predicted_speedup(s1, stride, fraction)

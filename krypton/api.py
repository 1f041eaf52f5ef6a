"""Public Python API: `explain` (occlusion heat maps) and `analyze` (theoretical speedup up front)."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from krypton import _validate
from krypton._borrow import borrowed
from krypton.capture import Graph
from krypton.choices import MODES
from krypton.engine.plan import batches
from krypton.explanation import Explanation
from krypton.modes.approximate import Drilldown, coarse_stride, parse_drilldown, refine_step
from krypton.modes.drilldown import coarse_occlusions, combine, drill, subset
from krypton.modes.occlusions import Occlusions, grid_occlusions
from krypton.modes.progressive import OnUpdate, Update, fill_missing, levels
from krypton.modes.quality import ssim
from krypton.modes.refine import Refinement
from krypton.pipeline import PATHS, Experience, RunStats, evaluate, graph_for, guarded_call, plans
from krypton.scores import check_target, probabilities

DEFAULT_TAU = 0.7  # the paper's tuned value for ResNet18 on OCT; tune() finds one for your data
UNVERIFIED = "not verified"  # an approximate map's quality until measured (compare_exact) or tuned


def captured(model: nn.Module, image: torch.Tensor) -> Graph:
    """The model's graph at this image shape (memory, then on-disk cache, then a capture)."""
    return graph_for(model, image).graph


def _clean_output(model: Callable, image: torch.Tensor) -> torch.Tensor:
    try:
        out = guarded_call(model, image)
    except Exception as exc:  # the model rejected the input: say so at the API level
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"image of shape {tuple(image.shape)} does not fit the model: {first}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != image.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model must map (B, C, H, W) images to (B, K) outputs, got {shape}")
    return out


def _progress_bar(enabled: bool, total: int, mode: str):
    if not enabled:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="pos", desc=f"krypton {mode}")
    return bar, bar.update


def explain(
    model: nn.Module,
    image: torch.Tensor,
    *,
    target: int | None = None,
    patch: int | tuple[int, ...] = 16,
    stride: int | tuple[int, ...] = 4,
    fill: Any = 0.0,
    mode: str = "exact",
    tau: float | None = None,
    drilldown: Any = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    on_update: OnUpdate | None = None,
    compare_exact: bool = False,
    path: str = "auto",
    local_gates: bool = False,
    quality: float | None = None,
    profile: Any = None,
) -> Explanation:
    """Occlusion-based explanation of `model`'s output for `image`.

    Slides a `patch` (filled with `fill`) over the preprocessed image with `stride`, evaluates the model
    at every position and returns the outputs, the clean output and the heat map of the target's
    probability. Modes: "naive" (full re-inference), "exact" (incremental inference, same numbers),
    "approximate" (projective-field threshold `tau`, default 0.7, and/or adaptive `drilldown`).
    `on_update` receives progressive maps (coarse first); `compare_exact` also runs exact mode and
    records the SSIM of this map against it in `stats`. `local_gates` (approximate mode) keeps
    squeeze-excitation gates' changes inside the occluded region, so SE networks (EfficientNet,
    MobileNetV3, RegNetY) regain their convolutional speedup. `path` = "auto" runs whichever of incremental
    and full inference measures faster (recorded in `stats["path"]` and `stats["reason"]`);
    "incremental" insists on the engine, "naive" forbids it. `quality` (approximate mode) takes tau,
    drill-down and local gates from a tuning `profile` (a `krypton tune` JSON file, its dict, or a
    `TuneResult`) that promises at least that SSIM, and labels the result with the expected quality.
    """
    if quality is not None or profile is not None:
        tau, drilldown, local_gates, expected = _from_profile(mode, quality, profile, tau, drilldown, local_gates)
    rank = _validate.rank_of(image, patch, stride)
    patch = _validate.spatial("patch", patch, rank)
    stride = _validate.spatial("stride", stride, rank)
    mode = _validate.mode(mode, MODES)
    path = _validate.mode(path, PATHS, name="path")
    batch_size = _validate.positive_int("batch_size", batch_size)
    tau, settings = _approximation(mode, tau, drilldown)
    if not isinstance(local_gates, bool):
        raise ValueError(f"local_gates must be True or False, got {local_gates!r}")
    if local_gates and mode != "approximate":
        raise ValueError(f"local_gates applies to mode='approximate' only (mode is {mode!r})")
    image = _validate.image(image, rank)
    _validate.patch_fits(patch, tuple(image.shape[2:]))
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    device = _validate.device(device)
    with borrowed(model, device):  # the caller's model comes back as it was (mode, device, tensors)
        image = image.to(next(iter(model.parameters()), image).device)
        options = dict(
            patch=patch,
            stride=stride,
            fill=fill,
            target=target,
            mode=mode,
            tau=tau,
            settings=settings,
            batch_size=batch_size,
            progress=progress,
            on_update=on_update,
            path=path,
            gates=local_gates,
        )
        result = _explain(model, image, **options)
        if mode == "approximate":
            result.stats["quality"] = UNVERIFIED if quality is None and profile is None else expected
        if compare_exact:
            options.update(
                target=result.target, mode="exact", tau=1.0, settings=None, progress=False, on_update=None, gates=False
            )
            exact = _explain(model, image, **options)
            result.stats["exact_wall_time_s"] = exact.stats["wall_time_s"]
            if result.rank == 2 and min(result.heatmap.shape) >= 3:
                result.stats["ssim_vs_exact"] = ssim(exact.heatmap, result.heatmap)
                result.stats["quality"] = f"measured: SSIM {result.stats['ssim_vs_exact']:.3f} vs exact"
    return result


def _explain(
    model: nn.Module,
    image: torch.Tensor,
    *,
    patch: tuple[int, ...],
    stride: tuple[int, ...],
    fill: Any,
    target: Any,
    mode: str,
    tau: float,
    settings: Drilldown | None,
    batch_size: int | None,
    progress: bool,
    on_update: OnUpdate | None,
    path: str,
    gates: bool = False,
) -> Explanation:
    fill_t = _validate.fill(fill, image.shape[1], patch, image)
    clean_scores = _clean_output(model, image)[0]
    if target is None:
        target = int(probabilities(clean_scores).argmax())
    target = check_target(target, clean_scores)
    job = _Job(model, image, patch, stride, fill_t, int(target), mode, tau, batch_size, progress, on_update)
    job.path, job.clean, job.gates = path, clean_scores[None], gates
    started = time.perf_counter()
    outputs, stats, drilled = job.run(settings)
    stats["wall_time_s"] = time.perf_counter() - started
    stats["positions"] = job.fine.count
    return Explanation(
        scores=outputs.reshape(*job.grid, -1).detach().cpu(),
        clean_scores=clean_scores.detach().cpu(),
        target=int(target),
        positions=job.positions,
        patch=patch,
        stride=stride,
        image_size=tuple(int(n) for n in image.shape[2:]),
        mode=stats["mode"],
        stats=stats,
        drilled=None if drilled is None else torch.from_numpy(drilled),
    )


def _from_profile(mode: str, quality: Any, profile: Any, tau: Any, drilldown: Any, gates: bool) -> tuple:
    """(tau, drilldown, local_gates, expected quality in words) from a tuning profile."""
    from krypton.modes import profiles

    if mode != "approximate":
        raise ValueError(f"quality and profile apply to mode='approximate' only (mode is {mode!r})")
    if tau is not None or drilldown not in (None, False) or gates:
        raise ValueError("quality/profile choose tau, drilldown and local_gates: give either a profile or those")
    if profile is None:
        raise ValueError("quality needs a tuning profile: profile=<krypton tune JSON file, dict or TuneResult> "
                         "(make one with `krypton tune` or krypton.tune)")  # fmt: skip
    if hasattr(profile, "candidates") and hasattr(profile, "settings"):  # a TuneResult (tune imports this module)
        samples = len(profile.candidates[0].ssim) if profile.candidates else 0
        profile = profiles.to_profile(profile, "model", 0, 0, samples)
    elif not isinstance(profile, dict):
        profile = profiles.read(profile)
    promised = float(profile.get("target_ssim", 0))
    if quality is not None and (isinstance(quality, bool) or not 0 < float(quality) <= 1):
        raise ValueError(f"quality must be an SSIM in (0, 1], got {quality!r}")
    if quality is not None and promised < float(quality):
        raise ValueError(f"the profile promises SSIM >= {promised}, less than quality={quality}: tune for it first")
    settings = profiles.settings_of(profile)
    return settings["tau"], settings["drilldown"], bool(settings["local_gates"]), profiles.expectation(profile)


def _approximation(mode: str, tau: float | None, drilldown: Any) -> tuple[float, Drilldown | None]:
    if mode != "approximate":
        if tau is not None or drilldown not in (None, False):
            raise ValueError(f"tau and drilldown apply to mode='approximate' only (mode is {mode!r})")
        return 1.0, None
    settings = parse_drilldown(drilldown)
    if tau is None:
        tau = DEFAULT_TAU
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau <= 1:
        raise ValueError(f"tau must be a number with 0 < tau <= 1, got {tau!r}")
    return float(tau), settings


class _Job:
    """One explanation request: evaluates occlusions in the chosen mode, with progress reporting."""

    def __init__(self, model, image, patch, stride, fill, target, mode, tau, batch_size, progress, on_update):
        self.model, self.image, self.patch, self.stride, self.fill = model, image, patch, stride, fill
        self.target, self.mode, self.tau, self.batch_size = target, mode, tau, batch_size
        self.progress, self.on_update = progress, on_update
        self.path, self.clean, self.gates = "auto", None, False
        self.fine, self.positions = grid_occlusions(image, patch, stride, fill)
        self.grid = tuple(self.positions.shape[:-1])
        self.experience = Experience()  # the passes of a drill-down share what each measured
        self.started = time.perf_counter()

    def run(self, settings: Drilldown | None) -> tuple[torch.Tensor, dict[str, Any], np.ndarray | None]:
        if settings is None:
            outputs, stats = self.evaluate(self.fine, self._reporter(np.zeros(self.grid), None))
            return outputs, {**stats.as_dict(), **self._settings(None)}, None
        if settings.rule == "refine":
            return self._refined(settings)
        s1 = coarse_stride(settings, self.stride)
        coarse, coarse_grid = coarse_occlusions(self.image, self.patch, s1, self.fill)
        self.experience.ahead = math.ceil(settings.fraction * self.fine.count)  # stage 2 follows
        stage1, stats1 = self.evaluate(coarse, None)
        self.experience.ahead = 0
        interpolated, rows = drill(
            stage1, coarse_grid, s1, self.grid, self.stride, self.target, settings.fraction, settings.rule
        )
        estimate = probabilities(torch.from_numpy(interpolated))[..., self.target].numpy()
        self._send(estimate, np.zeros(self.grid, bool), 0, len(rows))
        stage2, stats2 = self.evaluate(subset(self.fine, rows), self._reporter(estimate, rows))
        stats = _merged([stats1, stats2], ["coarse pass", "drill-down"], self.fine.count, coarse.count)
        info = {**stats.as_dict(), **self._settings(settings)}
        info.update(coarse_positions=coarse.count, drilled_positions=int(len(rows)))
        drilled = np.zeros(self.fine.count, dtype=bool)
        drilled[rows] = True
        return combine(interpolated, rows, stage2), info, drilled.reshape(self.grid)

    def _refined(self, settings: Drilldown) -> tuple[torch.Tensor, dict[str, Any], np.ndarray]:
        """Rule "refine": the first lattice, then level by level where the estimate varies most."""
        visit = self._refinement(settings)
        rows, values, computed, runs = visit.start(), None, [], []
        first = len(rows)
        while len(rows):
            self.experience.ahead = visit.budget - int(visit.known.sum())  # the levels still to come
            outputs, stats = self.evaluate(subset(self.fine, rows), None)
            if values is None:
                values = np.full((self.fine.count, outputs.shape[-1]), np.nan)
            values[rows] = outputs.double().cpu().numpy()
            computed.append((rows, outputs))
            runs.append(stats)
            estimate = visit.estimate(values.reshape(*self.grid, -1))
            score = probabilities(torch.from_numpy(estimate))[..., self.target].numpy()
            self._send(score, visit.known, int(visit.known.sum()), visit.budget)
            rows = visit.choose(score)
        labels = ["first lattice"] + [f"level {k}" for k in range(1, len(runs))]
        stats = _merged(runs, labels, self.fine.count, first)
        info = {**stats.as_dict(), **self._settings(settings)}
        info.update(coarse_positions=first, drilled_positions=int(visit.known.sum()) - first, levels=len(runs))
        drilled = visit.known.copy()
        drilled.reshape(-1)[computed[0][0]] = False  # the first lattice is the coarse pass
        rows = np.concatenate([r for r, _ in computed])
        return combine(estimate, rows, torch.cat([o for _, o in computed])), info, drilled

    def _refinement(self, settings: Drilldown) -> Refinement:
        """The visit plan of rule "refine": 1/speedup of the fine positions, from its first lattice."""
        return Refinement(self.grid, round(self.fine.count / settings.speedup), refine_step(settings, self.stride))

    def _settings(self, settings: Drilldown | None) -> dict[str, Any]:
        info: dict[str, Any] = {"tau": self.tau if self.mode == "approximate" else None}
        if self.gates:
            info["local_gates"] = True
        if settings is not None and settings.rule == "refine":
            info["drilldown"] = {
                "speedup": settings.speedup,
                "coarse_stride": tuple(self._refinement(settings).step * s for s in self.stride),
                "rule": settings.rule,
            }
        elif settings is not None:
            info["drilldown"] = {
                "fraction": settings.fraction,
                "speedup": settings.speedup,
                "coarse_stride": coarse_stride(settings, self.stride),
                "rule": settings.rule,
            }
        return info

    def evaluate(self, occ: Occlusions, report: Callable | None) -> tuple[torch.Tensor, RunStats]:
        """One set of occlusions through the run pipeline, with a progress bar if asked."""
        bar, update = _progress_bar(self.progress, occ.count, self.mode)
        try:
            return evaluate(
                self.model,
                occ,
                mode=self.mode,
                tau=self.tau,
                batch_size=self.batch_size,
                path=self.path,
                progress=update,
                on_batch=report,
                levels=_grid_levels(occ) if report is not None else None,
                clean=self.clean,
                local_gates=self.gates,
                experience=self.experience,
                on_phase=None if bar is None else functools.partial(_phase, bar, f"krypton {self.mode}"),
            )
        finally:
            if bar is not None:
                bar.close()

    def _reporter(self, estimate: np.ndarray, rows: np.ndarray | None):
        """A callback turning partial outputs into an `Update` of the whole fine-grid map.

        Without `rows` (one pass) missing cells copy their nearest computed neighbour; with `rows`
        (drill-down stage 2) they keep the interpolated stage-1 estimate.
        """
        if self.on_update is None:
            return None
        values, done = estimate.astype(np.float64).copy(), np.zeros(self.grid, dtype=bool)
        total = self.fine.count if rows is None else len(rows)

        def report(index: np.ndarray, outputs: torch.Tensor) -> None:
            cells = index if rows is None else rows[index]
            probs = probabilities(outputs[torch.from_numpy(index)])[:, self.target]
            values.reshape(-1)[cells] = probs.cpu().numpy()
            done.reshape(-1)[cells] = True
            shown = values if rows is not None else fill_missing(values, done)
            self._send(shown, done, int(done.sum()), total)

        return report

    def _send(self, values: np.ndarray, known: np.ndarray, done: int, total: int) -> None:
        if self.on_update is not None:
            heat = torch.from_numpy(np.asarray(values, dtype=np.float32).copy())
            elapsed = time.perf_counter() - self.started
            self.on_update(Update(heat, torch.from_numpy(known.copy()), done, total, elapsed))


def _merged(runs: list[RunStats], labels: list[str], positions: int, first: int) -> RunStats:
    """One record for the passes of a drill-down (coarse first): their paths, reasons and MACs."""
    paths = list(dict.fromkeys(r.path for r in runs))
    last = runs[-1]
    stats = RunStats(
        requested_mode="approximate",
        mode=last.mode,
        path=", then ".join(paths),
        reason="; ".join(f"{label}: {r.reason}" for label, r in zip(labels, runs)),
        positions=positions,
        batch_size=last.batch_size,
        incremental_positions=sum(r.incremental_positions for r in runs),
        naive_positions=sum(r.naive_positions for r in runs),
        naive_layout=next((r.naive_layout for r in reversed(runs) if r.naive_layout), None),
        graph_source=runs[0].graph_source,
        capture_s=runs[0].capture_s,
        capture_reason=runs[0].capture_reason,
        fallbacks=last.fallbacks,
    )
    spent = [r.macs for r in runs if r.macs is not None]
    if len(spent) == len(runs) and runs[0].macs_naive is not None:
        stats.macs = float(sum(spent))
        stats.macs_naive = runs[0].macs_naive / first * positions
    return stats


def _phase(bar: Any, label: str, text: str | None) -> None:
    """Show a slow phase (the capture) on the progress bar; after it, time the positions from now on."""
    if text is not None:
        bar.set_description(f"{label} ({text})")
        bar.started_phase = time.time()
        return
    spent = time.time() - getattr(bar, "started_phase", time.time())
    bar.start_t += spent  # the rate and ETA count positions only, not the capture
    bar.last_print_t = time.time()
    bar.set_description(label)
    bar.set_postfix_str(f"graph ready in {spent:.1f} s")


def _grid_levels(occ: Occlusions) -> np.ndarray | None:
    """Visiting levels of a full grid of positions (coarse cells first); None off-grid."""
    grid = tuple(len(np.unique(occ.lo[:, axis])) for axis in range(1, occ.lo.shape[1]))
    if math.prod(grid) != occ.count:
        return None
    return levels(grid).reshape(-1)


@dataclass
class Analysis:
    """Per-op MACs of naive vs incremental inference, from the same rules the engine runs."""

    ops: list[dict[str, Any]]
    naive_macs: int  # one full forward pass
    incremental_macs: float  # per position, batched as the engine batches
    per_position_macs: float  # per position, each with its own exact windows (the limit)
    positions: int
    batch_size: int
    fallbacks: list[tuple[str, str]] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.naive_macs / max(self.incremental_macs, 1e-9)

    @property
    def per_position_speedup(self) -> float:
        return self.naive_macs / max(self.per_position_macs, 1e-9)

    def table(self) -> str:
        lines = [f"{'node':<34} {'op':<40} {'naive MMACs':>12} {'incr. MMACs':>12} {'ratio':>7}"]
        for row in self.ops:
            ratio = row["naive_macs"] / max(row["incremental_macs"], 1e-9)
            lines.append(
                f"{row['node'][:34]:<34} {row['op'][:40]:<40} {row['naive_macs'] / 1e6:>12.2f} "
                f"{row['incremental_macs'] / 1e6:>12.2f} {ratio:>7.2f}"
            )
        lines.append(
            f"total: naive {self.naive_macs / 1e9:.3f} GMACs/position, incremental "
            f"{self.incremental_macs / 1e9:.3f} GMACs/position -> theoretical speedup {self.speedup:.2f}x "
            f"(per-position windows: {self.per_position_speedup:.2f}x; {self.positions} positions, "
            f"batch {self.batch_size})"
        )
        for node, op in self.fallbacks:
            lines.append(f"computed in full: {node} ({op})")
        return "\n".join(lines)


def analyze(
    model: nn.Module,
    input_shape: tuple[int, ...],
    patch: int | tuple[int, ...] = 16,
    stride: int | tuple[int, ...] = 4,
    batch_size: int | None = None,
    tau: float = 1.0,
    local_gates: bool = False,
) -> Analysis:
    """Theoretical (MAC-count) speedup of incremental inference over naive, per op.

    `input_shape` is (C, *spatial) or (1, C, *spatial) for a signal, image or volume (as for `explain`);
    `tau` < 1 predicts approximate mode with projective-field thresholding.
    """
    if not isinstance(input_shape, (tuple, list)) or not all(isinstance(n, int) and n > 0 for n in input_shape):
        raise ValueError(f"input_shape must be a tuple of positive ints, got {input_shape!r}")
    rank = _validate.rank_of(torch.empty(tuple(input_shape), device="meta"), patch, stride)
    patch, stride = _validate.spatial("patch", patch, rank), _validate.spatial("stride", stride, rank)
    tau, _ = _approximation("approximate", tau, None)
    shape = tuple(input_shape)
    if len(shape) == rank + 1:
        shape = (1,) + shape
    if len(shape) != rank + 2 or shape[0] != 1:
        raise ValueError(
            f"input_shape must be (C, *spatial) or (1, C, *spatial) with {rank} spatial axes, got {tuple(input_shape)}"
        )
    _validate.patch_fits(patch, shape[2:])
    image = torch.zeros(shape)
    graph = captured(model, image)
    occlusions, _ = grid_occlusions(image, patch, stride, torch.zeros(shape[1], *patch))
    made = plans.planned(graph, occlusions, tau, local_gates)
    batch_size = _validate.positive_int("batch_size", batch_size) or made.batch
    return _analysis(made, batch_size)


def _analysis(made: plans.Planned, batch_size: int) -> Analysis:
    from krypton.engine.plan import window

    plan = made.plan
    groups = batches(plan, batch_size)
    count = plan.count
    ops: list[dict[str, Any]] = []
    for step in plan.steps:
        if not step.macs:
            continue
        spent = 0
        for index in groups:
            win = window(step, index)
            spent += 0 if win is None else step.macs * win.numel() * len(index)
        ops.append(
            {
                "node": step.call.name,
                "op": step.call.op_name,
                "rule": step.rule.name,
                "naive_macs": step.whole_macs,
                "incremental_macs": spent / count,
            }
        )
    if plan.suffix:  # a partial graph: the rest runs whole, per position
        first = plan.suffix[0]
        ops.append({"node": first.name, "op": "rest of the graph",
                    "rule": "per position (batch axis folded)", "naive_macs": plan.suffix_macs,
                    "incremental_macs": float(plan.suffix_macs)})  # fmt: skip
    total = sum(float(row["incremental_macs"]) for row in ops) + plan.untouched_macs
    return Analysis(ops, plan.naive_macs(), total, made.per_position_macs, count, batch_size, plan.fallbacks)

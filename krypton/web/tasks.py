"""What one job does: check the request, run the explanation(s), stream their maps, package the results.

Whole-image exact and approximate runs go through `krypton.explain` (progressive updates, drill-down,
fallbacks); region runs and naive runs through `krypton.web.sweep`, which reports every batch.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import krypton
from krypton.api import DEFAULT_TAU, UNVERIFIED
from krypton.choices import MODES
from krypton.models.loaded import LoadedModel
from krypton.modes.approximate import Drilldown, parse_drilldown
from krypton.outputs.raw import raw_arrays, summary
from krypton.outputs.render import png_bytes
from krypton.pipeline import graph_for
from krypton.scores import class_count, probabilities
from krypton.web.catalog import Models, Picture, Pictures, fill_values
from krypton.web.estimate import Estimator
from krypton.web.jobs import Job, NotFound, PhaseMap
from krypton.web.sweep import Region, layout, sweep

MAX_POSITIONS = 250_000


@dataclass
class Context:
    """Everything jobs share: models, pictures, the estimator, and measured naive times for speedups."""

    models: Models
    pictures: Pictures
    estimator: Estimator
    naive_times: dict[tuple, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    """A checked job request, in model-input pixels and units."""

    image_id: str
    patch: int
    stride: int
    fill: tuple[float, ...]
    fill_rgb: tuple[int, ...]
    target: int
    mode: str
    tau: float | None = None
    drilldown: Drilldown | None = None
    region: Region | None = None
    compare: bool = False

    @property
    def phases(self) -> list[str]:
        return ["approximate", "exact"] if self.compare else [self.mode]

    def naive_key(self) -> tuple:
        region = None if self.region is None else (self.region.x, self.region.y, self.region.width, self.region.height)
        return (self.image_id, self.patch, self.stride, self.fill, region)


def make_spec(
    ctx: Context,
    *,
    image_id: str,
    patch: int,
    stride: int,
    fill: list[int] | None = None,
    target: int | None = None,
    mode: str,
    tau: float | None = None,
    drilldown: dict[str, float] | None = None,
    region: Region | None = None,
    compare: bool = False,
) -> tuple[Spec, Picture, LoadedModel]:
    """Check a request against its picture and model; ValueError says what is wrong, before anything runs."""
    picture = ctx.pictures.get(image_id)
    loaded = ctx.models.get(picture.demo)
    _, h, w = picture.tensor.shape
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if patch > min(h, w):
        raise ValueError(f"patch {patch} is larger than the model input ({h}x{w}); use a patch <= {min(h, w)}")
    classes = class_count(picture.clean_scores)
    if target is not None and not 0 <= target < classes:
        raise ValueError(f"target must be a class index in [0, {classes}), got {target}")
    if mode != "approximate" and (tau is not None or drilldown is not None or compare):
        raise ValueError("tau, drill-down and the exact-vs-approximate comparison need mode 'approximate'")
    settings = parse_drilldown(dict(drilldown)) if drilldown is not None else None
    if settings is not None and region is not None:
        raise ValueError("drill-down explains the whole image; clear the region or switch drill-down off")
    if region is not None and (region.x + region.width > w or region.y + region.height > h):
        raise ValueError(
            f"region {region.width}x{region.height} at ({region.x}, {region.y}) lies outside the {w}x{h} model input"
        )
    ys, xs = layout((h, w), patch, stride, region)
    if len(ys) * len(xs) == 0:
        raise ValueError("no patch position has its centre inside the region: drag a larger region or lower the stride")
    if len(ys) * len(xs) > MAX_POSITIONS:
        raise ValueError(f"{len(ys) * len(xs):,} positions is too many (limit {MAX_POSITIONS:,}): raise the stride")
    if mode == "approximate" and tau is None:
        tau = DEFAULT_TAU
    rgb = tuple(fill) if fill is not None else None
    spec = Spec(
        image_id,
        patch,
        stride,
        tuple(fill_values(loaded, list(rgb) if rgb else None)),
        rgb or (),
        int(picture.probs.argmax()) if target is None else int(target),
        mode,
        tau,
        settings,
        region,
        compare,
    )
    return spec, picture, loaded


def run(job: Job, ctx: Context) -> dict[str, Any]:
    """The job's work: every phase in turn, then the comparison; returns the JSON result."""
    spec: Spec = job.params["spec"]
    picture: Picture = job.params["picture"]
    loaded: LoadedModel = job.params["loaded"]
    job.artifacts.update(picture=picture, loaded=loaded)
    if not job.info.get("estimates"):  # the page usually asked for estimates first; if not, the naive one
        naive = ctx.estimator.naive_only(picture.demo, loaded, picture.tensor, spec.patch, spec.stride, spec.region)
        job.set(info={**job.info, "estimates": naive})
    capture_s = None
    if spec.mode != "naive":
        started = time.perf_counter()
        try:
            graph_for(loaded.module, picture.tensor[None])  # once per model and shape, under the guard
            capture_s = round(time.perf_counter() - started, 3)
        except Exception:  # the engine falls back to naive mode itself, and says so in the stats
            capture_s = None
    phases: dict[str, Any] = {}
    for phase in spec.phases:
        explanation = _run_phase(job, spec, picture, loaded, phase)
        job.artifacts[phase] = explanation
        wall = float(explanation.stats.get("wall_time_s", 0.0))
        estimate = (job.info.get("estimates") or {}).get(phase) or {}
        ctx.estimator.learn(picture.demo, phase, estimate.get("raw_seconds"), wall)
        if explanation.mode == "naive" and phase == "naive":
            ctx.naive_times[spec.naive_key()] = wall
        phases[phase] = _phase_result(ctx, spec, explanation, loaded, job.info)
    result: dict[str, Any] = {
        "phases": phases,
        "capture_s": capture_s,
        "target": spec.target,
        "target_label": loaded.label(spec.target),
    }
    if spec.compare:
        exact, approx = job.artifacts["exact"], job.artifacts["approximate"]
        result["ssim"] = krypton.ssim(exact.heatmap, approx.heatmap) if min(exact.heatmap.shape) >= 3 else None
        result["approximate_speedup_vs_exact"] = exact.stats["wall_time_s"] / max(approx.stats["wall_time_s"], 1e-9)
    if "approximate" in phases:  # a map nobody compared with exact must not pass for one
        measured = result.get("ssim")
        result["quality"] = UNVERIFIED if measured is None else f"measured: SSIM {measured:.3f} vs exact"
    return result


def _run_phase(job: Job, spec: Spec, picture: Picture, loaded: LoadedModel, phase: str) -> krypton.Explanation:
    ys, xs = layout(tuple(picture.tensor.shape[1:]), spec.patch, spec.stride, spec.region)
    grid = (len(ys), len(xs))
    clean = float(picture.probs[spec.target])
    estimate = ((job.info.get("estimates") or {}).get(phase) or {}).get("seconds")
    job.begin_phase(
        phase,
        PhaseMap(
            grid,
            (int(ys[0]), int(xs[0])),
            np.full(grid, clean, dtype=np.float32),
            np.zeros(grid, bool),
            0,
            grid[0] * grid[1],
            0.0,
            estimate,
        ),
    )

    def on_update(update: krypton.Update) -> None:
        job.publish(phase, update.heatmap.numpy(), update.computed.numpy(), update.done, update.total, update.elapsed_s)

    tau = spec.tau if phase == "approximate" else None
    if spec.region is not None or phase == "naive":
        result = sweep(
            loaded.module,
            picture.tensor,
            target=spec.target,
            patch=spec.patch,
            stride=spec.stride,
            fill=list(spec.fill),
            mode=phase,
            tau=tau or 1.0,
            region=spec.region,
            on_update=on_update,
        )
    else:
        extra: dict[str, Any] = {"tau": tau, "drilldown": spec.drilldown} if phase == "approximate" else {}
        result = krypton.explain(
            loaded.module,
            picture.tensor,
            target=spec.target,
            patch=spec.patch,
            stride=spec.stride,
            fill=list(spec.fill),
            mode=phase,
            on_update=on_update,
            **extra,
        )
    heat = result.heatmap.numpy()
    job.publish(
        phase,
        heat,
        np.ones(heat.shape, bool),
        heat.size,
        heat.size,
        result.stats.get("wall_time_s", 0.0),
        check_cancel=False,
    )
    return result


def _phase_result(
    ctx: Context, spec: Spec, explanation: krypton.Explanation, loaded: LoadedModel, info: dict[str, Any]
) -> dict[str, Any]:
    out = summary(explanation, loaded.class_names)
    wall = float(explanation.stats.get("wall_time_s", 0.0))
    measured = ctx.naive_times.get(spec.naive_key())
    estimated = ((info.get("estimates") or {}).get("naive") or {}).get("seconds")
    naive, basis = (measured, "measured") if measured else (estimated, "estimated")
    out.update(
        heat=[round(float(v), 5) for v in explanation.heatmap.reshape(-1)],
        origin=[int(v) for v in explanation.positions[0, 0]],
        wall_time_s=round(wall, 3),
        naive_time_s=None if naive is None else round(naive, 3),
        naive_basis=basis if naive is not None else None,
        speedup_vs_naive=None if not naive or not wall else round(naive / wall, 2),
    )
    return out


# --- downloads ------------------------------------------------------------------------------------------------
def explanation_of(job: Job, phase: str | None) -> tuple[krypton.Explanation, str]:
    if job.state != "done":
        raise RuntimeError(f"job {job.id} is {job.state}: results are available once it is done")
    spec: Spec = job.params["spec"]
    phase = phase or spec.phases[0]
    if phase not in spec.phases:
        raise NotFound(f"this job has no {phase!r} result; it has: {', '.join(spec.phases)}")
    return job.artifacts[phase], phase


def result_png(job: Job, phase: str | None) -> bytes:
    explanation, phase = explanation_of(job, phase)
    picture, loaded = job.artifacts["picture"], job.artifacts["loaded"]
    return png_bytes(
        explanation, picture.shown, class_names=loaded.class_names, name=f"{loaded.name} - {picture.name} ({phase})"
    )


def result_json(job: Job, phase: str | None) -> dict[str, Any]:
    explanation, phase = explanation_of(job, phase)
    picture, loaded = job.artifacts["picture"], job.artifacts["loaded"]
    out = summary(explanation, loaded.class_names)
    out.update(
        model=loaded.name,
        image=picture.name,
        phase=phase,
        heatmap=explanation.heatmap.tolist(),
        positions=explanation.positions.tolist(),
        preprocess=loaded.preprocess.describe(),
        fill_model_units=list(job.params["spec"].fill),
    )
    if explanation.drilled is not None:
        out["drilled"] = explanation.drilled.tolist()
    return out


def result_npz(job: Job, phase: str | None) -> bytes:
    explanation, _ = explanation_of(job, phase)
    arrays = raw_arrays(explanation)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]  # numpy stub mistypes **arrays
    return buffer.getvalue()


def occluded_prediction(picture: Picture, loaded: LoadedModel, mask: np.ndarray, rgb: list[int] | None) -> torch.Tensor:
    """Probabilities with the masked pixels painted in the fill colour (the interactive brush)."""
    from krypton.web.catalog import predict

    values = torch.tensor(fill_values(loaded, rgb), dtype=picture.tensor.dtype).view(-1, 1, 1)
    keep = torch.from_numpy(~mask)[None]
    occluded = torch.where(keep, picture.tensor, values.expand_as(picture.tensor))
    return probabilities(predict(loaded.module, occluded))

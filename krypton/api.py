"""Public Python API: `explain` (occlusion heat maps) and `analyze` (theoretical speedup up front)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from krypton import _validate
from krypton.capture import CaptureError, Graph, capture
from krypton.engine.plan import Plan, batch_macs, batches, position_macs
from krypton.explanation import Explanation
from krypton.modes.exact import auto_batch, plan_for, run_exact, self_check
from krypton.modes.naive import run_naive
from krypton.modes.occlusions import Occlusions, grid_occlusions

MODES = ("naive", "exact")
_GRAPHS: dict[tuple, Graph] = {}


def _fingerprint(model: nn.Module, image: torch.Tensor) -> tuple:
    weights = tuple((t.data_ptr(), t._version) for t in list(model.parameters()) + list(model.buffers()))
    return (id(model), tuple(image.shape), image.dtype, str(image.device), weights)


def captured(model: nn.Module, image: torch.Tensor) -> Graph:
    """The model's graph at this image shape (cached while the weights are unchanged)."""
    key = _fingerprint(model, image)
    if key not in _GRAPHS:
        if len(_GRAPHS) > 8:
            _GRAPHS.clear()
        _GRAPHS[key] = capture(model, image)
    return _GRAPHS[key]


def _clean_output(model: Callable, image: torch.Tensor) -> torch.Tensor:
    try:
        with torch.no_grad():
            out = model(image)
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
    patch: int | tuple[int, int] = 16,
    stride: int | tuple[int, int] = 4,
    fill: Any = 0.0,
    mode: str = "exact",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Explanation:
    """Occlusion-based explanation of `model`'s output for `image`.

    Slides a `patch` (filled with `fill`) over the preprocessed image with `stride`, evaluates the model
    at every position (`mode="naive"`: full re-inference; `"exact"`: incremental inference, same numbers)
    and returns the outputs, the clean output and the heat map of the target's probability.
    """
    patch = _validate.pair("patch", patch)
    stride = _validate.pair("stride", stride)
    mode = _validate.mode(mode, MODES)
    batch_size = _validate.positive_int("batch_size", batch_size)
    image = _validate.image(image)
    _validate.patch_fits(patch, tuple(image.shape[2:]))
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if device is not None:
        model, image = model.to(device), image.to(device)
    else:
        image = image.to(next(iter(model.parameters()), image).device)
    model = model.eval()
    fill_t = _validate.fill(fill, image.shape[1], patch, image)
    base = _clean_output(model, image)[0]
    if target is None:
        target = int(base.argmax())
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < base.numel():
        raise ValueError(f"target must be an int class index in [0, {base.numel()}), got {target!r}")
    occlusions, positions = grid_occlusions(image, patch, stride, fill_t)
    started = time.perf_counter()
    outputs, stats = _evaluate(model, occlusions, mode, batch_size, progress)
    stats["wall_time_s"] = time.perf_counter() - started
    stats["positions"] = occlusions.count
    grid = positions.shape[:2]
    return Explanation(
        scores=outputs.reshape(*grid, -1).detach().cpu(),
        base=base.detach().cpu(),
        target=int(target),
        positions=positions,
        patch=patch,
        stride=stride,
        image_size=(int(image.shape[2]), int(image.shape[3])),
        mode=stats["mode"],
        stats=stats,
    )


def _evaluate(
    model: nn.Module, occlusions: Occlusions, mode: str, batch_size: int | None, progress: bool
) -> tuple[torch.Tensor, dict[str, Any]]:
    bar, update = _progress_bar(progress, occlusions.count, mode)
    try:
        if mode == "exact":
            try:
                return _evaluate_exact(model, occlusions, batch_size, update)
            except CaptureError as exc:
                warnings.warn(f"krypton: {exc}; using naive mode", RuntimeWarning, stacklevel=3)
                if bar is not None:
                    bar.reset()
        outputs = run_naive(model, occlusions, batch_size, update)
        return outputs, {"mode": "naive", "requested_mode": mode, "batch_size": batch_size or 16}
    finally:
        if bar is not None:
            bar.close()


def _evaluate_exact(
    model: nn.Module, occlusions: Occlusions, batch_size: int | None, update: Callable | None
) -> tuple[torch.Tensor, dict[str, Any]]:
    graph = captured(model, occlusions.image)
    try:
        plan = plan_for(graph, occlusions)
        result = run_exact(graph, occlusions, plan, batch_size, update)
    except Exception as exc:  # an op the engine could not batch: still answer, correctly
        raise CaptureError(f"incremental inference failed ({exc})") from exc
    if not self_check(model, occlusions, result.outputs):
        raise CaptureError("incremental results failed the self-check")
    naive = plan.naive_macs() * occlusions.count
    stats = {
        "mode": "exact",
        "requested_mode": "exact",
        "batch_size": result.batch_size,
        "flops_naive": naive,
        "flops": result.macs + plan.untouched_macs,
        "theoretical_speedup": naive / max(1, result.macs + plan.untouched_macs),
        "fallbacks": plan.fallbacks,
    }
    return result.outputs, stats


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
    patch: int | tuple[int, int] = 16,
    stride: int | tuple[int, int] = 4,
    batch_size: int | None = None,
) -> Analysis:
    """Theoretical (MAC-count) speedup of exact incremental inference over naive, per op."""
    patch, stride = _validate.pair("patch", patch), _validate.pair("stride", stride)
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4 or shape[0] != 1 or min(shape) <= 0:
        raise ValueError(f"input_shape must be (C, H, W) or (1, C, H, W), got {tuple(input_shape)}")
    _validate.patch_fits(patch, shape[2:])
    image = torch.zeros(shape)
    graph = capture(model, image)
    occlusions, _ = grid_occlusions(image, patch, stride, torch.zeros(shape[1], *patch))
    plan = plan_for(graph, occlusions)
    batch_size = batch_size or auto_batch(plan)
    return _analysis(plan, batch_size)


def _analysis(plan: Plan, batch_size: int) -> Analysis:
    from krypton.engine.plan import window

    groups = batches(plan, batch_size)
    count = plan.count
    ops = []
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
    total = sum(batch_macs(plan, b) for b in groups) / count + plan.untouched_macs
    per_position = float(position_macs(plan).mean()) + plan.untouched_macs
    return Analysis(ops, plan.naive_macs(), total, per_position, count, batch_size, plan.fallbacks)

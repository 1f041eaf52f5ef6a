"""Approximate inference: projective-field thresholding (tau) and adaptive drill-down.

Thresholding (the paper's Eqs. 21-27) is a box transform applied between rules: after every
sliding-window op, each position's changed region is cut to at most round(tau * size) cells per
spatial axis, keeping its centre; cells outside keep their clean values. Drill-down (Eqs. 28-29)
explains the whole image at a coarse stride first, then only the most sensitive fraction of cells at
the requested stride.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from krypton.box import Boxes
from krypton.engine.plan import BoxTransform
from krypton.rules import Rule, Site


def threshold(tau: float) -> BoxTransform | None:
    """The projective-field threshold as a box transform (None for tau = 1: exact)."""
    if tau >= 1.0:
        return None

    def cut(site: Site, rule: Rule, boxes: Boxes, inputs: dict[str, Any]) -> Boxes:
        axes = rule.spatial_axes(site)
        if not axes:
            return boxes
        body = site.body()
        lo, hi = boxes.lo.copy(), boxes.hi.copy()
        for a in axes:
            cap = max(1, int(round(tau * body[a])))
            over = np.maximum(hi[:, a] - lo[:, a] - cap, 0)
            lo[:, a] += over // 2
            hi[:, a] = np.where(over > 0, lo[:, a] + cap, hi[:, a])
        return Boxes(lo, hi)

    return cut


def local_gates() -> BoxTransform:
    """Squeeze-excitation kept local: where a per-channel gate (C, 1, 1), computed from a global mean,
    multiplies a feature map (C, H, W), the product changes only where the feature map itself changed.

    Exactly, the gate's change reaches every cell of the map (so after the first SE block the whole
    tensor changes and SE networks gain nothing). Approximately, the cells inside the feature map's
    changed region use the occluded gate and the cells outside keep their clean values (clean map times
    clean gate): the occlusion's effect on the gate is counted where the occlusion is.
    """
    import torch

    mul = torch.ops.aten.mul.Tensor

    def keep_local(site: Site, rule: Rule, boxes: Boxes, inputs: dict[str, Any]) -> Boxes:
        if site.call.target is not mul or len(site.call.inputs) != 2:
            return boxes
        out = site.body()
        first, second = site.call.inputs
        shapes = [site.body(first), site.body(second)]
        for big, gate in ((0, 1), (1, 0)):
            if _is_gate(shapes[gate], out) and tuple(shapes[big]) == tuple(out):
                changed = inputs.get(list(site.args)[big])
                if changed is None:
                    return Boxes.make(np.zeros_like(boxes.lo), np.zeros_like(boxes.hi), out)
                return Boxes(changed.lo.copy(), changed.hi.copy())
        return boxes

    return keep_local


def _is_gate(shape: tuple[int, ...], out: tuple[int, ...]) -> bool:
    """(C, 1, 1[, 1]) against a (C, H, W[, D]) map with at least one spatial axis > 1."""
    return (
        len(shape) == len(out) >= 2
        and shape[0] in (1, out[0])
        and all(s == 1 for s in shape[1:])
        and any(o > 1 for o in out[1:])
    )


def approximation(tau: float = 1.0, gates: bool = False) -> BoxTransform | None:
    """The box transform of an approximate run: thresholding (tau < 1) and/or local gates; None = exact."""
    parts = [t for t in (threshold(tau), local_gates() if gates else None) if t is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]

    def both(site: Site, rule: Rule, boxes: Boxes, inputs: dict[str, Any]) -> Boxes:
        for part in parts:
            boxes = part(site, rule, boxes, inputs)
        return boxes

    return both


@dataclass(frozen=True)
class Drilldown:
    """Adaptive drill-down settings.

    rule: how the fine cells are chosen - "regions" (default: two stages; stage 2 takes the cells where
    the coarse map drops most *or* changes most steeply, grown into contiguous regions), "paper" (two
    stages; the fraction with the lowest interpolated target probability, the paper's rule) or "refine"
    (several levels: a coarse lattice, then the spacing halved level by level where the map varies
    most; see `krypton.modes.refine`);
    fraction: share r of the fine grid re-explained at the requested stride in stage 2 (0 < r <= 1;
    two-stage rules only);
    speedup: two-stage rules: the target speedup of both stages over one fine pass, which sets the coarse
    stride (Eq. 29); "refine": the share 1/speedup of the fine positions computed in all (>= 1; 1 = all);
    coarse_stride: the stage-1 stride S1 itself (two-stage rules: instead of `speedup`, giving both is an
    error; must be a positive int (or one per axis) >= the stride; "refine": the first lattice's
    stride, a whole multiple of the stride).
    """

    fraction: float = 0.25
    speedup: float = 3.0
    coarse_stride: int | tuple[int, ...] | None = None
    rule: str = "regions"


def parse_drilldown(value: Any) -> Drilldown | None:
    """None/False, True (defaults), a Drilldown, or a dict of its fields."""
    if value is None or value is False:
        return None
    if value is True:
        return Drilldown()
    if isinstance(value, Drilldown):
        result = value
    elif isinstance(value, dict):
        unknown = set(value) - {"fraction", "speedup", "coarse_stride", "rule"}
        if unknown:
            raise ValueError(
                f"drilldown has unknown keys {sorted(unknown)}; allowed: fraction, speedup, coarse_stride, rule"
            )
        if value.get("rule", "regions") not in RULES:
            raise ValueError(f"drilldown rule must be one of {', '.join(RULES)}, got {value.get('rule')!r}")
        if value.get("rule") == "refine" and "fraction" in value:
            raise ValueError("drilldown fraction applies to the two-stage rules (regions, paper); rule 'refine' "
                             "computes 1/speedup of the positions in all: give speedup")  # fmt: skip
        if "speedup" in value and value.get("coarse_stride") is not None and value.get("rule") != "refine":
            raise ValueError("drilldown takes speedup or coarse_stride, not both (coarse_stride fixes the speedup)")
        result = Drilldown(**value)
    else:
        raise ValueError(f"drilldown must be None, True, a krypton.Drilldown or a dict, got {type(value).__name__}")
    if result.rule == "refine":
        return _checked_refine(result)
    if not isinstance(result.fraction, (int, float)) or not 0 < result.fraction <= 1:
        raise ValueError(f"drilldown fraction r must be in (0, 1], got {result.fraction!r}")
    s1 = result.coarse_stride
    pair = s1 if isinstance(s1, (tuple, list)) else (s1,)
    if s1 is not None and (
        len(pair) not in (1, 2, 3) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
    ):
        raise ValueError(f"drilldown coarse_stride S1 must be a positive int or one per spatial axis, got {s1!r}")
    if result.coarse_stride is None:
        if not isinstance(result.speedup, (int, float)) or result.speedup <= 1:
            raise ValueError(f"drilldown speedup must be > 1, got {result.speedup!r}")
        if result.fraction * result.speedup >= 1:
            raise ValueError(
                f"drilldown speedup {result.speedup} is unreachable with fraction {result.fraction}: computing "
                "that share in detail already costs more; need fraction x speedup < 1 (lower one of them)"
            )
    return result


def _checked_refine(settings: Drilldown) -> Drilldown:
    t, s1 = settings.speedup, settings.coarse_stride
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 1:
        raise ValueError(f"drilldown speedup must be >= 1 for rule 'refine' (1 computes every cell), got {t!r}")
    if s1 is not None and (isinstance(s1, bool) or not isinstance(s1, int) or s1 <= 0):
        raise ValueError(f"drilldown coarse_stride must be a positive int for rule 'refine', got {s1!r}")
    return settings


def refine_step(settings: Drilldown, stride: tuple[int, ...]) -> int | None:
    """The first lattice's spacing in fine cells for rule "refine" (None: the default, chosen by budget)."""
    if settings.coarse_stride is None:
        return None
    s1 = settings.coarse_stride
    if not isinstance(s1, int) or any(s1 % s for s in stride):
        raise ValueError(
            f"drilldown coarse_stride {s1} must be a whole multiple of the stride {stride} (rule 'refine')"
        )
    steps = {s1 // s for s in stride}
    if len(steps) != 1:
        raise ValueError(f"drilldown coarse_stride {s1} must be the same multiple of every axis' stride {stride}")
    return steps.pop()


def drilldown_gain(settings: Drilldown, stride: tuple[int, ...]) -> float:
    """Predicted speedup in positions over one fine pass: Eq. 28 for the two-stage rules, the budget
    itself for "refine" (exact by construction, up to rounding)."""
    if settings.rule == "refine":
        return float(settings.speedup)
    return predicted_speedup(coarse_stride(settings, stride), stride, settings.fraction)


def coarse_stride(settings: Drilldown, stride: tuple[int, ...]) -> tuple[int, ...]:
    """S1 per axis: given, or from the target speedup, S1 = (t / (1 - r t))^(1/d) * S2 on d spatial axes
    (Eq. 29 is d = 2: a square root)."""
    d = len(stride)
    if settings.coarse_stride is not None:
        s1 = settings.coarse_stride
        s1 = (s1,) * d if isinstance(s1, int) else tuple(s1)
        if len(s1) != d or any(not isinstance(v, int) or v < s for v, s in zip(s1, stride)):
            raise ValueError(f"drilldown coarse_stride S1 must be an int or {d} ints >= stride {stride}, got {s1}")
        return tuple(int(v) for v in s1)
    t, r = settings.speedup, settings.fraction
    factor = (t / (1 - r * t)) ** (1 / d)
    return tuple(max(s, int(round(factor * s))) for s in stride)


def predicted_speedup(s1: tuple[int, ...], s2: tuple[int, ...], fraction: float) -> float:
    """Eq. 28 on any rank: positions of one fine pass / positions of both stages."""
    return math.prod(s1) / (math.prod(s2) + fraction * math.prod(s1))


def upsample(
    coarse: np.ndarray, coarse_stride: tuple[int, ...], fine_shape: tuple[int, ...], fine_stride: tuple[int, ...]
) -> np.ndarray:
    """Multilinear interpolation of a coarse grid map (cells at i*S1) onto fine grid cells (at j*S2).

    `coarse` is (*coarse_grid, ...) (trailing axes, e.g. classes, are carried along); each spatial axis
    is one matrix product with the linear-interpolation weights (np.interp's rule: clamped beyond the
    last cell).
    """
    out = coarse
    for axis in range(len(coarse_stride)):
        weights = _interp_matrix(coarse.shape[axis], coarse_stride[axis], fine_shape[axis], fine_stride[axis])
        out = np.moveaxis(np.tensordot(weights, np.moveaxis(out, axis, 0), axes=1), 0, axis)
    return out


def _interp_matrix(count: int, step: int, fine: int, fine_step: int) -> np.ndarray:
    """(fine, count) weights: row j interpolates position j*fine_step between coarse cells i*step."""
    where = np.clip(np.arange(fine) * fine_step / step, 0, count - 1)
    left = np.minimum(np.floor(where).astype(np.int64), max(count - 2, 0))
    frac = where - left
    weights = np.zeros((fine, count))
    rows = np.arange(fine)
    weights[rows, left] = 1 - frac if count > 1 else 1.0
    if count > 1:
        weights[rows, left + 1] = frac
    return weights


RULES = ("regions", "paper", "refine")


def select_cells(upsampled: np.ndarray, fraction: float, rule: str = "paper") -> np.ndarray:
    """Boolean mask of `fraction` of the fine cells to compute exactly in stage 2.

    "paper": the cells with the lowest interpolated target probability (largest drops). "regions":
    each cell scores its drop below the map's median plus its steepest change to a neighbour (an
    uncertain edge or extremum of the coarse map is where interpolation is least trustworthy); the best
    half of the budget is chosen by score and grown by one cell into contiguous regions, the rest of
    the budget goes to the next-best cells. Both spend exactly the same budget.
    """
    flat = upsampled.reshape(-1)
    count = max(1, int(math.ceil(fraction * flat.size)))
    if rule == "paper" or count >= flat.size:
        chosen = np.argsort(flat, kind="stable")[:count]
        mask = np.zeros(flat.size, dtype=bool)
        mask[chosen] = True
        return mask.reshape(upsampled.shape)
    from scipy import ndimage

    drop = np.maximum(np.median(upsampled) - upsampled, 0.0)
    steep = np.zeros_like(upsampled)
    for axis in range(upsampled.ndim):
        step = np.abs(np.diff(upsampled, axis=axis))
        for before in ((1, 0), (0, 1)):  # each cell's change to its neighbour on either side
            steep = np.maximum(steep, np.pad(step, [before if a == axis else (0, 0) for a in range(upsampled.ndim)]))
    score = (drop + steep).reshape(-1)
    order = np.argsort(-score, kind="stable")
    seeds = np.zeros(flat.size, dtype=bool)
    seeds[order[: max(1, count // 2)]] = True
    grown = ndimage.binary_dilation(seeds.reshape(upsampled.shape)).reshape(-1)
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[grown[order]][:count]] = True
    left = count - int(mask.sum())
    if left > 0:  # the rest of the budget: the next-best cells
        mask[order[~mask[order]][:left]] = True
    return mask.reshape(upsampled.shape)

"""Auto-tuning: the lowest projective-field threshold tau that keeps heat maps at a target SSIM.

Like the paper (Sec. 4.3), SSIM(exact, approximate) is measured on sample images over a grid of tau;
the paper fits a quadratic to the mean and solves for the target, which met the target on 80 % of its
held-out images. We choose instead the lowest tau whose lower quantile (default: 10th percentile) of
the sample SSIMs meets the target - a per-image guarantee rather than an average - and still report
the quadratic fit. Held-out images then measure what the chosen tau really achieves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from krypton.modes.approximate import Drilldown, coarse_stride, predicted_speedup
from krypton.modes.quality import ssim

DEFAULT_TAUS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)


@dataclass
class TuneResult:
    """The chosen tau and the evidence for it."""

    tau: float
    target_ssim: float
    sample_ssim: dict[float, list[float]]  # tau -> SSIM of each sample image
    fit: list[float]  # quadratic SSIM(tau) coefficients, lowest degree first (the paper's model)
    heldout_ssim: list[float] = field(default_factory=list)

    @property
    def heldout_met(self) -> float:
        """Share of held-out images whose SSIM met the target (nan without held-out images)."""
        if not self.heldout_ssim:
            return float("nan")
        return float(np.mean([s >= self.target_ssim for s in self.heldout_ssim]))

    def summary(self) -> str:
        rows = [f"tau {t:.2f}: min {min(v):.3f} mean {np.mean(v):.3f}" for t, v in sorted(self.sample_ssim.items())]
        held = ""
        if self.heldout_ssim:
            held = (f"; held-out SSIM mean {np.mean(self.heldout_ssim):.3f}, min {min(self.heldout_ssim):.3f}, "
                    f"{100 * self.heldout_met:.0f}% >= {self.target_ssim}")
        return f"tau = {self.tau} for SSIM >= {self.target_ssim}{held}\n" + "\n".join(rows)


def _maps(model: nn.Module, image: torch.Tensor, taus: Sequence[float], **kwargs: Any) -> dict[float, torch.Tensor]:
    from krypton.api import explain

    exact = explain(model, image, mode="exact", **kwargs)
    maps = {1.0: exact.heatmap}
    for tau in taus:
        if tau < 1.0:
            maps[tau] = explain(model, image, mode="approximate", tau=tau, target=exact.target, **kwargs).heatmap
    return maps


def tune(
    model: nn.Module,
    sample_images: Sequence[torch.Tensor],
    *,
    patch: int | tuple[int, int] = 16,
    stride: int | tuple[int, int] = 4,
    target_ssim: float = 0.9,
    heldout_images: Sequence[torch.Tensor] = (),
    taus: Sequence[float] = DEFAULT_TAUS,
    quantile: float = 0.1,
    fill: Any = 0.0,
    batch_size: int | None = None,
) -> TuneResult:
    """Lowest tau in `taus` whose `quantile` of sample SSIMs reaches `target_ssim` (1.0 if none does)."""
    if not 0 < target_ssim <= 1:
        raise ValueError(f"target_ssim must be in (0, 1], got {target_ssim!r}")
    if not sample_images:
        raise ValueError("sample_images must hold at least one image")
    if not all(0 < t <= 1 for t in taus):
        raise ValueError(f"taus must lie in (0, 1], got {list(taus)}")
    if not 0 <= quantile < 1:
        raise ValueError(f"quantile must be in [0, 1), got {quantile!r}")
    kwargs = {"patch": patch, "stride": stride, "fill": fill, "batch_size": batch_size}
    scores: dict[float, list[float]] = {t: [] for t in taus if t < 1.0}
    for image in sample_images:
        maps = _maps(model, image, list(scores), **kwargs)
        for t in scores:
            scores[t].append(ssim(maps[1.0], maps[t]))
    chosen = 1.0
    for t in sorted(scores, reverse=True):
        if np.quantile(scores[t], quantile) >= target_ssim:
            chosen = t
        else:
            break
    xs = [t for t in scores for _ in scores[t]] + [1.0] * len(sample_images)
    ys = [s for t in scores for s in scores[t]] + [1.0] * len(sample_images)
    fit = np.polynomial.polynomial.polyfit(xs, ys, 2).tolist() if len(set(xs)) > 2 else []
    result = TuneResult(chosen, target_ssim, scores, fit)
    for image in heldout_images:
        maps = _maps(model, image, [chosen], **kwargs)
        result.heldout_ssim.append(ssim(maps[1.0], maps[chosen]) if chosen < 1.0 else 1.0)
    return result


def drilldown_for(speedup: float, fraction: float, stride: int | tuple[int, int]) -> tuple[Drilldown, float]:
    """Drill-down settings reaching `speedup` with re-explained share `fraction`, and the Eq. 28 prediction."""
    from krypton import _validate
    from krypton.modes.approximate import parse_drilldown

    stride = _validate.pair("stride", stride)
    settings = parse_drilldown({"fraction": fraction, "speedup": speedup})
    s1 = coarse_stride(settings, stride)
    return Drilldown(fraction, speedup, s1), predicted_speedup(s1, stride, fraction)

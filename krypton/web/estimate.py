"""Run-time estimates before a job runs: `krypton.analyze` MACs times this machine's measured speed.

One timed forward pass gives seconds per MAC on this CPU; naive mode costs one forward pass per
position, exact and approximate modes the incremental MACs per position that `analyze` counts. The
incremental engine has overheads MACs do not capture, so every finished job also records how far off
its estimate was, and later estimates for that model and mode are scaled by the running average. Exact
mode is estimated as what the run pipeline will do: never more than naive (it then runs naive, and the
estimate says `path: "naive"`).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import torch

import krypton
from krypton.api import DEFAULT_TAU
from krypton.choices import MODES
from krypton.models.loaded import LoadedModel
from krypton.modes.approximate import Drilldown, coarse_stride
from krypton.modes.naive import DEFAULT_BATCH
from krypton.pipeline import guarded_call
from krypton.web.sweep import Region, count_positions

TIMING_BATCH = DEFAULT_BATCH // 2


class Estimator:
    """Caches the calibration (per model) and the analyses (per model, shape, patch, stride, tau)."""

    def __init__(self) -> None:
        self._forward: dict[str, float] = {}
        self._analyses: dict[tuple, krypton.Analysis] = {}
        self._correction: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def forward_s(self, name: str, loaded: LoadedModel, tensor: torch.Tensor) -> float:
        """Seconds per image of a batched forward pass as naive mode runs it; measured once per model.

        First calls allocate and pick kernels, so each batch size is warmed up; the best of 2 timings is
        kept, since a busy machine only ever makes a run slower. The batch is half naive mode's (per-image
        times differ little between the two; finished runs correct the estimate): the first estimates of a
        large model then come seconds sooner.
        """
        if name not in self._forward:
            with torch.no_grad():
                one = self._best(loaded, tensor[None], 1)
                size = TIMING_BATCH if one * TIMING_BATCH < 1.0 else 2
                batch = tensor[None].expand(size, *tensor.shape).contiguous()
                self._forward[name] = self._best(loaded, batch, 2) / size
        return self._forward[name]

    @staticmethod
    def _best(loaded: LoadedModel, batch: torch.Tensor, repeats: int) -> float:
        guarded_call(loaded.module, batch)  # shares the model with captures and jobs safely
        best = math.inf
        for _ in range(repeats):
            started = time.perf_counter()
            guarded_call(loaded.module, batch)
            best = min(best, time.perf_counter() - started)
            if best > 2.0:
                break
        return best

    def analysis(
        self,
        name: str,
        loaded: LoadedModel,
        shape: tuple[int, ...],
        patch: int,
        stride: int,
        tau: float,
        cached_only: bool = False,
    ) -> krypton.Analysis | None:
        """`krypton.analyze` once per settings (a failure too: it would fail again, slowly)."""
        key = (name, tuple(shape), patch, stride, round(tau, 4))
        if key not in self._analyses:
            if cached_only:
                return None
            try:  # analyze captures the graph under the pipeline's guard (never racing a model call)
                self._analyses[key] = krypton.analyze(loaded.module, tuple(shape), patch=patch, stride=stride, tau=tau)
            except Exception as exc:  # remembered, and raised again below
                self._analyses[key] = exc
        found = self._analyses[key]
        if isinstance(found, Exception):
            raise found
        return found

    def learn(self, name: str, mode: str, estimated: float | None, actual: float) -> None:
        """Remember actual / estimated time, so the next estimate for this model and mode is closer."""
        if not estimated or estimated <= 0 or actual <= 0:
            return
        with self._lock:
            ratio, count = self._correction.get((name, mode), (1.0, 0))
            log_ratio = (math.log(ratio) * count + math.log(actual / estimated)) / (count + 1)
            self._correction[(name, mode)] = (math.exp(log_ratio), min(count + 1, 5))

    def factor(self, name: str, mode: str) -> tuple[float, int]:
        with self._lock:
            return self._correction.get((name, mode), (1.0, 0))

    def estimate(
        self,
        name: str,
        loaded: LoadedModel,
        tensor: torch.Tensor,
        patch: int,
        stride: int,
        tau: float | None,
        drilldown: Drilldown | None,
        region: Region | None,
        cached_only: bool = False,
    ) -> dict[str, Any] | None:
        """Estimated seconds per mode for these settings (`tau` and `drilldown` for the approximate one).

        With `cached_only`, never measures or captures: None, or only the modes already analysed.
        """
        shape = tuple(tensor.shape)
        positions = count_positions(shape[1:], patch, stride, region)
        if cached_only and name not in self._forward:
            return None
        forward = self.forward_s(name, loaded, tensor)
        try:
            exact = self.analysis(name, loaded, shape, patch, stride, 1.0, cached_only)
            approx = self.analysis(name, loaded, shape, patch, stride, tau or DEFAULT_TAU, cached_only)
        except Exception as exc:  # the engine cannot capture this model: every mode runs as naive
            naive = self._mode(name, "naive", positions * forward, positions, 0.0)
            note = f"incremental inference is not available for this model, all modes run naive ({exc})"
            return {
                "positions": positions,
                "forward_ms": round(forward * 1000, 2),
                "note": note,
                "modes": {mode: dict(naive) for mode in MODES},
            }
        if exact is None:
            return None
        per_mac = forward / max(exact.naive_macs, 1)
        modes: dict[str, Any] = {"naive": self._mode(name, "naive", positions * forward, positions, exact.naive_macs)}
        modes["exact"] = self._mode(
            name, "exact", positions * exact.incremental_macs * per_mac, positions, exact.incremental_macs
        )
        if approx is not None:
            approx_positions = positions
            if drilldown is not None and region is None and drilldown.rule == "refine":
                approx_positions = math.ceil(positions / drilldown.speedup)  # a ceiling by construction
            elif drilldown is not None and region is None:
                s1 = coarse_stride(drilldown, (stride, stride))
                approx_positions = count_positions(shape[1:], patch, s1[0], None) + math.ceil(
                    drilldown.fraction * positions
                )
            modes["approximate"] = self._mode(
                name,
                "approximate",
                approx_positions * approx.incremental_macs * per_mac,
                approx_positions,
                approx.incremental_macs,
            )
        for mode in modes:
            modes[mode]["theoretical_speedup"] = modes["naive"]["macs"] / max(modes[mode]["macs"], 1)
        for mode in ("exact", "approximate"):  # the run pipeline never runs slower than naive: neither do we
            if mode in modes:
                modes[mode]["path"] = "incremental"
                if modes[mode]["seconds"] > modes["naive"]["seconds"] and mode == "exact":
                    modes[mode].update(seconds=modes["naive"]["seconds"], path="naive")
        return {
            "positions": positions,
            "forward_ms": round(forward * 1000, 2),
            "gmacs_per_s": round(exact.naive_macs / forward / 1e9, 3),
            "naive_gmacs_per_forward": round(exact.naive_macs / 1e9, 4),
            "modes": modes,
        }

    def naive_only(
        self, name: str, loaded: LoadedModel, tensor: torch.Tensor, patch: int, stride: int, region: Region | None
    ) -> dict[str, Any]:
        """Just the naive estimate (one calibration, no graph capture): the basis of the speedup shown."""
        positions = count_positions(tuple(tensor.shape[1:]), patch, stride, region)
        forward = self.forward_s(name, loaded, tensor)
        return {"naive": self._mode(name, "naive", positions * forward, positions, 0.0)}

    def _mode(self, name: str, mode: str, seconds: float, positions: int, macs_per_position: float) -> dict[str, Any]:
        factor, runs = self.factor(name, mode)
        return {
            "seconds": round(seconds * factor, 6),
            "raw_seconds": round(seconds, 6),
            "correction": round(factor, 3),
            "runs": runs,
            "positions": positions,
            "macs": float(positions * macs_per_position),
        }

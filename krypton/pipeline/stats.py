"""What a run did and why: one typed record for every interface (API, Captum drop-in, web, Ray)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RunStats:
    """How the outputs of one set of occlusions were computed.

    `mode` is the mode whose numbers the outputs are ("naive" when an incremental request had to fall
    back for a failure); `path` is how they were computed ("incremental", "naive", or
    "incremental+naive" when calibration switched part-way) and `reason` says why. MACs are
    multiply-accumulates (None when no graph was captured, so nothing was counted).
    """

    requested_mode: str
    mode: str
    path: str = "naive"
    reason: str = ""
    positions: int = 0
    batch_size: int = 0
    macs: float | None = None  # spent by this run (incremental steps + parameter-only calls)
    macs_naive: float | None = None  # full re-inference of every position
    incremental_positions: int = 0
    naive_positions: int = 0
    naive_layout: str | None = None  # "channels_last" or "contiguous" when naive batches ran
    graph_source: str | None = None  # "memory", "disk" or "captured"
    capture_s: float | None = None
    capture_reason: str = ""  # why a graph was captured that this run alone could not pay for
    fallbacks: list[tuple[str, str]] = field(default_factory=list)  # ops computed in full
    wall_time_s: float = 0.0

    @property
    def theoretical_speedup(self) -> float | None:
        if not self.macs or self.macs_naive is None:
            return None
        return self.macs_naive / max(1.0, self.macs)

    def as_dict(self) -> dict[str, Any]:
        """The mapping `Explanation.stats` shows (JSON-ready)."""
        out = asdict(self)
        out["theoretical_speedup"] = self.theoretical_speedup
        out["fallbacks"] = [list(f) for f in self.fallbacks]
        return out

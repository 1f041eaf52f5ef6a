"""Progress of a batch run: images done / total, failures, throughput and ETA, then a one-line summary.

On a terminal the line is redrawn in place; in logs (CI, nohup) a line is printed every few percent or
seconds, so that a long run shows it is alive without flooding the log.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def duration(seconds: float) -> str:
    """'42s', '3m05s', '2h07m'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Counts results of this run; `skipped` images were finished by an earlier run of the same command."""

    def __init__(self, total: int, skipped: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total, self.skipped = total, skipped
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = self.failed = 0
        self.started = self.working = time.perf_counter()
        self._last_print = 0.0
        self._last_count = -1

    @property
    def todo(self) -> int:
        return self.total - self.skipped

    def begin(self) -> None:
        """Workers are ready: throughput and ETA count from here, not from Ray and model start-up."""
        self.working = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def rate(self) -> float:
        """Images per minute since the workers were ready."""
        elapsed = time.perf_counter() - self.working
        return 60.0 * self.done / elapsed if elapsed > 0 and self.done else 0.0

    def line(self) -> str:
        finished = self.skipped + self.done
        pct = 100.0 * finished / self.total if self.total else 100.0
        left = self.todo - self.done
        eta = f"ETA {duration(60.0 * left / self.rate())}" if self.rate() and left else "ETA --"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"krypton batch: {finished}/{self.total} ({pct:.0f}%){failed} | {self.rate():.1f} img/min | {eta}"

    def update(self, record: dict[str, Any]) -> None:
        self.done += 1
        self.failed += record.get("status") != "ok"
        if self.enabled:
            self._show()

    def _show(self, force: bool = False) -> None:
        now = time.perf_counter()
        step = max(1, self.todo // 20)
        due = force or self.tty or now - self._last_print >= 10.0 or self.done - self._last_count >= step
        if not due or self.done == self._last_count:
            return
        self._last_print, self._last_count = now, self.done
        end = "" if self.tty else "\n"
        prefix = "\r\033[K" if self.tty else ""
        print(prefix + self.line(), end=end, file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=self.stream, flush=True)

    def summary(self, workers: int, manifest: str, interrupted: bool = False) -> str:
        """'krypton batch: 20 images: 18 explained, 1 done earlier, 1 failed in 1m03s (17.1 img/min, 2 workers)'."""
        elapsed = self.elapsed()
        ok = self.done - self.failed
        parts = [f"{ok} explained"]
        if self.skipped:
            parts.append(f"{self.skipped} done earlier")
        if self.failed:
            parts.append(f"{self.failed} failed")
        left = self.todo - self.done
        if left:
            parts.append(f"{left} not done")
        head = "interrupted" if interrupted else f"{self.total} images"
        plural = "s" if workers != 1 else ""
        tail = " (re-run the same command to resume)" if interrupted or left else ""
        return (
            f"krypton batch: {head}: {', '.join(parts)} in {duration(elapsed)} "
            f"({self.rate():.1f} img/min, {workers} worker{plural}) -> {manifest}{tail}"
        )

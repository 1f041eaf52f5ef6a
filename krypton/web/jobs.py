"""A bounded job queue: explanations from every tab wait in one line and run a few at a time.

A 2-core machine gets slower, not faster, when several explanations share it, so at most `workers`
run at once and at most `max_waiting` may wait; more is refused (HTTP 429) instead of piling up. Each
job owns its own progress maps and results, so tabs never see each other's numbers.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger("krypton.web")
TERMINAL = ("done", "error", "cancelled")


class Cancelled(Exception):
    """Raised inside a running job (from its progress callback) once the user cancelled it."""


class NotFound(LookupError):
    """An id or name the server does not know (HTTP 404)."""


class QueueFull(Exception):
    """Too many jobs are waiting."""


@dataclass
class PhaseMap:
    """The progressive heat map of one phase (e.g. 'exact' or 'approximate' in a comparison)."""

    grid: tuple[int, int]
    origin: tuple[int, int]  # (y, x) of the first patch corner
    heat: np.ndarray
    computed: np.ndarray
    done: int = 0
    total: int = 0
    elapsed_s: float = 0.0
    estimate_s: float | None = None

    def as_json(self) -> dict[str, Any]:
        eta = None
        if self.total and self.done >= self.total:
            eta = 0.0
        elif self.done > 0:
            eta = self.elapsed_s / self.done * (self.total - self.done)
        elif self.estimate_s is not None:
            eta = max(0.0, self.estimate_s - self.elapsed_s)
        return {
            "grid": list(self.grid),
            "origin": list(self.origin),
            "heat": [round(float(v), 5) for v in self.heat.reshape(-1)],
            "computed": "".join("1" if c else "0" for c in self.computed.reshape(-1)),
            "done": self.done,
            "total": self.total,
            "elapsed_s": round(self.elapsed_s, 3),
            "eta_s": None if eta is None else round(eta, 2),
        }


@dataclass
class Job:
    """One explanation request and everything it has produced so far."""

    id: str
    params: dict[str, Any]
    state: str = "queued"
    message: str = ""
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    phase: str | None = None
    maps: dict[str, PhaseMap] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)  # e.g. Explanations for downloads
    info: dict[str, Any] = field(default_factory=dict)  # shown from the start (estimates, probability)
    version: int = 0
    listeners: int = 0  # open event streams (pages following this job)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def begin_phase(self, name: str, phase_map: PhaseMap) -> None:
        with self.lock:
            self.phase, self.maps[name] = name, phase_map
            self.version += 1

    def publish(
        self,
        name: str,
        heat: np.ndarray,
        computed: np.ndarray,
        done: int,
        total: int,
        elapsed: float,
        check_cancel: bool = True,
    ) -> None:
        """Store a progressive snapshot; raises Cancelled when the user asked to stop."""
        with self.lock:
            current = self.maps[name]
            current.heat, current.computed = heat, computed
            current.done, current.total, current.elapsed_s = done, total, elapsed
            self.version += 1
        if check_cancel and self.cancel_event.is_set():
            raise Cancelled()

    def set(self, **changes: Any) -> None:
        with self.lock:
            for key, value in changes.items():
                setattr(self, key, value)
            self.version += 1

    def snapshot(self, ahead: int = 0) -> dict[str, Any]:
        with self.lock:
            return {
                "id": self.id,
                "state": self.state,
                "message": self.message,
                "ahead": ahead if self.state == "queued" else 0,
                "phase": self.phase,
                "maps": {name: m.as_json() for name, m in self.maps.items()},
                "info": self.info,
                "result": self.result,
                "version": self.version,
            }


class JobQueue:
    """Runs `runner(job)` for submitted jobs on `workers` threads; `runner` returns the job's result dict."""

    def __init__(
        self, runner: Callable[[Job], dict[str, Any]], workers: int = 1, max_waiting: int = 8, keep: int = 24
    ) -> None:
        self.runner, self.workers, self.max_waiting, self.keep = runner, workers, max_waiting, keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._waiting: list[str] = []
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"krypton-job-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, params: dict[str, Any], info: dict[str, Any] | None = None) -> Job:
        with self._lock:
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(
                    f"{len(self._waiting)} jobs are already waiting (the limit is {self.max_waiting}); "
                    "try again when one has finished"
                )
            job = Job(secrets.token_hex(8), params, info=dict(info or {}))
            self._jobs[job.id] = job
            self._waiting.append(job.id)
            self._forget_old()
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise NotFound(f"unknown job id {job_id!r}")
            return self._jobs[job_id]

    def ahead(self, job: Job) -> int:
        """Jobs that run before this one: those waiting in front of it and those running now (any tab's)."""
        with self._lock:
            if job.id not in self._waiting:
                return 0
            running = sum(1 for j in self._jobs.values() if j.state == "running")
            return self._waiting.index(job.id) + running

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel_event.set()
        with self._lock:
            if job.id in self._waiting:  # never started: done now
                self._waiting.remove(job.id)
                job.set(state="cancelled", message="cancelled before it started", finished=time.time())
        return job

    def stats(self) -> dict[str, Any]:
        with self._lock:
            running = sum(1 for j in self._jobs.values() if j.state == "running")
            return {
                "running": running,
                "waiting": len(self._waiting),
                "workers": self.workers,
                "max_waiting": self.max_waiting,
            }

    def close(self) -> None:
        """Cancel everything and stop the worker threads."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel_event.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=30)

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.state in TERMINAL]
        for key in finished[: max(0, len(self._jobs) - self.keep)]:
            del self._jobs[key]

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.id not in self._waiting:  # cancelled while waiting
                    continue
                self._waiting.remove(job.id)
                job.set(state="running", started=time.time())
            self._run(job)

    def _run(self, job: Job) -> None:
        try:
            if job.cancel_event.is_set():
                raise Cancelled()
            result = self.runner(job)
            job.set(state="done", result=result, finished=time.time(), message="")
        except Cancelled:
            job.set(state="cancelled", message="cancelled", finished=time.time())
        except (ValueError, LookupError) as exc:  # the request cannot be answered: say why
            job.set(state="error", message=" ".join(str(exc).split()), finished=time.time())
        except Exception as exc:  # a bug or a model failure: keep serving, tell the page
            log.exception("job %s failed", job.id)
            job.set(state="error", message=f"internal error: {type(exc).__name__}: {exc}", finished=time.time())

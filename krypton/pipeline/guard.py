"""One process-wide guard between graph capture and model calls.

`torch.export` patches process-global state while it traces, so a model call from another thread in
the middle of a capture is traced too (the web demo's timing pass and brush requests did this) and the
capture fails with a guard error. Capture therefore takes the guard exclusively; every model call made
by krypton takes it shared, one batch at a time, so a capture waits only for batches already running.
Waiting captures go first (no starvation by a stream of batches).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_cond = threading.Condition(threading.Lock())
_readers: dict[int, int] = {}  # thread id -> shared holds (re-entrant)
_writer: int | None = None  # thread id holding the guard exclusively
_writer_depth = 0
_writers_waiting = 0


@contextmanager
def shared() -> Iterator[None]:
    """Hold the guard for model calls (many threads at once, never during a capture)."""
    global _readers
    me = threading.get_ident()
    with _cond:
        if _writer != me and me not in _readers:
            while _writer is not None or _writers_waiting:
                _cond.wait()
        _readers[me] = _readers.get(me, 0) + 1
    try:
        yield
    finally:
        with _cond:
            _readers[me] -= 1
            if not _readers[me]:
                del _readers[me]
            _cond.notify_all()


@contextmanager
def exclusive() -> Iterator[None]:
    """Hold the guard alone (graph capture). Re-entrant; a thread holding it shared may not upgrade."""
    global _writer, _writer_depth, _writers_waiting
    me = threading.get_ident()
    with _cond:
        if _writer != me:
            if me in _readers:
                raise RuntimeError("krypton: a capture cannot start inside a model call of the same thread")
            _writers_waiting += 1
            try:
                while _writer is not None or _readers:
                    _cond.wait()
            finally:
                _writers_waiting -= 1
            _writer = me
        _writer_depth += 1
    try:
        yield
    finally:
        with _cond:
            _writer_depth -= 1
            if not _writer_depth:
                _writer = None
            _cond.notify_all()


def call(model: Any, *args: Any) -> Any:
    """`model(*args)` without gradients, never interleaved with a capture."""
    with shared(), torch.no_grad():
        return model(*args)

"""Captured graphs for the pipeline: memory cache, on-disk cache, remembered failures, quick refusals.

Capture is the slow, fixed cost of incremental inference, so the pipeline asks here first what a graph
would cost (`capture_estimate`), and whether one is already at hand. A capture runs under the guard
exclusively (no model call from another thread can be traced into it); a failure is remembered for
that model and input shape, so the process never pays for it twice.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from krypton.capture import CaptureError, Graph, export_program, from_program, indexed
from krypton.engine.materialize import materialize
from krypton.pipeline import disk_cache, guard

MEMORY_SLOTS = 8
# Layers whose captured graphs the engine cannot batch (the batch axis moves, or every output depends on
# every input): refusing them up front saves a capture that could only fail (a GRU cost 8.7 s).
NOT_INCREMENTAL = (nn.RNNBase, nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder)


@dataclass
class Captured:
    graph: Graph
    source: str  # "memory", "disk" or "captured"
    seconds: float


_lock = threading.RLock()
_graphs: dict[tuple, Graph] = {}
_failures: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()
_naive_seconds: weakref.WeakKeyDictionary[nn.Module, dict[tuple, float]] = weakref.WeakKeyDictionary()
_seconds_per_module = [0.012]  # cold-capture cost model, refined by every capture in this process
_DISK_LOAD_S = 0.1


def _shape_key(image: torch.Tensor) -> tuple:
    return (tuple(image.shape), image.dtype, str(image.device))


def _memory_key(model: nn.Module, image: torch.Tensor) -> tuple:
    weights = tuple((t.data_ptr(), t._version) for t in list(model.parameters()) + list(model.buffers()))
    return (id(model), _shape_key(image), weights)


def refusal(model: nn.Module, image: torch.Tensor) -> str | None:
    """Why this model cannot run incrementally, known without capturing; None if it may."""
    with _lock:
        failed = _failures.get(model, {}).get(_shape_key(image))
    if failed:
        return f"{failed} (remembered from an earlier attempt)"
    kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, NOT_INCREMENTAL)})
    if kinds:
        return f"{', '.join(kinds)} layers: every output depends on the whole input, no incremental saving"
    return None


def remember_failure(model: nn.Module, image: torch.Tensor, reason: str) -> None:
    with _lock:
        _failures.setdefault(model, {})[_shape_key(image)] = reason


def naive_spent(model: nn.Module, image: torch.Tensor) -> float:
    """Seconds this process spent re-inferring the model at this shape because a capture did not pay for
    one run alone: once they reach the capture's cost, the next run captures (rent-or-buy: a dataset of
    calls then pays at most twice the better of the two, instead of naive's price on every call)."""
    with _lock:
        return _naive_seconds.get(model, {}).get(_shape_key(image), 0.0)


def add_naive_spent(model: nn.Module, image: torch.Tensor, seconds: float) -> None:
    with _lock:
        spent = _naive_seconds.setdefault(model, {})
        spent[_shape_key(image)] = spent.get(_shape_key(image), 0.0) + seconds


def in_memory(model: nn.Module, image: torch.Tensor) -> Graph | None:
    with _lock:
        return _graphs.get(_memory_key(model, image))


def capture_estimate(model: nn.Module, image: torch.Tensor) -> float:
    """Predicted seconds to have a graph: 0 in memory, a load from disk, else a cold capture."""
    if in_memory(model, image) is not None:
        return 0.0
    digest = disk_cache.key(model, image) if image.device.type == "cpu" else None
    stored = disk_cache.path_for(digest) if digest else None
    if stored is not None and stored.is_file():
        return _DISK_LOAD_S
    return 0.3 + _seconds_per_module[0] * sum(1 for _ in model.modules())


def graph_for(model: nn.Module, image: torch.Tensor) -> Captured:
    """The model's graph at this input shape: from memory, from disk (checked), or captured now.

    Raises CaptureError (remembered) when the model cannot be captured. A graph loaded from disk is
    marked unchecked: `clean_pass` compares its clean output with the model's before it is trusted.
    """
    started = time.perf_counter()
    key = _memory_key(model, image)
    with _lock:
        if key in _graphs:
            return Captured(_graphs[key], "memory", 0.0)
    with guard.exclusive():  # one capture at a time, and no model call traced into it
        with _lock:
            if key in _graphs:
                return Captured(_graphs[key], "memory", time.perf_counter() - started)
        digest = disk_cache.key(model, image) if image.device.type == "cpu" else None
        graph = _from_disk(digest, model) if digest else None
        source = "disk"
        if graph is None:
            graph, source = _capture(model, image, digest), "captured"
    with _lock:
        if len(_graphs) >= MEMORY_SLOTS:
            _graphs.clear()
        _graphs[key] = graph
    return Captured(graph, source, time.perf_counter() - started)


def _capture(model: nn.Module, image: torch.Tensor, digest: str | None) -> Graph:
    started = time.perf_counter()
    try:
        program = export_program(model, image)
        graph = from_program(program)
    except CaptureError as exc:
        remember_failure(model, image, str(exc))
        raise
    except Exception as exc:  # indexing an unusual graph (several inputs, several outputs)
        remember_failure(model, image, f"the captured graph cannot be used: {exc}")
        raise CaptureError(f"the captured graph cannot be used: {exc}") from exc
    modules = max(1, sum(1 for _ in model.modules()))
    _seconds_per_module[0] = max(0.002, (time.perf_counter() - started - 0.3) / modules)
    if digest:
        disk_cache.save(digest, graph.module, model)
    return graph


def _from_disk(digest: str, model: nn.Module) -> Graph | None:
    module = disk_cache.load(digest, model)
    if module is None:
        return None
    try:
        graph = indexed(module)
    except Exception:  # cannot happen for a graph that was stored from a capture; capture afresh
        disk_cache.discard(digest)
        return None
    graph.unchecked_digest = digest
    return graph


class StaleGraph(Exception):
    """A graph from disk computed another clean output than the model: it was discarded; capture again."""


def clean_pass(graph: Graph, model: nn.Module, image: torch.Tensor, clean: torch.Tensor | None = None) -> dict:
    """Every node's clean value (`materialize`); for a graph loaded from disk, first compared with the
    model's own output (`clean`, or one call now), which the key cannot vouch for. A mismatch forgets
    the graph (memory and disk) and raises StaleGraph."""
    env = materialize(graph, image)
    digest = graph.unchecked_digest
    if digest is None:
        return env
    if clean is None:
        with guard.shared(), torch.no_grad():
            clean = model(image)
    again = env[graph.output]
    assert clean is not None
    if again.shape == clean.shape and torch.allclose(
        again, clean, rtol=1e-4, atol=1e-5 * (float(clean.abs().max()) + 1e-6)
    ):
        graph.unchecked_digest = None
        return env
    disk_cache.discard(digest)
    with _lock:
        for key in [k for k, g in _graphs.items() if g is graph]:
            del _graphs[key]
    raise StaleGraph("the stored graph's clean output differs from the model's")


def clear() -> None:
    """Forget graphs and failures held in memory (tests; the on-disk cache stays)."""
    with _lock:
        _graphs.clear()
        _failures.clear()
        _naive_seconds.clear()

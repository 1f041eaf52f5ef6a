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

from krypton.capture import CaptureError, Graph, export_program, from_program, graph_of
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
_seconds_per_module = [0.012]  # cold-capture cost model, refined by every capture in this process
_DISK_LOAD_S = 0.3


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


def in_memory(model: nn.Module, image: torch.Tensor) -> Graph | None:
    with _lock:
        return _graphs.get(_memory_key(model, image))


def capture_estimate(model: nn.Module, image: torch.Tensor) -> float:
    """Predicted seconds to have a graph: 0 in memory, a load from disk, else a cold capture."""
    if in_memory(model, image) is not None:
        return 0.0
    digest = disk_cache.key(model, image) if image.device.type == "cpu" else None
    where = disk_cache.folder()
    if digest and where is not None and (where / f"{digest}.pt2").is_file():
        return _DISK_LOAD_S
    return 0.3 + _seconds_per_module[0] * sum(1 for _ in model.modules())


def graph_for(model: nn.Module, image: torch.Tensor, clean: torch.Tensor | None = None) -> Captured:
    """The model's graph at this input shape: from memory, from disk (checked), or captured now.

    Raises CaptureError (remembered) when the model cannot be captured. `clean` (the model's output
    for `image`) lets a graph loaded from disk be checked before it is trusted.
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
        graph = _from_disk(digest, model, image, clean) if digest else None
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
        disk_cache.save(digest, program)
    return graph


def _from_disk(digest: str, model: nn.Module, image: torch.Tensor, clean: torch.Tensor | None) -> Graph | None:
    program = disk_cache.load(digest)
    if program is None:
        return None
    try:
        module = program.module()
        disk_cache.bind_weights(module, model)
        graph = graph_of(module)
        with torch.no_grad():
            clean = model(image) if clean is None else clean
            again = module(image)
        if not torch.allclose(again, clean, rtol=1e-4, atol=1e-5 * (float(clean.abs().max()) + 1e-6)):
            return None  # something the key cannot see changed: capture afresh
        return graph
    except Exception:  # weights that no longer fit the stored graph: capture afresh
        return None


def clear() -> None:
    """Forget graphs and failures held in memory (tests; the on-disk cache stays)."""
    with _lock:
        _graphs.clear()
        _failures.clear()

"""Shared helpers for benchmarks: models, a fixed position sample, timing and peak-memory sampling."""

from __future__ import annotations

import copy
import gc
import os
import threading
import time
from collections.abc import Callable

import numpy as np
import torch
import torchvision

from krypton.modes.occlusions import Occlusions, grid_occlusions


def torchvision_model(name: str) -> tuple[torch.nn.Module, int]:
    """A torchvision architecture with random weights (seeded) and its input size."""
    torch.manual_seed(0)
    if name == "inception_v3":
        return torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True).eval(), 299
    return getattr(torchvision.models, name)(weights=None).eval(), 224


def channels_last(model: torch.nn.Module, image: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
    """A copy of the model and the (1, C, H, W) image in channels-last layout: PyTorch's faster CPU
    kernels, the stricter naive baseline."""
    model = copy.deepcopy(model)
    try:
        model = model.to(memory_format=torch.channels_last)
    except RuntimeError:  # a parameter of another rank that `to` refuses (lambda_resnet26t): convert the 4-D ones
        for param in model.parameters():
            if param.dim() == 4:
                param.data = param.data.contiguous(memory_format=torch.channels_last)
    return model, image.contiguous(memory_format=torch.channels_last)


def sample_positions(image: torch.Tensor, patch: int, stride: int, count: int, seed: int = 0) -> Occlusions:
    """A fixed random sample of the paper's grid of positions (zero fill)."""
    occ, _ = grid_occlusions(image, (patch, patch), (stride, stride), torch.zeros(image.shape[1], patch, patch))
    if count >= occ.count:
        return occ
    rows = np.sort(np.random.default_rng(seed).choice(occ.count, count, replace=False))
    return Occlusions(image, occ.lo[rows], occ.hi[rows], patch=occ.patch)


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn: Callable[[], object]) -> tuple[float, int, object]:
    """(seconds, peak RSS growth in bytes sampled every 2 ms, result) of one call."""
    gc.collect()
    start_rss = _rss()
    peak = [start_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    done.set()
    thread.join()
    return elapsed, peak[0] - start_rss, result


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def naive_seconds_per_position(
    model: torch.nn.Module, image: torch.Tensor, count: int, patch: int = 16, stride: int = 4
) -> tuple[float, int]:
    """Seconds per position of naive inference on a fixed sample of `count` grid positions at its best
    batch (8, 16 or 32), and that batch: linear in positions, so it scales to a whole grid."""
    from krypton.modes.naive import run_naive

    occ = sample_positions(image[None], patch, stride, count)
    best = None
    for batch in (8, 16, 32):
        seconds = measure(lambda b=batch: run_naive(model, occ, b))[0] / occ.count
        if best is None or seconds < best[0]:
            best = (seconds, batch)
    assert best is not None
    return best

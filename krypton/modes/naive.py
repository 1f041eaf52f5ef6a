"""Naive mode: full re-inference of every occluded image, in batches (the baseline for every speedup)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from krypton.engine.gather import PaddedCache
from krypton.modes.occlusions import Collector, Occlusions

DEFAULT_BATCH = 16  # the fastest full-inference batch for VGG16 on a 2-core CPU (engine notes)


@torch.no_grad()
def run_naive(
    model: nn.Module | Callable,
    occlusions: Occlusions,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    order: np.ndarray | None = None,
    on_batch: Callable[[np.ndarray, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """(P, K) outputs of `model` on every occluded copy.

    `order` (a permutation of the positions) sets the visiting order; `on_batch(done_index, outputs)`
    sees the outputs computed so far after each batch (for progressive maps).
    """
    batch_size = batch_size or DEFAULT_BATCH
    order = np.arange(occlusions.count) if order is None else np.asarray(order)
    cache = PaddedCache()
    collector = Collector(occlusions.count, progress, on_batch)
    for first in range(0, occlusions.count, batch_size):
        index = order[first : first + batch_size]
        collector.add(index, model(occlusions.images(index, cache)))
    return collector.result()

"""Naive mode: full re-inference of every occluded image, in batches (the baseline for every speedup)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from krypton.engine.gather import PaddedCache
from krypton.modes.occlusions import Occlusions

DEFAULT_BATCH = 16  # the fastest full-inference batch for VGG16 on a 2-core CPU (engine notes)


@torch.no_grad()
def run_naive(
    model: nn.Module | Callable,
    occlusions: Occlusions,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """(P, K) outputs of `model` on every occluded copy."""
    batch_size = batch_size or DEFAULT_BATCH
    cache = PaddedCache()
    outputs = []
    for first in range(0, occlusions.count, batch_size):
        index = np.arange(first, min(first + batch_size, occlusions.count))
        outputs.append(model(occlusions.materialize(index, cache)))
        if progress:
            progress(len(index))
    return torch.cat(outputs)

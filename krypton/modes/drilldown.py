"""Adaptive drill-down: a coarse pass over the whole image, then a fine pass where it matters.

Stage 1 explains the coarse grid (stride S1); its logits are interpolated onto the fine grid;
stage 2 explains, at the requested stride, the fraction r of fine cells with the lowest interpolated
target probability (largest drop). The result keeps stage-2 logits where drilled and interpolated
stage-1 logits elsewhere: one space for every cell, so probabilities (`krypton.scores`) and
attributions (logit drops) read drilled and interpolated cells alike.
"""

from __future__ import annotations

import numpy as np
import torch

from krypton.modes.approximate import select_cells, upsample
from krypton.modes.occlusions import Occlusions, grid_occlusions
from krypton.scores import probabilities


def coarse_occlusions(
    image: torch.Tensor, patch: tuple[int, ...], s1: tuple[int, ...], fill: torch.Tensor
) -> tuple[Occlusions, tuple[int, ...]]:
    """Stage 1: the whole input at the coarse stride."""
    occ, positions = grid_occlusions(image, patch, s1, fill)
    return occ, tuple(positions.shape[:-1])


def drill(
    stage1: torch.Tensor,
    coarse_grid: tuple[int, ...],
    s1: tuple[int, ...],
    grid: tuple[int, ...],
    stride: tuple[int, ...],
    target: int,
    fraction: float,
    rule: str = "regions",
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated logits on the fine grid (*grid, K), and the fine rows to drill."""
    logits = stage1.double().reshape(*coarse_grid, -1).cpu().numpy()
    interpolated = upsample(logits, s1, grid, stride)
    target_probability = probabilities(torch.from_numpy(interpolated))[..., target].numpy()
    drilled = select_cells(target_probability, fraction, rule)
    return interpolated, np.nonzero(drilled.reshape(-1))[0]


def subset(occ: Occlusions, rows: np.ndarray) -> Occlusions:
    return occ.subset(rows)


def combine(interpolated: np.ndarray, rows: np.ndarray, stage2: torch.Tensor) -> torch.Tensor:
    """Fine-grid logits (P, K): stage-2 outputs at drilled rows, interpolated stage-1 logits elsewhere."""
    k = interpolated.shape[-1]
    scores = torch.from_numpy(interpolated.reshape(-1, k)).to(stage2.device, stage2.dtype)
    scores[torch.from_numpy(rows).to(stage2.device)] = stage2
    return scores

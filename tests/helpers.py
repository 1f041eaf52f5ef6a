"""Shared test helpers: exactness against full re-inference, well-conditioned random models."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from krypton.capture import capture
from krypton.modes.exact import plan_for, run_exact
from krypton.modes.naive import run_naive
from krypton.modes.occlusions import Occlusions, grid_occlusions


def condition(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Re-initialise so activations keep unit scale, so occlusion moves outputs far above float noise.

    Convolutions and linears get He-normal weights; batch-norm statistics are then estimated on random
    images (train-mode passes), as a trained network would have them.
    """
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.normal_(m.bias, std=0.1)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration passes
            nn.init.normal_(m.weight, 1.0, 0.2)
            nn.init.normal_(m.bias, 0.0, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn((4,) + tuple(shape[1:])))
    return model.eval()


def sample(occ: Occlusions, grid: tuple[int, int], extra: int, seed: int = 0) -> Occlusions:
    """Corners, edge midpoints and `extra` random positions of a grid of occlusions."""
    h, w = grid
    corners = [0, w - 1, (h - 1) * w, h * w - 1, w // 2, (h // 2) * w, (h // 2) * w + w - 1, (h - 1) * w + w // 2]
    rng = np.random.default_rng(seed)
    rows = np.unique(np.concatenate([corners, rng.choice(h * w, min(extra, h * w), replace=False)]))
    return Occlusions(occ.image, occ.lo[rows], occ.hi[rows], patch=occ.patch, baseline=occ.baseline)


def assert_exact(
    model: nn.Module,
    image: torch.Tensor,
    patch: tuple[int, int] | int,
    stride: tuple[int, int] | int,
    fill: float = 0.0,
    extra: int | None = None,
    batch_size: int | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> Occlusions:
    """Incremental outputs equal full re-inference; the occlusion must visibly move the outputs."""
    patch = (patch, patch) if isinstance(patch, int) else patch
    stride = (stride, stride) if isinstance(stride, int) else stride
    model = model.eval()
    occ, positions = grid_occlusions(image, patch, stride, torch.full((image.shape[1],) + patch, fill))
    if extra is not None:
        occ = sample(occ, tuple(positions.shape[:2]), extra)
    graph = capture(model, image)
    result = run_exact(graph, occ, plan_for(graph, occ), batch_size)
    with torch.no_grad():
        clean = model(image)
        naive = run_naive(model, occ, 8)
    expected, got = naive - clean, result.outputs - clean
    scale = float(expected.abs().max())
    assert scale > 1e-3 * (float(clean.abs().max()) + 1e-6), f"occlusion barely moves the outputs ({scale:.2e})"
    try:
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol * max(1.0, float(clean.abs().max())))
    except AssertionError:
        # Beyond the float32 tolerance: the engine's summation order on a deep network, or an error.
        # Float64 tells them apart (Inception3 on an AVX2-only CPU: one output of 12000 off by 2.6e-5).
        assert_exact_in_float64(model, occ, batch_size)
    return occ


def assert_exact_in_float64(model: nn.Module, occ: Occlusions, batch_size: int | None = None) -> None:
    """The engine equals full re-inference to rounding level (<= 1e-9 of the occlusion effect) in float64."""
    wide = copy.deepcopy(model).double().eval()
    image = occ.image.double()
    patch = None if occ.patch is None else occ.patch.double()
    baseline = None if occ.baseline is None else occ.baseline.double()
    occ = Occlusions(image, occ.lo, occ.hi, patch=patch, baseline=baseline, occluder=occ.occluder)
    graph = capture(wide, image)
    engine = run_exact(graph, occ, plan_for(graph, occ), batch_size).outputs
    with torch.no_grad():
        naive, clean = run_naive(wide, occ, 8), wide(image)
    effect = float((naive - clean).abs().max())
    worst = float((engine - naive).abs().max())
    assert worst <= 1e-9 * effect, f"float64: engine differs from full inference by {worst:.3g} (effect {effect:.3g})"

"""Slices (split/chunk pieces), nearest and linear upsampling, softmax over an axis: exact and precise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import krypton

from helpers import assert_exact, condition


class Pieces(nn.Module):
    """split, chunk, strided channel slices, spatial crops, upsampling and a softmax gate in one net."""

    def __init__(self, upsample: str, rank: int = 2):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank]
        self.upsample, self.rank = upsample, rank
        self.c1, self.c2, self.c3 = conv(3, 8, 3, padding=1), conv(4, 4, 3, padding=1), conv(8, 8, 3, padding=1)
        self.fc = nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        a, b = torch.split(x, [4, 4], dim=1)
        c, d = b.chunk(2, dim=1)
        x = torch.cat([F.relu(self.c2(a)), d, c], 1)
        x = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[self.rank](x, 2)
        if self.upsample == "nearest":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        elif self.upsample == "linear":
            mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[self.rank]
            x = F.interpolate(x, size=tuple(s * 2 + 3 for s in x.shape[2:]), mode=mode, align_corners=False)
        elif self.upsample == "linear_corners":
            mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[self.rank]
            x = F.interpolate(x, scale_factor=2, mode=mode, align_corners=True)
        x = F.relu(self.c3(x))
        pooled = x.mean(tuple(range(2, x.dim())), keepdim=True)
        split = pooled.reshape(x.shape[0], 2, 4, *pooled.shape[2:])
        gate = (torch.softmax(split, dim=1) * torch.log_softmax(split, dim=2).exp()).reshape(pooled.shape)
        x = (x * gate)[(slice(None), slice(1, 7, 2)) + (slice(1, -1),) * self.rank]
        x = torch.cat([x, x[:, :2]], 1)
        return self.fc(x.mean(tuple(range(2, x.dim()))))


@pytest.mark.parametrize("upsample", ["none", "nearest", "linear", "linear_corners"])
def test_pieces_and_upsampling_are_exact_and_not_computed_in_full(upsample):
    model = condition(Pieces(upsample), (1, 3, 32, 32))
    torch.manual_seed(0)
    assert_exact(model, torch.randn(1, 3, 32, 32), 8, 4, extra=12)
    fallbacks = {op for _, op in krypton.analyze(model, (3, 32, 32), patch=8, stride=4).fallbacks}
    assert fallbacks == {"aten.addmm.default"}, fallbacks


@pytest.mark.parametrize("rank, upsample", [(1, "nearest"), (1, "linear"), (3, "nearest"), (3, "linear")])
def test_upsampling_on_signals_and_volumes(rank, upsample):
    size = {1: (3, 64), 3: (3, 12, 12, 12)}[rank]
    model = condition(Pieces(upsample, rank), (1, *size))
    torch.manual_seed(0)
    image = torch.randn(1, *size)
    patch = (8,) if rank == 1 else (4, 4, 4)
    result = krypton.explain(model, image, patch=patch, stride=4, path="incremental")
    naive = krypton.explain(model, image, patch=patch, stride=4, mode="naive")
    assert result.stats["path"] == "incremental"
    effect = float((naive.scores - naive.clean_scores).abs().max())
    torch.testing.assert_close(result.scores, naive.scores, rtol=1e-4, atol=1e-5 * max(effect, 1.0))


class Strided(nn.Module):
    """ConvNeXt's channels-last `as_strided` of a pooled tensor (identity) and a real re-striding."""

    def __init__(self, identity_only: bool = False):
        super().__init__()
        self.identity_only = identity_only
        self.conv, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6 if identity_only else 6 + 16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        pooled = h.mean((2, 3), keepdim=True)
        n = pooled.shape[0]
        same = torch.as_strided(pooled, (n, 6, 1, 1), (6, 1, 6, 6)).flatten(1)  # only size-1 strides differ
        if self.identity_only:
            return self.fc(same)
        corner = torch.as_strided(h[:, :1].contiguous(), (n, 4, 4), (1024, 1, 32))  # a 4x4 corner, transposed
        return self.fc(torch.cat([same, corner.flatten(1)], 1))


def test_as_strided_identity_is_precise_and_other_strides_cut_the_graph():
    model = condition(Strided(identity_only=True), (1, 3, 32, 32))
    torch.manual_seed(0)
    assert_exact(model, torch.randn(1, 3, 32, 32), 8, 4, extra=12)
    plan = krypton.analyze(model, (3, 32, 32), patch=8, stride=4)
    assert "aten.as_strided.default" not in [op for _, op in plan.fallbacks]
    model, image = condition(Strided(), (1, 3, 32, 32)), torch.randn(3, 32, 32)
    result = krypton.explain(model, image, patch=8, stride=4, path="incremental")  # other strides: a cut there,
    naive = krypton.explain(model, image, patch=8, stride=4, mode="naive")  # the rest runs per position
    assert result.mode == "exact" and result.stats["path"] == "incremental"
    assert any(op.startswith("aten.as_strided.default and") for _, op in result.stats["fallbacks"])
    torch.testing.assert_close(result.scores, naive.scores, rtol=1e-4, atol=1e-5)


class Shuffle(nn.Module):
    """pixel_shuffle and pixel_unshuffle (they export as views and permutes)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1)
        self.c3, self.fc = nn.Conv2d(32, 8, 3, padding=1), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pixel_shuffle(torch.relu(self.c1(x)), 2)
        h = F.pixel_unshuffle(torch.relu(self.c2(h)), 2)
        return self.fc(torch.relu(self.c3(h)).mean((2, 3)))


def test_pixel_shuffle_and_unshuffle_are_exact_and_precise():
    model = condition(Shuffle(), (1, 3, 16, 16))
    torch.manual_seed(0)
    assert_exact(model, torch.randn(1, 3, 16, 16), 4, 2, extra=12)
    plan = krypton.analyze(model, (3, 16, 16), patch=4, stride=2)
    assert [op for _, op in plan.fallbacks] == ["aten.addmm.default"] and plan.speedup > 2

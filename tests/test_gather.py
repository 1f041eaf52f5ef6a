"""`read_window` against a per-item reference: every fast path (channels-last gather, row paste, whole delta)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from krypton.engine.gather import PaddedCache, WindowValues, read_window


def reference(base: torch.Tensor, delta: WindowValues | None, start: np.ndarray, size: tuple[int, ...], pad: float):
    """Item by item: the clean tensor with the item's delta pasted, padded, then cut at the item's window."""
    out = []
    for b in range(start.shape[0]):
        full = base[0].clone()
        if delta is not None:
            region = tuple(slice(int(s), int(s) + n) for s, n in zip(delta.start[b], delta.size))
            full[region] = delta.data[b]
        big = max(size) + max(full.shape)
        padded = torch.nn.functional.pad(full, [big, big] * full.dim(), value=pad)
        out.append(padded[tuple(slice(int(s) + big, int(s) + big + n) for s, n in zip(start[b], size))])
    return torch.stack(out)


def _boxes(rng, shape, size, count, inside=False):
    lo = -2 if not inside else 0
    highs = [max(lo + 1, n - s + (0 if inside else 3)) for n, s in zip(shape, size)]
    return np.stack([rng.integers(lo, high, count) for high in highs], 1)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("axes", [1, 2, 3])
@pytest.mark.parametrize("delta_kind", ["window", "whole", "some channels"])
def test_read_window_matches_per_item_reference(seed, channels_last, axes, delta_kind):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 6)),) + tuple(int(rng.integers(5, 12)) for _ in range(axes))
    base = torch.randn((1,) + shape)
    batch = int(rng.integers(1, 6))
    dsize = (shape[0],) + tuple(int(rng.integers(1, n + 1)) for n in shape[1:])
    dstart = np.concatenate([np.zeros((batch, 1), np.int64), _boxes(rng, shape[1:], dsize[1:], batch, inside=True)], 1)
    if delta_kind == "whole":  # a whole batch (e.g. a shared tail's input), read at per-item places
        dsize, dstart = shape, np.zeros((batch, len(shape)), np.int64)
    elif delta_kind == "some channels":  # a window of some channels only: pasted offset by offset
        first = int(rng.integers(0, shape[0]))
        dsize = (int(rng.integers(1, shape[0] - first + 1)),) + dsize[1:]
        dstart[:, 0] = first
    data = torch.randn((batch,) + dsize)
    layout = {2: torch.channels_last, 3: torch.channels_last_3d}.get(axes)
    if channels_last and layout is not None:  # what convolutions on channels-last contexts produce
        data = data.contiguous(memory_format=layout)
    delta = WindowValues(data, dstart)
    size = (shape[0],) + tuple(int(rng.integers(1, n + 3)) for n in shape[1:])
    inside = channels_last and delta_kind == "whole"  # reads inside the tensor: the per-item gather path
    start = np.concatenate([np.zeros((batch, 1), np.int64), _boxes(rng, shape[1:], size[1:], batch, inside)], 1)
    if inside:
        size = (shape[0],) + tuple(min(n, m) for n, m in zip(size[1:], shape[1:]))
        start[:, 1:] = np.minimum(start[:, 1:], np.asarray(shape[1:]) - np.asarray(size[1:]))
    for d in (None, delta):
        got = read_window(base, d, start, size, 0.5, PaddedCache())
        torch.testing.assert_close(got, reference(base, d, start, size, 0.5), rtol=0, atol=0)


def test_whole_delta_is_sliced_when_all_items_share_an_inside_window():
    base = torch.randn(1, 3, 8, 9)
    delta = WindowValues(torch.randn(4, 3, 8, 9), np.zeros((4, 3), np.int64))
    start = np.tile([0, 2, 3], (4, 1))
    got = read_window(base, delta, start, (3, 4, 5), 0.0, PaddedCache())
    assert got.data_ptr() != base.data_ptr()
    torch.testing.assert_close(got, reference(base, delta, start, (3, 4, 5), 0.0), rtol=0, atol=0)
    torch.testing.assert_close(got, delta.data[:, :, 2:6, 3:8], rtol=0, atol=0)

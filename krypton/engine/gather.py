"""Reading a window of a tensor for a batch of occluded copies (the paper's Eqs. 17-18, fused).

An occluded copy of a tensor is the clean (materialised) tensor with the copy's changed window pasted
over it. `read_window` builds, for every item at once, the region a rule asked for: one strided gather
from the (padded) clean tensor, then the items' changed windows pasted in with slice assignments, one
per distinct relative offset (interior positions share one). No Python loop over items, no full copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # (B, C, *spatial) for 2 and 3 axes


@dataclass
class WindowValues:
    """A batch's computed window of one tensor: data (B, *size) placed at `start` (B, ndim)."""

    data: torch.Tensor
    start: np.ndarray

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])


class PaddedCache:
    """Clean tensors padded with a value, grown on demand; one copy per (tensor, value)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, tuple[torch.Tensor, np.ndarray, np.ndarray, torch.Tensor]] = {}

    def get(self, clean: torch.Tensor, lo: np.ndarray, hi: np.ndarray, value: float):
        key = (clean.data_ptr(), tuple(clean.shape), tuple(clean.stride()), value)
        hit = self._cache.get(key)
        if hit is not None and (hit[1] >= lo).all() and (hit[2] >= hi).all():
            return hit
        if hit is not None:
            lo, hi = np.maximum(lo, hit[1]), np.maximum(hi, hit[2])
        pads: list[int] = []
        for a in reversed(range(len(lo))):
            pads += [int(lo[a]), int(hi[a])]
        padded = F.pad(clean, pads, value=value) if any(pads) else clean
        layout = _CHANNELS_LAST.get(padded.dim())
        if layout is not None:  # channels-last copy: a window of all channels is one run per row
            padded = padded.contiguous(memory_format=layout)
        self._cache[key] = (padded, lo.copy(), hi.copy(), clean)  # holding `clean` pins its address
        return self._cache[key]

    def clear(self) -> None:
        self._cache.clear()


def read_window(
    clean: torch.Tensor,
    computed: WindowValues | None,
    start: np.ndarray,
    size: tuple[int, ...],
    pad_value: float,
    cache: PaddedCache,
) -> torch.Tensor:
    """Values of every occluded copy over `[start, start + size)` -> (B, *size).

    `clean` is the clean tensor (1, *shape); cells outside it read `pad_value`.
    """
    if computed is not None and computed.size == tuple(size) and np.array_equal(computed.start, start):
        return computed.data
    batch = start.shape[0]
    shape = np.asarray(clean.shape[1:], dtype=np.int64)
    if computed is not None and computed.size == tuple(shape):
        if _inside(start, size, shape):
            return computed.data[(slice(None),) + tuple(slice(int(a), int(a) + n) for a, n in zip(start[0], size))]
        if (start >= 0).all() and (start + np.asarray(size) <= shape).all():
            return _gather_per_item(computed.data, start, size)
    need_lo = np.maximum(0, -start.min(axis=0))
    need_hi = np.maximum(0, (start + np.asarray(size)).max(axis=0) - shape)
    padded, pad_lo, _, _ = cache.get(clean, need_lo, need_hi, pad_value)
    out = _gather(padded[0], start + pad_lo, size, batch, writable=computed is not None)
    if computed is not None:
        _paste(out, computed, start, size)
    return out


def _inside(start: np.ndarray, size: tuple[int, ...], shape: np.ndarray) -> bool:
    """One window for all items (the same start) that lies inside the tensor."""
    return bool((start == start[:1]).all() and (start[0] >= 0).all() and (start[0] + np.asarray(size) <= shape).all())


def _gather(padded: torch.Tensor, start: np.ndarray, size: tuple[int, ...], batch: int, writable: bool) -> torch.Tensor:
    """One strided gather of the windows `[start_b, start_b + size)` from a single tensor."""
    uniform = (start == start[:1]).all(axis=0)
    if len(size) in (3, 4) and uniform[0] and start[0, 0] == 0 and size[0] == padded.shape[0] and not uniform[1:].all():
        return _gather_all_channels(padded, start, size)
    sliced = padded[
        tuple(
            slice(int(start[0, a]), int(start[0, a]) + size[a]) if uniform[a] else slice(None) for a in range(len(size))
        )
    ]
    varying = [a for a in range(len(size)) if not uniform[a]]
    if not varying:
        out = sliced.unsqueeze(0).expand((batch,) + tuple(size))
        return out.clone() if writable else out
    view_shape = [sliced.shape[a] - size[a] + 1 for a in varying] + list(size)
    view_stride = [sliced.stride(a) for a in varying] + list(sliced.stride())
    windows = sliced.as_strided(view_shape, view_stride, sliced.storage_offset())
    index = tuple(torch.from_numpy(np.ascontiguousarray(start[:, a])).to(padded.device) for a in varying)
    return windows[index]


def _gather_per_item(data: torch.Tensor, start: np.ndarray, size: tuple[int, ...]) -> torch.Tensor:
    """Each item's window `[start_b, start_b + size)` of its own whole tensor `data` (B, *shape), all
    inside: one indexed gather (a whole batch read at per-item places, e.g. a shared tail that starts
    at the image; gathering the clean tensor and pasting B wholes costs B copies of the whole).
    Images and volumes come out channels-last, as from the clean tensor: convolutions and pooling run
    on the same kernels either way (and the same rounding)."""
    axes = data.dim() - 1
    order = [*range(1, axes), 0] if data.dim() in _CHANNELS_LAST else list(range(axes))  # channels last
    view = data.permute(0, *(a + 1 for a in order))
    begin, extent = start[:, order], [size[a] for a in order]
    uniform = (begin == begin[:1]).all(axis=0)
    sliced = view[(slice(None),) + tuple(
        slice(int(begin[0, i]), int(begin[0, i]) + extent[i]) if uniform[i] else slice(None) for i in range(axes)
    )]  # fmt: skip
    varying = [i for i in range(axes) if not uniform[i]]
    shape = [len(start)] + [sliced.shape[1 + i] - extent[i] + 1 for i in varying] + extent
    stride = [sliced.stride(0)] + [sliced.stride(1 + i) for i in varying] + list(sliced.stride()[1:])
    windows = sliced.as_strided(shape, stride, sliced.storage_offset())
    index = (torch.arange(len(start)),) + tuple(torch.from_numpy(np.ascontiguousarray(begin[:, i])) for i in varying)
    gathered = windows[tuple(i.to(data.device) for i in index)]
    return gathered.permute(0, *(1 + order.index(a) for a in range(axes)))


def _gather_all_channels(padded: torch.Tensor, start: np.ndarray, size: tuple[int, ...]) -> torch.Tensor:
    """Windows of every channel of a (C, *spatial) tensor (2 or 3 spatial axes), gathered in
    channels-last order.

    Indexing a (*positions, *window, C) view copies runs of C contiguous values (channels-first order
    copies runs of the last window axis); measured 2-3x faster. The result is (B, C, *window) in
    channels-last layout, which convolutions and pooling accept as is (and run faster on, on CPU).
    """
    axes = len(size) - 1
    last = padded.permute(*range(1, axes + 1), 0)
    if not last.is_contiguous():
        last = last.contiguous()
    counts = tuple(last.shape[a] - size[a + 1] + 1 for a in range(axes))
    shape = counts + tuple(size[1:]) + (size[0],)
    windows = last.as_strided(shape, last.stride()[:axes] + last.stride(), last.storage_offset())
    index = tuple(torch.from_numpy(np.ascontiguousarray(start[:, a])).to(padded.device) for a in range(1, axes + 1))
    return windows[index].permute(0, axes + 1, *range(1, axes + 1))


def _paste(out: torch.Tensor, computed: WindowValues, start: np.ndarray, size: tuple[int, ...]) -> None:
    """Write each item's changed window over the gathered clean values (clipped to the region)."""
    rel = computed.start - start
    width = np.asarray(computed.size)
    region = np.asarray(size)
    groups, inverse = np.unique(rel, axis=0, return_inverse=True)
    if len(groups) > 1 and _paste_rows(out, computed.data, rel):
        return
    inverse = inverse.reshape(-1)
    for g, r in enumerate(groups):
        a_lo, a_hi = np.maximum(r, 0), np.minimum(r + width, region)
        if (a_hi <= a_lo).any():
            continue
        dst = tuple(slice(int(x), int(y)) for x, y in zip(a_lo, a_hi))
        src = tuple(slice(int(x - rr), int(y - rr)) for x, y, rr in zip(a_lo, a_hi, r))
        if len(groups) == 1:
            out[(slice(None),) + dst] = computed.data[(slice(None),) + src]
        else:
            rows = torch.from_numpy(np.nonzero(inverse == g)[0]).to(out.device)
            out[(rows,) + dst] = computed.data[(rows,) + src]


def _paste_rows(out: torch.Tensor, data: torch.Tensor, rel: np.ndarray) -> bool:
    """Paste windows of all channels at per-item offsets in one indexed copy.

    Seen as (B, *spatial, C), every spatial cell of every item is one row of C values, so items with
    different offsets go in together instead of one indexed copy per offset (a batch of 32 positions on
    a signal: 32 copies). Channels-last tensors take one `index_copy_` of contiguous rows; other layouts
    one `index_put_` through the permuted view. Returns False (nothing done) when the windows do not
    span every channel.
    """
    if out.dim() < 3 or data.shape[1] != out.shape[1] or (rel[:, 0] != 0).any():
        return False
    order = (0, *range(2, out.dim()), 1)
    rows_out, rows_in = out.permute(*order), data.permute(*order)
    batch, channels, region = out.shape[0], out.shape[1], out.shape[2:]
    target = np.arange(batch).reshape((batch,) + (1,) * len(region))
    valid = np.ones((batch,) + tuple(data.shape[2:]), dtype=bool)
    for a, (extent, width) in enumerate(zip(region, data.shape[2:])):
        view = [1] * (len(region) + 1)
        view[0], view[a + 1] = batch, width
        cell = (rel[:, a + 1, None] + np.arange(width)[None, :]).reshape(view)
        target = target * extent + cell
        valid &= (cell >= 0) & (cell < extent)
    if not (rows_out.is_contiguous() and rows_in.is_contiguous()):
        cells = np.unravel_index(target[valid] if not valid.all() else target.reshape(-1), (batch, *region))
        source = rows_in[torch.from_numpy(valid).to(out.device)] if not valid.all() else rows_in.reshape(-1, channels)
        rows_out.index_put_(tuple(torch.from_numpy(np.ascontiguousarray(c)).to(out.device) for c in cells), source)
        return True
    source = rows_in.reshape(-1, channels)
    if not valid.all():
        source = source[torch.from_numpy(np.flatnonzero(valid)).to(out.device)]
        target = target[valid]
    rows_out.reshape(-1, channels).index_copy_(0, torch.from_numpy(target.reshape(-1)).to(out.device), source)
    return True

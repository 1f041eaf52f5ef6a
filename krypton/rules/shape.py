"""Shape ops: permute, view/reshape/(un)squeeze, expand, cat, getitem.

They move boxes between axes without arithmetic. A view keeps a box only where axes stay apart or
merge with whole inner axes (flattening `[c0, c1) x all H x all W` gives `[c0*H*W, c1*H*W)`);
otherwise the merged axis changes whole - still sound, just less tight.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
from torch import fx

from krypton.box import Boxes, Window, union_all
from krypton.rules.pointwise import broadcast_box, window_for_input
from krypton.rules.registry import Changes, Computed, Frame, Rule, Site, Unsupported, register

aten = torch.ops.aten


class GetItem(Rule):
    """Select one output of a multi-output op: its boxes, and its values from what the op computed."""

    name = "getitem"
    precise = True
    exact = True

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        parent = boxes["self"]  # the multi-output op's Changes
        return (None if parent is None else parent[site.args["index"]],)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        index = site.args["index"]
        return (frame.assemble(site.args["self"], window.start, tuple(window.size), output=index),)


class Permute(Rule):
    """Axes reorder; the batch axis must stay first."""

    name = "permute"
    precise = True
    exact = True

    def _perm(self, site: Site) -> list[int]:
        dims = [d % len(site.shape()) for d in site.args["dims"]]
        if dims[0] != 0:
            raise Unsupported(f"{site.call.name}: permute moves the batch axis ({dims})")
        return [d - 1 for d in dims[1:]]

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["self"]
        if box is None:
            return (None,)
        perm = self._perm(site)
        return (Boxes(box.lo[:, perm], box.hi[:, perm]),)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        perm = self._perm(site)
        start = np.empty_like(window.start)
        size = [0] * len(perm)
        for j, a in enumerate(perm):
            start[:, a] = window.start[:, j]
            size[a] = window.size[j]
        x = frame.assemble(site.args["self"], start, tuple(size))
        return (x.permute([0] + [a + 1 for a in perm]),)


def view_groups(src: tuple[int, ...], dst: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Pair up axes of two shapes with equal element counts: (source axes, destination axes)."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src) or j < len(dst):
        if i < len(src) and j < len(dst) and src[i] == 1 and dst[j] == 1:
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
        elif i < len(src) and src[i] == 1:
            groups.append(([i], []))
            i += 1
        elif j < len(dst) and dst[j] == 1:
            groups.append(([], [j]))
            j += 1
        else:
            a, b = [i], [j]
            pa, pb = src[i], dst[j]
            i, j = i + 1, j + 1
            while pa != pb:
                if pa < pb:
                    pa *= src[i]
                    a.append(i)
                    i += 1
                else:
                    pb *= dst[j]
                    b.append(j)
                    j += 1
            groups.append((a, b))
    return groups


class View(Rule):
    """view / reshape / _unsafe_view / (un)squeeze: same elements, axes merged or split."""

    name = "view"
    precise = True
    exact = False

    def _groups(self, site: Site) -> list[tuple[list[int], list[int]]]:
        src, dst = site.shape(site.call.inputs[0]), site.shape()
        if not src or not dst or src[0] != 1 or dst[0] != 1:
            raise Unsupported(f"{site.call.name}: reshape {src} -> {dst} does not keep the batch axis")
        return view_groups(tuple(src[1:]), tuple(dst[1:]))

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["self"]
        if box is None:
            return (None,)
        src, dst = site.body(site.call.inputs[0]), site.body()
        lo = np.zeros((box.count, len(dst)), dtype=np.int64)
        hi = np.tile(np.asarray(dst, dtype=np.int64), (box.count, 1))
        for a, b in self._groups(site):
            if not b:
                continue
            if not a:
                continue  # inserted size-1 axis: [0, 1)
            if len(a) == 1 and len(b) == 1:
                lo[:, b[0]], hi[:, b[0]] = box.lo[:, a[0]], box.hi[:, a[0]]
            elif len(b) == 1:  # merge: exact only when inner axes are whole
                inner = int(np.prod([src[x] for x in a[1:]]))
                whole = np.all([(box.lo[:, x] == 0) & (box.hi[:, x] == src[x]) for x in a[1:]], axis=0)
                lo[:, b[0]] = np.where(whole, box.lo[:, a[0]] * inner, 0)
                hi[:, b[0]] = np.where(whole, box.hi[:, a[0]] * inner, dst[b[0]])
            elif len(a) == 1:  # split: the outer axis keeps a box, inner axes are whole
                inner = int(np.prod([dst[x] for x in b[1:]]))
                lo[:, b[0]] = box.lo[:, a[0]] // inner
                hi[:, b[0]] = -(-box.hi[:, a[0]] // inner)
        return (Boxes.make(lo, hi * box.nonempty[:, None], dst),)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        src, dst = site.body(site.call.inputs[0]), site.body()
        start = np.zeros((window.batch, len(src)), dtype=np.int64)
        size = list(src)
        for a, b in self._groups(site):
            if not a or not b:
                continue
            if len(a) == 1 and len(b) == 1:
                start[:, a[0]], size[a[0]] = window.start[:, b[0]], window.size[b[0]]
            elif len(b) == 1:
                inner = int(np.prod([src[x] for x in a[1:]]))
                if window.start[:, b[0]].max() % inner == 0 and window.size[b[0]] % inner == 0:
                    start[:, a[0]], size[a[0]] = window.start[:, b[0]] // inner, window.size[b[0]] // inner
                else:
                    raise Unsupported(f"{site.call.name}: window not aligned to merged axes")
            elif len(a) == 1 and all(window.size[x] == dst[x] for x in b[1:]):
                inner = int(np.prod([dst[x] for x in b[1:]]))
                start[:, a[0]], size[a[0]] = window.start[:, b[0]] * inner, window.size[b[0]] * inner
            elif any(window.size[x] != dst[x] for x in b):
                raise Unsupported(f"{site.call.name}: window splits a reshaped axis group")
        x = frame.assemble(site.call.inputs[0], start, tuple(size))
        return (x.reshape((window.batch,) + tuple(window.size)),)


class Expand(Rule):
    """Broadcast size-1 axes; a changed size-1 axis changes its whole expanded extent."""

    name = "expand"
    precise = True
    exact = True

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["self"]
        if box is None:
            return (None,)
        src = site.body(site.args["self"])
        if len(src) != len(site.body()):
            raise Unsupported(f"{site.call.name}: expand adds leading axes")
        return (broadcast_box(box, src, site.body()),)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        start, size = window_for_input(window, site.body(site.args["self"]), site.body())
        x = frame.assemble(site.args["self"], start, size)
        return (x.expand((window.batch,) + tuple(window.size)),)


class Cat(Rule):
    """Concatenation: each input's box shifts by its offset on the cat axis; that axis is read whole."""

    name = "cat"
    precise = True
    exact = False

    def _axis(self, site: Site) -> int:
        axis = site.args["dim"] % len(site.shape())
        if axis == 0:
            raise Unsupported(f"{site.call.name}: cat along the batch axis")
        return axis - 1

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        axis, out = self._axis(site), site.body()
        shifted, offset = [], 0
        for node, box in zip(site.args["tensors"], boxes["tensors"]):
            if box is not None:
                lo, hi = box.lo.copy(), box.hi.copy()
                lo[:, axis] += offset
                hi[:, axis] += offset
                shifted.append(Boxes(lo, hi * box.nonempty[:, None]))
            offset += site.body(node)[axis]
        return (union_all(shifted, out),)

    def full_axes(self, site: Site) -> tuple[int, ...]:
        return (self._axis(site),)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        axis = self._axis(site)
        parts = []
        for node in site.args["tensors"]:
            size = list(window.size)
            size[axis] = site.body(node)[axis]
            parts.append(frame.assemble(node, window.start, tuple(size)))
        return (torch.cat(parts, dim=axis + 1),)


def _depends_on_input(node: fx.Node) -> bool:
    seen, todo = set(), [node]
    while todo:
        current = todo.pop()
        if current.op == "placeholder":
            return True
        if current not in seen:
            seen.add(current)
            todo.extend(current.all_input_nodes)
    return False


class IndexSelect(Rule):
    """`x[..., idx, ...]` with one constant, non-decreasing index on one axis (Keras 'same' pooling pads).

    Output cell i reads input cell idx[i]; for a change on [lo, hi) the changed outputs are
    [searchsorted(idx, lo), searchsorted(idx, hi)), contiguous because idx is sorted.
    """

    name = "index_select"
    precise = True
    exact = True

    def _index(self, site: Site) -> tuple[int, np.ndarray] | None:
        given = [(a, v) for a, v in enumerate(site.args["indices"]) if v is not None]
        if len(given) != 1 or given[0][0] == 0 or site.static is None:
            return None
        axis, node = given[0]
        shape = site.shape(node)
        if shape is None or len(shape) != 1 or _depends_on_input(node):
            return None
        idx = site.static(node).cpu().numpy()
        if idx.dtype.kind not in "iu" or (idx < 0).any() or (np.diff(idx) < 0).any():
            return None
        return axis - 1, idx.astype(np.int64)

    def applies(self, site: Site) -> bool:
        return self._index(site) is not None  # (a constant index never changes with the image)

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["self"]
        if box is None:
            return (None,)
        axis, idx = self._found(site)
        lo, hi = box.lo.copy(), box.hi.copy()
        lo[:, axis] = np.searchsorted(idx, box.lo[:, axis], side="left")
        hi[:, axis] = np.searchsorted(idx, box.hi[:, axis], side="left")
        return (Boxes.make(lo, hi * box.nonempty[:, None], site.body()),)

    def _found(self, site: Site) -> tuple[int, np.ndarray]:
        found = self._index(site)
        assert found is not None, "IndexSelect used where it does not apply"
        return found

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        axis, idx = self._found(site)
        x = site.args["self"]
        n = window.size[axis]
        picked = idx[window.start[:, axis : axis + 1] + np.arange(n)]  # (B, n) input cells
        first = picked[:, 0]
        span = int((picked[:, -1] - first).max()) + 1
        start = window.start.copy()
        start[:, axis] = np.minimum(first, site.body(x)[axis] - span)
        size = list(window.size)
        size[axis] = span
        inputs = frame.assemble(x, start, tuple(size))
        local = torch.from_numpy(picked - start[:, axis : axis + 1]).to(inputs.device)
        shape = [window.batch] + [1] * len(size)
        shape[axis + 1] = n
        local = local.reshape(shape).expand((window.batch,) + tuple(window.size))
        return (torch.gather(inputs, axis + 1, local),)


class AsStrided(Rule):
    """`as_strided` that keeps the shape and reads every element where a contiguous tensor has it (only
    strides of size-1 axes differ: ConvNeXt's channels-last view of a pooled tensor) is the identity.
    Any other use reads the input's storage in ways no box describes (and views of views share a
    storage the engine does not keep): the engine refuses it and the run falls back to full inference."""

    name = "as_strided"
    precise = True
    exact = True

    def applies(self, site: Site) -> bool:
        """True for the identity; anything else cannot even be recomputed whole on a batch: refused."""
        src, size, stride = site.shape(site.args["self"]), site.args["size"], site.args["stride"]
        contiguous = [int(np.prod(src[a + 1 :])) for a in range(len(src))]
        if (
            tuple(size) == tuple(src)
            and site.args.get("storage_offset") in (None, 0)
            and all(n == 1 or s == c for n, s, c in zip(src, stride, contiguous))
        ):
            return True
        raise Unsupported(f"{site.call.name}: as_strided with strides {site.args['stride']} re-reads storage")

    def forward(self, site: Site, boxes: dict[str, Any]) -> Changes:
        box = boxes["self"]
        return (None if box is None else Boxes(box.lo.copy(), box.hi.copy()),)

    def compute(self, site: Site, frame: Frame, window: Window) -> Computed:
        return (frame.assemble(site.args["self"], window.start, tuple(window.size)),)


register(operator.getitem, GetItem())
register(aten.as_strided.default, AsStrided())
register(aten.index.Tensor, IndexSelect())
register(aten.permute.default, Permute())
register(
    # The forms core-ATen capture emits (reshape, _unsafe_view, squeeze.dim decompose into these).
    [aten.view.default, aten.unsqueeze.default, aten.squeeze.dims],
    View(),
)
register(aten.expand.default, Expand())
register(aten.cat.default, Cat())

"""Captum-compatible occlusion: change `from captum.attr import Occlusion` to `from krypton.captum import Occlusion`.

Same arguments and the same numbers as `captum.attr.Occlusion.attribute`: windows anchored at index 0,
stepped by the strides until the axis is covered (the last one cropped at the border), and each input
element's attribution is the mean, over the windows that cover it, of clean minus occluded output.
The difference is speed: a capturable `nn.Module` on one input tensor is evaluated by incremental
inference (each occluded copy recomputes only what its window reaches). Anything else -- plain
callables, several input tensors, `additional_forward_args`, outputs that are not (N, K), models in
training mode -- is evaluated in full, batched exactly as Captum batches it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from krypton.modes.occlusions import Occlusions
from krypton.pipeline import PATHS, evaluate, naive_is_enough

Target = None | int | tuple | list | Tensor

try:  # with Captum installed the drop-in *is* a Captum attribution (NoiseTunnel and other wrappers take it)
    from captum.attr._utils.attribution import PerturbationAttribution as _Base
except ImportError:  # Captum is optional: the same interface without it

    class _Base:  # type: ignore[no-redef]
        def __init__(self, forward_func: Callable[..., Any]) -> None:
            self.forward_func = forward_func

        @property
        def multiplies_by_inputs(self) -> bool:  # as Captum's perturbation methods
            return True

        def has_convergence_delta(self) -> bool:
            return False

        @classmethod
        def get_name(cls) -> str:
            return cls.__name__


class OcclusionArgumentError(ValueError):
    """A bad argument to `Occlusion.attribute`; each raised instance is also the kind Captum raises."""


_KINDS: dict[type, type] = {}


def _error(kind: type[Exception], message: str) -> OcclusionArgumentError:
    """A ValueError (krypton's convention) that is also `kind` (Captum's), so existing `except`s still work."""
    if kind not in _KINDS:
        _KINDS[kind] = type(f"Occlusion{kind.__name__}", (OcclusionArgumentError, kind), {})
    return _KINDS[kind](message)


def _check(ok: bool, message: str) -> None:
    """Captum checks its arguments with `assert`; raise the same kind, even under `python -O`."""
    if not ok:
        raise _error(AssertionError, message)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _format_inputs(inputs: Any) -> tuple[Tensor, ...]:
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    _check(
        len(xs) > 0 and all(isinstance(x, Tensor) and x.dim() >= 1 for x in xs),
        f"inputs must be a torch.Tensor or a tuple of torch.Tensor, each with a batch axis, got {_describe(inputs)}",
    )
    return xs


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_describe(v) for v in value) + ")"
    return type(value).__name__


def _format_windows(shapes: Any, xs: tuple[Tensor, ...]) -> list[tuple[int, ...]]:
    _check(isinstance(shapes, tuple), f"sliding_window_shapes must be a tuple, got {shapes!r}")
    if len(shapes) == 0 or _is_int(shapes[0]):  # one input; () is the window of a per-example scalar
        shapes = (shapes,)
    _check(
        len(shapes) == len(xs),
        f"sliding_window_shapes must give one window per input tensor ({len(xs)}), got {len(shapes)}",
    )
    for i, (shape, x) in enumerate(zip(shapes, xs)):
        _check(
            isinstance(shape, tuple) and len(shape) == x.dim() - 1 and all(_is_int(v) and v > 0 for v in shape),
            f"sliding_window_shapes[{i}] must be a tuple of {x.dim() - 1} positive ints (one per non-batch axis "
            f"of the input of shape {tuple(x.shape)}), got {shape!r}",
        )
    return [tuple(int(v) for v in s) for s in shapes]


def _format_strides(strides: Any, xs: tuple[Tensor, ...], windows: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    if strides is None:
        strides = (1,) * len(xs)
    if len(xs) == 1 and not (isinstance(strides, tuple) and len(strides) == 1):
        strides = (strides,)
    _check(
        isinstance(strides, tuple) and len(strides) == len(xs),
        f"strides must be given for each input tensor ({len(xs)}), got {strides!r}",
    )
    result = []
    for i, (stride, x, window) in enumerate(zip(strides, xs, windows)):
        per_axis = (stride,) * len(window) if _is_int(stride) else stride
        _check(
            isinstance(per_axis, tuple)
            and len(per_axis) == len(window)
            and all(_is_int(s) and s > 0 for s in per_axis),
            f"strides[{i}] must be a positive int or a tuple of {len(window)} positive ints for the input of shape "
            f"{tuple(x.shape)}, got {stride!r}",
        )
        body = tuple(x.shape[1:])
        _check(
            all(w <= d for w, d in zip(window, body)),
            f"sliding_window_shapes {window} cannot exceed the input dimensions {body}",
        )
        _check(
            all(s <= w or w == d for s, w, d in zip(per_axis, window, body)),
            f"strides {tuple(per_axis)} cannot be larger than sliding_window_shapes {window} "
            "(some elements would never be occluded)",
        )
        result.append(tuple(int(s) for s in per_axis))
    return result


def _format_baselines(baselines: Any, xs: tuple[Tensor, ...]) -> list[Tensor]:
    """Each baseline as a tensor of its input's shape (Captum broadcasts them the same way)."""
    items = (0,) * len(xs) if baselines is None else baselines if isinstance(baselines, tuple) else (baselines,)
    _check(
        len(items) == len(xs),
        f"baselines must give one baseline per input tensor ({len(xs)}), got {len(items)}",
    )
    filled = []
    for i, (b, x) in enumerate(zip(items, xs)):
        _check(
            isinstance(b, (Tensor, int, float)),
            f"baselines must be a torch.Tensor or a number (or a tuple of them), got {type(b).__name__}",
        )
        if not isinstance(b, Tensor):
            filled.append(torch.full_like(x, float(b)))
            continue
        try:
            filled.append(torch.broadcast_to(b.to(x.device, x.dtype), x.shape))
        except RuntimeError:
            raise _error(
                RuntimeError,
                f"baselines[{i}] of shape {tuple(b.shape)} does not broadcast to the input's shape {tuple(x.shape)}",
            ) from None
    return filled


def _grid(body: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...]) -> list[np.ndarray]:
    """Window starts per axis: 0, s, 2s, ... until the axis is covered (Captum's shift counts)."""
    return [np.arange(-(-(d - w) // s) + 1, dtype=np.int64) * s for d, w, s in zip(body, window, stride)]


def _boxes(starts: list[np.ndarray], window: tuple[int, ...], body: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(P, D) half-open boxes, border windows cropped, in Captum's order (first axis fastest): a model
    whose output depends on the batch (batch norm in training mode) sees the very same batches."""
    if not starts:  # a per-example scalar: one window, the element itself
        return np.zeros((1, 0), dtype=np.int64), np.zeros((1, 0), dtype=np.int64)
    lo = np.stack([g.ravel(order="F") for g in np.meshgrid(*starts, indexing="ij")], axis=-1)
    return lo, np.minimum(lo + np.asarray(window), np.asarray(body))


def _as_tensor(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    _check(isinstance(out, (int, float)), f"forward_func must return a tensor, int or float, got {type(out).__name__}")
    return torch.tensor(out)


def _select(output: Tensor, target: Target) -> Tensor:
    """The outputs named by `target`, exactly as Captum selects them (int, tuple, tensor, list or None)."""
    if target is None:
        return output
    n = output.shape[0] if output.dim() else 0
    try:
        if isinstance(target, Tensor) and target.numel() == 1 and not target.is_floating_point():
            target = int(target.item())
        if isinstance(target, (int, tuple)):
            index = (target,) if isinstance(target, int) else target
            _check(
                len(index) < output.dim(), f"target {target!r} cannot index the output of shape {tuple(output.shape)}"
            )
            return output[(slice(None), *index)]
        if isinstance(target, Tensor):
            _check(
                target.dim() == 1 and target.numel() == n and output.dim() == 2,
                f"target tensor of shape {tuple(target.shape)} must be 1-D with one class per example ({n}) "
                f"for an output of shape {tuple(output.shape)}",
            )
            return output.gather(1, target.to(output.device).reshape(n, 1)).squeeze(-1)
        _check(isinstance(target, list), f"target must be an int, tuple, list, tensor or None, got {target!r}")
        _check(len(target) == n, f"target list has {len(target)} entries but there are {n} examples")
        if isinstance(target[0], int):
            _check(output.dim() == 2, f"a list of int targets needs a 2-D output, got {tuple(output.shape)}")
            rows = torch.tensor(target, device=output.device).reshape(n, 1)
            return output.gather(1, rows).squeeze(-1)
        _check(isinstance(target[0], tuple), f"target list entries must be ints or tuples, got {target[0]!r}")
        return torch.stack([output[(i, *t)] for i, t in enumerate(target)])
    except (IndexError, RuntimeError) as exc:  # torch's own error: keep its kind, name the parameter
        first = str(exc).strip().splitlines()[0]
        raise _error(
            type(exc), f"target {target!r} does not select from the output of shape {tuple(output.shape)}: {first}"
        ) from None


def _repeat(target: Target, times: int) -> Target:
    """Captum's expansion of a target for a batch of `times` perturbations (one class per example)."""
    if isinstance(target, list):
        return target * times
    if isinstance(target, Tensor) and target.numel() > 1:
        return torch.cat([target] * times)
    return target


def _spread(diff: Tensor, starts: list[np.ndarray], window: tuple[int, ...], body: tuple[int, ...]):
    """Sum over positions of each position's (n_out,) drop times its window, and the window count per element.

    The positions are the product of per-axis starts, so both are per-axis contractions (no loop over P).
    """
    axes = len(starts)
    total = diff.double().T.reshape(diff.shape[1], *(len(s) for s in reversed(starts)))
    total = total.permute(0, *range(axes, 0, -1))  # positions are first-axis-fastest: (n_out, S_1, ..., S_D)
    count = torch.ones((), dtype=torch.float64, device=diff.device)
    for st, w, d in zip(starts, window, body):
        cells = np.arange(d)
        mask = torch.from_numpy((cells >= st[:, None]) & (cells < st[:, None] + w)).double().to(diff.device)
        total = torch.tensordot(total, mask, dims=([1], [0]))
        count = count.unsqueeze(-1) * mask.sum(0)
    return total, count


def _unwrapped(method: Callable) -> Callable:
    """Captum's wrappers call `attribute.__wrapped__` (their logging decorator's undecorated function)."""
    method.__wrapped__ = method  # type: ignore[attr-defined]
    return method


class Occlusion(_Base):
    """Drop-in for `captum.attr.Occlusion` whose attributions are computed by incremental inference.

    A Captum `Attribution` when Captum is installed (`NoiseTunnel(Occlusion(model))` works), with its
    `get_name`, `has_convergence_delta` (False) and `multiplies_by_inputs` (True), as Captum's Occlusion.
    """

    def __init__(self, forward_func: Callable[..., Any], *, path: str = "auto") -> None:
        if path not in PATHS:
            raise ValueError(f"path must be one of {', '.join(map(repr, PATHS))}, got {path!r}")
        _Base.__init__(self, forward_func)
        self.path = path  # "auto": incremental or full inference, whichever measures faster
        self.stats: dict[str, Any] = {}  # after `attribute`: the run pipeline's record (mode, path, reason, ...)

    @_unwrapped
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        sliding_window_shapes: tuple[int, ...] | tuple[tuple[int, ...], ...],
        strides: None | int | tuple[int, ...] | tuple[int | tuple[int, ...], ...] = None,
        baselines: None | int | float | Tensor | tuple[int | float | Tensor, ...] = None,
        target: Target = None,
        additional_forward_args: Any = None,
        perturbations_per_eval: int = 1,
        show_progress: bool = False,
    ) -> Tensor | tuple[Tensor, ...]:
        """Occlusion attributions, the same shape as `inputs` ((N*K, ...) when target is None on (N, K) outputs)."""
        xs = _format_inputs(inputs)
        windows = _format_windows(sliding_window_shapes, xs)
        strides_ = _format_strides(strides, xs, windows)
        fills = _format_baselines(baselines, xs)
        ppe = perturbations_per_eval
        _check(isinstance(ppe, int) and ppe >= 1, f"perturbations_per_eval must be an int >= 1, got {ppe!r}")
        args = additional_forward_args
        args = None if args is None else args if isinstance(args, tuple) else (args,)
        bodies = [tuple(x.shape[1:]) for x in xs]
        starts = [_grid(b, w, s) for b, w, s in zip(bodies, windows, strides_)]
        boxes = [_boxes(st, w, b) for st, w, b in zip(starts, windows, bodies)]

        with torch.no_grad():
            started = time.perf_counter()
            raw = _as_tensor(self.forward_func(*xs, *(args or ())))
            clean_s = time.perf_counter() - started
            clean = _select(raw, target).reshape(1, -1)
            total = sum(len(lo) for lo, _ in boxes) * xs[0].shape[0]
            bar = _bar(show_progress, total + 1)  # +1: the clean evaluation, counted as Captum counts it
            if bar is not None:
                bar.update(1)
            try:
                count = len(boxes[0][0])
                naive = (
                    None
                    if not self._capturable(xs, args, raw)
                    else naive_is_enough(
                        self.forward_func,
                        xs[0][:1],
                        clean_s * count,
                        self.path,  # Captum's loop at ppe 1, at most
                    )
                )
                if self._capturable(xs, args, raw) and naive is None:
                    diffs = self._exact(xs[0], fills[0], boxes[0], raw, clean, target, bar)
                else:
                    wide = _wide(ppe, xs[0].shape[0], count) if self._capturable(xs, args, raw) else ppe
                    diffs = self._naive(xs, fills, boxes, args, clean, target, wide, bar)
                    self.stats["reason"] = naive or "not an eval-mode nn.Module on one (N, ...) tensor"
                    if naive:  # chosen for speed: the numbers are the exact ones, by full inference
                        self.stats["mode"] = "exact"
            finally:
                if bar is not None:
                    bar.close()
            attrs = []
            for diff, st, w, b, x in zip(diffs, starts, windows, bodies, xs):
                summed, count = _spread(diff, st, w, b)
                attrs.append((summed / count).float().to(x.device))
        return tuple(attrs) if isinstance(inputs, tuple) else attrs[0]

    def attribute_future(self, *args: Any, **kwargs: Any) -> None:
        """Not implemented, as in Captum's Occlusion (which raises the same error)."""
        raise NotImplementedError("attribute_future is not implemented for Occlusion")

    def _capturable(self, xs: tuple[Tensor, ...], args: Any, raw: Tensor) -> bool:
        model = self.forward_func
        return (
            isinstance(model, nn.Module)
            and not any(m.training for m in model.modules())  # train-mode outputs depend on the batch
            and len(xs) == 1
            and args is None
            and xs[0].is_floating_point()
            and xs[0].dim() >= 2  # a per-example scalar has no window to recompute incrementally
            and raw.dim() == 2
            and raw.shape[0] == xs[0].shape[0]
        )

    def _exact(self, x, fill, box, raw, clean, target, bar) -> list[Tensor]:
        """(P, n_out) drops through the run pipeline (incremental or full inference, as measured), per example."""
        lo, hi = box
        n, count = x.shape[0], len(lo)
        outputs = []
        for i in range(n):
            occ = Occlusions(x[i : i + 1], lo, hi, baseline=fill[i : i + 1])
            progress = bar.update if bar is not None else None
            out, stats = evaluate(
                self.forward_func, occ, mode="exact", path=self.path, progress=progress, clean=raw[i : i + 1]
            )
            outputs.append(out)
        self.stats = {**stats.as_dict(), "positions": count, "examples": n}
        occluded = torch.stack(outputs, dim=1).reshape(count * n, -1).to(raw.dtype)
        return [clean - _select(occluded, _repeat(target, count)).reshape(count, -1)]

    def _naive(self, xs, fills, boxes, args, clean, target, ppe, bar) -> list[Tensor]:
        """(P_i, n_out) drops per input by full inference, `ppe` positions per call as Captum batches them."""
        n = xs[0].shape[0]
        positions = [(i, p) for i, (lo, _) in enumerate(boxes) for p in range(len(lo))]
        drops: list[list[Tensor]] = [[] for _ in xs]
        for first in range(0, len(positions), ppe):
            chunk = positions[first : first + ppe]
            batch = [torch.cat([x] * len(chunk)) for x in xs]
            for j, (i, p) in enumerate(chunk):
                lo, hi = boxes[i]
                region = (slice(j * n, (j + 1) * n), *(slice(a, b) for a, b in zip(lo[p], hi[p])))
                batch[i][region] = fills[i][(slice(None), *region[1:])]
            extra = tuple(torch.cat([a] * len(chunk)) if isinstance(a, Tensor) and a.dim() else a for a in args or ())
            out = _select(_as_tensor(self.forward_func(*batch, *extra)), _repeat(target, len(chunk)))
            _check(
                out.numel() == len(chunk) * clean.shape[1],
                f"forward_func's output must grow with the batch: {clean.shape[1]} values for {n} examples, "
                f"but {out.numel()} for {len(chunk) * n}; use perturbations_per_eval=1",
            )
            diff = clean - out.reshape(len(chunk), -1)
            for j, (i, _) in enumerate(chunk):
                drops[i].append(diff[j : j + 1])
            if bar is not None:
                bar.update(len(chunk) * n)
        self.stats = {"mode": "naive", "path": "naive", "positions": len(positions), "batch_size": ppe * n}
        return [torch.cat(d) for d in drops]


def _wide(ppe: int, examples: int, positions: int) -> int:
    """Perturbations per call for full inference of a batch-independent (eval-mode) model: at least the
    caller's, up to ~256 rows per call, where small models stop paying per-call overhead."""
    return max(ppe, min(positions, max(1, 256 // max(1, examples))))


def _bar(enabled: bool, total: int):
    """A tqdm bar over evaluations (the clean one, then window positions x examples), with an ETA."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Occlusion attribution")  # Captum's label

"""Argument checks for the public API: every bad value raises ValueError naming the parameter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def pair(name: str, value: Any) -> tuple[int, int]:
    """An int or (h, w) pair of positive ints (2-D only callers; `spatial` for any rank)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive int or a pair (h, w) of positive ints, got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{name} must be a positive int or a pair (h, w) of positive ints, got {value!r}")
    if min(value) <= 0:
        raise ValueError(f"{name} must be positive (> 0), got {tuple(value)}")
    return int(value[0]), int(value[1])


SHAPES = "(C, L) signal, (C, H, W) image or (C, D, H, W) volume, each with or without a leading batch axis of 1"


def spatial(name: str, value: Any, rank: int) -> tuple[int, ...]:
    """An int or a tuple of `rank` positive ints (one per spatial axis)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * rank
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != rank
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{name} must be a positive int or {rank} positive ints (one per spatial axis), got {value!r}")
    if min(value) <= 0:
        raise ValueError(f"{name} must be positive (> 0), got {tuple(value)}")
    return tuple(int(v) for v in value)


def rank_of(value: Any, *hints: Any) -> int:
    """Spatial axes of an input: from a tuple patch/stride if given, else from the tensor's dimensions
    (2: (C, L); 3: (C, H, W); 4: (1, C, H, W) when the first axis is 1, else (C, D, H, W); 5: a volume)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"image must be a torch.Tensor: {SHAPES}; got {type(value).__name__}")
    for name, hint in zip(("patch", "stride"), hints):
        if isinstance(hint, Sequence) and not isinstance(hint, str):
            if not 1 <= len(hint) <= 3:
                raise ValueError(f"{name} {tuple(hint)} has {len(hint)} axes; krypton explains 1 to 3 spatial axes")
            if value.dim() not in (len(hint) + 1, len(hint) + 2):
                raise ValueError(
                    f"{name} {tuple(hint)} has {len(hint)} spatial axes but the input has shape "
                    f"{tuple(value.shape)}; expected (C, {_axes(len(hint))}) or (1, C, {_axes(len(hint))})"
                )
            return len(hint)
    by_dims = {2: 1, 3: 2, 5: 3}
    if value.dim() == 4:
        return 2 if value.shape[0] == 1 else 3
    if value.dim() not in by_dims:
        raise ValueError(f"image must be a {SHAPES}; got shape {tuple(value.shape)}")
    return by_dims[value.dim()]


def image(value: Any, rank: int = 2) -> torch.Tensor:
    """A float tensor (C, *spatial) or (1, C, *spatial) with `rank` spatial axes -> (1, C, *spatial)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"image must be a torch.Tensor: {SHAPES}; got {type(value).__name__}")
    if rank != 2:
        if value.dim() == rank + 1:
            value = value.unsqueeze(0)
        if value.dim() != rank + 2 or value.shape[0] != 1:
            raise ValueError(
                f"image with {rank} spatial axes must have shape (C, {_axes(rank)}) or (1, C, {_axes(rank)}), "
                f"got {tuple(value.shape)} (one input at a time; krypton.captum.Occlusion takes batches)"
            )
        if not value.is_floating_point():
            raise ValueError(f"image must be a floating-point tensor (already preprocessed), got {value.dtype}")
        return value
    if value.dim() in (3, 4) and value.shape[-1] in (1, 3, 4) and value.shape[-3] not in (1, 3, 4):
        hwc = tuple(value.shape[-3:])
        raise ValueError(
            f"image of shape {tuple(value.shape)} looks channels-last (H, W, C) = {hwc}; krypton wants (C, H, W): "
            "pass image.permute(2, 0, 1) (or (0, 3, 1, 2) with a batch axis)"
        )
    if value.dim() == 3:
        value = value.unsqueeze(0)
    if value.dim() != 4 or value.shape[0] != 1:
        raise ValueError(f"image must have shape (C, H, W) or (1, C, H, W), got {tuple(value.shape)}")
    if not value.is_floating_point():
        raise ValueError(f"image must be a floating-point tensor (already preprocessed), got {value.dtype}")
    return value


def fill(value: Any, channels: int, patch: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Scalar, per-channel sequence or tensor broadcastable to (C, *patch) -> (C, *patch)."""
    target = (channels, *patch)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"fill must be finite numbers (no NaN or infinity), got {value!r}")
        return torch.full(target, float(value), dtype=like.dtype, device=like.device)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != channels:
            raise ValueError(f"fill as a sequence needs one value per channel ({channels}), got {len(value)}")
        value = torch.tensor([float(v) for v in value]).view(channels, *([1] * len(patch)))
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"fill must be a number, a per-channel sequence or a tensor, got {type(value).__name__}")
    if not torch.isfinite(value).all():
        raise ValueError("fill must be finite numbers (no NaN or infinity)")
    try:
        return value.to(like.device, like.dtype).expand(target).contiguous()
    except RuntimeError:
        raise ValueError(f"fill of shape {tuple(value.shape)} does not broadcast to (C, *patch) = {target}") from None


def patch_fits(patch: tuple[int, ...], size: tuple[int, ...]) -> None:
    if len(patch) != len(size):
        raise ValueError(f"patch {patch} has {len(patch)} axes but the input has {len(size)} spatial axes {size}")
    if any(p > s for p, s in zip(patch, size)):
        shape = "x".join(str(s) for s in size)
        kind = {1: "a signal (C, L)", 2: "an image (C, H, W)", 3: "a volume (C, D, H, W)"}[len(size)]
        raise ValueError(
            f"patch {patch} is larger than the input ({shape}, read as {kind}); use a patch <= the input size"
        )


def _axes(rank: int) -> str:
    return {1: "L", 2: "H, W", 3: "D, H, W"}[rank]


def mode(value: Any, allowed: tuple[str, ...], name: str = "mode") -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def positive_int(name: str, value: Any, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")
    return value


def device(value: Any) -> torch.device | None:
    """None, or a device that exists here (a string such as "cpu", "cuda:0", or a torch.device)."""
    if value is None:
        return None
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be None, 'cpu', 'cuda', 'cuda:N' or a torch.device, got {value!r}") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device {str(dev)!r}: no such CUDA GPU here (available: {torch.cuda.device_count()})")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {value!r}")
    return dev

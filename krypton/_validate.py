"""Argument checks for the public API: every bad value raises ValueError naming the parameter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def pair(name: str, value: Any) -> tuple[int, int]:
    """An int or (h, w) pair of positive ints."""
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


def image(value: Any) -> torch.Tensor:
    """A float tensor (C, H, W) or (1, C, H, W) -> (1, C, H, W)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"image must be a torch.Tensor of shape (C, H, W) or (1, C, H, W), got {type(value).__name__}")
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


def fill(value: Any, channels: int, patch: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """Scalar, per-channel sequence or tensor broadcastable to (C, ph, pw) -> (C, ph, pw)."""
    target = (channels, patch[0], patch[1])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"fill must be finite numbers (no NaN or infinity), got {value!r}")
        return torch.full(target, float(value), dtype=like.dtype, device=like.device)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != channels:
            raise ValueError(f"fill as a sequence needs one value per channel ({channels}), got {len(value)}")
        value = torch.tensor([float(v) for v in value]).view(channels, 1, 1)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"fill must be a number, a per-channel sequence or a tensor, got {type(value).__name__}")
    if not torch.isfinite(value).all():
        raise ValueError("fill must be finite numbers (no NaN or infinity)")
    try:
        return value.to(like.device, like.dtype).expand(target).contiguous()
    except RuntimeError:
        raise ValueError(f"fill of shape {tuple(value.shape)} does not broadcast to (C, ph, pw) = {target}") from None


def patch_fits(patch: tuple[int, int], size: tuple[int, int]) -> None:
    if patch[0] > size[0] or patch[1] > size[1]:
        raise ValueError(f"patch {patch} is larger than the image ({size[0]}x{size[1]}); use a patch <= the image size")


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

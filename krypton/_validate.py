"""Argument checks for the public API: every bad value raises ValueError naming the parameter."""

from __future__ import annotations

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
        return torch.full(target, float(value), dtype=like.dtype, device=like.device)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != channels:
            raise ValueError(f"fill as a sequence needs one value per channel ({channels}), got {len(value)}")
        value = torch.tensor([float(v) for v in value]).view(channels, 1, 1)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"fill must be a number, a per-channel sequence or a tensor, got {type(value).__name__}")
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

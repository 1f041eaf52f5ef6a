"""Per-model preprocessing: size, channels and normalisation, from [0, 1] pixels to the model's input tensor.

A model only gives the right answer on inputs prepared the way it was trained, so each model source
(`krypton.models`) carries a `Preprocess`, and the CLI lets users override it for their own files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from krypton.choices import RESIZE
from krypton.io.images import ImageError, read_image

RESAMPLE = ("bilinear", "nearest", "bicubic")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's convert("L")


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: `x = (pixel - mean) / std` with pixels in [0, 1], per channel.

    size: (H, W) of the model input; channels: 1 (gray) or 3 (RGB); resample: PIL filter name;
    resize: how an image of another aspect ratio is fitted -- "crop" (centre crop, ImageNet style: the
    borders are never explained), "pad" (black bars, the whole image is explained) or "stretch" (the
    whole image, distorted).
    """

    size: tuple[int, int]
    channels: int = 3
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    resize: str = "stretch"
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ValueError(f"size must be (H, W) with positive values, got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values, got {len(value)}")
        if any(s == 0 for s in self.std):
            raise ValueError("std values must be non-zero")
        if self.resize not in RESIZE:
            raise ValueError(f"resize must be one of {', '.join(RESIZE)}, got {self.resize!r}")
        if self.resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {RESAMPLE}, got {self.resample!r}")

    def with_size(self, size: tuple[int, int]) -> Preprocess:
        return replace(self, size=(int(size[0]), int(size[1])))

    def describe(self) -> str:
        mean = ",".join(f"{m:g}" for m in self.mean)
        std = ",".join(f"{s:g}" for s in self.std)
        gray = "gray" if self.channels == 1 else "RGB"
        fit = {"crop": "centre-cropped", "pad": "padded", "stretch": "stretched"}[self.resize]
        return f"{self.size[0]}x{self.size[1]} {gray} ({fit} to fit), (pixel/255 - [{mean}]) / [{std}]"

    def pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, C) [0, 1] pixels cropped, resized and converted to the model's channel count."""
        pixels = _as_hwc(pixels)
        if self.resize == "crop":
            pixels = _center_crop(pixels, self.size[1] / self.size[0])
        elif self.resize == "pad":
            pixels = _pad(pixels, self.size[1] / self.size[0])
        pixels = _resize(pixels, self.size, self.resample)
        if self.channels == 3 and pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        elif self.channels == 1 and pixels.shape[-1] == 3:
            pixels = (pixels @ LUMA)[..., None]
        return np.clip(pixels, 0.0, 1.0).astype(np.float32)

    def tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """(C, H, W) float32 model input from [0, 1] pixels already passed through `pixels`."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(((pixels - mean) / std).transpose(2, 0, 1).copy())

    def __call__(self, pixels: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """(model input (C, H, W), display pixels (H, W, C)) of [0, 1] pixels of any size."""
        shown = self.pixels(pixels)
        return self.tensor(shown), shown

    def load(self, path: str | Path) -> tuple[torch.Tensor, np.ndarray]:
        """Read an image file and prepare it: (model input, display pixels)."""
        return self(read_image(path))


def _as_hwc(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3, 4):
        raise ImageError(f"pixels must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {pixels.shape}")
    if pixels.shape[-1] == 4:
        alpha = pixels[..., 3:]
        pixels = pixels[..., :3] * alpha + (1.0 - alpha)
    return pixels


def _center_crop(pixels: np.ndarray, aspect: float) -> np.ndarray:
    """The largest centred region with width/height = aspect."""
    h, w = pixels.shape[:2]
    if w / h > aspect:
        new_w = max(1, round(h * aspect))
        left = (w - new_w) // 2
        return pixels[:, left : left + new_w]
    new_h = max(1, round(w / aspect))
    top = (h - new_h) // 2
    return pixels[top : top + new_h]


def _pad(pixels: np.ndarray, aspect: float) -> np.ndarray:
    """The image centred on black bars so that width/height = aspect (nothing of it is lost)."""
    h, w = pixels.shape[:2]
    if w / h > aspect:
        new_h = max(h, round(w / aspect))
        top = (new_h - h) // 2
        return np.pad(pixels, ((top, new_h - h - top), (0, 0), (0, 0)))
    new_w = max(w, round(h * aspect))
    left = (new_w - w) // 2
    return np.pad(pixels, ((0, 0), (left, new_w - w - left), (0, 0)))


def _resize(pixels: np.ndarray, size: tuple[int, int], resample: str) -> np.ndarray:
    """Per-channel float resize with PIL (antialiased when shrinking), no 8-bit rounding."""
    from PIL import Image

    if pixels.shape[:2] == tuple(size):
        return pixels
    flt = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST,
           "bicubic": Image.Resampling.BICUBIC}[resample]  # fmt: skip
    channels = [
        np.asarray(Image.fromarray(pixels[..., c]).resize((size[1], size[0]), flt), dtype=np.float32)
        for c in range(pixels.shape[-1])
    ]
    return np.stack(channels, axis=-1)


IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

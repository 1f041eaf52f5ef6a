"""Reading image files into float pixels in [0, 1]: PNG/JPEG (8/16-bit, gray, RGBA, palette) and DICOM.

Every reader returns an (H, W, C) float32 array with C = 1 (gray) or 3 (RGB), so that preprocessing
(`krypton.io.preprocess`) has one input format whatever the file was.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np


class ImageError(ValueError):
    """An image file could not be read; the message says which file and why."""


DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, C) float32 pixels in [0, 1] of an image file; C is 1 for gray images, 3 otherwise."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    if path.is_dir():
        raise ImageError(f"image path is a folder, not a file: {path}")
    if path.suffix.lower() in DICOM_SUFFIXES or _is_dicom(path):
        return read_dicom(path)
    return _read_pillow(path)


def _is_dicom(path: Path) -> bool:
    """DICOM files carry 'DICM' after a 128-byte preamble, whatever their name."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from None
    return len(head) == 132 and head[128:] == b"DICM"


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return pixels_from_pil(img)
    except UnidentifiedImageError:
        raise ImageError(f"cannot read image {path}: not a PNG, JPEG, DICOM or other known image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from None


def pixels_from_pil(img) -> np.ndarray:  # noqa: ANN001 - PIL.Image.Image, imported lazily
    """Float pixels of a PIL image; 16-bit and 32-bit images are stretched to their own range."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _stretch(np.asarray(img, dtype=np.float64))[..., None]
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:]
        rgb = rgba[..., :3] * alpha + (1.0 - alpha)  # transparent parts become white, as viewers show them
        return (rgb[..., :1] if img.mode == "LA" else rgb).astype(np.float32)
    if img.mode in ("1", "L"):
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[..., None]
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _stretch(values: np.ndarray) -> np.ndarray:
    """Min-max scaling to [0, 1]: 12-bit data stored in 16 bits, CT units etc. would look black otherwise."""
    values = np.nan_to_num(values.astype(np.float64))
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def read_dicom(path: str | Path) -> np.ndarray:
    """A DICOM image's first frame: modality and VOI LUTs applied, MONOCHROME1 inverted, scaled to [0, 1]."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pragma: no cover - pydicom is a dependency
        raise ImageError(f"cannot read DICOM {path}: pydicom is not installed (pip install pydicom)") from None
    try:
        with warnings.catch_warnings():  # pydicom warns about every oddity it tolerates
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path))
            pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for broken files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"cannot read DICOM {path}: {first}") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if photometric.startswith("MONOCHROME"):
        values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float64)
        out = _stretch(values)
        if photometric == "MONOCHROME1":  # low values are white in MONOCHROME1
            out = 1.0 - out
        return out[..., None]
    if photometric != "RGB" and pixels.ndim == 3:
        from pydicom.pixels import convert_color_space

        pixels = convert_color_space(pixels, photometric, "RGB")
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ImageError(f"cannot read DICOM {path}: unsupported pixel layout {pixels.shape} ({photometric})")
    return _stretch(pixels.astype(np.float64)) if pixels.dtype != np.uint8 else pixels.astype(np.float32) / 255.0


def read_raw_uint16(path: str | Path, shape: tuple[int, int], big_endian: bool = True) -> np.ndarray:
    """A headerless 16-bit image (optionally gzipped), e.g. matplotlib's sample MRI slice `s1045.ima.gz`."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from None
    expected = 2 * shape[0] * shape[1]
    if len(data) != expected:
        raise ImageError(f"cannot read image {path}: {len(data)} bytes, expected {expected} for {shape} uint16")
    values = np.frombuffer(data, dtype=">u2" if big_endian else "<u2").reshape(shape)
    return _stretch(values.astype(np.float64))[..., None]

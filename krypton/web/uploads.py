"""Decoding uploaded images safely: images only, bounded bytes and pixels, no temporary paths from the client.

The pixel limit is checked from the header before any pixel is decoded, so a small file that claims
a huge canvas (a decompression bomb) is refused without allocating it.
"""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
CONTENT_TYPES = ("application/dicom", "application/octet-stream")


class UploadError(ValueError):
    """A refused upload; `status` is the HTTP status that says why (400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_content_type(content_type: str | None) -> None:
    """Refuse bodies declared as something other than an image (a missing type is sniffed instead)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind and not kind.startswith("image/") and kind not in CONTENT_TYPES:
        raise UploadError(f"only image files are accepted (PNG, JPEG, GIF, BMP, TIFF, WebP, DICOM), got {kind}", 415)
    if kind == "image/svg+xml":
        raise UploadError("SVG is not accepted: upload a raster image (PNG, JPEG, ...)", 415)


VOLUME_MESSAGE = (
    "this looks like a volume or array (NIfTI, gzip, .npy): the web demo explains 2-D images only; "
    "explain volumes with `krypton explain scan.nii.gz --model ...` or krypton.explain in Python"
)


def _is_volume(data: bytes) -> bool:
    """NIfTI-1/2 headers (sizeof_hdr 348 or 540), gzip (a .nii.gz) and NumPy .npy files."""
    head = int.from_bytes(data[:4], "little") if len(data) >= 4 else 0
    return head in (348, 540) or data[:2] == b"\x1f\x8b" or data[:6] == b"\x93NUMPY"


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """(H, W, C) float32 pixels in [0, 1] of an uploaded PNG/JPEG/GIF/BMP/TIFF/WebP or DICOM file."""
    if not data:
        raise UploadError("the upload is empty: send the image file as the request body")
    if _is_volume(data):
        raise UploadError(VOLUME_MESSAGE, 415)
    if len(data) >= 132 and data[128:132] == b"DICM":
        return _dicom(data, max_pixels)
    return _pillow(data, max_pixels)


def _too_many(width: int, height: int, frames: int, max_pixels: int) -> UploadError:
    return UploadError(
        f"image too large: {width}x{height}{f' x {frames} frames' if frames > 1 else ''} pixels, "
        f"the limit is {max_pixels:,} pixels",
        413,
    )


def _pillow(data: bytes, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from krypton.io.images import pixels_from_pil

    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:  # reads the header only
            width, height = img.size
            if width * height > max_pixels or width <= 0 or height <= 0:
                raise _too_many(width, height, 1, max_pixels)
            img.load()
            return pixels_from_pil(img)
    except UploadError:
        raise
    except Image.DecompressionBombError:
        raise UploadError(
            f"image too large: more than {max_pixels:,} pixels; shrink it (e.g. to 2048 px on its long side) first",
            413,
        ) from None
    except UnidentifiedImageError:
        raise UploadError("not an image: upload a PNG, JPEG, GIF, BMP, TIFF, WebP or DICOM file", 415) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt files
        raise UploadError(f"cannot read the image: {exc}") from None


def _dicom(data: bytes, max_pixels: int) -> np.ndarray:
    """Header first (size limits), then the pixels through krypton's DICOM reader via a server-named file."""
    import pydicom

    from krypton.io.images import ImageError, read_dicom

    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
        frames = int(header.get("NumberOfFrames", 1) or 1)
    except Exception as exc:  # pydicom raises many types for broken files
        raise UploadError(f"cannot read the DICOM file: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if rows <= 0 or cols <= 0:
        raise UploadError("the DICOM file has no image (no Rows/Columns)")
    if rows * cols * frames > max_pixels:
        raise _too_many(cols, rows, frames, max_pixels)
    handle, path = tempfile.mkstemp(suffix=".dcm", prefix="krypton-upload-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        return read_dicom(path)
    except ImageError as exc:
        raise UploadError(str(exc).replace(path, "the upload")) from None
    finally:
        os.unlink(path)

"""Image files in, model inputs out: reading (PNG/JPEG/16-bit/DICOM) and per-model preprocessing."""

from krypton.io.images import ImageError, read_dicom, read_image, read_raw_uint16
from krypton.io.preprocess import IMAGENET, Preprocess

__all__ = ["IMAGENET", "ImageError", "Preprocess", "read_dicom", "read_image", "read_raw_uint16"]

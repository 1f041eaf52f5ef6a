"""Reading volumes and signals: NIfTI (.nii, .nii.gz), a DICOM series (a folder of slices), NumPy .npy.

A volume keeps its raw intensities (CT in Hounsfield units after the DICOM rescale, MRI in scanner
units) and its affine (voxel indices to patient millimetres), so a heat map can be written back in the
same geometry; `window` maps intensities to [0, 1] the way radiology users expect (a CT window of
centre/width, or percentile scaling for MRI).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from krypton.io.images import DICOM_SUFFIXES, ImageError

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".npy")
CT_WINDOWS = {"brain": (40.0, 80.0), "lung": (-600.0, 1500.0), "soft-tissue": (50.0, 400.0), "bone": (400.0, 1800.0)}


@dataclass
class Volume:
    """Raw intensities (C, *spatial) and, for NIfTI and DICOM, the 4x4 affine of the spatial axes."""

    data: np.ndarray
    affine: np.ndarray | None = None
    source: str = ""

    @property
    def rank(self) -> int:
        return self.data.ndim - 1


def is_volume_path(path: str | Path) -> bool:
    """True for files and folders `read_volume` takes (NIfTI, .npy, a folder of DICOM slices)."""
    path = Path(path)
    name = path.name.lower()
    return name.endswith(VOLUME_SUFFIXES) or (path.is_dir() and any(_dicom_files(path)))


def read_volume(path: str | Path, volume_index: int | None = None) -> Volume:
    """A NIfTI file, a .npy array or a folder holding one DICOM series, as a `Volume`.

    A 4-D NIfTI (a time or diffusion axis) needs `volume_index` to say which volume to explain.
    A .npy array is (L,) or (C, L) for a signal, (D, H, W) or (C, D, H, W) for a volume.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"volume not found: {path}")
    name = path.name.lower()
    if path.is_dir():
        return _read_dicom_series(path)
    if name.endswith((".nii", ".nii.gz")):
        return _read_nifti(path, volume_index)
    if name.endswith(".npy"):
        return _read_npy(path)
    raise ImageError(f"{path.name}: not a volume (use .nii, .nii.gz, .npy or a folder of DICOM slices)")


def window(
    data: np.ndarray,
    *,
    center: float | None = None,
    width: float | None = None,
    percentiles: tuple[float, float] = (1, 99),
) -> np.ndarray:
    """Intensities to [0, 1]: a window `center` ± `width`/2 (CT, in HU) when given, else the
    `percentiles` of the data mapped to 0 and 1 (MRI and anything without calibrated units)."""
    data = np.asarray(data, dtype=np.float32)
    if (center is None) != (width is None):
        raise ValueError("a window needs both center and width (e.g. brain: center 40, width 80)")
    if center is not None and width is not None:
        if width <= 0:
            raise ValueError(f"window width must be positive, got {width}")
        low, high = center - width / 2, center + width / 2
    else:
        lo_p, hi_p = percentiles
        if not 0 <= lo_p < hi_p <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        low, high = (float(v) for v in np.percentile(data, [lo_p, hi_p]))
    if high <= low:
        return np.zeros_like(data)
    return np.clip((data - low) / (high - low), 0.0, 1.0)


def _read_nifti(path: Path, volume_index: int | None) -> Volume:
    try:
        import nibabel
    except ImportError:
        raise ImageError("NIfTI files need nibabel (pip install 'krypton-obe[volumes]')") from None
    try:
        image = nibabel.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)  # type: ignore[attr-defined]
    except Exception as exc:
        raise ImageError(f"cannot read NIfTI {path}: {str(exc).strip().splitlines()[0]}") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        count = data.shape[3]
        if volume_index is None:
            raise ImageError(
                f"{path.name} holds {count} volumes (a 4th axis: time or diffusion); say which to explain "
                f"(--volume N with 0 <= N < {count})"
            )
        if not 0 <= volume_index < count:
            raise ImageError(f"{path.name}: volume {volume_index} does not exist (0 <= N < {count})")
        data = data[..., volume_index]
    if data.ndim not in (2, 3):
        raise ImageError(f"{path.name} has shape {data.shape}; krypton explains 3-D volumes (and 2-D slices)")
    return Volume(data[None], np.asarray(image.affine, dtype=np.float64), str(path))  # type: ignore[attr-defined]


def _read_npy(path: Path) -> Volume:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ImageError(f"cannot read {path}: {str(exc).strip().splitlines()[0]}") from None
    if not np.issubdtype(data.dtype, np.number) or data.ndim not in (1, 2, 3, 4):
        raise ImageError(f"{path.name}: expected a numeric (L,), (C, L), (D, H, W) or (C, D, H, W) array, got "
                         f"{data.dtype} {data.shape}")  # fmt: skip
    data = data.astype(np.float32)
    if data.ndim in (1, 3):
        data = data[None]
    return Volume(data, None, str(path))


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix.lower() in DICOM_SUFFIXES or not p.suffix))


def _read_dicom_series(folder: Path) -> Volume:
    """Slices ordered by their position along the slice normal (InstanceNumber when positions are missing),
    with RescaleSlope/Intercept applied (CT: Hounsfield units)."""
    import pydicom

    slices = []
    for path in _dicom_files(folder):
        try:
            slices.append(pydicom.dcmread(str(path)))
        except Exception:  # not every file in a DICOM folder is an image (DICOMDIR, notes): skip it
            continue
    slices = [s for s in slices if "PixelData" in s]
    if not slices:
        raise ImageError(f"{folder} holds no DICOM slices")
    series = {str(getattr(s, "SeriesInstanceUID", "")) for s in slices}
    if len(series) > 1:
        raise ImageError(f"{folder} mixes {len(series)} DICOM series; put one series per folder")
    slices.sort(key=_slice_position)
    try:
        data = np.stack([_slice_values(s) for s in slices])
    except ValueError:
        raise ImageError(f"{folder}: the slices differ in size; a series must have one slice size") from None
    return Volume(data[None], _series_affine(slices), str(folder))


def _slice_position(ds) -> float:  # noqa: ANN001 - a pydicom Dataset
    position, orientation = getattr(ds, "ImagePositionPatient", None), getattr(ds, "ImageOrientationPatient", None)
    if position is not None and orientation is not None:
        normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
        return float(np.dot(normal, np.asarray(position, float)))
    return float(getattr(ds, "InstanceNumber", 0))


def _slice_values(ds) -> np.ndarray:  # noqa: ANN001
    values = ds.pixel_array.astype(np.float32)
    return values * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0.0))


def _series_affine(slices: list) -> np.ndarray | None:
    """Voxel (slice, row, column) to patient millimetres, from the first slice's position and orientation."""
    first = slices[0]
    position = getattr(first, "ImagePositionPatient", None)
    orientation = getattr(first, "ImageOrientationPatient", None)
    spacing = getattr(first, "PixelSpacing", None)
    if position is None or orientation is None or spacing is None:
        return None
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    step = (_slice_position(slices[-1]) - _slice_position(first)) / max(len(slices) - 1, 1) if len(slices) > 1 else 1
    affine = np.eye(4)
    affine[:3, 0] = normal * step
    affine[:3, 1] = col * float(spacing[0])
    affine[:3, 2] = row * float(spacing[1])
    affine[:3, 3] = np.asarray(position, float)
    return affine

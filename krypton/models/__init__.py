"""Model sources: every way a user can hand krypton a model, each ending as an `nn.Module` (B,C,H,W)->(B,K).

`load_model` accepts an `nn.Module`, a bundled demo name (`xray`, `mri`, `imagenet`), a torchvision
architecture name with a local weights file, or a model file: `.pt2` (ExportedProgram), `.onnx`
(via onnx2torch), `.keras`/`.h5` (Keras 3 on the torch backend).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from krypton.models.demos import DEMOS, Demo, DemoImage, demo_image
from krypton.models.errors import ModelError
from krypton.models.loaded import UNKNOWN_PREPROCESSING, LoadedModel

__all__ = [
    "DEMOS",
    "Demo",
    "DemoImage",
    "LoadedModel",
    "ModelError",
    "demo_image",
    "load_model",
    "model_kind",
    "with_overrides",
]

STATE_DICT_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}


def load_model(
    model: str | Path | nn.Module,
    weights: str | Path | None = None,
    size: tuple[int, int] | None = None,
) -> LoadedModel:
    """Resolve a model given by object, demo name, torchvision architecture or file path.

    weights: state-dict file for a torchvision architecture ("random" keeps random weights);
    size: (H, W) for model files without a fixed input size.
    """
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, nn.Module):
        return LoadedModel(model.eval(), type(model).__name__)
    text = str(model)
    kind = model_kind(text)
    if weights is not None and kind in ("demo", "file"):
        raise ModelError(f"--weights goes with a torchvision architecture name, not with {text!r}")
    if kind == "demo":
        return DEMOS[text].load()
    if kind == "volume-demo":
        from krypton.models import volume_demo

        notes = ["a SYNTHETIC task trained here (blob present/absent in noise): a demonstration, not a medical model"]
        shape = (1, volume_demo.SIZE, volume_demo.SIZE, volume_demo.SIZE)
        name = f"{volume_demo.NAME} (synthetic 3-D demo)"
        return LoadedModel(volume_demo.load(), name, None, list(volume_demo.CLASSES), notes, 2, shape)
    if kind == "monai":
        from krypton.models.monai_nets import load_monai

        return load_monai(text, weights)
    if kind == "file":
        return _load_file(Path(text), weights, size)
    from krypton.models.torch_files import load_torchvision

    return load_torchvision(text, weights)


def model_kind(text: str) -> str:
    """'demo', 'file', 'monai' or 'torchvision' for a model name, without loading anything; ModelError if none."""
    if text in DEMOS:
        return "demo"
    if text.startswith("monai:"):
        return "monai"
    if text == "lesion3d":  # krypton.models.volume_demo.NAME, named here so model_kind imports nothing
        return "volume-demo"
    path = Path(text)
    if path.exists():
        return "file"
    from krypton.models.torch_files import is_torchvision_architecture

    if is_torchvision_architecture(text):
        return "torchvision"
    if path.suffix:
        raise ModelError(f"model file not found: {path}")
    raise ModelError(
        f"unknown model {text!r}: not a demo ({', '.join(DEMOS)}), a torchvision architecture "
        "(e.g. resnet18 --weights FILE), a MONAI network (monai:densenet121 --weights FILE) or an existing "
        "model file (.pt2, .onnx, .keras, .h5)"
    )


def _load_file(path: Path, weights: str | Path | None, size: tuple[int, int] | None) -> LoadedModel:
    suffix = path.suffix.lower()
    if path.is_dir():
        raise ModelError(f"model path is a folder, not a file: {path}")
    if suffix == ".pt2":
        from krypton.models.torch_files import load_pt2

        return load_pt2(path)
    if suffix == ".onnx":
        from krypton.models.onnx_files import load_onnx

        return load_onnx(path, size)
    if suffix in (".keras", ".h5", ".hdf5"):
        from krypton.models.keras_files import load_keras

        return load_keras(path, size)
    if suffix in STATE_DICT_SUFFIXES:
        from krypton.models.torch_files import read_state_dict

        read_state_dict(path)  # refuses pickled model objects with the reason
        raise ModelError(
            f"{path.name} holds weights only; name the architecture: --model ARCH --weights {path} "
            "(e.g. --model resnet18), or export the whole model to .pt2 with torch.export.save"
        )
    raise ModelError(
        f"unknown model file type {suffix or '(none)'!r}: use .pt2, .onnx, .keras, .h5 or ARCH + --weights"
    )


def with_overrides(
    loaded: LoadedModel,
    size: tuple[int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    labels: str | Path | None = None,
    resize: str | None = None,
    image_input: bool = True,
) -> LoadedModel:
    """Apply a user's input size, normalisation, aspect-ratio fitting and class-name file (CLI, batch runs)."""
    from dataclasses import replace

    from krypton.io import Preprocess

    pre = loaded.preprocess
    if not image_input:  # volumes and signals are windowed by the caller, not preprocessed as images
        pre = None
    elif pre is None:
        if size is None:
            raise ModelError(f"{loaded.name}: give the model input size (--size H,W)")
        pre = Preprocess(size)
    if pre is not None and size:
        pre = pre.with_size(size)
    if pre is not None and (mean or std):
        pre = replace(pre, mean=tuple(mean or pre.mean), std=tuple(std or pre.std))
        loaded.notes = [n for n in loaded.notes if not n.startswith(UNKNOWN_PREPROCESSING)]
    if pre is not None and resize:
        pre = replace(pre, resize=resize)
    if image_input:
        loaded.preprocess = pre
    if labels:
        try:
            lines = Path(labels).read_text().splitlines()
        except OSError as exc:
            raise ModelError(f"cannot read labels {labels}: {exc.strerror or exc}") from None
        names = [line.strip() for line in lines if line.strip()]
        if not names:
            raise ModelError(f"labels file {labels} has no class names")
        expected = None if loaded.outputs is None else max(loaded.outputs, 2)
        if expected is not None and len(names) != expected:
            binary = " (a one-logit binary model: negative, positive)" if loaded.outputs == 1 else ""
            raise ModelError(
                f"labels file {labels} has {len(names)} class names; the model has {expected} classes{binary}"
            )
        loaded.class_names = names
    return loaded

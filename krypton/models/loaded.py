"""What loading a model gives back: the module plus what is needed to feed it and name its outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from krypton.io.preprocess import Preprocess
from krypton.scores import BINARY_NAMES

UNKNOWN_PREPROCESSING = "preprocessing unknown"
UNKNOWN_PREPROCESSING_NOTE = (
    f"{UNKNOWN_PREPROCESSING}: using [-1, 1] scaling; set --mean/--std if the model expects otherwise"
)


def binary_names(outputs: int | None) -> list[str] | None:
    """Class names of a one-logit binary head ([negative, positive]); None for any other head."""
    return list(BINARY_NAMES) if outputs == 1 else None


@dataclass
class LoadedModel:
    """A model ready for `krypton.explain`: maps (B, C, H, W) to (B, K) logits.

    preprocess is None when the source does not say how inputs are prepared (a plain nn.Module);
    class_names is None when the source has no names (labels are then the class indices);
    outputs is the model's output count K when the source knows it (1: a binary one-logit head).
    """

    module: nn.Module
    name: str
    preprocess: Preprocess | None = None
    class_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    outputs: int | None = None
    input_shape: tuple[int, ...] | None = None  # (C, *spatial) a signal or volume model requires, if fixed

    def label(self, index: int) -> str:
        """Human name of class `index` (the index itself when names are unknown)."""
        if self.class_names and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return f"class {index}"

    def class_index(self, target: str | int | None) -> int | None:
        """A class given as an index or a (case-insensitive) name; None stays None (the top class)."""
        if target is None or isinstance(target, int):
            return target
        text = str(target).strip()
        if text.lstrip("-").isdigit():
            return int(text)
        names = list(self.class_names or [])
        lowered = [n.lower() for n in names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        known = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
        hint = f"; known classes: {known}" if names else "; this model has no class names (use an index or --labels)"
        raise ValueError(f"unknown target class {text!r}{hint}")

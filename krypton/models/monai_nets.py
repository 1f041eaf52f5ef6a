"""MONAI's 3-D classification networks by name (`monai:densenet121`, `monai:resnet18`, ...) with a state dict.

Input channels and class count come from the weights (the first convolution's input channels, the last
linear layer's outputs), so a fine-tuned CT or MRI classifier loads without extra options;
`--weights random` builds a one-channel, two-class network (for speed tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from krypton.models.errors import ModelError
from krypton.models.exported import ONE_LOGIT_NOTE
from krypton.models.loaded import LoadedModel, binary_names

PREFIX = "monai:"
ARCHITECTURES = ("densenet121", "densenet169", "resnet10", "resnet18", "resnet34", "resnet50")


def is_monai_name(text: str) -> bool:
    return text.startswith(PREFIX)


def load_monai(text: str, weights: str | Path | None, spatial_dims: int = 3) -> LoadedModel:
    """A MONAI network `monai:<architecture>` with the weights of a state-dict file (or "random")."""
    from krypton.models.torch_files import read_state_dict

    arch = text[len(PREFIX) :].lower()
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown MONAI network {arch!r}; known: {', '.join(ARCHITECTURES)} (as monai:NAME)")
    if weights is None:
        raise ModelError(f"{text} needs a weights file: --weights FILE (a state dict), or --weights random")
    state = None if str(weights) == "random" else read_state_dict(weights)
    in_channels, classes = _channels(state) if state is not None else (1, 2)
    model = _build(arch, spatial_dims, in_channels, classes)
    notes = [] if state is not None else ["random weights: the explanation shows an untrained model"]
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ModelError(f"weights {weights} do not fit MONAI {arch}: {first}") from None
    if classes == 1:
        notes.append(ONE_LOGIT_NOTE)
    return LoadedModel(model.eval(), f"MONAI {arch} ({spatial_dims}-D)", None, binary_names(classes), notes, classes)


def _channels(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(input channels, classes) from a state dict: the first conv kernel and the last matrix."""
    kernels = [v for v in state.values() if v.dim() >= 3]
    matrices = [v for v in state.values() if v.dim() == 2]
    if not kernels or not matrices:
        raise ModelError("the weights hold no convolution kernels and linear layers: not a MONAI classifier")
    return int(kernels[0].shape[1]), int(matrices[-1].shape[0])


def _build(arch: str, spatial_dims: int, in_channels: int, classes: int) -> nn.Module:
    from monai.networks import nets

    kwargs: dict[str, Any]
    if arch.startswith("densenet"):
        kwargs = dict(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=classes)
        return {"densenet121": nets.DenseNet121, "densenet169": nets.DenseNet169}[arch](**kwargs)
    kwargs = dict(spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=classes)
    return getattr(nets, arch)(**kwargs)

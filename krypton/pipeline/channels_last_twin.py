"""A channels-last twin of the caller's model for full re-inference: same modules, 4-D weights copied
in channels-last layout, everything else shared.

Channels-last inputs alone select PyTorch's faster CPU kernels, but a model whose weights stay in the
default layout still runs slower than the same model converted (batch 16, measured here: ShuffleNetV2
68.8 ms vs 56.5 ms, LCNet-050 27.5 vs 24.7, ResNet18 even). Converting the caller's model would change
it; a deep copy costs 13-140 ms and doubles the weights. The twin copies only the module objects
(shallow, microseconds each) and the convolution weights; buffers, other parameters, hooks and
attributes are the caller's own. It is made once per model and set of weights (an in-place update of any
weight makes a new one), and checked on the clean image against the model before it is used.
"""

from __future__ import annotations

import copy
import threading
import weakref

import torch
from torch import nn

_lock = threading.Lock()
_twins: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module | None]] = weakref.WeakKeyDictionary()


def _weights_key(model: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


def twin(model: nn.Module, image: torch.Tensor, clean: torch.Tensor | None) -> nn.Module | None:
    """The model's channels-last twin, or None when it cannot be made or does not compute the model's
    output on `image` (1, C, H, W) (compared with `clean`, the model's own output, when given)."""
    key = _weights_key(model)
    with _lock:
        known = _twins.get(model)
    if known is not None and known[0] == key:
        return known[1]
    try:
        made: nn.Module | None = _clone(model, {})
    except Exception:  # noqa: BLE001 - an unusual module (slots, custom copy): the model as given serves
        made = None
    if made is not None and clean is not None:
        with torch.no_grad():
            again = made(image.contiguous(memory_format=torch.channels_last))
        scale = float(clean.abs().max()) + 1e-6
        if not (isinstance(again, torch.Tensor) and again.shape == clean.shape):
            made = None
        elif not torch.allclose(again, clean, rtol=1e-4, atol=1e-5 * scale):
            made = None
    with _lock:
        _twins[model] = (key, made)
    return made


def _clone(module: nn.Module, memo: dict[int, nn.Module]) -> nn.Module:
    """A shallow copy of `module` and its children (shared children stay shared) with 4-D parameters in
    channels-last layout."""
    if id(module) in memo:
        return memo[id(module)]
    new = copy.copy(module)  # a new object whose __dict__ refers to the same values
    memo[id(module)] = new
    new._parameters = {name: _channels_last(p) for name, p in module._parameters.items()}
    new._buffers = dict(module._buffers)
    new._modules = {name: None if child is None else _clone(child, memo) for name, child in module._modules.items()}
    return new


def _channels_last(param: nn.Parameter | None) -> nn.Parameter | None:
    """A channels-last copy with channels-last strides even where a size-1 axis makes both layouts
    "contiguous" (`contiguous()` would keep a depthwise (C, 1, k, k) weight's NCHW strides, and
    its convolution would keep reordering it: ShuffleNetV2 ran 12 % slower)."""
    if param is None or param.dim() != 4:
        return param
    data = torch.empty_like(param, memory_format=torch.channels_last).copy_(param.detach())
    return nn.Parameter(data, requires_grad=False)


def clear() -> None:
    with _lock:
        _twins.clear()

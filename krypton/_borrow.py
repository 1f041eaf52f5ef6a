"""Use a caller's model without changing it: eval mode and a device for the run, everything restored after.

`explain` may be called from a training loop (a callback explaining the current weights): switching
BatchNorm and dropout to eval for good, or leaving the weights on another device, would silently change
the caller's training. The parameter data and buffer tensors themselves are put back, so storage,
device, memory format and identity are exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def borrowed(model: nn.Module, device: torch.device | str | None = None) -> Iterator[nn.Module]:
    """`model` in eval mode (and on `device`) inside the block; its modes and tensors restored on exit."""
    modules = list(model.modules())
    modes = [module.training for module in modules]
    moved = device is not None and any(
        t.device != torch.device(device) for t in (*model.parameters(), *model.buffers())
    )
    params = [(p, p.data) for p in model.parameters()] if moved else []
    buffers = [dict(module._buffers) for module in modules] if moved else []
    try:
        model.eval()
        if moved:
            model.to(device)
        yield model
    finally:
        for module, training in zip(modules, modes):
            module.training = training
        if moved:  # `.to` swaps parameters' data in place and replaces buffer objects
            for param, data in params:
                param.data = data
            for module, saved in zip(modules, buffers):
                module._buffers.update(saved)

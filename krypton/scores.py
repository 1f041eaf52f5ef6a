"""What a model's outputs mean: class probabilities and per-class logits, one-logit binary heads included.

A model maps (B, ...) inputs to (B, K) logits. For K >= 2 the class probabilities are their softmax.
A model with one output logit z is a binary classifier: softmax over one value is always 1 (an empty
map), so such a head is read as two classes, 0 = negative with probability 1 - sigmoid(z) and
1 = positive with sigmoid(z), and as logits (-z, z) for attributions (class 1 then equals Captum's
attribution of the single output). Every place that shows a probability goes through this module.
"""

from __future__ import annotations

import torch

BINARY_NAMES = ["negative", "positive"]


def class_count(outputs: torch.Tensor) -> int:
    """How many classes outputs of shape (..., K) stand for: 2 for a one-logit head, else K."""
    k = int(outputs.shape[-1])
    return 2 if k == 1 else k


def probabilities(outputs: torch.Tensor) -> torch.Tensor:
    """(..., K) logits -> (..., class_count) probabilities in float64."""
    outputs = outputs.double()
    if outputs.shape[-1] == 1:
        positive = torch.sigmoid(outputs)
        return torch.cat([1 - positive, positive], dim=-1)
    return torch.softmax(outputs, dim=-1)


def class_logit(outputs: torch.Tensor, target: int) -> torch.Tensor:
    """(...,) logit of class `target` (for a one-logit head: z for class 1, -z for class 0)."""
    if outputs.shape[-1] == 1:
        return outputs[..., 0] if target == 1 else -outputs[..., 0]
    return outputs[..., target]


def check_target(target: object, outputs: torch.Tensor, name: str = "target") -> int:
    """`target` as a valid class index for these outputs; a 0-d integer tensor is accepted (as Captum does)."""
    if isinstance(target, torch.Tensor):
        if target.numel() == 1 and not target.is_floating_point() and target.dtype != torch.bool:
            target = int(target.item())
    elif hasattr(target, "__index__") and not isinstance(target, bool):
        target = int(target.__index__())  # numpy integers
    count = class_count(outputs)
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < count:
        binary = " (a one-logit model: 0 = negative, 1 = positive)" if outputs.shape[-1] == 1 else ""
        raise ValueError(f"{name} must be an int class index in [0, {count}){binary}, got {target!r}")
    return target

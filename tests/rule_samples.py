"""Sample call sites for every rule in the registry: small graphs in which the op under test is called on
an image-dependent value (the way torch's OpInfo tables pair each op with sample inputs).

`SAMPLES[op]` lists (name, build, input shape); `build()` returns a module whose captured graph calls `op`.
`FAMILY_SAMPLES` does the same for rule families (ops found by predicate, e.g. every pointwise op).
tests/test_rule_tightness.py walks the registry and fails for a rule without samples.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

aten = torch.ops.aten
IMAGE = (1, 3, 10, 12)
SIGNAL = (1, 2, 15)
VOLUME = (1, 2, 6, 7, 8)


class Op(nn.Module):
    """`fn(self, x)` as a module; `layers` are registered so their weights are captured as parameters."""

    def __init__(self, fn: Callable[..., Any], **layers: nn.Module):
        super().__init__()
        self.fn = fn
        for name, layer in layers.items():
            self.add_module(name, layer)

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(self, x)


def conv(cin: int, cout: int, rank: int = 2, **kw: Any) -> nn.Module:
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank](cin, cout, 3, **kw)


Sample = tuple[str, Callable[[], nn.Module], tuple[int, ...]]

SAMPLES: dict[Any, list[Sample]] = {
    aten.convolution.default: [
        ("conv2d padded strided", lambda: Op(lambda m, x: m.c(x), c=conv(3, 4, padding=1, stride=2)), IMAGE),
        ("conv2d dilated grouped", lambda: Op(lambda m, x: m.c(x), c=nn.Conv2d(3, 6, 3, dilation=2, groups=3)), IMAGE),
        ("conv1d", lambda: Op(lambda m, x: m.c(x), c=conv(2, 3, 1, padding=2)), SIGNAL),
        ("conv3d", lambda: Op(lambda m, x: m.c(x), c=conv(2, 3, 3, padding=1)), VOLUME),
    ],
    aten.max_pool2d_with_indices.default: [
        ("max pool ceil", lambda: Op(lambda m, x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True)), IMAGE),
    ],
    aten.max_pool3d_with_indices.default: [("max pool 3d", lambda: Op(lambda m, x: F.max_pool3d(x, 2)), VOLUME)],
    aten.avg_pool2d.default: [
        ("avg pool padded", lambda: Op(lambda m, x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)), IMAGE),
    ],
    aten.avg_pool3d.default: [
        ("avg pool 3d", lambda: Op(lambda m, x: F.avg_pool3d(x, 2)), VOLUME),
        ("avg pool 3d overlapping", lambda: Op(lambda m, x: F.avg_pool3d(x, 3, 2)), VOLUME),
        ("avg pool 3d padded", lambda: Op(lambda m, x: F.avg_pool3d(x, 3, 1, 1, count_include_pad=False)), VOLUME),
    ],
    aten._adaptive_avg_pool2d.default: [
        ("adaptive uniform", lambda: Op(lambda m, x: F.adaptive_avg_pool2d(x, (5, 4))), IMAGE),
        ("adaptive uneven", lambda: Op(lambda m, x: F.adaptive_avg_pool2d(x, (3, 5))), IMAGE),
    ],
    aten._adaptive_avg_pool3d.default: [
        ("adaptive 3d", lambda: Op(lambda m, x: F.adaptive_avg_pool3d(x, (3, 7, 4))), VOLUME),
    ],
    aten.constant_pad_nd.default: [
        ("pad and crop", lambda: Op(lambda m, x: F.pad(x, (2, -1, 1, 3), value=0.5)), IMAGE),
    ],
    aten._native_batch_norm_legit_no_training.default: [
        ("batch norm", lambda: Op(lambda m, x: m.bn(x), bn=_trained_bn(3)), IMAGE),
    ],
    aten.native_layer_norm.default: [
        ("layer norm last axis", lambda: Op(lambda m, x: F.layer_norm(x, (12,))), IMAGE),
    ],
    aten.mean.dim: [("mean over rows", lambda: Op(lambda m, x: x.mean(dim=2)), IMAGE)],
    aten.sum.dim_IntList: [("sum keepdim", lambda: Op(lambda m, x: x.sum(dim=(2, 3), keepdim=True)), IMAGE)],
    aten.addmm.default: [("fully connected", lambda: Op(lambda m, x: m.fc(x.flatten(1)), fc=nn.Linear(360, 4)), IMAGE)],
    aten.mm.default: [("mm", lambda: Op(lambda m, x: x.flatten(1) @ m.fc.weight.t(), fc=nn.Linear(360, 4)), IMAGE)],
    aten.bmm.default: [("bmm", lambda: Op(lambda m, x: torch.bmm(x.flatten(2), x.flatten(2).transpose(1, 2))), IMAGE)],
    aten.linear.default: [
        ("row linear", lambda: Op(lambda m, x: m.fc(x), fc=nn.Linear(12, 5)), IMAGE),
        ("linear on a permuted view", lambda: Op(lambda m, x: m.fc(x.permute(0, 2, 3, 1)), fc=nn.Linear(3, 5)), IMAGE),
    ],
    aten.slice.Tensor: [
        ("slice stepped", lambda: Op(lambda m, x: x[:, :, 1:9:3]), IMAGE),
        ("split", lambda: Op(lambda m, x: torch.cat(torch.split(x, [5, 7], dim=3)[::-1], dim=3)), IMAGE),
    ],
    aten.upsample_nearest2d.vec: [("nearest x2", lambda: Op(lambda m, x: F.interpolate(x, scale_factor=2)), IMAGE)],
    aten.upsample_bilinear2d.vec: [
        ("bilinear to size", lambda: Op(lambda m, x: F.interpolate(x, size=(15, 17), mode="bilinear")), IMAGE),
    ],
    aten._softmax.default: [("softmax channels", lambda: Op(lambda m, x: torch.softmax(x, dim=1)), IMAGE)],
    aten._log_softmax.default: [("log softmax rows", lambda: Op(lambda m, x: torch.log_softmax(x, dim=2)), IMAGE)],
    torch.ops.aten.permute.default: [("permute", lambda: Op(lambda m, x: x.permute(0, 3, 1, 2) * 2), IMAGE)],
    aten.view.default: [("flatten", lambda: Op(lambda m, x: x.flatten(2)), IMAGE)],
    aten.unsqueeze.default: [("unsqueeze", lambda: Op(lambda m, x: x.unsqueeze(2) * 2), IMAGE)],
    aten.squeeze.dims: [("squeeze", lambda: Op(lambda m, x: x.mean(dim=2, keepdim=True).squeeze(2)), IMAGE)],
    aten.expand.default: [
        ("expand rows", lambda: Op(lambda m, x: x.mean(dim=2, keepdim=True).expand(-1, -1, 10, -1)), IMAGE),
    ],
    aten.cat.default: [("cat channels", lambda: Op(lambda m, x: torch.cat([x, x * 2], dim=1)), IMAGE)],
    aten.index.Tensor: [
        ("same-pad gather", lambda: Op(lambda m, x: x[:, :, torch.clamp(torch.arange(12), 0, 9)]), IMAGE),
    ],
    aten.as_strided.default: [
        (
            "identity as_strided",
            lambda: Op(lambda m, x: _pooled_channels_last(x).as_strided((1, 3, 1, 1), (3, 1, 3, 3)) + x),
            IMAGE,
        ),
    ],
}
SAMPLES[operator.getitem] = SAMPLES[aten.max_pool2d_with_indices.default]  # max pool's values, output 0

FAMILY_SAMPLES: dict[str, list[Sample]] = {
    "pointwise": [
        ("relu", lambda: Op(lambda m, x: torch.relu(x)), IMAGE),
        ("broadcast gate", lambda: Op(lambda m, x: x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))), IMAGE),
        ("where", lambda: Op(lambda m, x: torch.where(x > 0, x, x * 0.1)), IMAGE),
        ("hardswish", lambda: Op(lambda m, x: F.hardswish(x)), IMAGE),
    ],
}


def _pooled_channels_last(x: torch.Tensor) -> torch.Tensor:
    """ConvNeXt's pattern: a pooled tensor viewed channels-last (an identity as_strided after export)."""
    return x.mean(dim=(2, 3), keepdim=True).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


def _trained_bn(channels: int) -> nn.Module:
    bn = nn.BatchNorm2d(channels)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    return bn

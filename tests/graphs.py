"""Small hand-built models that together hit every rule (odd, non-square sizes on purpose)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Head(nn.Sequential):
    """Flatten + linear, so every model maps (B, ...) to (B, K)."""

    def __init__(self, features: int, classes: int = 5):
        super().__init__(nn.Flatten(), nn.Linear(features, classes))


class Unary(nn.Module):
    """Every element-wise activation in a row, on a conv output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = Head(6 * 11 * 13)

    def forward(self, x):
        y = self.conv(x)
        y = F.relu(y) + F.hardtanh(y) + F.relu6(y) + F.leaky_relu(y, 0.1) + torch.sigmoid(y)
        y = y + F.silu(y) + F.gelu(y) + F.hardswish(y) + torch.clamp(y, -0.5, 0.7) + torch.tanh(y) + F.elu(y)
        return self.head(y)


class Binary(nn.Module):
    """add/sub/mul/div with broadcasting: per-channel parameters, scalars, an SE-style gate."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.scale = nn.Parameter(torch.rand(6, 1, 1) + 0.5)
        self.shift = nn.Parameter(torch.randn(1, 6, 1, 1))
        self.row = nn.Parameter(torch.randn(1, 1, 11, 1))
        self.gate = nn.Conv2d(6, 6, 1)
        self.head = Head(6 * 11 * 13)

    def forward(self, x):
        y = self.conv(x)
        y = (y * self.scale - self.shift) / 2.0 + 1.0
        y = y / (self.scale + 1.0) + self.row
        gate = torch.sigmoid(self.gate(y.mean(dim=(2, 3), keepdim=True)))
        return self.head(y * gate + y)


class Windows(nn.Module):
    """Convolutions and pools with dilation, groups, depthwise, ceil_mode and padding variants."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, (3, 5), stride=(1, 2), padding=(2, 1), dilation=(2, 1))
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.gr = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4)
        self.mp = nn.MaxPool2d(3, stride=2, padding=1, dilation=1, ceil_mode=True)
        self.mpd = nn.MaxPool2d(2, stride=1, padding=1, dilation=2)
        self.ap = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.ap2 = nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=True)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        y = F.relu(self.c1(x))
        y = F.relu(self.dw(y))
        y = self.gr(y)
        y = self.mp(y) + 0.0
        y = self.mpd(y)
        y = self.ap(y)
        y = self.ap2(y)
        return self.head(y.mean(dim=(2, 3)))


class Padding(nn.Module):
    """Constant padding, asymmetric and negative (cropping), and a pad value != 0."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.head = Head(4 * 7 * 7)

    def forward(self, x):
        y = F.pad(x, (1, 2, 0, 3), value=0.5)
        y = self.conv(y)
        return self.head(F.pad(y, (-1, 1, 2, -1)))


class Merge(nn.Module):
    """Branches merged by add and by cat on channels and on space; batch norm in eval."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 5, padding=2, stride=1)
        self.c = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(12)
        self.d = nn.Conv2d(12, 6, 3, stride=2, padding=1)
        self.head = Head(6 * 6 * 14)

    def forward(self, x):
        a, b, c = self.a(x), self.b(x), self.c(x)
        y = torch.cat([a + b, b, c], dim=1)
        y = F.relu(self.bn(y))
        y = self.d(y)
        return self.head(torch.cat([y, y * 2.0], dim=3))


class ChannelsLast(nn.Module):
    """ConvNeXt-style block: depthwise conv, permute to channels-last, layer norm, MLP, permute back; plus a
    linear straight on the (non-contiguous) permuted view, which exports as a batched matrix product."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.norm = nn.LayerNorm(8)
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)
        self.mix = nn.Linear(8, 8)
        self.head = Head(8 * 5 * 6)

    def forward(self, x):
        y = self.stem(x)
        z = self.dw(y).permute(0, 2, 3, 1)
        z = self.down(F.gelu(self.up(self.norm(z)))) + self.mix(z)
        y = y + z.permute(0, 3, 1, 2)
        return self.head(y)


class Adaptive(nn.Module):
    """Adaptive pooling with uniform bins (incremental) and non-uniform bins (computed in full)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.uniform = nn.AdaptiveAvgPool2d((6, 7))
        self.ragged = nn.AdaptiveAvgPool2d((4, 5))
        self.head = nn.Linear(4 * 6 * 7 + 4 * 4 * 5, 5)

    def forward(self, x):
        y = F.relu(self.conv(x))
        u = self.uniform(y).flatten(1)
        r = self.ragged(y).flatten(1)
        return self.head(torch.cat([u, r], dim=1))


class Reshape(nn.Module):
    """Views that keep spatial axes apart: split channels into groups and merge them back."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = Head(8 * 11 * 13)

    def forward(self, x):
        y = self.conv(x)
        b, c, h, w = y.shape
        g = y.view(b, 2, c // 2, h, w).softmax(dim=1)
        y = g.reshape(b, c, h, w) * y
        return self.head(y.unsqueeze(1).squeeze(1))


class Conv1d(nn.Module):
    """1-D convolutions and pools (signals): the same rules over one spatial axis."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 5, stride=2, padding=2)
        self.mp = nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True)
        self.ap = nn.AvgPool1d(3, stride=1, padding=1)
        self.c2 = nn.Conv1d(4, 4, 3, dilation=2, padding=2)
        self.head = nn.LazyLinear(5)

    def forward(self, x):
        y = self.ap(self.mp(F.relu(self.c1(x))))
        return self.head(F.relu(self.c2(y)).flatten(1))


class Conv3d(nn.Module):
    """3-D convolutions and pools (volumes)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv3d(1, 4, 3, padding=1)
        self.mp = nn.MaxPool3d(2, stride=2, ceil_mode=True)
        self.ap = nn.AvgPool3d(3, stride=1, padding=1, count_include_pad=False)
        self.ad = nn.AdaptiveAvgPool3d((2, 5, 5))
        self.head = nn.LazyLinear(5)

    def forward(self, x):
        return self.head(self.ad(self.ap(self.mp(F.relu(self.c1(x))))).flatten(1))


IMAGE_MODELS = [Unary, Binary, Windows, Padding, Merge, ChannelsLast, Adaptive, Reshape]
IMAGE_SHAPE = (1, 3, 11, 13)


aten = torch.ops.aten


class DirectOps(nn.Module):
    """ATen ops called directly, so the rules for views, expand, sum and matrix products are exercised."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.w = nn.Parameter(torch.randn(4 * 11, 5) / 7)

    def forward(self, x):
        y = self.conv(x)  # (1, 4, 11, 13)
        s = aten.sum.dim_IntList(y, [3], True)  # (1, 4, 11, 1)
        e = aten.expand.default(s, [y.shape[0], 4, 11, 13])
        y = y + e * 0.1
        y = aten.squeeze.dim(aten.unsqueeze.default(y, 2), 2)
        y = aten.squeeze.dims(aten.unsqueeze.default(y, 1), [1])
        flat = aten._unsafe_view.default(y, [y.shape[0], 4 * 11, 13])
        gram = aten.bmm.default(flat, aten.permute.default(flat, [0, 2, 1]))  # (1, 44, 44)
        return aten.mm.default(gram.sum(dim=2) / 100.0, self.w)


class SamePadPool(nn.Module):
    """Keras-style 'same' max pooling: edge cells repeated by a clamped-arange gather, then pooled."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = Head(4 * 6 * 7)

    def forward(self, x):
        y = self.conv(x)
        rows = torch.clamp(torch.arange(12), 0, 10)
        cols = torch.clamp(torch.arange(14), 0, 12)
        y = y[:, :, rows][:, :, :, cols]
        return self.head(F.max_pool2d(y, 2))

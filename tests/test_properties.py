"""Property tests: random conv/pool stacks, patch, stride and image sizes; exact equals full inference."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from helpers import assert_exact


@st.composite
def stacks(draw):
    """A random stack of conv / pool / activation layers whose output stays at least 1x1."""
    h, w = draw(st.integers(6, 20)), draw(st.integers(6, 20))
    layers, channels = [], draw(st.integers(1, 3))
    first = channels
    size = [h, w]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "max", "avg", "act"]))
        k = draw(st.integers(1, 3))
        s = draw(st.integers(1, 2))
        d = draw(st.integers(1, 2)) if kind in ("conv", "max") else 1
        p = draw(st.integers(0, (k * d - d) // 2)) if kind != "avg" else draw(st.integers(0, k // 2))
        span = d * (k - 1) + 1
        if min(size) + 2 * p < span:
            continue
        if kind == "conv":
            out = draw(st.integers(1, 4))
            groups = channels if channels == out and draw(st.booleans()) else 1
            layers.append(nn.Conv2d(channels, out, k, stride=s, padding=p, dilation=d, groups=groups))
            channels = out
        elif kind == "max":
            ceil = draw(st.booleans())
            layers.append(nn.MaxPool2d(k, stride=s, padding=p, dilation=d, ceil_mode=ceil))
        elif kind == "avg":
            ceil, include = draw(st.booleans()), draw(st.booleans())
            layers.append(nn.AvgPool2d(k, stride=s, padding=p, ceil_mode=ceil, count_include_pad=include))
        else:
            layers.append(draw(st.sampled_from([nn.ReLU(), nn.Tanh(), nn.LeakyReLU(0.2)])))
        probe = nn.Sequential(*layers)(torch.zeros(1, first, h, w))
        size = list(probe.shape[2:])
    model = nn.Sequential(*layers, nn.Flatten(), nn.LazyLinear(3))
    model(torch.zeros(1, first, h, w))
    ph, pw = draw(st.integers(1, h)), draw(st.integers(1, w))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return model.eval(), (first, h, w), (ph, pw), (sh, sw)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(stacks(), st.integers(0, 2**16))
def test_random_stacks_match_full_inference(case, seed):
    model, shape, patch, stride = case
    torch.manual_seed(seed)
    image = torch.randn((1,) + shape) * 2
    for p in model.parameters():
        torch.nn.init.normal_(p, 0.0, 0.7)
    assert_exact_or_untouched(model, image, patch, stride)


def assert_exact_or_untouched(model, image, patch, stride):
    """Like assert_exact, but a stack whose output ignores the patch (rare ties, zero weights) is skipped."""
    with torch.no_grad():
        clean = model(image)
        occluded = model(torch.where(torch.zeros_like(image, dtype=torch.bool), image, image - 3.0))
    if float((occluded - clean).abs().max()) < 1e-4:
        return  # the model is (nearly) constant: nothing to compare
    assert_exact(model, image, patch, stride, fill=-3.0, atol=1e-4)

"""Exact incremental inference equals full re-inference on torchvision architectures (random weights).

A sample of positions (corners, edge midpoints, random interior) keeps the suite fast; weights are
conditioned so that the occlusion moves the outputs far above float noise, and the test compares the
change (occluded - clean), so an engine that ignored the patch would fail.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from helpers import assert_exact, condition

ZOO = {
    "vgg16": {},
    "resnet18": {},
    "inception_v3": {"aux_logits": False, "init_weights": True},
    "mobilenet_v2": {},
    "efficientnet_b0": {},
    "densenet121": {},
    "convnext_tiny": {},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_torchvision_model_exact(name):
    size = 299 if name == "inception_v3" else 224
    model = getattr(torchvision.models, name)(weights=None, **ZOO[name])
    model = condition(model, (1, 3, size, size))
    torch.manual_seed(1)
    image = torch.randn(1, 3, size, size)
    assert_exact(model, image, 16, 4, extra=4 if name == "inception_v3" else 8)


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "regnet_y_400mf"])
def test_split_and_channel_slice_models_exact_and_precise(name):
    """ShuffleNetV2's channel split (split_with_sizes -> slices) runs precisely, not in full."""
    import krypton

    model = condition(getattr(torchvision.models, name)(weights=None), (1, 3, 160, 160))
    torch.manual_seed(1)
    image = torch.randn(1, 3, 160, 160)
    assert_exact(model, image, 16, 8, extra=6)
    fallbacks = {op for _, op in krypton.analyze(model, (3, 160, 160), patch=16, stride=8).fallbacks}
    assert fallbacks <= {"aten.addmm.default"}, fallbacks

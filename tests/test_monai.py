"""`krypton.monai.OcclusionSensitivity` against the real `monai.visualize.OcclusionSensitivity` (MONAI 1.6.1)."""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.networks.nets import DenseNet
from monai.visualize import OcclusionSensitivity as MonaiOcclusion
from torch import nn

from krypton.monai import OcclusionSensitivity

warnings.filterwarnings("ignore", module="monai")


def densenet(spatial_dims: int, in_channels: int, blocks: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(spatial_dims)
    return DenseNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=3, init_features=4,
                    growth_rate=4, block_config=blocks).eval()  # fmt: skip


CASES = {
    "2d": (lambda: densenet(2, 1, (2, 2)), (1, 1, 32, 40), 8, None),
    "2d-box": (lambda: densenet(2, 1, (2, 2)), (1, 1, 32, 40), (6, 10), [2, 20, 5, -1]),
    "3d": (lambda: densenet(3, 2, (2,)), (1, 2, 12, 12, 12), 4, None),
    "3d-box": (lambda: densenet(3, 2, (2,)), (1, 2, 12, 12, 12), 5, [1, 8, -1, -1, 2, 9]),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", ["gaussian", "mean_patch", "mean_img", 0.3])
def test_equals_monai_for_every_mode_with_and_without_a_box(case, mode):
    build, shape, mask, box = CASES[case]
    model = build()
    torch.manual_seed(7)
    x = torch.rand(shape)
    theirs_map, theirs_class = MonaiOcclusion(model, mask_size=mask, n_batch=7, verbose=False, mode=mode,
                                              overlap=0.5)(x, b_box=box)  # fmt: skip
    ours = OcclusionSensitivity(model, mask_size=mask, n_batch=7, verbose=False, mode=mode, overlap=0.5,
                                path="incremental")  # fmt: skip
    our_map, our_class = ours(x, b_box=box)
    assert type(our_map) is type(theirs_map) and our_map.shape == theirs_map.shape
    torch.testing.assert_close(our_map.as_tensor(), theirs_map.as_tensor(), rtol=1e-4, atol=1e-5)
    assert torch.equal(our_class.as_tensor(), theirs_class.as_tensor())
    assert ours.stats["path"] == "incremental"
    assert float(theirs_map.max() - theirs_map.min()) > 1e-4  # the occlusion moves the prediction


def test_default_settings_activation_choices_and_naive_path_agree():
    model = densenet(2, 3, (2, 2))
    x = torch.rand(1, 3, 40, 40)
    theirs, _ = MonaiOcclusion(model, verbose=False)(x)
    ours, _ = OcclusionSensitivity(model, verbose=False)(x)
    torch.testing.assert_close(ours.as_tensor(), theirs.as_tensor(), rtol=1e-4, atol=1e-5)
    for activate in (False, lambda out: out.tanh()):
        theirs, _ = MonaiOcclusion(model, mask_size=12, verbose=False, activate=activate)(x)
        ours, _ = OcclusionSensitivity(model, mask_size=12, verbose=False, activate=activate, path="naive")(x)
        torch.testing.assert_close(ours.as_tensor(), theirs.as_tensor(), rtol=1e-4, atol=1e-5)


class Scaled(nn.Module):
    """A model with an extra keyword argument, as MONAI passes `**kwargs` to it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = densenet(2, 1, (2,))

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.net(x) * scale


def test_module_kwargs_reach_the_model():
    model, x = Scaled().eval(), torch.rand(1, 1, 24, 24)
    theirs, _ = MonaiOcclusion(model, mask_size=8, verbose=False, activate=False)(x, scale=3.0)
    occlusion = OcclusionSensitivity(model, mask_size=8, verbose=False, activate=False)
    ours, _ = occlusion(x, scale=3.0)
    torch.testing.assert_close(ours.as_tensor(), theirs.as_tensor(), rtol=1e-4, atol=1e-5)
    assert occlusion.stats["path"] == "naive"


def test_callable_mode_runs_per_window_and_matches_the_equivalent_constant():
    """MONAI 1.6.1 raises for a callable mode; ours calls it on each window (x, window) as documented."""
    model, x = densenet(2, 1, (2, 2)), torch.rand(1, 1, 32, 32)
    constant, _ = OcclusionSensitivity(model, mask_size=8, verbose=False, mode=0.25)(x)
    called, _ = OcclusionSensitivity(model, mask_size=8, verbose=False, mode=lambda image, w: w * 0 + 0.25)(x)
    torch.testing.assert_close(called.as_tensor(), constant.as_tensor())


def test_model_left_as_found_and_bad_settings_refused():
    model = densenet(2, 1, (2, 2)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    OcclusionSensitivity(model, mask_size=16, verbose=False)(torch.rand(1, 1, 32, 32))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(NotImplementedError, match="mode must be one of"):
        OcclusionSensitivity(model, mode="blur")
    with pytest.raises(ValueError, match="Expected batch size of 1"):
        OcclusionSensitivity(model, verbose=False)(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="should be bigger than mask"):
        OcclusionSensitivity(model, mask_size=40, verbose=False)(torch.rand(1, 1, 32, 32))

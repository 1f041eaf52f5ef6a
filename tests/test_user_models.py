"""The models users bring: one-logit binary heads, models left as they were found, drill-down in one space."""

from __future__ import annotations

import functools

import pytest
import torch
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

import krypton
from krypton.scores import class_count, class_logit, probabilities
from tests.helpers import condition

explain = functools.partial(krypton.explain, path="incremental")


def binary_cnn() -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 1),
    )
    return condition(model, (1, 3, 32, 32))


def test_scores_module_reads_one_logit_heads_as_binary():
    z = torch.tensor([[-2.0], [0.0], [3.0]])
    probs = probabilities(z)
    torch.testing.assert_close(probs[:, 1], torch.sigmoid(z[:, 0]).double())
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, dtype=torch.float64))
    assert class_count(z) == 2 and class_count(torch.zeros(3, 5)) == 5
    torch.testing.assert_close(class_logit(z, 1), z[:, 0])
    torch.testing.assert_close(class_logit(z, 0), -z[:, 0])


def test_one_logit_model_gets_a_sigmoid_map_not_an_empty_one():
    model = binary_cnn()
    torch.manual_seed(1)
    image = torch.randn(3, 32, 32)
    result = explain(model, image, patch=8, stride=4)
    z = model(image[None]).detach()[0, 0]
    assert result.target == int(z > 0)
    positive = explain(model, image, patch=8, stride=4, target=1)
    assert positive.probability == pytest.approx(float(torch.sigmoid(z)), abs=1e-6)
    with torch.no_grad():
        naive = krypton.explain(model, image, patch=8, stride=4, target=1, mode="naive")
    torch.testing.assert_close(positive.heatmap, naive.heatmap, atol=1e-5, rtol=0)
    assert float(positive.heatmap.max() - positive.heatmap.min()) > 1e-3  # the map is not flat
    negative = explain(model, image, patch=8, stride=4, target=0)
    torch.testing.assert_close(negative.heatmap, 1 - positive.heatmap, atol=1e-6, rtol=0)


def test_one_logit_attribution_equals_captum_on_the_single_output():
    model = binary_cnn()
    torch.manual_seed(2)
    image = torch.randn(3, 32, 32)
    ours = explain(model, image, patch=8, stride=4, target=1).attribution()
    theirs = CaptumOcclusion(model).attribute(
        image[None], sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), target=0, baselines=0.0
    )[0, 0]
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-4)
    negative = explain(model, image, patch=8, stride=4, target=0).attribution()
    torch.testing.assert_close(negative, -ours, atol=1e-6, rtol=0)


def test_target_accepts_a_0d_integer_tensor_and_names_the_range_otherwise():
    model = binary_cnn()
    image = torch.randn(3, 32, 32)
    assert explain(model, image, patch=16, stride=16, target=torch.tensor(1)).target == 1
    with pytest.raises(ValueError, match=r"target must be an int class index in \[0, 2\).*1 = positive"):
        explain(model, image, patch=16, stride=16, target=2)
    with pytest.raises(ValueError, match="target"):
        explain(model, image, patch=16, stride=16, target=torch.tensor([0, 1]))


def _state(model: nn.Module) -> dict:
    return {
        "training": [m.training for m in model.modules()],
        "tensors": {k: (v.data_ptr(), v.device, v.stride(), v.clone()) for k, v in model.state_dict().items()},
        "params": [(id(p), p.requires_grad) for p in model.parameters()],
    }


@pytest.mark.parametrize("mode", ["exact", "naive", "approximate"])
def test_explain_leaves_the_callers_model_as_it_found_it(mode):
    model = binary_cnn().train()
    model[4].eval()  # a mixed state must come back mixed
    model = model.to(memory_format=torch.channels_last)
    for p in model[0].parameters():
        p.requires_grad_(False)
    before = _state(model)
    krypton.explain(model, torch.randn(3, 32, 32), patch=8, stride=8, mode=mode, device="cpu")
    after = _state(model)
    assert after["training"] == before["training"]
    assert after["params"] == before["params"]
    for key, (ptr, device, stride, value) in before["tensors"].items():
        ptr2, device2, stride2, value2 = after["tensors"][key]
        assert (ptr2, device2, stride2) == (ptr, device, stride), key
        assert torch.equal(value2, value), key


def test_captum_drop_in_leaves_the_model_unchanged():
    from krypton.captum import Occlusion

    model = binary_cnn()
    before = _state(model)
    Occlusion(model).attribute(torch.randn(2, 3, 32, 32), sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8))
    after = _state(model)
    assert after["training"] == before["training"] and after["params"] == before["params"]
    assert all(torch.equal(after["tensors"][k][3], v[3]) for k, v in before["tensors"].items())


def test_drilldown_scores_are_logits_everywhere_and_attribution_matches_exact_where_drilled():
    torch.manual_seed(3)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4)]
    model = condition(nn.Sequential(*layers), (1, 3, 32, 32))
    image = torch.randn(3, 32, 32)
    approx = explain(
        model, image, patch=8, stride=2, mode="approximate", tau=1.0, drilldown={"fraction": 0.3, "coarse_stride": 4}
    )
    exact = explain(model, image, patch=8, stride=2, target=approx.target)
    drilled = approx.drilled
    assert 0 < drilled.float().mean() < 1
    torch.testing.assert_close(approx.scores[drilled], exact.scores[drilled], atol=1e-5, rtol=1e-4)
    # interpolated cells lie between the computed logits, on their scale (not log-probabilities)
    assert float(approx.scores.max()) <= float(exact.scores.max()) + 1e-4
    assert float(approx.scores.min()) >= float(exact.scores.min()) - 1e-4
    # pixels covered only by drilled windows get exact's attribution
    only_drilled = torch.zeros(32, 32, dtype=torch.bool)
    covered = torch.zeros(32, 32, dtype=torch.int64)
    for i in range(drilled.shape[0]):
        for j in range(drilled.shape[1]):
            y, x = (int(v) for v in approx.positions[i, j])
            covered[y : y + 8, x : x + 8] += 1
            only_drilled[y : y + 8, x : x + 8] |= bool(drilled[i, j])
    for i in range(drilled.shape[0]):
        for j in range(drilled.shape[1]):
            if not drilled[i, j]:
                y, x = (int(v) for v in approx.positions[i, j])
                only_drilled[y : y + 8, x : x + 8] = False
    assert only_drilled.any()
    torch.testing.assert_close(
        approx.attribution()[only_drilled], exact.attribution()[only_drilled], atol=1e-5, rtol=1e-4
    )
    ratio = approx.attribution().abs().max() / exact.attribution().abs().max()
    assert 0.5 < float(ratio) < 2.0  # same scale everywhere (it was ~600x with log-probabilities)


def test_bad_image_layout_and_device_are_clear_errors():
    model = binary_cnn()
    with pytest.raises(ValueError, match=r"channels-last \(H, W, C\).*permute\(2, 0, 1\)"):
        krypton.explain(model, torch.randn(64, 64, 3))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': no such CUDA GPU"):
            krypton.explain(model, torch.randn(3, 32, 32), device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        krypton.explain(model, torch.randn(3, 32, 32), device="gpu0")
    for fill in (float("nan"), [0.0, float("inf"), 0.0]):
        with pytest.raises(ValueError, match="fill must be finite"):
            krypton.explain(model, torch.randn(3, 32, 32), fill=fill)


class TokenHybrid(nn.Module):
    """Group-norm convolutions, then tokens with a learned class token in front (as ViT and PoolFormer
    build them): the engine computes such ops whole on batches, where the class token and group norm's
    size argument were captured at batch 1."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 4, stride=4), nn.GroupNorm(2, channels), nn.GELU())
        self.cls = nn.Parameter(torch.randn(1, 1, channels))
        self.head = nn.Linear(channels, 3)

    def forward(self, x):
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(tokens.mean(1) + tokens[:, 0])


@pytest.mark.filterwarnings("error")  # no fallback: the engine computes every position
def test_group_norm_and_a_class_token_run_incrementally_and_exactly():
    torch.manual_seed(0)
    model, image = TokenHybrid().eval(), torch.randn(3, 32, 32)
    exact = explain(model, image, patch=8, stride=4, batch_size=8)
    naive = krypton.explain(model, image, patch=8, stride=4, mode="naive")
    assert exact.stats["path"] == "incremental" and exact.stats["incremental_positions"] == exact.stats["positions"]
    torch.testing.assert_close(exact.scores, naive.scores, rtol=1e-4, atol=1e-5)

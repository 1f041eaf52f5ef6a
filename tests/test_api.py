"""The public API: explain's results, analyze, fallbacks, and clear errors for bad input."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

import krypton
from krypton.rules import window as window_rules

from graphs import IMAGE_MODELS, IMAGE_SHAPE

# The engine itself is under test: insist on incremental inference (auto would re-infer these tiny models).
explain = functools.partial(krypton.explain, path="incremental")


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


def test_explain_exact_equals_naive_and_fills_fields():
    model, image = small_cnn(), torch.randn(3, 20, 17)
    exact = explain(model, image, patch=(5, 4), stride=(3, 2), fill=[0.1, 0.2, 0.3])
    naive = explain(model, image, patch=(5, 4), stride=(3, 2), fill=[0.1, 0.2, 0.3], mode="naive")
    hm, wm = (20 - 5) // 3 + 1, (17 - 4) // 2 + 1
    assert exact.scores.shape == (hm, wm, 4) and exact.heatmap.shape == (hm, wm)
    assert exact.mode == "exact" and naive.mode == "naive"
    exact_drop, naive_drop = exact.scores - exact.clean_scores, naive.scores - naive.clean_scores
    torch.testing.assert_close(exact_drop, naive_drop, rtol=1e-4, atol=1e-5)
    assert exact.target == int(model(image[None]).argmax())
    assert exact.positions[1, 2].tolist() == [3, 4]
    probs = torch.softmax(exact.scores, -1)[..., exact.target]
    torch.testing.assert_close(exact.heatmap, probs)
    stats = exact.stats
    assert stats["positions"] == hm * wm and stats["wall_time_s"] > 0
    assert 0 < stats["macs"] < stats["macs_naive"]


def test_patch_values_land_where_expected():
    """Occluding with the image's own values changes nothing: the patch is applied at the right place."""
    model = small_cnn()
    image = torch.full((3, 12, 12), 0.25)
    result = explain(model, image, patch=4, stride=4, fill=0.25)
    torch.testing.assert_close(result.scores, result.clean_scores.expand_as(result.scores), rtol=0, atol=1e-5)


def test_target_and_heatmap_explicit():
    model, image = small_cnn(), torch.randn(1, 3, 16, 16)
    result = explain(model, image, target=2, patch=4, stride=4)
    assert result.target == 2
    assert torch.all((result.heatmap >= 0) & (result.heatmap <= 1))


def test_uncapturable_model_warns_and_stays_correct():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_cnn()

        def forward(self, x):
            out = self.net(x)
            if float(x.sum()) > 0:  # data-dependent Python control flow: torch.export refuses it
                out = out * 2
            return out

    model, image = DataDependent().eval(), torch.randn(3, 12, 12).abs()
    with pytest.warns(RuntimeWarning, match="naive"):
        result = explain(model, image, patch=4, stride=4)
    naive = explain(model, image, patch=4, stride=4, mode="naive")
    assert result.mode == "naive"
    torch.testing.assert_close(result.scores, naive.scores)


def test_self_check_catches_a_wrong_rule(monkeypatch):
    """If a rule were wrong, the self-check re-runs naive: results stay correct, with a warning."""
    original = window_rules.Convolution.compute

    def broken(self, site, frame, window):
        return tuple(out * 1.5 for out in original(self, site, frame, window))

    monkeypatch.setattr(window_rules.Convolution, "compute", broken)
    model, image = small_cnn(), torch.randn(3, 16, 16)
    with pytest.warns(RuntimeWarning, match="differ"):
        result = explain(model, image, patch=4, stride=4)
    naive = explain(model, image, patch=4, stride=4, mode="naive")
    assert result.mode == "naive"
    torch.testing.assert_close(result.scores, naive.scores)


def test_analyze_reports_per_op_and_speedup():
    model = IMAGE_MODELS[4]().eval()  # Merge
    analysis = krypton.analyze(model, IMAGE_SHAPE[1:], patch=3, stride=2)
    assert analysis.speedup > 1.0 and analysis.per_position_speedup >= analysis.speedup * 0.99
    assert {row["op"] for row in analysis.ops} >= {"aten.convolution.default", "aten.addmm.default"}
    conv = [r for r in analysis.ops if r["op"] == "aten.convolution.default"][0]
    assert conv["incremental_macs"] < conv["naive_macs"]
    assert "theoretical speedup" in analysis.table()


def test_analyze_matches_execution_macs():
    model, image = small_cnn(), torch.randn(3, 24, 24)
    result = explain(model, image, patch=6, stride=3, batch_size=8)
    analysis = krypton.analyze(model, (3, 24, 24), patch=6, stride=3, batch_size=8)
    assert result.stats["macs_naive"] == analysis.naive_macs * result.stats["positions"]
    np.testing.assert_allclose(result.stats["macs"], analysis.incremental_macs * result.stats["positions"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"patch": 40}, "patch"),
        ({"patch": (4, 0)}, "patch"),
        ({"stride": 0}, "stride"),
        ({"stride": -2}, "stride"),
        ({"stride": 1.5}, "stride"),
        ({"mode": "fast"}, "mode"),
        ({"fill": [0.0, 1.0]}, "fill"),
        ({"fill": torch.zeros(2, 4, 4)}, "fill"),
        ({"target": 9}, "target"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        explain(small_cnn(), torch.randn(3, 16, 16), **kwargs)


@pytest.mark.parametrize(
    "image,match",
    [
        (torch.randn(16, 16), "image"),
        (torch.randn(2, 3, 16, 16), "read as a volume"),
        (torch.randn(5, 16, 16), "image"),
        (torch.zeros(3, 16, 16, dtype=torch.int64), "image"),
        (np.zeros((3, 16, 16)), "image"),
    ],
)
def test_bad_images_raise_value_error(image, match):
    with pytest.raises(ValueError, match=match):
        explain(small_cnn(), image, patch=4)


def test_model_without_class_scores_is_rejected():
    model = nn.Sequential(nn.Conv2d(3, 2, 3)).eval()
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        explain(model, torch.randn(3, 16, 16), patch=4)


def test_ops_without_tensor_outputs_are_ignored():
    class Checked(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_cnn()

        def forward(self, x):
            torch.ops.aten._assert_tensor_metadata.default(x, dtype=torch.float32)
            return self.net(x)

    model, image = Checked().eval(), torch.randn(3, 16, 16)
    result = explain(model, image, patch=4, stride=4)
    naive = explain(model, image, patch=4, stride=4, mode="naive")
    assert result.mode == "exact"
    torch.testing.assert_close(result.scores, naive.scores, rtol=1e-4, atol=1e-5)

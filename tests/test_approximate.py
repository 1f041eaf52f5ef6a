"""Approximate inference: thresholding, drill-down, progressive maps, SSIM and tuning (synthetic models)."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import krypton
from krypton.modes.approximate import upsample

from helpers import condition

# The engine itself is under test: insist on incremental inference (auto would re-infer these tiny models).
explain = functools.partial(krypton.explain, path="incremental")


def model_and_image(size: int = 48):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 6),
    )
    model = condition(model, (1, 3, size, size))
    return model, torch.randn(3, size, size)


def test_tau_one_is_exact():
    model, image = model_and_image()
    exact = explain(model, image, patch=8, stride=4)
    approx = explain(model, image, patch=8, stride=4, mode="approximate", tau=1.0)
    torch.testing.assert_close(approx.scores, exact.scores, rtol=0, atol=0)
    assert approx.stats["tau"] == 1.0


def test_drilldown_with_full_fraction_is_exact_at_fine_stride():
    model, image = model_and_image()
    exact = explain(model, image, patch=8, stride=4)
    drilled = explain(
        model,
        image,
        patch=8,
        stride=4,
        mode="approximate",
        tau=1.0,
        drilldown={"fraction": 1.0, "coarse_stride": 12},
    )
    torch.testing.assert_close(drilled.scores, exact.scores, rtol=1e-5, atol=1e-6)
    assert bool(drilled.drilled.all())
    assert drilled.stats["drilled_positions"] == exact.stats["positions"]


def test_drilldown_keeps_fine_values_where_drilled_and_coarse_elsewhere():
    model, image = model_and_image()
    exact = explain(model, image, patch=8, stride=4)
    approx = explain(
        model, image, patch=8, stride=4, mode="approximate", tau=1.0, drilldown={"fraction": 0.3, "speedup": 2.0}
    )
    mask = approx.drilled
    assert 0.25 <= float(mask.float().mean()) <= 0.35
    torch.testing.assert_close(approx.heatmap[mask], exact.heatmap[mask], rtol=1e-5, atol=1e-6)
    s1 = approx.stats["drilldown"]["coarse_stride"]
    assert s1 == (9, 9)  # Eq. 29: sqrt(2 / (1 - 0.3 * 2)) * 4 = 8.94 -> 9
    # drilled cells are the most sensitive ones of the coarse estimate: their mean probability is lower
    assert approx.heatmap[mask].mean() < approx.heatmap[~mask].mean()


def test_smaller_tau_never_predicts_more_flops():
    model, _ = model_and_image(64)
    previous = None
    for tau in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3):
        macs = krypton.analyze(model, (3, 64, 64), patch=8, stride=4, tau=tau, batch_size=8).incremental_macs
        if previous is not None:
            assert macs <= previous + 1e-6
        previous = macs
    assert previous < krypton.analyze(model, (3, 64, 64), patch=8, stride=4, batch_size=8).incremental_macs


def test_threshold_cuts_boxes_around_their_centre():
    from krypton.box import Boxes
    from krypton.modes.approximate import threshold
    from krypton.rules import lookup

    class FakeSite:
        def body(self):
            return (4, 20, 10)

    class FakeRule:
        def spatial_axes(self, site):
            return (1, 2)

    cut = threshold(0.5)
    out = cut(FakeSite(), FakeRule(), Boxes(np.array([[0, 2, 0]]), np.array([[4, 16, 3]])), {})
    assert out.lo.tolist() == [[0, 4, 0]] and out.hi.tolist() == [[4, 14, 3]]  # 14 -> 10 rows, centred
    assert threshold(1.0) is None and lookup is not None


def test_progressive_updates_end_with_the_same_map():
    model, image = model_and_image()
    updates: list[krypton.Update] = []
    final = explain(model, image, patch=8, stride=2, on_update=updates.append, batch_size=8)
    plain = explain(model, image, patch=8, stride=2, batch_size=8)
    assert len(updates) >= 3
    first, last = updates[0], updates[-1]
    assert first.done < first.total and first.heatmap.shape == plain.heatmap.shape
    assert torch.isfinite(first.heatmap).all()
    assert last.final and bool(last.computed.all())
    torch.testing.assert_close(last.heatmap, plain.heatmap, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(final.heatmap, plain.heatmap, rtol=1e-5, atol=1e-6)
    assert [u.done for u in updates] == sorted(u.done for u in updates)


def test_progressive_drilldown_sends_the_coarse_map_first():
    model, image = model_and_image()
    updates: list[krypton.Update] = []
    explain(model, image, patch=8, stride=4, mode="approximate", drilldown=True, on_update=updates.append)
    assert updates[0].done == 0 and not bool(updates[0].computed.any())
    assert updates[-1].final


def test_stats_record_settings_and_ssim():
    model, image = model_and_image()
    result = explain(
        model,
        image,
        patch=8,
        stride=4,
        mode="approximate",
        tau=0.6,
        drilldown={"fraction": 0.5, "speedup": 1.5},
        compare_exact=True,
    )
    stats = result.stats
    assert stats["tau"] == 0.6 and stats["drilldown"]["fraction"] == 0.5
    assert stats["theoretical_speedup"] > 1.0
    assert -1.0 <= stats["ssim_vs_exact"] <= 1.0


def test_ssim_basics():
    a = torch.rand(9, 11)
    assert krypton.ssim(a, a) == pytest.approx(1.0)
    assert krypton.ssim(a, 1 - a) < 0.5
    with pytest.raises(ValueError, match="same shape"):
        krypton.ssim(a, a[:5])
    with pytest.raises(ValueError, match="3x3"):
        krypton.ssim(a[:2], a[:2])


def test_tune_picks_a_tau_from_the_grid_and_reports_heldout():
    model, image = model_and_image(40)
    images = [image, torch.randn(3, 40, 40), torch.randn(3, 40, 40)]
    result = krypton.tune(
        model, images[:2], heldout_images=images[2:], patch=8, stride=8, taus=(0.9, 0.7, 0.5), target_ssim=0.5
    )
    assert result.tau in (1.0, 0.9, 0.7, 0.5)
    assert set(result.sample_ssim) == {0.9, 0.7, 0.5} and all(len(v) == 2 for v in result.sample_ssim.values())
    assert len(result.heldout_ssim) == 1
    for tau, values in result.sample_ssim.items():
        if tau >= result.tau and result.tau < 1.0:
            assert np.quantile(values, 0.1) >= 0.5
    assert "tau =" in result.summary()
    tried = result.candidates
    assert tried and all(len(c.ssim) == len(c.rendered_ssim) == 2 for c in tried)
    chosen = next(c for c in tried if c.settings == result.settings) if result.tau < 1.0 or result.drilldown else None
    if chosen is not None:  # nothing predicted faster met the target
        assert all(c.quality(0.1) < 0.5 for c in tried if c.predicted_speedup > chosen.predicted_speedup)
    krypton.explain(model, images[2], patch=8, stride=8, mode="approximate", **result.settings)


def test_tune_measures_the_approximation_where_auto_would_answer_in_full(monkeypatch):
    """On path "auto" a run the pipeline answers by full inference gives the exact map: the tuner must
    measure the approximation itself, or a harsh setting scores SSIM 1 on the samples and then misses on
    held-out images (a CLI test failed that way when timing sent the sample runs naive)."""
    from krypton.pipeline import run

    model, image = model_and_image(40)
    monkeypatch.setattr(run, "MIN_GAIN", float("inf"))  # path "auto" answers every run in full
    assert krypton.explain(model, image, patch=8, stride=4, mode="approximate", tau=0.3).stats["mode"] == "naive"
    result = krypton.tune(model, [image], patch=8, stride=4, taus=(0.3,), drilldowns=(None,), target_ssim=0.5)
    exact = krypton.explain(model, image, patch=8, stride=4)
    approx = krypton.explain(model, image, patch=8, stride=4, mode="approximate", tau=0.3, path="incremental")
    own = krypton.ssim(exact.heatmap, approx.heatmap)
    assert own < 0.99  # tau 0.3 changes this map
    assert result.sample_ssim[0.3] == [pytest.approx(own)]


def test_tune_with_a_speed_target_returns_the_best_quality_reaching_it():
    model, image = model_and_image(40)
    images = [image, torch.randn(3, 40, 40)]
    result = krypton.tune(model, images, patch=8, stride=2, taus=(0.8, 0.5), target_ssim=0.5, target_speedup=1.5,
                          drilldowns=(None, {"fraction": 0.25, "speedup": 2.0}))  # fmt: skip
    fast = [c for c in result.candidates if c.predicted_speedup >= 1.5]
    assert fast and result.predicted_speedup >= 1.5
    assert max(c.quality(0.1) for c in fast) == pytest.approx(
        next(c for c in fast if c.settings == result.settings).quality(0.1)
    )
    with pytest.raises(ValueError, match="target_ssim 1.0 means exact maps"):
        krypton.tune(model, images, patch=8, stride=4, target_ssim=1.0, target_speedup=2.0)
    with pytest.raises(ValueError, match="target_speedup must be a number > 1"):
        krypton.tune(model, images, patch=8, stride=4, target_speedup=0.5)


def test_drilldown_for_turns_speedup_into_settings():
    settings, predicted = krypton.drilldown_for(3.0, 0.25, 4)
    assert settings.coarse_stride == (14, 14)  # sqrt(3 / 0.25) * 4 = 13.9 -> 14, the paper's ImageNet setting
    assert predicted == pytest.approx(196 / (16 + 0.25 * 196))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "approximate", "tau": 0.0}, "tau"),
        ({"mode": "approximate", "tau": 1.5}, "tau"),
        ({"mode": "approximate", "tau": -0.2}, "tau"),
        ({"mode": "exact", "tau": 0.5}, "approximate"),
        ({"mode": "approximate", "drilldown": {"fraction": 0.0}}, "fraction"),
        ({"mode": "approximate", "drilldown": {"fraction": 1.5}}, "fraction"),
        ({"mode": "approximate", "drilldown": {"coarse_stride": 2}}, "coarse_stride"),
        ({"mode": "approximate", "drilldown": {"fraction": 0.5, "speedup": 3}}, "unreachable"),
        ({"mode": "approximate", "drilldown": {"rate": 0.5}}, "unknown"),
        ({"mode": "approximate", "drilldown": "yes"}, "drilldown"),
    ],
)
def test_bad_approximation_settings(kwargs, match):
    model, image = model_and_image(24)
    with pytest.raises(ValueError, match=match):
        explain(model, image, patch=8, stride=4, **kwargs)


def test_tune_rejects_bad_arguments():
    model, image = model_and_image(24)
    with pytest.raises(ValueError, match="target_ssim"):
        krypton.tune(model, [image], target_ssim=1.5, patch=8, stride=8)
    with pytest.raises(ValueError, match="sample_images"):
        krypton.tune(model, [], patch=8, stride=8)


def test_naive_mode_streams_updates_too():
    model, image = model_and_image()
    updates: list[krypton.Update] = []
    result = explain(model, image, patch=8, stride=2, mode="naive", on_update=updates.append, batch_size=8)
    assert len(updates) >= 3 and updates[0].done < updates[0].total and updates[-1].final
    torch.testing.assert_close(updates[-1].heatmap, result.heatmap, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "shape, coarse_stride, fine_shape, fine_stride",
    [((5, 7, 3), (8, 12), (20, 40), (2, 2)), ((1, 4), (9, 9), (3, 12), (4, 3)), ((6, 6, 10), (9, 9), (53, 53), (4, 4))],
)
def test_upsample_is_per_axis_linear_interpolation(shape, coarse_stride, fine_shape, fine_stride):
    """The matrix form equals np.interp along each axis (clamped past the last coarse cell)."""
    coarse = np.random.default_rng(0).random(shape)
    expected = coarse
    for axis in range(2):
        src = np.arange(shape[axis]) * coarse_stride[axis]
        dst = np.arange(fine_shape[axis]) * fine_stride[axis]
        expected = np.apply_along_axis(lambda v, s=src, d=dst: np.interp(d, s, v), axis, expected)
    np.testing.assert_allclose(upsample(coarse, coarse_stride, fine_shape, fine_stride), expected, atol=1e-12)


def test_merged_tail_gives_the_same_approximate_outputs_as_per_batch():
    """Under thresholding, merging batches in the shared tail leaves every item's window (and value) as is."""
    from krypton.capture import capture
    from krypton.engine.plan import batches, shared_tail, window
    from krypton.modes.approximate import threshold
    from krypton.modes.exact import plan_for, run_exact
    from krypton.modes.occlusions import grid_occlusions

    torch.manual_seed(0)
    model = condition(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 20 * 20, 4),
        ),
        (1, 3, 20, 20),
    )
    image = torch.randn(1, 3, 20, 20)
    occ, _ = grid_occlusions(image, (6, 6), (2, 2), torch.zeros(3, 6, 6))
    graph = capture(model, image)
    plan = plan_for(graph, occ, threshold(0.3))
    groups = batches(plan, 4)
    start = shared_tail(plan, groups)
    capped = [s for s in plan.steps[start:] if "convolution" in s.call.op_name and window(s, groups[0]).size != s.body]
    assert capped  # convolutions on capped (not whole) windows run merged
    merged = run_exact(graph, occ, plan, batch_size=4, tail_batch=occ.count).outputs
    apart = run_exact(graph, occ, plan, batch_size=4, tail_batch=1).outputs
    torch.testing.assert_close(merged, apart, rtol=1e-5, atol=1e-6)


def test_unverified_approximate_maps_say_so_and_measured_ones_carry_their_ssim():
    from krypton.outputs.render import caption

    model, image = model_and_image(32)
    plain = krypton.explain(model, image, patch=8, stride=2, mode="approximate", tau=0.5)
    assert plain.stats["quality"] == "not verified" and "quality not verified" in caption(plain)
    checked = krypton.explain(model, image, patch=8, stride=2, mode="approximate", tau=0.5, compare_exact=True)
    assert checked.stats["quality"] == f"measured: SSIM {checked.stats['ssim_vs_exact']:.3f} vs exact"
    exact = krypton.explain(model, image, patch=8, stride=2)
    assert "quality" not in exact.stats and "approximate" not in caption(exact)


def test_region_drilldown_with_full_budget_equals_exact_and_both_rules_spend_the_same_budget():
    from krypton.modes.approximate import select_cells

    model, image = model_and_image(32)
    exact = krypton.explain(model, image, patch=8, stride=2)
    full = krypton.explain(model, image, patch=8, stride=2, mode="approximate", tau=1.0,
                           drilldown={"fraction": 1.0, "coarse_stride": 4})  # fmt: skip
    torch.testing.assert_close(full.heatmap, exact.heatmap, atol=1e-6, rtol=0)
    rng = np.random.default_rng(0)
    coarse = rng.random((12, 12))
    for fraction in (0.1, 0.25, 0.5):
        paper, regions = select_cells(coarse, fraction, "paper"), select_cells(coarse, fraction, "regions")
        assert paper.sum() == regions.sum() == int(np.ceil(fraction * coarse.size))
    peak = np.ones((12, 12))
    peak[6, 6] = 0.2  # one sharp drop: the region rule takes its neighbourhood, the edge of the change
    chosen = select_cells(peak, 0.1, "regions")
    assert chosen[6, 6] and chosen[5, 6] and chosen[6, 5]
    with pytest.raises(ValueError, match="drilldown rule must be one of regions, paper"):
        krypton.explain(model, image, mode="approximate", drilldown={"rule": "magic"})


class SqueezeExcite(nn.Module):
    """conv -> SE gate (global mean -> 1x1 convs -> sigmoid) -> multiply -> conv -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.squeeze, self.excite = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c1(x))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(h.mean((2, 3), keepdim=True)))))
        h = torch.relu(self.c2(h * gate))
        return self.head(h.mean((2, 3)))


def test_local_gates_keep_se_changes_local_and_say_so():
    model = condition(SqueezeExcite(), (1, 3, 32, 32))
    image = torch.randn(3, 32, 32)
    exact_plan = krypton.analyze(model, (3, 32, 32), patch=8, stride=4)
    local_plan = krypton.analyze(model, (3, 32, 32), patch=8, stride=4, local_gates=True)
    assert local_plan.incremental_macs < 0.7 * exact_plan.incremental_macs  # the second conv is local again
    exact = krypton.explain(model, image, patch=8, stride=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no self-check false alarm: the approximation is not checked as exact
        local = krypton.explain(model, image, patch=8, stride=4, mode="approximate", tau=1.0, local_gates=True,
                                compare_exact=True, path="incremental")  # fmt: skip
    assert local.stats["local_gates"] is True and local.stats["path"] == "incremental"
    assert not torch.allclose(local.scores, exact.scores)  # an approximation, not exact
    assert local.stats["ssim_vs_exact"] > 0.5
    with pytest.raises(ValueError, match="local_gates applies to mode='approximate' only"):
        krypton.explain(model, image, local_gates=True)


def test_tuner_tries_local_gates_only_where_the_model_has_gates():
    se = condition(SqueezeExcite(), (1, 3, 32, 32))
    images = [torch.randn(3, 32, 32) for _ in range(2)]
    result = krypton.tune(se, images, patch=8, stride=4, taus=(0.8,), drilldowns=(None,), target_ssim=0.3)
    assert any(c.local_gates for c in result.candidates)
    assert "local_gates" in result.settings
    plain, _ = model_and_image(32)
    result = krypton.tune(plain, images, patch=8, stride=4, taus=(0.8,), drilldowns=(None,), target_ssim=0.3)
    assert not any(c.local_gates for c in result.candidates)


def test_quality_from_a_profile_sets_the_approximation_and_labels_the_map(tmp_path):
    import json

    from krypton.modes import profiles

    model, image = model_and_image(32)
    images = [image, torch.randn(3, 32, 32), torch.randn(3, 32, 32)]
    tuned = krypton.tune(model, images[:2], heldout_images=images[2:], patch=8, stride=4, target_ssim=0.6,
                         taus=(0.8, 0.6), drilldowns=(None,))  # fmt: skip
    direct = krypton.explain(model, image, patch=8, stride=4, mode="approximate", **tuned.settings)
    via = krypton.explain(model, image, patch=8, stride=4, mode="approximate", quality=0.6, profile=tuned)
    torch.testing.assert_close(via.scores, direct.scores)
    assert via.stats["quality"].startswith("expected: SSIM >= 0.6 (tuned on 2 image(s), held-out min")
    path = profiles.save(profiles.to_profile(tuned, "net", 8, 4, 2), tmp_path / "net.json")
    from_file = krypton.explain(model, image, patch=8, stride=4, mode="approximate", quality=0.5, profile=path)
    torch.testing.assert_close(from_file.scores, direct.scores)
    assert json.loads(path.read_text())["settings"] == tuned.settings
    with pytest.raises(ValueError, match="promises SSIM >= 0.6, less than quality=0.9"):
        krypton.explain(model, image, patch=8, stride=4, mode="approximate", quality=0.9, profile=tuned)
    with pytest.raises(ValueError, match="quality needs a tuning profile"):
        krypton.explain(model, image, patch=8, stride=4, mode="approximate", quality=0.9)
    with pytest.raises(ValueError, match="mode='approximate' only"):
        krypton.explain(model, image, patch=8, stride=4, quality=0.6, profile=tuned)
    with pytest.raises(ValueError, match="cannot read tuning profile"):
        krypton.explain(model, image, patch=8, stride=4, mode="approximate", profile=tmp_path / "missing.json")


def test_a_profile_whose_held_out_images_missed_the_target_is_labelled_unverified():
    from krypton.modes import profiles

    kept = {"target_ssim": 0.9, "sample_images": 2, "heldout_ssim": [0.93, 0.95]}
    missed = {"target_ssim": 0.9, "sample_images": 2, "heldout_ssim": [0.861]}
    assert profiles.expectation(kept) == "expected: SSIM >= 0.9 (tuned on 2 image(s), held-out min 0.930 on 2 image(s))"
    assert profiles.expectation(missed).startswith("not verified: tuned for SSIM >= 0.9 on 2 image(s), but held-out")
    assert "0.861" in profiles.expectation(missed)


def test_bundled_demo_profiles_are_found_without_a_user_profile(tmp_path, monkeypatch):
    """The ImageNet and X-ray demos ship their profiles (tuned on images other than each one's default)."""
    from krypton.modes import profiles

    monkeypatch.setenv("KRYPTON_PROFILES", str(tmp_path))  # no user profiles
    found = profiles.find("imagenet", 32, 8, 0.9)
    assert found is not None and found[1].parent == profiles.BUNDLED
    profile = found[0]
    assert profile["model"] == "imagenet" and profile["target_ssim"] == 0.9 and profile["heldout_ssim"]
    assert set(profiles.settings_of(profile)) >= {"tau", "drilldown", "local_gates"}
    assert profiles.find("imagenet", 32, 8, 0.95) is None  # it promises no more than it was tuned for
    xray = profiles.find("xray", 16, 4, 0.9)  # no approximation kept 0.9 on the X-rays: exact, said so
    assert xray is not None and profiles.settings_of(xray[0])["tau"] == 1.0 and xray[0]["settings"]["drilldown"] is None

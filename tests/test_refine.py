"""The multi-level drill-down (rule "refine") and the tuner's staircase search."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from test_approximate import model_and_image

import krypton
from krypton.modes.refine import Refinement, lattice
from krypton.modes.tune import Candidate, _staircase

explain = functools.partial(krypton.explain, path="incremental")


def test_refine_with_every_cell_in_budget_equals_exact():
    model, image = model_and_image(32)
    exact = explain(model, image, patch=8, stride=2)
    full = explain(model, image, patch=8, stride=2, mode="approximate", tau=1.0,
                   drilldown={"rule": "refine", "speedup": 1})  # fmt: skip
    torch.testing.assert_close(full.scores, exact.scores, rtol=1e-5, atol=1e-6)
    assert full.stats["coarse_positions"] + full.stats["drilled_positions"] == exact.stats["positions"]


def test_refine_spends_its_budget_and_keeps_computed_cells_exact():
    model, image = model_and_image(40)
    exact = explain(model, image, patch=8, stride=2)
    approx = explain(model, image, patch=8, stride=2, mode="approximate", tau=1.0, target=exact.target,
                     drilldown={"rule": "refine", "speedup": 3})  # fmt: skip
    stats = approx.stats
    computed = stats["coarse_positions"] + stats["drilled_positions"]
    assert computed == round(exact.stats["positions"] / 3)
    # a 17x17 grid: every 4th cell would be a first pass of 25 positions, too few to time the engine on,
    # so refine starts on every 2nd (81 positions), then one level
    assert stats["levels"] == 2 and stats["drilldown"]["coarse_stride"] == (4, 4)
    # the drilled cells and the first lattice (corners included) hold the exact logits
    known = approx.drilled.clone()
    known[np.ix_(lattice(known.shape[0], 2), lattice(known.shape[1], 2))] = True
    assert int(known.sum()) == computed
    torch.testing.assert_close(approx.scores[known], exact.scores[known], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(approx.scores[~known], exact.scores[~known])  # the rest is an estimate
    assert krypton.ssim(exact.heatmap, approx.heatmap) > 0.5


@pytest.mark.parametrize("grid", [(37,), (9, 23), (7, 6, 11)])
def test_refinement_interpolates_between_computed_cells_on_any_rank(grid):
    rng = np.random.default_rng(sum(grid))
    truth = rng.random(grid + (2,))
    visit = Refinement(grid, budget=max(2, int(np.prod(grid)) // 3))
    values = np.full(truth.shape, np.nan)
    rows = visit.start()
    while len(rows):
        values.reshape(-1, 2)[rows] = truth.reshape(-1, 2)[rows]
        estimate = visit.estimate(values)
        rows = visit.choose(estimate[..., 0])
    assert int(visit.known.sum()) == max(2, int(np.prod(grid)) // 3)  # random maps vary everywhere
    assert np.isfinite(estimate).all()
    np.testing.assert_array_equal(estimate[visit.known], truth[visit.known])
    # multilinear interpolation never leaves the range of what was computed (no invented structure)
    assert estimate.min() >= truth[visit.known].min() - 1e-12
    assert estimate.max() <= truth[visit.known].max() + 1e-12


def test_refinement_is_exact_on_a_linear_map_and_spends_where_the_map_bends():
    grid = (33, 33)
    i, j = np.meshgrid(np.arange(33), np.arange(33), indexing="ij")
    plane = (0.02 * i - 0.01 * j)[..., None]
    visit = Refinement(grid, budget=200)
    values = np.full(plane.shape, np.nan)
    first = visit.start()
    values.reshape(-1, 1)[first] = plane.reshape(-1, 1)[first]
    np.testing.assert_allclose(visit.estimate(values), plane, atol=1e-12)
    bump = np.zeros(grid)
    bump[14:19, 14:19] = 1.0  # one sharp feature: the next level's cells go around it
    chosen = np.unravel_index(visit.choose(bump), grid)
    assert all(10 <= a <= 22 and 10 <= b <= 22 for a, b in zip(*chosen))


@pytest.mark.parametrize(
    ("drilldown", "match"),
    [
        ({"rule": "refine", "fraction": 0.2}, "fraction applies to the two-stage rules"),
        ({"rule": "refine", "speedup": 0.5}, "speedup must be >= 1 for rule 'refine'"),
        ({"rule": "refine", "speedup": 2, "coarse_stride": 6}, "whole multiple of the stride"),
        ({"rule": "refine", "coarse_stride": 2.5}, "coarse_stride must be a positive int"),
    ],
)
def test_bad_refine_settings(drilldown, match):
    model, image = model_and_image(32)
    with pytest.raises(ValueError, match=match):
        krypton.explain(model, image, patch=8, stride=4, mode="approximate", drilldown=drilldown)


def test_refine_streams_progressive_maps_ending_with_the_result():
    model, image = model_and_image(32)
    updates = []
    result = explain(model, image, patch=8, stride=2, mode="approximate", tau=1.0,
                     drilldown={"rule": "refine", "speedup": 2}, on_update=updates.append)  # fmt: skip
    assert len(updates) == result.stats["levels"]
    assert [u.done for u in updates] == sorted(u.done for u in updates)
    torch.testing.assert_close(updates[-1].heatmap, result.heatmap, rtol=1e-5, atol=1e-6)


def test_staircase_finds_the_fastest_passing_setting_with_few_measurements():
    taus = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
    drills = (None, 2.0, 3.0, 4.0, 6.0)
    rng = np.random.default_rng(0)
    for trial in range(40):  # random monotone quality landscapes
        slope_tau, slope_drill = rng.uniform(0.1, 1.0, size=2)
        tau_gain = 1.0 if trial % 2 else 8.0  # tau alone may promise more than a mild drill-down (X-ray 16/4)
        candidates = [
            Candidate(t, None if d is None else {"rule": "refine", "speedup": d}, (1 + tau_gain * (1 - t)) * (d or 1.0))
            for t, d in itertools.product(taus, drills)
            if not (t == 1.0 and d is None)
        ]

        def quality(c: Candidate) -> float:
            speed = 0.0 if c.drilldown is None else c.drilldown["speedup"]
            return 1.0 - slope_tau * (1 - c.tau) - slope_drill * 0.05 * speed  # noqa: B023

        measured: list[Candidate] = []

        def passes(c: Candidate, measured: list[Candidate] = measured) -> bool:
            measured.append(c)
            return quality(c) >= 0.8

        frontier = _staircase(candidates, passes)
        best = max((c for c in candidates if quality(c) >= 0.8), key=lambda c: c.predicted_speedup, default=None)
        chosen = max(frontier, key=lambda c: c.predicted_speedup, default=None)
        assert (chosen is None) == (best is None)
        if best is not None:
            assert chosen.predicted_speedup == best.predicted_speedup
        assert len(measured) <= len(taus) + len(drills)


def test_tune_tries_drilldown_only_on_grids_wide_enough():
    model, image = model_and_image(40)
    narrow = krypton.tune(model, [image], patch=8, stride=4, taus=(0.8,), target_ssim=0.99)  # a 9x9 grid
    assert narrow.candidates and all(c.drilldown is None for c in narrow.candidates)
    wide = krypton.tune(model, [image], patch=8, stride=2, taus=(0.8,), target_ssim=0.99)  # 17x17
    assert any(c.drilldown is not None for c in wide.candidates)

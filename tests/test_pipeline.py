"""The run pipeline: path decisions, graph caches, remembered failures, the guard, the fastest naive."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import krypton
from krypton.engine.incremental import IncrementalRunner
from krypton.modes.occlusions import Collector, grid_occlusions
from krypton.pipeline import disk_cache, fastest_naive, graph_for, graphs, guard, plans
from krypton.pipeline import run as pipeline_run


def cnn(seed: int = 0, width: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 5),
    ).eval()


@pytest.fixture(autouse=True)
def fresh_memory():
    graphs.clear()
    yield
    graphs.clear()


def test_tiny_model_stays_naive_and_equals_incremental():
    model, image = cnn(), torch.randn(3, 16, 16)
    auto = krypton.explain(model, image, patch=4, stride=2)
    forced = krypton.explain(model, image, patch=4, stride=2, path="incremental")
    assert auto.stats["path"] == "naive" and "graph" in auto.stats["reason"]
    assert auto.mode == "exact" and auto.stats["macs"] is None and auto.stats["graph_source"] is None
    assert forced.stats["path"] == "incremental" and forced.stats["graph_source"] == "captured"
    assert 0 < forced.stats["macs"] < forced.stats["macs_naive"]
    torch.testing.assert_close(auto.scores, forced.scores, rtol=1e-4, atol=1e-5)


def test_graph_in_memory_is_used_and_calibration_keeps_results_exact(monkeypatch):
    model, image = cnn(width=16), torch.randn(3, 24, 24)
    graph_for(model, image[None])  # a graph at hand: the plan and calibration decide
    monkeypatch.setattr(pipeline_run, "EFFICIENCY", 1e3)  # as if the engine were expected to win by far
    monkeypatch.setattr(pipeline_run, "SETUP_S", 0.0)
    result = krypton.explain(model, image, patch=12, stride=1, batch_size=16)
    naive = krypton.explain(model, image, patch=12, stride=1, mode="naive")
    assert result.stats["graph_source"] == "memory"
    assert result.stats["reason"].startswith(("calibrated", "incremental", "the plan saves"))
    assert result.stats["incremental_positions"] + result.stats["naive_positions"] == result.stats["positions"]
    torch.testing.assert_close(result.scores, naive.scores, rtol=1e-4, atol=1e-5)


def test_a_run_that_could_save_little_is_not_calibrated(monkeypatch):
    """Calibration needs enough batches, but its slow batches cost more than a short run could win."""
    model, image = cnn(width=16), torch.randn(3, 24, 24)
    graph_for(model, image[None])
    monkeypatch.setattr(pipeline_run, "EFFICIENCY", 1e-3)  # as if the engine were expected to lose
    result = krypton.explain(model, image, patch=12, stride=1, batch_size=16)  # 169 positions, 11 batches
    naive = krypton.explain(model, image, patch=12, stride=1, mode="naive")
    probed = 2 * fastest_naive.PROBE_SIZE - 1  # a warm-up and a timed naive batch (the clean image rode along
    # in the first, to check the channels-last twin)
    assert result.stats["reason"].startswith(f"re-inferring the other {169 - probed} positions"), result.stats["reason"]
    assert result.stats["path"] == "naive" and result.stats["incremental_positions"] == 0
    torch.testing.assert_close(result.scores, naive.scores, rtol=1e-4, atol=1e-5)


def test_a_plan_is_reused_for_the_same_geometry_and_only_for_it(monkeypatch):
    """Plans depend on boxes, not pixels: a second image of the same size plans nothing, and its scores
    are still exactly naive's; another stride or tau plans afresh."""
    model = cnn(width=16)
    first, second = torch.randn(3, 24, 24), torch.randn(3, 24, 24)
    graph_for(model, first[None])
    plans.clear()
    made = []
    real = plans.plan_for
    monkeypatch.setattr(plans, "plan_for", lambda *args: made.append(1) or real(*args))
    krypton.explain(model, first, patch=8, stride=4, path="incremental")
    again = krypton.explain(model, second, patch=8, stride=4, path="incremental")
    assert len(made) == 1 and again.stats["path"] == "incremental"
    naive = krypton.explain(model, second, patch=8, stride=4, mode="naive")
    torch.testing.assert_close(again.scores, naive.scores, rtol=1e-4, atol=1e-5)
    krypton.explain(model, second, patch=8, stride=2, path="incremental")
    krypton.explain(model, second, patch=8, stride=4, mode="approximate", tau=0.7, path="incremental")
    assert len(made) == 3


def test_the_next_run_of_a_plan_follows_its_measured_verdict(monkeypatch):
    """A calibrated run leaves its measurement with the plan: the next image of that size neither probes
    nor calibrates, and is still exactly naive."""
    model, first, second = cnn(width=16), torch.randn(3, 24, 24), torch.randn(3, 24, 24)
    graph = graph_for(model, first[None]).graph
    occ, _ = grid_occlusions(first[None], (12, 12), (1, 1), torch.zeros(3, 12, 12))
    monkeypatch.setattr(pipeline_run, "EFFICIENCY", 1e3)  # long enough to calibrate
    monkeypatch.setattr(pipeline_run, "SETUP_S", 0.0)
    calibrated = krypton.explain(model, first, patch=12, stride=1, batch_size=16)
    assert calibrated.stats["reason"].startswith("calibrated"), calibrated.stats["reason"]
    seen = plans.planned(graph, occ).measured
    if seen.verdict() is None:  # measured against the engine before its kernels were set up: once more
        assert not seen.warm and seen.incremental_s >= seen.naive_s
        warm = krypton.explain(model, second, patch=12, stride=1, batch_size=16)
        assert warm.stats["reason"].startswith("calibrated") and seen.warm and seen.verdict() is not None
    probes = []
    monkeypatch.setattr(fastest_naive.FastestNaive, "probe", lambda *args: probes.append(1))
    again = krypton.explain(model, second, patch=12, stride=1, batch_size=16)
    assert again.stats["reason"].startswith("an earlier run measured"), again.stats["reason"]
    assert again.stats["path"] in ("incremental", "naive") and not probes  # one path, chosen up front
    naive = krypton.explain(model, second, patch=12, stride=1, mode="naive")
    torch.testing.assert_close(again.scores, naive.scores, rtol=1e-4, atol=1e-5)


def test_a_verdict_against_the_engine_counts_only_when_measured_warm():
    assert plans.Measured(naive_s=1.0, incremental_s=2.0).verdict() is None  # first use: kernel setup inside
    assert plans.Measured(naive_s=1.0, incremental_s=2.0, warm=True).verdict() == "naive"
    assert plans.Measured(naive_s=2.0, incremental_s=1.0).verdict() == "incremental"  # faster even cold
    assert plans.Measured(naive_s=2.0).verdict() is None


def test_savings_forgone_by_short_runs_add_up_to_a_try(monkeypatch):
    """Rent or buy: runs that the engine's one-time setup keeps naive add up what they forgo; once that
    reaches the setup's price, a run tries."""
    model, image = cnn(width=16), torch.randn(3, 24, 24)
    graph = graph_for(model, image[None]).graph
    occ, _ = grid_occlusions(image[None], (12, 12), (1, 1), torch.zeros(3, 12, 12))
    steady = property(lambda self: 1e-3, lambda self, value: None)  # naive: 1 ms/position in every run
    monkeypatch.setattr(fastest_naive.FastestNaive, "seconds_per_position", steady, raising=False)
    monkeypatch.setattr(pipeline_run, "EFFICIENCY", 1e3)  # the engine expected to win on every run...
    monkeypatch.setattr(pipeline_run, "SETUP_S", 1e6)  # ...but not its first-run setup
    short = krypton.explain(model, image, patch=12, stride=1, batch_size=16)
    assert "costs less than the engine is expected to" in short.stats["reason"]
    forgone = plans.planned(graph, occ).measured.forgone_s  # the same geometry: the run's plan
    assert forgone > 0
    monkeypatch.setattr(pipeline_run, "SETUP_S", 1.5 * forgone)  # neither run alone pays it; both do
    tried = krypton.explain(model, image, patch=12, stride=1, batch_size=16)
    assert tried.stats["reason"].startswith("calibrated"), tried.stats["reason"]
    torch.testing.assert_close(tried.scores, short.scores, rtol=1e-4, atol=1e-5)


def test_short_naive_runs_add_up_to_a_capture(monkeypatch):
    """Rent or buy: runs that stay naive because a capture would cost more than the run add up what they
    spent; once that reaches the capture's price, the next run captures."""
    model, image = cnn(width=16), torch.randn(3, 24, 24)
    monkeypatch.setattr(graphs, "capture_estimate", lambda *args: 1e3)  # far more than one run
    first = krypton.explain(model, image, patch=12, stride=1)
    assert first.stats["graph_source"] is None and "having the graph" in first.stats["reason"]
    spent = graphs.naive_spent(model, image[None])
    assert 0 < spent < 1e3
    graphs.add_naive_spent(model, image[None], 1e3 - spent)  # as if many such runs had gone before
    later = krypton.explain(model, image, patch=12, stride=1)
    assert later.stats["graph_source"] in ("captured", "disk") and "pays across runs" in later.stats["capture_reason"]
    torch.testing.assert_close(later.scores, first.scores, rtol=1e-4, atol=1e-5)


def test_the_naive_probe_times_a_small_model_at_its_grown_batch():
    """A timed batch that is mostly per-call overhead would make naive look slow: the probe goes on at
    the grown batch size."""
    model, image = cnn(), torch.randn(1, 3, 12, 12)
    occ, _ = grid_occlusions(image, (2, 2), (1, 1), torch.zeros(3, 2, 2))
    runner = fastest_naive.FastestNaive(model, occ, Collector(occ.count))
    runner.probe(np.arange(occ.count))
    assert runner.batch_size > fastest_naive.DEFAULT_BATCH
    assert runner.positions > 2 * fastest_naive.PROBE_SIZE and runner.measured


def test_calibration_switches_to_naive_when_naive_measures_faster(monkeypatch):
    model, image = cnn(width=16), torch.randn(3, 24, 24)
    graph_for(model, image[None])
    naive_is_free = property(lambda self: 1e-12, lambda self, value: None)
    monkeypatch.setattr(fastest_naive.FastestNaive, "seconds_per_position", naive_is_free, raising=False)
    monkeypatch.setattr(pipeline_run, "EFFICIENCY", 1e3)  # calibrate even though naive looks free
    monkeypatch.setattr(pipeline_run, "SETUP_S", 0.0)
    result = krypton.explain(model, image, patch=12, stride=1, batch_size=16)
    naive = krypton.explain(model, image, patch=12, stride=1, mode="naive")
    assert result.stats["reason"].startswith("calibrated") and "naive finishes" in result.stats["reason"]
    assert result.stats["path"] == "incremental+naive" and result.stats["naive_positions"] > 0
    torch.testing.assert_close(result.scores, naive.scores, rtol=1e-4, atol=1e-5)


def test_uncapturable_model_is_remembered(monkeypatch):
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = cnn()

        def forward(self, x):
            return self.net(x) * (2 if float(x.sum()) > 0 else 1)

    model, image = DataDependent().eval(), torch.randn(3, 12, 12).abs()
    with pytest.warns(RuntimeWarning, match="naive"):
        first = krypton.explain(model, image, patch=4, stride=4, path="incremental")
    calls = []
    monkeypatch.setattr(graphs, "export_program", lambda *a: calls.append(a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known already: no second warning, no second capture
        second = krypton.explain(model, image, patch=4, stride=4, path="incremental")
    assert not calls and "remembered" in second.stats["reason"] and second.stats["path"] == "naive"
    torch.testing.assert_close(first.scores, second.scores)


def test_recurrent_model_runs_naive_without_capture(monkeypatch):
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.gru = nn.GRU(4, 6, batch_first=True)
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            seq = self.conv(x).flatten(2).transpose(1, 2)
            return self.head(self.gru(seq)[0][:, -1])

    monkeypatch.setattr(graphs, "export_program", lambda *a: pytest.fail("a GRU must not be captured"))
    result = krypton.explain(Recurrent().eval(), torch.randn(3, 8, 8), patch=4, stride=4, path="incremental")
    assert result.stats["path"] == "naive" and "GRU" in result.stats["reason"]


def test_disk_cache_binds_live_weights_and_checks_the_graph(tmp_path, monkeypatch):
    monkeypatch.setenv("KRYPTON_GRAPH_CACHE", str(tmp_path))
    model, image = cnn(), torch.randn(1, 3, 12, 12)
    assert graph_for(model, image).source == "captured"
    assert len(list(tmp_path.glob("*.graph"))) == 1
    graphs.clear()
    with torch.no_grad():  # new weights, same architecture: the stored graph serves them
        for p in model.parameters():
            p.add_(0.5)
    assert graph_for(model, image).source == "disk"
    exact = krypton.explain(model, image[0], patch=4, stride=2, path="incremental")
    naive = krypton.explain(model, image[0], patch=4, stride=2, mode="naive")
    assert exact.stats["graph_source"] == "memory"
    torch.testing.assert_close(exact.scores, naive.scores, rtol=1e-4, atol=1e-5)
    other = cnn(width=6)  # another structure: another key, never the stored graph
    assert disk_cache.key(other, image) != disk_cache.key(model, image)
    model[1].inplace = True  # a plain attribute is part of the key
    assert disk_cache.key(model, image) != disk_cache.key(cnn(), image)


def test_disk_cache_off_and_hooks_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("KRYPTON_GRAPH_CACHE", "off")
    assert disk_cache.folder() is None
    monkeypatch.delenv("KRYPTON_GRAPH_CACHE")
    assert disk_cache.folder() == Path.home() / ".cache" / "krypton" / "graphs"  # on by default
    model = cnn()
    model[0].register_forward_hook(lambda *a: None)
    assert disk_cache.key(model, torch.zeros(1, 3, 8, 8)) is None


def test_stale_disk_graph_is_caught_on_the_clean_pass(tmp_path, monkeypatch):
    """A stored graph whose clean output disagrees with the model is discarded and captured afresh."""
    monkeypatch.setenv("KRYPTON_GRAPH_CACHE", str(tmp_path))
    model, image = cnn(), torch.randn(1, 3, 12, 12)
    graph_for(model, image)
    graphs.clear()
    live = disk_cache._live  # what the key cannot see: the loaded graph gets other weights
    monkeypatch.setattr(disk_cache, "_live", lambda m: {k: torch.zeros_like(v) for k, v in live(m).items()})
    assert graph_for(model, image).source == "disk"
    graphs.clear()
    exact = krypton.explain(model, image[0], patch=4, stride=2, path="incremental")
    naive = krypton.explain(model, image[0], patch=4, stride=2, mode="naive")
    assert exact.stats["graph_source"] == "captured" and exact.stats["path"] == "incremental"
    torch.testing.assert_close(exact.scores, naive.scores, rtol=1e-4, atol=1e-5)


def test_disk_graph_round_trip_keeps_every_node(tmp_path, monkeypatch):
    """What is stored is the captured graph itself: same nodes, targets, arguments and shapes."""
    monkeypatch.setenv("KRYPTON_GRAPH_CACHE", str(tmp_path))
    model, image = cnn(), torch.randn(1, 3, 12, 12)
    fresh = graph_for(model, image).graph
    graphs.clear()
    loaded = graph_for(model, image).graph
    assert [(c.name, c.target, str(c.args)) for c in loaded.calls] == [
        (c.name, c.target, str(c.args)) for c in fresh.calls
    ]
    guards = {n.name for n in fresh.shapes if n.op == "call_module"}  # export's input guards are not kept
    assert {n.name: s for n, s in loaded.shapes.items()} == {
        n.name: s for n, s in fresh.shapes.items() if n.name not in guards
    }
    assert all(p is q for p, q in zip(loaded.module.parameters(), model.parameters()))  # bound, not copied


def test_capture_waits_for_model_calls_and_never_fails_under_contention():
    model, image = cnn(), torch.randn(1, 3, 16, 16)
    stop, errors = threading.Event(), []

    def hammer():
        while not stop.is_set():
            try:
                guard.call(model, image)
            except Exception as exc:  # pragma: no cover - the failure this test exists to catch
                errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        found = graph_for(model, image)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert found.source in ("captured", "disk") and not errors
    assert graphs.refusal(model, image) is None


def test_guard_is_exclusive():
    events: list[str] = []
    inside = threading.Event()

    def capture():
        with guard.exclusive():
            inside.set()
            events.append("capture start")
            threading.Event().wait(0.1)
            events.append("capture end")

    t = threading.Thread(target=capture)
    t.start()
    inside.wait()
    with guard.shared():
        events.append("call")
    t.join()
    assert events == ["capture start", "capture end", "call"]


def test_fastest_naive_feeds_channels_last_and_compares_layouts_in_long_runs(monkeypatch):
    monkeypatch.setattr(fastest_naive, "LAYOUT_TRIAL_S", 0.0)
    model, image = cnn(width=16), torch.randn(1, 3, 20, 20)
    occ, _ = grid_occlusions(image, (4, 4), (1, 1), torch.zeros(3, 4, 4))
    collector = Collector(occ.count)
    runner = fastest_naive.FastestNaive(model, occ, collector, batch_size=8)
    assert runner.layout == "channels_last"  # a 2-D conv model on the CPU starts with channels-last inputs
    seen = []
    original = fastest_naive.guard.call
    monkeypatch.setattr(fastest_naive.guard, "call", lambda m, x: (seen.append(x.is_contiguous()), original(m, x))[1])
    runner.run(np.arange(occ.count))
    assert runner.layout in ("channels_last", "contiguous") and collector.done.all()
    assert runner._trial_batches == 2 and True in seen and False in seen  # both layouts were timed
    assert all(p.is_contiguous() for p in model.parameters())  # the caller's model is untouched
    with torch.no_grad():
        want = model(occ.images(np.arange(occ.count)))
    torch.testing.assert_close(collector.result(), want, rtol=1e-4, atol=1e-5)


def test_the_channels_last_twin_computes_the_model_and_leaves_it_untouched():
    from krypton.pipeline import channels_last_twin

    torch.manual_seed(0)
    shared = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depthwise (8, 1, 3, 3), used twice
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), shared, nn.ReLU(), shared,
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()  # fmt: skip
    before = [(p.data_ptr(), p.stride()) for p in model.parameters()]
    with torch.no_grad():
        made = channels_last_twin.twin(model)
        assert made is not None and not made.verified
        twin = made.module
        assert twin is not model and twin[2] is twin[4]  # sharing kept
        assert twin[2].weight.stride() == (9, 1, 3, 1)  # channels-last strides despite the size-1 axis
        assert twin[1].running_mean is model[1].running_mean  # buffers are the caller's own
        batch = torch.randn(5, 3, 12, 12)
        torch.testing.assert_close(twin(batch.contiguous(memory_format=torch.channels_last)), model(batch))
        assert [(p.data_ptr(), p.stride()) for p in model.parameters()] == before  # the model is as given
        assert channels_last_twin.twin(model) is made  # made once per set of weights
        model[0].weight.add_(1.0)  # an in-place update (a training step): a new twin, with the new weights
        again = channels_last_twin.twin(model)
        assert again is not None and again is not made
        torch.testing.assert_close(again.module(batch.contiguous(memory_format=torch.channels_last)), model(batch))
        channels_last_twin.reject(model)
        assert channels_last_twin.twin(model) is None  # failed its check: the model as given serves


def test_naive_checks_the_twin_on_its_first_batch_and_falls_back_when_it_disagrees(monkeypatch):
    from krypton.pipeline import channels_last_twin

    channels_last_twin.clear()
    model, image = cnn(width=16), torch.randn(3, 24, 24)
    reference = krypton.explain(model, image, patch=12, stride=4, mode="naive", batch_size=4)
    made = channels_last_twin.twin(model)
    assert made is not None and made.verified  # the first batch carried the clean image: it agreed
    channels_last_twin.clear()
    real = channels_last_twin._clone
    wrong = lambda module, memo: nn.Sequential(real(module, memo), nn.ReLU())  # noqa: E731 - computes otherwise
    monkeypatch.setattr(channels_last_twin, "_clone", wrong)
    result = krypton.explain(model, image, patch=12, stride=4, mode="naive", batch_size=4)
    assert channels_last_twin.twin(model) is None  # rejected on its first batch
    torch.testing.assert_close(result.scores, reference.scores)


class ViewsRows(nn.Module):
    """A CNN whose code merges channels with rows by `view`: it raises on channels-last input."""

    def __init__(self, width: int = 24):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(width, 4)

    def forward(self, x):
        y = self.conv(x)
        b, c, h, w = y.shape
        return self.head(y.view(b, c * h, w).mean(1))


def test_naive_runs_a_model_that_cannot_take_channels_last_input_in_its_own_layout():
    torch.manual_seed(0)
    model, image = ViewsRows().eval(), torch.randn(3, 24, 24)
    with pytest.raises(RuntimeError, match="view size"):
        model(image[None].contiguous(memory_format=torch.channels_last))
    first = krypton.explain(model, image, patch=8, stride=4, mode="naive", batch_size=4)
    again = krypton.explain(model, image, patch=8, stride=4, mode="naive", batch_size=4)
    assert first.stats["naive_layout"] == again.stats["naive_layout"] == "contiguous"
    occ, _ = grid_occlusions(image[None], (8, 8), (4, 4), torch.zeros(3, 8, 8))
    with torch.no_grad():
        expected = model(occ.images(np.arange(occ.count), fastest_naive.PaddedCache(), torch.contiguous_format))
    torch.testing.assert_close(first.scores.reshape(occ.count, -1), expected)
    torch.testing.assert_close(again.scores, first.scores)


def test_small_batches_grow_for_small_models():
    model, image = cnn(), torch.randn(1, 3, 12, 12)
    occ, _ = grid_occlusions(image, (2, 2), (1, 1), torch.zeros(3, 2, 2))
    runner = fastest_naive.FastestNaive(model, occ, Collector(occ.count))
    runner.run(np.arange(occ.count))
    assert runner.batch_size > fastest_naive.DEFAULT_BATCH


def test_naive_is_enough_for_cheap_runs():
    model, image = cnn(), torch.zeros(1, 3, 8, 8)
    assert "graph" in pipeline_run.naive_is_enough(model, image, 1e-4)
    assert pipeline_run.naive_is_enough(model, image, 1e4) is None
    assert pipeline_run.naive_is_enough(model, image, 1e-4, path="incremental") is None
    assert pipeline_run.naive_is_enough(model, image, 1e4, path="naive")


def test_path_is_validated():
    with pytest.raises(ValueError, match="path"):
        krypton.explain(cnn(), torch.randn(3, 8, 8), patch=4, stride=4, path="fast")


def test_capture_is_announced_as_a_phase_and_the_bar_times_positions_only():
    model, image = cnn(), torch.randn(3, 16, 16)
    occ, _ = grid_occlusions(image[None], (4, 4), (4, 4), torch.zeros(3, 4, 4))
    heard: list[str | None] = []
    pipeline_run.evaluate(model, occ, path="incremental", on_phase=heard.append)
    assert heard == ["capturing the model graph", None]
    heard.clear()
    pipeline_run.evaluate(model, occ, path="incremental", on_phase=heard.append)
    assert heard == []  # the graph is in memory: no slow phase to announce


def test_progress_bar_shows_the_capture_phase(capsys):
    from tqdm import tqdm

    from krypton.api import _phase

    bar = tqdm(total=10, desc="krypton exact")
    start = bar.start_t
    _phase(bar, "krypton exact", "capturing the model graph")
    assert "capturing the model graph" in bar.desc
    _phase(bar, "krypton exact", None)
    assert bar.desc.startswith("krypton exact") and "capturing" not in bar.desc
    assert bar.start_t >= start and "graph ready in" in bar.postfix
    bar.close()


class Cancelling(nn.Module):
    """Numerically unstable on purpose: a large offset added and removed, so rounding is amplified."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)) * 1000.0
        h = (h + 3.0e6) - 3.0e6
        return self.fc(h.mean((2, 3)))


def test_self_check_tolerance_follows_the_models_own_sensitivity():
    from krypton.modes.exact import rounding_sensitivity, self_check

    model, image = Cancelling().eval(), torch.randn(1, 3, 16, 16)
    occ, _ = grid_occlusions(image, (4, 4), (4, 4), torch.zeros(3, 4, 4))
    with torch.no_grad():
        exact = model(occ.images(np.arange(occ.count)))
        images = occ.images(np.array([0, occ.count - 1]))
        wobble = rounding_sensitivity(model, images, model(images))
        assert wobble > 1e-3  # float32 inference of this model is visibly off its float64 result
        jittered = exact.clone()
        jittered[[0, -1]] += 2 * wobble  # as large as the model's own rounding noise: not an error
        assert self_check(model, occ, jittered) is None
        broken = exact.clone()
        broken[[0, -1]] += 1000 * wobble + 1.0  # far beyond it: a real mismatch
        assert self_check(model, occ, broken) is not None


def test_a_small_run_follows_the_plan_s_prediction_and_times_the_engine_for_the_next(monkeypatch):
    """Too few batches to calibrate on: the plan's MAC saving at EFFICIENCY, less the fixed costs,
    against naive's measured rest decides; the engine's time is kept for the next run of the plan."""
    model, image = cnn(width=64), torch.randn(3, 48, 48)  # ~0.1 GMACs/position: naive batches stay at 16
    graph_for(model, image[None])  # a graph at hand, but only a few batches of positions: no calibration
    monkeypatch.setattr(pipeline_run, "EFFICIENCY", 1e-3)  # as if the engine were expected to lose
    short = krypton.explain(model, image, patch=24, stride=4)  # 49 positions: at most 2 engine batches
    assert short.stats["reason"].startswith("re-inferring the other"), short.stats["reason"]
    assert short.stats["path"] == "naive"
    monkeypatch.setattr(pipeline_run, "MEASURE_MIN_S", 0.0)  # a saving the plan allows, worth measuring:
    measured = krypton.explain(model, image, patch=24, stride=4)  # the run's first batch is a trial
    assert measured.stats["reason"].startswith("trial: incremental"), measured.stats["reason"]
    plans.clear()  # the trial's verdict stays with the plan; a fresh plan is predicted again
    monkeypatch.setattr(pipeline_run, "EFFICIENCY", 1e3)  # as if it were expected to win by far
    monkeypatch.setattr(pipeline_run, "SETUP_S", 0.0)
    result = krypton.explain(model, image, patch=24, stride=4)
    naive = krypton.explain(model, image, patch=24, stride=4, mode="naive")
    assert result.stats["reason"].startswith("predicted for the other"), result.stats["reason"]
    assert result.stats["path"] == "incremental+naive"  # naive's timed batch, then the engine
    seen = plans.planned(graph_for(model, image[None]).graph, _grid(image, 24, 4)).measured
    assert seen.incremental_s is not None and seen.naive_s is not None  # measured for the next run
    for run in (short, measured, result):
        torch.testing.assert_close(run.scores, naive.scores, rtol=1e-4, atol=1e-5)
    tiny, small_image = cnn(), torch.randn(3, 16, 16)
    graph_for(tiny, small_image[None])
    quick = krypton.explain(tiny, small_image, patch=8, stride=4)  # one naive batch answers everything
    assert quick.stats["reason"] == "a small run: the timed naive batch covered every position"


def _grid(image: torch.Tensor, patch: int, stride: int):
    return grid_occlusions(image[None], (patch, patch), (stride, stride), torch.zeros(3, patch, patch))[0]


class FoldedAttention(nn.Module):
    """A convolutional stem, then attention whose heads fold the batch axis into theirs (as the attention
    blocks of timm's hybrids do): the captured reshapes are right at batch 1 only."""

    def __init__(self, channels: int = 16, heads: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.heads, self.head = heads, nn.Linear(channels, 4)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b * self.heads, 3 * c // self.heads, h * w).chunk(3, dim=1)
        attention = torch.softmax(q.transpose(1, 2) @ k / 4.0, dim=-1)
        y = (v @ attention.transpose(1, 2)).reshape(b, c, h, w)
        return self.head((x + y).mean((2, 3)))


def test_partial_graph_runs_the_stem_incrementally_and_the_folded_rest_per_position():
    torch.manual_seed(0)
    model, image = FoldedAttention().eval(), torch.randn(3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the engine runs
        exact = krypton.explain(model, image, patch=8, stride=4, path="incremental")
    naive = krypton.explain(model, image, patch=8, stride=4, mode="naive")
    assert exact.stats["path"] == "incremental" and exact.stats["mode"] == "exact"
    torch.testing.assert_close(exact.scores, naive.scores, rtol=1e-4, atol=1e-5)
    assert any("per position (batch axis folded)" in op for _, op in exact.stats["fallbacks"])
    analysis = krypton.analyze(model, (3, 32, 32), patch=8, stride=4)
    rest = [op for op in analysis.ops if op["op"] == "rest of the graph"]
    assert len(rest) == 1 and rest[0]["incremental_macs"] == rest[0]["naive_macs"] > 0
    assert 1.0 < analysis.speedup < analysis.per_position_speedup + 1e-9


class FoldThenConv(nn.Module):
    """A fold of the batch axis, then a convolution whose output a `view` merges channels with rows
    (MobileViT's unfold): the per-position rest must run the captured ops in the layouts the model ran
    them in (that view cannot take a channels-last tensor)."""

    def __init__(self, channels: int = 8, width: int = 24):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.conv, self.head = nn.Conv2d(channels, channels, 3, padding=1), nn.Linear(width, 4)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        x = torch.relu(x.reshape(b * 2, c // 2, h, w)).reshape(b, c, h, w)
        x = self.conv(x).view(b, c * h, w)
        return self.head(x.mean(1))


def test_a_partial_graph_replays_its_rest_in_the_model_s_own_layouts():
    torch.manual_seed(0)
    model, image = FoldThenConv().eval(), torch.randn(3, 24, 24)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the engine runs to the end
        exact = krypton.explain(model, image, patch=8, stride=4, path="incremental")
    naive = krypton.explain(model, image, patch=8, stride=4, mode="naive")
    assert exact.stats["path"] == "incremental" and exact.stats["mode"] == "exact"
    assert any("per position (batch axis folded)" in op for _, op in exact.stats["fallbacks"])
    torch.testing.assert_close(exact.scores, naive.scores, rtol=1e-4, atol=1e-5)


def test_a_partial_graph_whose_per_position_part_is_slower_than_naive_runs_naive(monkeypatch):
    """The suffix of a partial graph runs at batch 1 for each position, a cost the MAC ratio does not
    show: timed once on the clean pass, it decides before any incremental batch."""
    torch.manual_seed(0)
    model, image = FoldedAttention().eval(), torch.randn(3, 32, 32)
    graph_for(model, image[None])
    naive_is_fast = property(lambda self: 1e-9, lambda self, value: None)
    monkeypatch.setattr(fastest_naive.FastestNaive, "seconds_per_position", naive_is_fast, raising=False)
    monkeypatch.setattr(pipeline_run, "EFFICIENCY", 1e3)
    monkeypatch.setattr(pipeline_run, "SETUP_S", 0.0)
    result = krypton.explain(model, image, patch=8, stride=2, batch_size=8)
    assert result.stats["reason"].startswith("the part of the graph run per position"), result.stats["reason"]
    assert result.stats["path"] == "naive" and result.stats["incremental_positions"] == 0
    naive = krypton.explain(model, image, patch=8, stride=2, mode="naive")
    torch.testing.assert_close(result.scores, naive.scores, rtol=1e-4, atol=1e-5)


def _calibrating_run(monkeypatch):
    """A captured CNN whose runs calibrate (the engine is predicted worth measuring), its occlusions
    and their naive outputs."""
    model, image = cnn(width=16), torch.randn(3, 24, 24)
    graph_for(model, image[None])
    occ, _ = grid_occlusions(image[None], (12, 12), (1, 1), torch.zeros(3, 12, 12))
    reference = krypton.explain(model, image, patch=12, stride=1, mode="naive").scores.reshape(occ.count, -1)
    monkeypatch.setattr(pipeline_run, "EFFICIENCY", 1e3)  # long enough to calibrate
    monkeypatch.setattr(pipeline_run, "SETUP_S", 0.0)
    return model, occ, reference


def test_passes_of_one_explanation_share_measurements_and_the_clean_pass(monkeypatch):
    model, occ, reference = _calibrating_run(monkeypatch)
    made = []
    real = graphs.clean_pass
    monkeypatch.setattr(graphs, "clean_pass", lambda *args, **kw: made.append(1) or real(*args, **kw))
    experience = pipeline_run.Experience()
    parts = np.arange(0, 80), np.arange(80, 150), np.arange(150, occ.count)
    first, stats = pipeline_run.evaluate(model, occ.subset(parts[0]), batch_size=16, experience=experience)
    assert stats.reason.startswith("calibrated") and experience.verdict() is not None, stats.reason
    experience.incremental_s, experience.naive_s = 1e-3, 1.0  # as if the engine had measured faster
    second, stats = pipeline_run.evaluate(model, occ.subset(parts[1]), batch_size=16, experience=experience)
    assert stats.reason.startswith("an earlier run measured incremental") and stats.path == "incremental"
    assert len(made) == 1  # one clean pass for both
    experience.incremental_s, experience.naive_s = 1.0, 1e-3  # and now as if naive had
    third, stats = pipeline_run.evaluate(model, occ.subset(parts[2]), batch_size=16, experience=experience)
    assert stats.reason.startswith("an earlier run measured") and stats.path == "naive"
    torch.testing.assert_close(torch.cat([first, second, third]), reference, rtol=1e-4, atol=1e-5)


def test_engine_runs_over_one_clean_pass_share_its_padded_copies(monkeypatch):
    """Calibration runs the engine batch by batch; each run used to copy every clean value to channels-last
    again (0.1 s per run on DenseNet121-3D at 96^3, charged to the timed batch)."""
    model, occ, reference = _calibrating_run(monkeypatch)
    caches = []
    real = IncrementalRunner.__init__
    monkeypatch.setattr(
        IncrementalRunner, "__init__", lambda self, *a, **k: real(self, *a, **k) or caches.append(self.cache)
    )
    outputs, stats = pipeline_run.evaluate(model, occ, batch_size=16)
    assert stats.reason.startswith("calibrated"), stats.reason
    assert len(caches) >= 2 and all(cache is caches[0] for cache in caches)
    torch.testing.assert_close(outputs, reference, rtol=1e-4, atol=1e-5)


def test_a_small_pass_with_more_to_come_trials_a_whole_batch_and_keeps_the_verdict():
    model, image = cnn(width=64), torch.randn(3, 48, 48)
    graph_for(model, image[None])
    occ, _ = grid_occlusions(image[None], (24, 24), (4, 4), torch.zeros(3, 24, 24))  # 49 positions
    alone = pipeline_run.Experience()
    pipeline_run.evaluate(model, occ, experience=alone)
    assert alone.verdict() is None  # a small run on its own: no trial, nothing kept for passes to come
    more = pipeline_run.Experience(ahead=10_000)  # the first pass of a long drill-down
    outputs, stats = pipeline_run.evaluate(model, occ, experience=more)
    assert stats.reason.startswith("trial: incremental"), stats.reason
    assert more.verdict() is not None  # kept for the passes to come
    assert stats.incremental_positions >= min(16, stats.positions - stats.naive_positions)  # a whole batch
    reference = krypton.explain(model, image, patch=24, stride=4, mode="naive").scores.reshape(occ.count, -1)
    torch.testing.assert_close(outputs, reference, rtol=1e-4, atol=1e-5)

"""Exact incremental inference equals full re-inference on small graphs that hit every rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from krypton.capture import capture
from krypton.engine.incremental import IncrementalRunner
from krypton.engine.plan import batches, shared_tail, tail_reads, window
from krypton.modes.exact import plan_for, run_exact
from krypton.modes.naive import run_naive
from krypton.modes.occlusions import Occlusions, grid_occlusions
from krypton.rules import FULL, RULES

from graphs import IMAGE_MODELS, IMAGE_SHAPE, Conv1d, Conv3d, DirectOps, SamePadPool
from helpers import assert_exact


@pytest.mark.parametrize("model_cls", IMAGE_MODELS + [DirectOps, SamePadPool], ids=lambda c: c.__name__)
@pytest.mark.parametrize("patch,stride", [((3, 4), (2, 1)), ((5, 5), (3, 4)), ((1, 1), (1, 1))])
def test_small_graphs_match_full_inference(model_cls, patch, stride):
    torch.manual_seed(0)
    model = model_cls().eval()
    image = torch.randn(IMAGE_SHAPE)
    assert_exact(model, image, patch, stride, fill=0.3, batch_size=7)


def _slab_occlusions(image: torch.Tensor, width: int, stride: int, channels: tuple[int, int] | None = None):
    """Occlude a slab [x, x+width) along the last axis (whole other axes), at every stride step."""
    body = tuple(image.shape[1:])
    starts = np.arange(0, body[-1] - width + 1, stride)
    lo = np.zeros((len(starts), len(body)), dtype=np.int64)
    hi = np.tile(np.asarray(body, dtype=np.int64), (len(starts), 1))
    lo[:, -1], hi[:, -1] = starts, starts + width
    if channels is not None:
        lo[:, 0], hi[:, 0] = channels
    return Occlusions(image, lo, hi, baseline=torch.full_like(image, -0.5))


def _check(model, occ):
    graph = capture(model, occ.image)
    got = run_exact(graph, occ, plan_for(graph, occ), batch_size=5).outputs
    with torch.no_grad():
        clean = model(occ.image)
        want = run_naive(model, occ, 4)
    assert float((want - clean).abs().max()) > 1e-4
    torch.testing.assert_close(got - clean, want - clean, rtol=1e-4, atol=1e-5)


def test_conv1d_signal():
    torch.manual_seed(1)
    model = Conv1d()
    image = torch.randn(1, 2, 37)
    model(image)  # materialise the lazy head
    _check(model.eval(), _slab_occlusions(image, 4, 3))


def test_conv3d_volume():
    torch.manual_seed(2)
    model = Conv3d()
    image = torch.randn(1, 1, 7, 9, 10)
    model(image)
    _check(model.eval(), _slab_occlusions(image, 3, 2))


def test_per_channel_boxes_and_ragged_sizes():
    """Boxes over the channel axis and of different sizes per position (cropped at the border)."""
    torch.manual_seed(3)
    model = IMAGE_MODELS[2]().eval()  # Windows
    image = torch.randn(IMAGE_SHAPE)
    lo = np.array([[1, 0, 0], [0, 5, 9], [2, 8, 11], [0, 0, 0]])
    hi = np.array([[2, 4, 4], [3, 11, 13], [3, 11, 13], [3, 2, 13]])
    _check(model, Occlusions(image, lo, hi, baseline=torch.zeros_like(image)))


def test_every_registered_rule_is_exercised():
    """Coverage derived from the registry: every op with a rule occurs in one of the test graphs."""
    seen = set()
    torch.manual_seed(0)
    for cls in IMAGE_MODELS + [DirectOps, SamePadPool]:
        seen |= {c.target for c in capture(cls().eval(), torch.randn(IMAGE_SHAPE)).calls}
    for cls, shape in [(Conv1d, (1, 2, 37)), (Conv3d, (1, 1, 7, 9, 10))]:
        model = cls()
        model(torch.randn(shape))
        seen |= {c.target for c in capture(model.eval(), torch.randn(shape)).calls}
    from test_resample_rules import Pieces, Strided  # slices, upsampling, softmax, as_strided (tested there)

    for model in (Pieces("nearest"), Pieces("linear"), Strided()):
        seen |= {c.target for c in capture(model.eval(), torch.randn(1, 3, 32, 32)).calls}
    missing = [str(op) for op in RULES if op not in seen]
    assert not missing, f"rules without a test graph: {missing}"


def test_fallback_ops_are_reported():
    torch.manual_seed(0)
    image = torch.randn(IMAGE_SHAPE)
    graph = capture(IMAGE_MODELS[6]().eval(), image)  # Adaptive: ragged bins are computed in full
    occ = _slab_occlusions(image, 2, 5)
    plan = plan_for(graph, occ)
    ops = {op for _, op in plan.fallbacks}
    assert "aten._adaptive_avg_pool2d.default" in ops and "aten.addmm.default" in ops
    assert all(s.precise or s.call.op_name in ops for s in plan.steps)
    assert any(s.rule is FULL or not s.precise for s in plan.steps)


def test_clamped_index_gather_stays_incremental():
    torch.manual_seed(0)
    image = torch.randn(IMAGE_SHAPE)
    graph = capture(SamePadPool().eval(), image)
    plan = plan_for(graph, _slab_occlusions(image, 2, 3))
    assert not [op for _, op in plan.fallbacks if "index" in op]


def test_shared_tail_runs_once_for_many_batches(monkeypatch):
    """The steps every position computes whole (here the linear head) run on several batches at once."""
    torch.manual_seed(0)
    model = IMAGE_MODELS[2]().eval()  # Windows: conv/pool stack, then flatten + linear
    image = torch.randn(IMAGE_SHAPE)
    occ, _ = grid_occlusions(image, (3, 3), (2, 2), torch.zeros(3, 3, 3))
    graph = capture(model, image)
    plan = plan_for(graph, occ)
    groups = batches(plan, 4)
    start = shared_tail(plan, groups)
    assert start < len(plan.steps) and any("addmm" in s.call.op_name for s in plan.steps[start:])
    assert all(len({window(s, g).size for g in groups}) == 1 for s in plan.steps[start:])
    assert len({window(plan.steps[start - 1], g).size for g in groups}) > 1
    calls = []
    original = IncrementalRunner.run_tail
    counted = lambda self, heads, index: calls.append(len(heads)) or original(self, heads, index)  # noqa: E731
    monkeypatch.setattr(IncrementalRunner, "run_tail", counted)
    together = run_exact(graph, occ, plan, batch_size=4, tail_batch=occ.count).outputs
    assert calls == [-(-occ.count // 4)]  # one tail call holding every batch's head
    calls.clear()
    apart = run_exact(graph, occ, plan, batch_size=4, tail_batch=1).outputs
    assert calls == [1] * -(-occ.count // 4)
    with torch.no_grad():
        naive = run_naive(model, occ, 8)
    torch.testing.assert_close(together, naive, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(apart, naive, rtol=1e-4, atol=1e-5)


def test_shared_tail_takes_a_multi_output_op_with_its_getitem():
    """The tail reads single tensors only: a max pool (values, indices) starts the tail, not its getitem."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(9), nn.Flatten(), nn.Linear(4, 2))
    image = torch.randn(1, 3, 11, 11)
    graph = capture(model.eval(), image)
    occ, _ = grid_occlusions(image, (3, 3), (2, 2), torch.zeros(3, 3, 3))
    plan = plan_for(graph, occ)
    start = shared_tail(plan, batches(plan, 4))
    assert plan.steps[start].call.op_name == "aten.max_pool2d_with_indices.default"
    assert [n.name for n in tail_reads(plan, start)] == [plan.steps[start - 1].call.name]
    torch.testing.assert_close(run_exact(graph, occ, plan).outputs, run_naive(model, occ, 8), rtol=1e-4, atol=1e-5)

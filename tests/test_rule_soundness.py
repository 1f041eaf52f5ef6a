"""Soundness of every registered rule, checked from the registry: outside a call's predicted box its
output equals the clean run, for random occlusion boxes, in every test graph that uses the rule.

The plan's boxes (what the rules promise) are compared with the values of every node of the graph
computed in full on the clean image and on each occluded image (`engine.materialize`); no engine path
is involved, so a rule that under-reports where its output changes fails here even if the executor
happened to compute more. (Tightness - every cell inside a box can change - is not checked here: after
a ReLU, cells inside an exact box legitimately stay equal.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_resample_rules import Pieces, Shuffle, Strided

from krypton.capture import capture
from krypton.engine.materialize import materialize
from krypton.engine.plan import propagate
from krypton.modes.occlusions import Occlusions
from krypton.rules import RULES

from graphs import IMAGE_MODELS, IMAGE_SHAPE, Conv1d, Conv3d, DirectOps, SamePadPool

CASES = [(cls, IMAGE_SHAPE) for cls in IMAGE_MODELS + [DirectOps, SamePadPool]] + [
    (Conv1d, (1, 2, 37)),
    (Conv3d, (1, 1, 7, 9, 10)),
    (lambda: Pieces("nearest"), (1, 3, 32, 32)),
    (lambda: Pieces("linear"), (1, 3, 32, 32)),
    (lambda: Strided(identity_only=True), (1, 3, 32, 32)),
    (Shuffle, (1, 3, 16, 16)),
]
CHECKED: dict[object, int] = {}  # op -> steps checked (for the coverage test at the end)


def _random_boxes(shape: tuple[int, ...], count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    body = np.asarray(shape[1:])
    lo = np.zeros((count, len(body)), dtype=np.int64)
    hi = np.tile(body, (count, 1))
    for a in range(1, len(body)):  # channels whole (a patch), spatial extents random
        size = rng.integers(1, max(2, body[a] // 2) + 1, count)
        lo[:, a] = rng.integers(0, body[a] - size + 1)
        hi[:, a] = lo[:, a] + size
    return lo, hi


@pytest.mark.parametrize("case", range(len(CASES)))
def test_outside_the_box_every_output_is_clean(case):
    check_case(case)


def check_case(case: int) -> None:
    build, shape = CASES[case]
    torch.manual_seed(case)
    model = build().eval()
    image = torch.randn(shape)
    with torch.no_grad():
        model(image)  # lazy shapes (e.g. LazyLinear) are set
    graph = capture(model, image)
    rng = np.random.default_rng(case)
    lo, hi = _random_boxes(shape, 6, rng)
    occ = Occlusions(image, lo, hi, baseline=torch.randn_like(image) * 3)
    plan = propagate(graph, occ.boxes())
    clean = materialize(graph, image)
    for p in range(occ.count):
        occluded = materialize(graph, occ.images(np.array([p])))
        for step in plan.steps:
            boxes = step.primary
            value, base = occluded.get(step.call.node), clean.get(step.call.node)
            if isinstance(value, (tuple, list)):  # multi-output ops: boxes describe output 0
                value, base = value[0], base[0]
            if boxes is None or not isinstance(value, torch.Tensor) or value.dim() == 0:
                continue
            mask = torch.ones(value.shape[1:], dtype=torch.bool)
            box = tuple(slice(int(a), int(b)) for a, b in zip(boxes.lo[p], boxes.hi[p]))
            mask[box] = False
            changed = (value[0] - base[0]).abs()
            scale = float(base.abs().max()) + 1e-6
            outside = changed[mask]
            worst = float(outside.max()) if outside.numel() else 0.0
            assert worst <= 1e-5 * scale, (
                f"{step.call.name} ({step.call.op_name}, rule {step.rule.name}) changed outside its box at position {p}"
            )
            CHECKED[step.call.target] = CHECKED.get(step.call.target, 0) + 1


def test_every_registered_rule_was_checked():
    """The registry drives the coverage: every rule in RULES met a soundness check (the cases above, or
    run here when this test runs alone)."""
    if len(CHECKED) == 0:
        for case in range(len(CASES)):
            check_case(case)
    missing = [str(op) for op in RULES if op not in CHECKED]
    assert not missing, f"rules no soundness case exercised: {missing}"

"""Every rule, driven by the registry, on its sample sites (tests/rule_samples.py), random patches:

- soundness: outside the box a rule predicts, the op's output equals the clean run's;
- tightness, for rules declared `exact`: every cell inside the box does change for some fill.

Values come from running the captured graph in full (`engine.materialize`) on the clean and on the
occluded inputs; the engine's executor is not involved. Fills are +50, -50 and random per cell, so a
cell that can change (a max, a ReLU) does change for one of them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rule_samples import FAMILY_SAMPLES, SAMPLES

from krypton.capture import capture
from krypton.engine.materialize import materialize
from krypton.engine.plan import Step, propagate
from krypton.modes.occlusions import Occlusions
from krypton.rules.registry import FAMILIES, RULES

CASES = [(op, *sample) for op, samples in SAMPLES.items() for sample in samples] + [
    (family, *sample) for family, samples in FAMILY_SAMPLES.items() for sample in samples
]


def test_every_rule_has_sample_sites():
    missing = [str(op) for op in RULES if not SAMPLES.get(op)]
    assert not missing, f"rules without sample sites in tests/rule_samples.py: {missing}"
    names = {rule.name for _, rule in FAMILIES}
    assert names <= set(FAMILY_SAMPLES), f"rule families without samples: {names - set(FAMILY_SAMPLES)}"


def _patches(shape: tuple[int, ...], rng: np.random.Generator, count: int = 5) -> tuple[np.ndarray, np.ndarray]:
    body = np.asarray(shape[1:])
    lo = np.zeros((count, len(body)), dtype=np.int64)
    hi = np.tile(body, (count, 1))
    for a in range(1, len(body)):
        size = rng.integers(1, max(2, body[a] // 2) + 1, count)
        lo[:, a] = rng.integers(0, body[a] - size + 1)
        hi[:, a] = lo[:, a] + size
    return lo, hi


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def _steps_under_test(plan, target) -> list[Step]:
    if isinstance(target, str):  # a family: the steps whose rule is that family's rule
        return [s for s in plan.steps if s.rule.name == target]
    return [s for s in plan.steps if s.call.target is target]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[1]}" for c in CASES])
def test_rule_is_sound_and_tight_where_declared(case):
    target, name, build, shape = case
    torch.manual_seed(0)
    model = build().eval()
    image = torch.randn(shape)
    graph = capture(model, image)
    rng = np.random.default_rng(len(name))
    lo, hi = _patches(shape, rng)
    fills = [torch.full(shape, 50.0), torch.full(shape, -50.0), torch.randn(shape) * 10]
    plan = propagate(graph, Occlusions(image, lo, hi, baseline=fills[0]).boxes())
    steps = _steps_under_test(plan, target)
    assert steps, f"sample {name!r} does not call {target} on an image-dependent value"
    clean = materialize(graph, image)
    changed = {id(s): [None] * len(lo) for s in steps}
    for fill in fills:
        occ = Occlusions(image, lo, hi, baseline=fill)
        for p in range(len(lo)):
            occluded = materialize(graph, occ.images(np.array([p])))
            for step in steps:
                now, was = _first(occluded[step.call.node]), _first(clean[step.call.node])
                now, was = now.double(), was.double()
                diff = (now[0] - was[0]).abs() > 1e-6 * (float(was.abs().max()) + 1e-6)
                seen = changed[id(step)][p]
                changed[id(step)][p] = diff if seen is None else seen | diff
    for step in steps:
        for p in range(len(lo)):
            mask = torch.zeros(step.body, dtype=torch.bool)
            box = step.primary
            if box is not None:
                mask[tuple(slice(int(a), int(b)) for a, b in zip(box.lo[p], box.hi[p]))] = True
            moved = changed[id(step)][p]
            assert not (moved & ~mask).any(), f"{name}: {step.rule.name} changed outside its box (position {p})"
            if step.precise and step.rule.tight(step.site):
                still = int((mask & ~moved).sum())
                assert still == 0, f"{name}: {step.rule.name} declared exact, but {still} cells in its box never change"

"""Golden plans: what the planner does on VGG16 and ResNet18 (224 px, patch 16, stride 8, the engine's
default batch) is pinned step by step - rule, precision, the largest box and MACs per position - so a
change to any rule or to batching fails loudly here, with the first step that differs.

After an intended change, regenerate: `KRYPTON_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_plans.py`
and review the diff of tests/golden/*.json in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision

import krypton
from krypton.capture import capture
from krypton.modes.exact import plan_for
from krypton.modes.occlusions import grid_occlusions

GOLDEN = Path(__file__).resolve().parent / "golden"


def plan_record(name: str) -> dict:
    model = getattr(torchvision.models, name)(weights=None).eval()
    image = torch.zeros(1, 3, 224, 224)
    occ, _ = grid_occlusions(image, (16, 16), (8, 8), torch.zeros(3, 16, 16))
    plan = plan_for(capture(model, image), occ)
    steps = []
    for step in plan.steps:
        boxes = step.primary
        largest = [] if boxes is None else boxes.sizes().max(axis=0).tolist()
        steps.append([step.call.name, step.call.op_name, step.rule.name, bool(step.precise), largest, int(step.macs)])
    analysis = krypton.analyze(model, (3, 224, 224), patch=16, stride=8)
    return {
        "model": name,
        "positions": plan.count,
        "steps": steps,
        "naive_macs": int(analysis.naive_macs),
        "incremental_macs_per_position": round(float(analysis.incremental_macs)),
        "per_position_limit": round(float(analysis.per_position_speedup), 4),
        "batch_size": analysis.batch_size,
    }


@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_plan_matches_the_golden_record(name):
    record = plan_record(name)
    path = GOLDEN / f"plan_{name}.json"
    if os.environ.get("KRYPTON_UPDATE_GOLDEN"):  # one step per line: reviewable diffs
        head = {k: v for k, v in record.items() if k != "steps"}
        lines = ",\n".join("  " + json.dumps(step) for step in record["steps"])
        path.write_text(json.dumps(head, indent=1)[:-2] + ',\n "steps": [\n' + lines + "\n ]\n}\n")
    golden = json.loads(path.read_text())
    for i, (got, want) in enumerate(zip(record["steps"], golden["steps"])):
        assert got == want, f"step {i} changed: {want} -> {got}"
    assert len(record["steps"]) == len(golden["steps"])
    for key in ("positions", "naive_macs", "incremental_macs_per_position", "per_position_limit", "batch_size"):
        assert record[key] == golden[key], f"{key}: {golden[key]} -> {record[key]}"

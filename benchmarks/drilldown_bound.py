"""How good can any drill-down be? An upper bound from the exact maps themselves (issue 14).

For every real model and image (as `bench_drilldown.py`), the exact map is computed once; then, offline
(no model runs), each budget (a share of the fine grid's positions) is spent three ways and the SSIM of
the resulting map against the exact one is reported:
- "refine": the rule krypton runs (`krypton.modes.refine`), replayed on the exact values;
- "oracle": the same first lattice and interpolation, but the remaining budget goes, a few cells at a
  time, to the cells whose current estimate is furthest from the exact value - a choice no real rule
  can make (it needs the map it is trying to save computing). If even the oracle misses SSIM 0.9 at a
  budget, no choice of cells reaches it there;
- "lattice": the first lattice alone, interpolated (what the budget buys without adapting).

    .venv/bin/python benchmarks/drilldown_bound.py [--models xray mri imagenet distilled] [--stride S]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from bench_drilldown import GRID, model_and_images  # noqa: E402

import krypton  # noqa: E402
from krypton.modes.refine import Refinement  # noqa: E402
from krypton.scores import probabilities  # noqa: E402

BUDGETS = (1 / 2, 1 / 3, 1 / 4)
CACHE = Path(__file__).resolve().parent / ".cache" / "exact-maps"


def exact_maps(name: str, stride: int | None) -> list[tuple[np.ndarray, int]]:
    """(logits on the grid (*grid, K), target) of every image, cached: the exact runs take minutes."""
    patch, default = GRID[name]
    stride = stride or default
    model, images = model_and_images(name)
    maps = []
    for image_name, image in images:
        path = CACHE / f"{name}-{image_name}-p{patch}-s{stride}.npz"
        if not path.exists():
            exact = krypton.explain(model, image, patch=patch, stride=stride)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, scores=exact.scores.double().numpy(), target=exact.target)
        stored = np.load(path)
        maps.append((stored["scores"], int(stored["target"])))
    return maps


def heat(scores: np.ndarray, target: int) -> np.ndarray:
    return probabilities(torch.from_numpy(scores))[..., target].numpy()


def spend(scores: np.ndarray, target: int, budget: float, how: str) -> np.ndarray:
    """The map a drill-down of `budget` (share of positions) gives when its cells are chosen `how`."""
    grid, classes = scores.shape[:-1], scores.shape[-1]
    visit = Refinement(grid, round(budget * np.prod(grid)))
    values = np.full(scores.shape, np.nan)
    flat, truth = values.reshape(-1, classes), scores.reshape(-1, classes)
    rows = visit.start()
    exact = heat(scores, target)
    while True:
        flat[rows] = truth[rows]
        estimate = heat(visit.estimate(values), target)
        left = visit.budget - int(visit.known.sum())
        if how == "lattice" or left <= 0:
            return estimate
        if how == "refine":
            rows = visit.choose(estimate)
            if not len(rows):
                return estimate
            continue
        error = np.abs(estimate - exact).reshape(-1)  # the oracle: where the estimate is furthest off
        error[visit.known.reshape(-1)] = -1
        rows = np.argsort(-error, kind="stable")[: max(1, min(left, visit.budget // 25))]
        visit.known.reshape(-1)[rows] = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(GRID), choices=list(GRID))
    parser.add_argument("--stride", type=int, default=None, help="instead of each model's default stride")
    args = parser.parse_args()
    print("| model | patch/stride | images | positions computed | rule | SSIM mean (min) | images >= 0.9 |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        maps = exact_maps(name, args.stride)
        patch, stride = GRID[name][0], args.stride or GRID[name][1]
        for budget in BUDGETS:
            for how in ("lattice", "refine", "oracle"):
                values = [krypton.ssim(heat(s, t), spend(s, t, budget, how)) for s, t in maps]
                good = sum(v >= 0.9 for v in values)
                print(f"| {name} | {patch}/{stride} | {len(maps)} | 1/{round(1 / budget)} | {how} | "
                      f"{np.mean(values):.3f} ({min(values):.3f}) | {good}/{len(maps)} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

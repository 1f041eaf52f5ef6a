"""The engine alone, as users call it: `explain(path="incremental")` on one model, first call and later calls.

For A/B comparisons of engine changes: run it alternately against two checkouts in fresh processes
(the other checkout first on PYTHONPATH, e.g. a `git worktree` of the older commit):

    PYTHONPATH=/tmp/old .venv/bin/python benchmarks/bench_engine_calls.py tv:resnet18 --stride 16
    .venv/bin/python benchmarks/bench_engine_calls.py tv:resnet18 --stride 16

Graph captured before timing; random weights (torchvision "tv:" names, else timm with 10 classes);
prints the first call and the median of the later ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import krypton  # noqa: E402
from krypton.pipeline import graph_for  # noqa: E402

from _common import timed, torchvision_model  # noqa: E402

warnings.filterwarnings("ignore")


def build(name: str) -> tuple[torch.nn.Module, int]:
    if name.startswith("tv:"):
        return torchvision_model(name[3:])
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10).eval(), 224


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--calls", type=int, default=4)
    args = parser.parse_args()
    model, size = build(args.model)
    torch.manual_seed(1)
    image = torch.randn(3, size, size)
    graph_for(model, image[None])
    seconds = []
    for _ in range(args.calls):
        took, result = timed(
            lambda: krypton.explain(model, image, patch=args.patch, stride=args.stride, path="incremental")
        )
        seconds.append(took)
    later = statistics.median(seconds[1:]) if len(seconds) > 1 else float("nan")
    print(f"{args.model} ({krypton.__file__}): {result.stats['positions']} positions, first {seconds[0]:.3f} s, "
          f"later median {later:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()

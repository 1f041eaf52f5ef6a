"""What the pipeline's choice of path costs: `explain(path="auto")` against both paths forced.

Each path of each model runs in its own fresh process (so every first call pays its own one-time kernel
setup, as a user's first call does), graph captured before timing (capture costs are in
bench_capture.py), same image and positions: `--repeats` calls of auto, of incremental (engine forced
on) or of naive (`path="naive"`: the pipeline's fastest naive, channels-last inputs, adaptive batch).
The first auto call pays the naive probe and calibration; later ones follow what it measured (same plan).
Printed per model: the first call of each path, the median of the later calls, and auto over the faster
forced path for both (1.00 = the faster path at no cost; the issue's bound is 1.10), with the path and
reason auto recorded on its first and last call.

    .venv/bin/python benchmarks/bench_path_choice.py [--models tv:resnet18 regnetx_002 ...] [--stride 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine_calls import build  # noqa: E402

import krypton  # noqa: E402
from krypton.pipeline import graph_for  # noqa: E402

from _common import timed  # noqa: E402

warnings.filterwarnings("ignore")
MODELS = ["tv:resnet18", "regnetx_002", "mobilenetv4_conv_small_050", "mobileone_s0", "lcnet_050", "levit_128s"]


def timings(name: str, path: str, patch: int, stride: int, repeats: int) -> dict:
    """In this process: the graph captured, then `repeats` timed calls of one path."""
    model, size = build(name)
    torch.manual_seed(1)
    image = torch.randn(3, size, size)
    graph_for(model, image[None])
    seconds, why = [], []
    for _ in range(repeats):
        took, result = timed(lambda: krypton.explain(model, image, patch=patch, stride=stride, path=path))
        seconds.append(took)
        why.append(f"{result.stats['path']}: {result.stats['reason']}")
    return {"seconds": seconds, "positions": result.stats["positions"], "why": why}


def row(name: str, patch: int, stride: int, repeats: int) -> str:
    runs = {}
    for path in ("auto", "incremental", "naive"):
        command = [sys.executable, __file__, "--child", path, "--models", name]
        command += ["--patch", str(patch), "--stride", str(stride), "--repeats", str(repeats)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        runs[path] = json.loads(done.stdout.strip().splitlines()[-1])
    first = {path: run["seconds"][0] for path, run in runs.items()}
    later = {path: statistics.median(run["seconds"][1:]) for path, run in runs.items()}
    first_ratio = first["auto"] / min(first["incremental"], first["naive"])
    later_ratio = later["auto"] / min(later["incremental"], later["naive"])
    cells = " | ".join(f"{first[p]:.2f} / {later[p]:.2f}" for p in ("naive", "incremental", "auto"))
    auto = runs["auto"]
    why = f"{auto['why'][0]}; last: {auto['why'][-1]}"
    return f"| {name} | {auto['positions']} | {cells} | {first_ratio:.2f} | {later_ratio:.2f} | {why} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--child", choices=("auto", "incremental", "naive"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(timings(args.models[0], args.child, args.patch, args.stride, args.repeats)))
        return
    print(
        "| model | positions | naive s, first / later | incremental s, first / later | auto s, first / later | "
        "auto / faster, first calls | auto / faster, later calls | auto's path and reason, first and last call |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        print(row(name, args.patch, args.stride, args.repeats), flush=True)


if __name__ == "__main__":
    main()

"""Partial graphs on timm's hybrid CNN-attention models: the stem incremental, the batch-folding rest per
position. Per model: `analyze` (batched and per-position MAC ratio, the rest's share of the MACs), then
`krypton.explain` exact (path "auto", graph captured before timing) against naive mode (the pipeline's
fastest full inference) on the same grid in this process, best of 2, with the largest difference relative
to the largest occlusion effect. timm is a benchmark-only dependency (installed by hand).

    .venv/bin/python benchmarks/bench_partial.py [--models botnet26t_256 coatnet_0_rw_224] [--stride 16]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo import build  # noqa: E402

import krypton  # noqa: E402
from krypton.pipeline import graph_for  # noqa: E402


def row(name: str, stride: int) -> str:
    model = build(name)
    size = 256 if name.endswith("_256") else 224
    torch.manual_seed(1)
    image = torch.randn(3, size, size)
    try:
        graph_for(model, image[None])
    except Exception as exc:  # noqa: BLE001 - a model that cannot be captured is a result too
        return f"| {name} | capture failed: {str(exc).splitlines()[0][:70]} | | | | | | |"
    analysis = krypton.analyze(model, (3, size, size), patch=16, stride=stride)
    rest = sum(op["naive_macs"] for op in analysis.ops if op["op"] == "rest of the graph") / analysis.naive_macs
    times: dict[str, list[float]] = {}
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2):
            for mode in ("naive", "exact"):
                started = time.perf_counter()
                results[mode] = krypton.explain(model, image, patch=16, stride=stride, mode=mode, progress=False)
                times.setdefault(mode, []).append(time.perf_counter() - started)
    naive, exact = results["naive"], results["exact"]
    effect = float((naive.scores - naive.clean_scores).abs().max()) + 1e-12
    diff = float((exact.scores - naive.scores).abs().max()) / effect
    ratio = min(times["naive"]) / min(times["exact"])
    return (f"| {name} | {exact.stats['positions']} | {analysis.speedup:.2f}x | {analysis.per_position_speedup:.2f}x | "
            f"{rest:.0%} | {min(times['naive']):.2f} | {min(times['exact']):.2f} ({exact.stats['path']}) | "
            f"{ratio:.2f}x | {diff:.1e} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["botnet26t_256", "coatnet_0_rw_224", "halonet26t"])
    parser.add_argument("--stride", type=int, default=16)
    args = parser.parse_args()
    print("| model | positions | analyze | per position | rest of graph (share of MACs) | naive s | exact s (path) "
          "| naive / exact | max diff / effect |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        print(row(name, args.stride), flush=True)


if __name__ == "__main__":
    main()

"""Exact incremental inference vs naive full re-inference (issue 2's benchmark).

VGG16, ResNet18 and Inception3 (torchvision, random weights), patch 16, stride 4, fill 0, on the same
fixed random sample of grid positions, in one process. Naive runs at its fastest batch size (chosen
from a short trial); exact at the engine's default. The modes run `--repeat` times each, interleaved;
prints the ratio of the fastest runs, the median (and range) of the exact/naive pair ratios, the
theoretical (MAC) ratio and the peak resident-memory growth (sampled on 64 positions). A second
baseline runs the model converted to channels-last layout (PyTorch's CPU kernels, pooling above all,
are faster in it; the engine gathers windows channels-last), so the layout's share of the gain shows.

    .venv/bin/python benchmarks/bench_exact.py [--positions 256] [--models vgg16 resnet18 inception_v3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from krypton.api import _analysis, captured
from krypton.modes.exact import auto_batch, plan_for, run_exact
from krypton.modes.naive import run_naive
from krypton.modes.occlusions import Occlusions

from _common import channels_last, measure, sample_positions, torchvision_model

PAPER_CPU = {"vgg16": 5.4, "resnet18": 2.1, "inception_v3": 1.5}


def best_naive_batch(model: torch.nn.Module, occ: Occlusions, candidates=(8, 16, 32)) -> int:
    """The batch size with the lowest time per position on a short trial (32 positions each)."""
    trial = Occlusions(occ.image, occ.lo[:32], occ.hi[:32], patch=occ.patch)
    timings = {b: measure(lambda b=b: run_naive(model, trial, b))[0] for b in candidates}
    return min(timings, key=timings.get)


def paired(repeat: int, fns: list) -> tuple[list[list[float]], list]:
    """Seconds of `repeat` runs of each function, interleaved (a, b, c, a, b, c, ...), and last results.

    The machine's speed drifts by 20 % over minutes; interleaving lets each exact run be compared
    with the naive runs right after it, so the median of the pair ratios is robust to the drift.
    Timed runs have no memory sampler (its thread costs the Python-heavier exact mode ~8 %).
    """
    seconds: list[list[float]] = [[] for _ in fns]
    results: list = [None] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            seconds[i].append(time.perf_counter() - start)
    return seconds, results


def run(name: str, positions: int, repeat: int) -> dict:
    model, size = torchvision_model(name)
    torch.manual_seed(1)
    image = torch.randn(1, 3, size, size)
    occ = sample_positions(image, 16, 4, positions)
    graph = captured(model, image)
    plan = plan_for(graph, occ)
    batch = auto_batch(plan)
    theory = _analysis(plan, batch).speedup
    naive_batch = best_naive_batch(model, occ)
    model_cl, image_cl = channels_last(model, image)
    occ_cl = Occlusions(image_cl, occ.lo, occ.hi, patch=occ.patch)
    cl_batch = best_naive_batch(model_cl, occ_cl)
    run_exact(graph, Occlusions(image, occ.lo[:batch], occ.hi[:batch], patch=occ.patch), batch_size=batch)  # warm-up
    (exact_s, naive_s, cl_s), (exact, naive, _) = paired(
        repeat,
        [
            lambda: run_exact(graph, occ, plan, batch),
            lambda: run_naive(model, occ, naive_batch),
            lambda: run_naive(model_cl, occ_cl, cl_batch),
        ],
    )
    head = Occlusions(image, occ.lo[:64], occ.hi[:64], patch=occ.patch)
    m_exact = measure(lambda: run_exact(graph, head, batch_size=batch))[1]
    m_naive = measure(lambda: run_naive(model, head, naive_batch))[1]
    with torch.no_grad():
        clean = model(image)
    err = float(((exact.outputs - clean) - (naive - clean)).abs().max())
    ratios = [n / e for e, n in zip(exact_s, naive_s)]
    return {
        "model": name,
        "positions": occ.count,
        "naive_batch": naive_batch,
        "exact_batch": batch,
        "naive_s": min(naive_s),
        "exact_s": min(exact_s),
        "ratio": min(naive_s) / min(exact_s),
        "median": statistics.median(ratios),
        "spread": (min(ratios), max(ratios)),
        "theory": theory,
        "cl_s": min(cl_s),
        "cl_batch": cl_batch,
        "cl_ratio": statistics.median(c / e for e, c in zip(exact_s, cl_s)),
        "naive_mb": m_naive / 2**20,
        "exact_mb": m_exact / 2**20,
        "max_err": err,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=256)
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet18", "inception_v3"])
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per mode")
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"# {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        "| model | positions | naive s (batch) | exact s (batch) | speedup, best of each | median of pairs "
        "(range) | theoretical | paper CPU | naive channels-last s (batch), median ratio | peak MB naive / exact "
        "| max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        r = run(name, args.positions, args.repeat)
        print(
            f"| {name} | {r['positions']} | {r['naive_s']:.1f} ({r['naive_batch']}) | {r['exact_s']:.1f} "
            f"({r['exact_batch']}) | **{r['ratio']:.2f}x** | {r['median']:.2f}x ({r['spread'][0]:.2f}-"
            f"{r['spread'][1]:.2f}) | {r['theory']:.2f}x | {PAPER_CPU[name]}x | "
            f"{r['cl_s']:.1f} ({r['cl_batch']}), {r['cl_ratio']:.2f}x | "
            f"{r['naive_mb']:.0f} / {r['exact_mb']:.0f} | {r['max_err']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Volumes and signals: krypton exact vs naive (as given, channels-last-3-D) vs MONAI's OcclusionSensitivity.

One process, same inputs. Per 3-D model and size: the theoretical ratio from `krypton.analyze` (patch 16,
stride 8, the engine's default batch), then a contiguous block of grid positions from the middle of the grid
evaluated naive (batch 4; model as given and a channels_last_3d copy) and by the engine (graph captured
before timing; its clean pass timed apart and charged per position over the whole grid, as a whole-grid
run pays it once); ratios per position, and the engine's share of the MAC ratio of the very positions
timed. Then `krypton.monai.OcclusionSensitivity` vs MONAI's own class with
MONAI's defaults (mask 16, overlap 0.6, gaussian, n_batch 16) on a bounding box (the same windows for
both; MONAI's full volume takes hours here). Finally a Conv1d network on a long signal.

    .venv/bin/python benchmarks/bench_volumes.py [--models resnet18_3d ...] [--sizes 64 96] [--sample 24] [--box 24]
        [--repeat 3]          # alternating rounds of naive and engine per 3-D row: medians
    .venv/bin/python benchmarks/bench_volumes.py --models          # the Conv1d signal row only

At 96^3 a naive activation is hundreds of MB and glibc gives freed memory back to the system, so naive
(more than the engine) pays page faults that a long-lived process may not: for the fastest naive known,
run it with `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=1073741824`
(RESULTS.md#volumes: DenseNet121-3D's ratio 2.45-2.54x without, 1.89-1.94x with).
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import krypton  # noqa: E402
from krypton.modes.exact import run_exact  # noqa: E402
from krypton.modes.naive import run_naive  # noqa: E402
from krypton.modes.occlusions import grid_occlusions  # noqa: E402
from krypton.pipeline import graph_for  # noqa: E402

from _common import timed  # noqa: E402

warnings.filterwarnings("ignore")


def monai_model(name: str) -> nn.Module:
    from monai.networks.nets import DenseNet121, resnet18

    torch.manual_seed(0)
    if name == "densenet121_3d":
        return DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).eval()
    return resnet18(spatial_dims=3, n_input_channels=1, num_classes=2).eval()


def timed_block(occ, sample: int):
    """A contiguous block of `sample` grid positions from the middle of the grid (neighbours batch together,
    as in a whole-grid run; random samples would batch dissimilar windows)."""
    start = max(0, occ.count // 2 - sample // 2)
    return np.arange(start, min(occ.count, start + sample))


def engine_setup(graph, part, whole_grid: int):
    """The engine ready to time on `part`: (run, fixed seconds per position, clean-pass seconds, MAC ratio of
    these positions as batched); `run()` -> (seconds, outputs) of one warm run over them.

    The clean pass is timed apart and charged per position over the whole grid (a whole-grid run pays
    it once); so are first-use costs (kernel setup for each new window shape, allocator growth, the clean
    values' padded channels-last copies): a cold run and a warm run here, the cold run's excess charged over
    the whole grid. The MAC ratio is the plan's for the very positions timed, batched as the run batches them.
    """
    from krypton.engine.gather import PaddedCache
    from krypton.engine.materialize import materialize
    from krypton.engine.plan import batch_macs, batches
    from krypton.modes.exact import auto_batch, plan_for

    clean_s, clean = timed(lambda: materialize(graph, part.image))
    plan = plan_for(graph, part)
    size = auto_batch(plan)
    spent = sum(batch_macs(plan, b) for b in batches(plan, size)) + plan.untouched_macs * part.count
    padded = PaddedCache()  # the clean values' channels-last copies: a whole-grid run makes them once

    def run() -> tuple[float, torch.Tensor]:
        seconds, result = timed(lambda: run_exact(graph, part, plan, size, clean=clean, cache=padded))
        return seconds, result.outputs

    cold_s, _ = run()
    warm_s, _ = run()
    fixed = (clean_s + max(0.0, cold_s - warm_s)) / whole_grid
    return run, fixed, clean_s, plan.naive_macs() * part.count / spent


def engine_row(name: str, size: int, sample: int, repeat: int = 1) -> None:
    """One table row; with `repeat` > 1 the naive baselines and the engine alternate that many rounds, each
    round's ratio is engine vs the best naive of the same round, and the row gives medians (the ratio's range
    in brackets): the machine's speed drifts by 20 % over minutes (RESULTS.md#volumes)."""
    model = monai_model(name)
    torch.manual_seed(1)
    volume = torch.randn(1, 1, size, size, size)
    analysis = krypton.analyze(model, tuple(volume.shape), patch=16, stride=8)
    occ, _ = grid_occlusions(volume, (16, 16, 16), (8, 8, 8), torch.zeros(1, 16, 16, 16))
    rows = timed_block(occ, sample)
    part = occ.subset(rows)
    graph = graph_for(model, volume).graph
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
    cl_part = part.subset(np.arange(part.count))
    cl_part.image = volume.contiguous(memory_format=torch.channels_last_3d)
    rounds = []
    with torch.no_grad():
        for net, positions in ((model, part), (cl_model, cl_part)):  # first-use costs out of the timings
            run_naive(net, positions.subset(np.arange(4)), 4)
        run, fixed, clean_s, macs_ratio = engine_setup(graph, part, occ.count)
        for _ in range(repeat):
            naive_s, naive = timed(lambda: run_naive(model, part, 4))
            naive_cl_s, _ = timed(lambda: run_naive(cl_model, cl_part, 4))
            exact_s, exact = run()
            rounds.append((naive_s / len(rows), naive_cl_s / len(rows), exact_s / len(rows) + fixed))
    diff = float((exact - naive).abs().max() / (naive.abs().max() + 1e-12))
    naive_pos, naive_cl_pos, exact_pos = np.median(np.asarray(rounds), axis=0)
    ratios = [min(a, b) / c for a, b, c in rounds]
    ratio = float(np.median(ratios))
    spread = f" ({min(ratios):.2f}-{max(ratios):.2f}, {repeat} rounds)" if repeat > 1 else ""
    print(
        f"| {name} | {size}^3 | {occ.count} | {len(rows)} | {naive_pos:.3f} | "
        f"{naive_cl_pos:.3f} | {exact_pos:.3f} ({clean_s:.2f}) | {ratio:.2f}x{spread} | "
        f"{analysis.speedup:.2f}x | {analysis.per_position_speedup:.2f}x | {macs_ratio:.2f}x | "
        f"{ratio / macs_ratio:.0%} | {diff:.1e} |",
        flush=True,
    )


def monai_row(name: str, size: int, box: int) -> None:
    from monai.visualize import OcclusionSensitivity as Monai

    from krypton.monai import OcclusionSensitivity

    model = monai_model(name)
    torch.manual_seed(2)
    x = torch.randn(1, 1, size, size, size)
    lo = size // 2 - box // 2
    b_box = [lo, lo + box - 1] * 3
    theirs_s, (theirs, _) = timed(lambda: Monai(model, verbose=False)(x, b_box=b_box))
    ours_obj = OcclusionSensitivity(model, verbose=False)
    ours_s, (ours, _) = timed(lambda: ours_obj(x, b_box=b_box))
    diff = float((ours.as_tensor() - theirs.as_tensor()).abs().max())
    print(
        f"| {name} | {size}^3 | {b_box} | {theirs_s:.1f} | {ours_s:.1f} | {theirs_s / ours_s:.2f}x | "
        f"{ours_obj.stats.get('path')} | {diff:.1e} |",
        flush=True,
    )


def signal_row(length: int, sample: int) -> None:
    torch.manual_seed(0)
    layers = []
    channels = 12
    for width in (32, 64, 64, 128, 128):
        layers += [nn.Conv1d(channels, width, 9, padding=4), nn.BatchNorm1d(width), nn.ReLU(), nn.MaxPool1d(2)]
        channels = width
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels, 5)).eval()
    signal = torch.randn(1, 12, length)
    analysis = krypton.analyze(model, tuple(signal.shape), patch=(64,), stride=(32,))
    occ, _ = grid_occlusions(signal, (64,), (32,), torch.zeros(12, 64))
    rows = timed_block(occ, sample)
    part = occ.subset(rows)
    graph = graph_for(model, signal).graph
    with torch.no_grad():
        run_naive(model, part.subset(np.arange(2)), 2)
        naive_s, naive = timed(lambda: run_naive(model, part, 64))
        run, fixed, _, macs_ratio = engine_setup(graph, part, occ.count)
        exact_s, exact = run()
    exact_pos = exact_s / len(rows) + fixed
    diff = float((exact - naive).abs().max() / (naive.abs().max() + 1e-12))
    naive_pos = naive_s / len(rows)
    print(f"| conv1d 5 blocks, 12-lead x {length} | {occ.count} | {len(rows)} | {naive_pos * 1e3:.2f} | "
          f"{exact_pos * 1e3:.2f} | {naive_pos / exact_pos:.2f}x | {analysis.speedup:.2f}x | {macs_ratio:.2f}x | "
          f"{diff:.1e} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=["resnet18_3d", "densenet121_3d"])  # none: the signal only
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 96])
    parser.add_argument("--sample", type=int, default=24, help="grid positions timed per model and size")
    parser.add_argument("--box", type=int, default=24, help="side of the bounding box for the MONAI comparison")
    parser.add_argument("--signal", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=1, help="alternating rounds of naive and engine per 3-D row")
    args = parser.parse_args()
    print(
        "| model | volume | grid positions | timed | naive s/pos | naive channels-last-3d s/pos | "
        "exact s/pos (clean pass s) | exact vs best naive | analyze (batched) | analyze (per position) | "
        "MAC ratio of the timed block | share of MAC ratio | max rel diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for size in args.sizes:
            engine_row(name, size, args.sample, args.repeat)
    print("\n| model | volume | b_box | MONAI s | krypton.monai s | ratio | path | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        monai_row(name, max(args.sizes), args.box)
    print("\n| model | positions | timed | naive ms/pos | exact ms/pos | ratio | analyze | MAC ratio of the block "
          "| max rel diff |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    signal_row(args.signal, 64)


if __name__ == "__main__":
    main()

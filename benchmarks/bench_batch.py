"""Dataset-scale throughput of `krypton.scale.explain_many` (issue 7's benchmark).

Images per minute with 1 and 2 workers, exact incremental mode vs naive re-inference, each image
explained on its own (one worker = this process with one torch thread; 2 workers = a local Ray with
one CPU and one torch thread each). Default: the bundled pneumonia Xception on its real chest X-rays
at patch 32, stride 16 (64 positions per image). Every run writes to a fresh folder (nothing resumed).

"img/min" counts from the moment the workers are ready (model loaded, graph captured); "wall" also
includes Ray and model start-up, which a long run pays once.

    .venv/bin/python benchmarks/bench_batch.py [--images 8] [--model xray] [--patch 32 --stride 16]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from krypton.scale import expand, explain_many


def run(args: argparse.Namespace, mode: str, workers: int, out: Path) -> dict:
    started = time.perf_counter()
    summary = explain_many(
        args.model,
        args.selected,
        out_dir=out,
        weights=args.weights,
        size=args.size,
        patch=args.patch,
        stride=args.stride,
        mode=mode,
        workers=workers,
        cpus_per_worker=1,
        progress=False,
        verbose=False,
    )
    wall = time.perf_counter() - started
    return {
        "mode": mode,
        "workers": workers,
        "ok": summary.explained,
        "failed": summary.failed,
        "steady": summary.images_per_minute,
        "wall": wall,
        "overall": 60.0 * summary.explained / wall,
        "positions": summary.records[0].get("positions") if summary.records else None,
    }


def max_difference(folder_a: Path, folder_b: Path, ids: list[str]) -> float:
    """Largest |score| difference between two runs' raw outputs (exact vs naive: float noise only)."""
    worst = 0.0
    for image in ids:
        with np.load(folder_a / f"{image}.npz") as a, np.load(folder_b / f"{image}.npz") as b:
            worst = max(worst, float(np.abs(a["scores"] - b["scores"]).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="xray")
    parser.add_argument("--weights")
    parser.add_argument("--size", type=int)
    parser.add_argument("--inputs", nargs="+", default=None, help="default: the model's demo images (xray:)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=["exact", "naive"])
    args = parser.parse_args()
    args.inputs = args.inputs or [f"{args.model}:"]
    args.size = (args.size, args.size) if args.size else None
    args.selected = [item.token or item.path for item in expand(args.inputs)[: args.images]]
    ids = [item.id for item in expand(args.selected)]
    load = os.getloadavg()
    print(
        f"krypton batch benchmark: {args.model}, {len(ids)} images, patch {args.patch}, stride {args.stride}; "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at start, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="krypton-bench-") as tmp:
        for workers in args.workers:
            for mode in args.modes:
                out = Path(tmp) / f"{mode}-{workers}"
                row = run(args, mode, workers, out)
                row["out"] = out
                rows.append(row)
                print(
                    f"  {mode:6s} {workers} worker{'s' if workers > 1 else ' '}: {row['steady']:6.1f} img/min "
                    f"once ready, {row['overall']:6.1f} img/min overall ({row['wall']:.0f} s wall, "
                    f"{row['ok']} ok, {row['failed']} failed, {row['positions']} positions/image)",
                    flush=True,
                )
        by = {(r["mode"], r["workers"]): r for r in rows}
        print("summary (images per minute once workers are ready):")
        for workers in args.workers:
            if ("exact", workers) in by and ("naive", workers) in by:
                exact, naive = by[("exact", workers)], by[("naive", workers)]
                diff = max_difference(exact["out"], naive["out"], ids)
                print(
                    f"  {workers} worker(s): exact {exact['steady']:.1f} vs naive {naive['steady']:.1f} "
                    f"= {exact['steady'] / max(naive['steady'], 1e-9):.2f}x; max |exact - naive| score {diff:.1e}"
                )
        for mode in args.modes:
            if (mode, 1) in by and (mode, 2) in by:
                one, two = by[(mode, 1)], by[(mode, 2)]
                print(f"  {mode}: 2 workers vs 1 = {two['steady'] / max(one['steady'], 1e-9):.2f}x")
    print(f"load average at end {os.getloadavg()[0]:.1f} (other jobs on this machine skew the numbers)")


if __name__ == "__main__":
    main()

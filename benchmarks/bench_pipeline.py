"""`krypton.explain` as users call it (path="auto") vs the engine forced on vs the two naive baselines.

One process, same image and positions; the graph is captured once before timing (first-call and
capture costs are in bench_capture.py). Per model: naive as given (the caller's layout, batch 16),
naive on a channels-last copy, `explain(path="incremental")` and `explain(path="auto")` (what the
pipeline decides, including its naive probe batches and calibration). Printed: seconds, ratios against
the faster naive, and the pipeline's recorded path and reason.

    .venv/bin/python benchmarks/bench_pipeline.py [--models resnet18 vgg16 inception_v3] [--stride 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import krypton  # noqa: E402
from krypton.modes.naive import run_naive  # noqa: E402
from krypton.modes.occlusions import grid_occlusions  # noqa: E402
from krypton.pipeline import graph_for  # noqa: E402

from _common import channels_last, timed, torchvision_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg16", "inception_v3"])
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=8)
    args = parser.parse_args()
    print(
        "| model | positions | naive s | naive channels-last s | incremental s | auto s | "
        "auto vs best naive | auto path | reason |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        row(name, args.patch, args.stride)


def row(name: str, patch: int, stride: int) -> None:
    model, size = torchvision_model(name)
    torch.manual_seed(1)
    image = torch.randn(3, size, size)
    graph_for(model, image[None])
    fill = torch.zeros(3, patch, patch)
    occ, _ = grid_occlusions(image[None], (patch, patch), (stride, stride), fill)
    cl_model, cl_image = channels_last(model, image[None])
    cl_occ, _ = grid_occlusions(cl_image, (patch, patch), (stride, stride), fill)
    naive_s, _ = timed(lambda: run_naive(model, occ, 16))
    naive_cl_s, _ = timed(lambda: run_naive(cl_model, cl_occ, 16))
    inc_s, inc = timed(lambda: krypton.explain(model, image, patch=patch, stride=stride, path="incremental"))
    auto_s, auto = timed(lambda: krypton.explain(model, image, patch=patch, stride=stride))
    best = min(naive_s, naive_cl_s)
    print(
        f"| {name} | {occ.count} | {naive_s:.1f} | {naive_cl_s:.1f} | {inc_s:.1f} | {auto_s:.1f} | "
        f"{best / auto_s:.2f}x | {auto.stats['path']} | {auto.stats['reason']} |",
        flush=True,
    )
    torch.testing.assert_close(auto.scores, inc.scores, rtol=1e-3, atol=1e-4 * float(inc.scores.abs().max()))


if __name__ == "__main__":
    main()

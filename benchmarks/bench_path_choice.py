"""What the pipeline's choice of path costs: `explain(path="auto")` against both paths forced.

One process per run, graph captured before timing (capture costs are in bench_capture.py), same image and
positions for every call. Per model, `--repeats` rounds of auto, incremental (engine forced on) and naive
(`path="naive"`: the pipeline's fastest naive, channels-last inputs and adaptive batch), interleaved.
The first auto call pays the probe and calibration; later ones follow what it measured (same plan).
Printed per model: median seconds of each path, the first auto call and the median of the later ones
over the faster forced path (1.00 = chose the faster path at no cost; the issue's bound is 1.10), and
the first call's recorded reason.

    .venv/bin/python benchmarks/bench_path_choice.py [--models tv:resnet18 regnetx_002 ...] [--stride 16]
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

from _common import timed  # noqa: E402

warnings.filterwarnings("ignore")
MODELS = ["tv:resnet18", "regnetx_002", "mobilenetv4_conv_small_050", "mobileone_s0", "lcnet_050", "levit_128s"]


def build(name: str) -> torch.nn.Module:
    """torchvision ("tv:" prefix, weights=None) or timm (num_classes=10, benchmark-only extra), seeded."""
    torch.manual_seed(0)
    if name.startswith("tv:"):
        import torchvision

        return getattr(torchvision.models, name[3:])(weights=None).eval()
    import timm

    return timm.create_model(name, pretrained=False, num_classes=10).eval()


def row(name: str, patch: int, stride: int, repeats: int) -> str:
    model = build(name)
    torch.manual_seed(1)
    image = torch.randn(3, 224, 224)
    graph_for(model, image[None])
    seconds: dict[str, list[float]] = {"auto": [], "incremental": [], "naive": []}
    first_reason = ""
    for _ in range(repeats):
        for path, spent in seconds.items():
            took, result = timed(lambda: krypton.explain(model, image, patch=patch, stride=stride, path=path))
            spent.append(took)
            if path == "auto" and not first_reason:
                first_reason = f"{result.stats['path']}: {result.stats['reason']}"
    median = {path: statistics.median(spent) for path, spent in seconds.items()}
    faster = min(median["incremental"], median["naive"])
    later = statistics.median(seconds["auto"][1:]) if repeats > 1 else float("nan")
    positions = result.stats["positions"]
    return (
        f"| {name} | {positions} | {median['naive']:.2f} | {median['incremental']:.2f} | {seconds['auto'][0]:.2f} | "
        f"{later:.2f} | {seconds['auto'][0] / faster:.2f} | {later / faster:.2f} | {first_reason} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    print(
        "| model | positions | naive s | incremental s | auto first s | auto later s | "
        "first / faster | later / faster | first call's path and reason |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        print(row(name, args.patch, args.stride, args.repeats), flush=True)


if __name__ == "__main__":
    main()

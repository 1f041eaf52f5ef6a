"""Full inference in four layouts, one batch of occluded-size images: which naive is fastest.

Per model (random weights, batch 16, 224x224): the model as given on NCHW input; channels-last input
only; krypton's channels-last twin (what naive mode runs: modules shallow-copied, convolution weights
copied channels-last); a deep copy converted with `.to(memory_format=torch.channels_last)` (the stricter
baseline of the benchmarks). Interleaved, best of 7 calls each, milliseconds.

    .venv/bin/python benchmarks/bench_naive_layouts.py [--models tv:shufflenet_v2_x1_0 lcnet_050 ...]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine_calls import build  # noqa: E402

from krypton.pipeline import channels_last_twin  # noqa: E402

MODELS = ["tv:shufflenet_v2_x1_0", "lcnet_050", "mobilenetv4_conv_small_050", "tv:mobilenet_v3_large", "tv:resnet18"]


@torch.no_grad()
def row(name: str, batch: int) -> str:
    model, size = build(name)
    image = torch.randn(1, 3, size, size)
    twin = channels_last_twin.twin(model, image, model(image))
    converted = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size)
    xc = x.contiguous(memory_format=torch.channels_last)
    calls = {
        "as given": lambda: model(x),
        "channels-last input": lambda: model(xc),
        "twin (naive mode)": lambda: twin(xc),
        "converted deep copy": lambda: converted(xc),
    }
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(8):  # the first round warms up
        for label, call in calls.items():
            started = time.perf_counter()
            call()
            best[label] = min(best[label], time.perf_counter() - started)
    return f"| {name} | " + " | ".join(f"{1e3 * s:.1f}" for s in best.values()) + " |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    print("| model | as given ms | channels-last input ms | twin (naive mode) ms | converted deep copy ms |")
    print("|---|---|---|---|---|")
    for name in args.models:
        print(row(name, args.batch), flush=True)


if __name__ == "__main__":
    main()

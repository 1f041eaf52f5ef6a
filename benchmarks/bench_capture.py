"""Graph capture cost: cold (no cache), cold writing the on-disk cache, and cached (a new process).

"cached" is the load alone; the loaded graph is checked against the model on the run's clean pass
(a column of its own: one model call and one pass over the graph, which every run pays anyway).
Each figure comes from a fresh process (imports done before the clock starts), so "cold" includes
torch.export's first-use costs, as a user's first call pays them. Also the first `krypton.explain`
call of a fresh process (exact mode, patch 16, stride 16; volumes through `krypton.captum.Occlusion`
with a 16^3 window, stride 16) with an empty and with a filled cache.

    .venv/bin/python benchmarks/bench_capture.py [--models resnet18 vgg16 inception_v3 densenet121_3d resnet18_3d]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("resnet18", "vgg16", "inception_v3", "densenet121_3d", "resnet18_3d")


def build(name: str):
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import torchvision_model

    torch.manual_seed(0)
    if name.endswith("_3d"):  # MONAI's 3-D networks on a 64^3 single-channel volume
        from monai.networks.nets import DenseNet121, resnet18

        net = (
            DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
            if name == "densenet121_3d"
            else resnet18(spatial_dims=3, n_input_channels=1, num_classes=2)
        )
        return net.eval(), torch.randn(1, 1, 64, 64, 64)
    model, size = torchvision_model(name)
    return model, torch.randn(1, 3, size, size)


def child(name: str, what: str) -> dict:
    import krypton
    from krypton.pipeline import graph_for

    model, x = build(name)
    started = time.perf_counter()
    if what == "capture":
        found = graph_for(model, x)
        source, seconds = found.source, time.perf_counter() - started
        from krypton.pipeline.graphs import clean_pass

        started = time.perf_counter()
        clean_pass(found.graph, model, x)  # the run's first use: a graph from disk is checked here
        return {"seconds": seconds, "source": source, "clean_pass": time.perf_counter() - started}
    elif x.dim() == 5:  # volumes: through the Captum drop-in (krypton.explain is 2-D for now)
        from krypton.captum import Occlusion

        occlusion = Occlusion(model)
        occlusion.attribute(x, sliding_window_shapes=(1, 16, 16, 16), strides=(1, 16, 16, 16), target=0)
        source = f"{occlusion.stats['path']} / {occlusion.stats.get('graph_source')}"
    else:
        result = krypton.explain(model, x[0], patch=16, stride=16, mode="exact")
        source = f"{result.stats['path']} / {result.stats['graph_source']}"
    return {"seconds": time.perf_counter() - started, "source": source}


def run_child(name: str, what: str, cache: str) -> dict:
    env = {**os.environ, "KRYPTON_GRAPH_CACHE": cache}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, what], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    print(
        "| model | capture cold s (cache off) | cold, writing cache s | cached s (new process) | "
        "clean pass after load (incl. check) s | first explain, empty cache s | first explain, cached s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        off = run_child(name, "capture", "off")
        with tempfile.TemporaryDirectory() as cache:
            write = run_child(name, "capture", cache)
            cached = run_child(name, "capture", cache)
            assert cached["source"] == "disk", cached
        with tempfile.TemporaryDirectory() as cache:
            first = run_child(name, "explain", cache)
            again = run_child(name, "explain", cache)
        print(
            f"| {name} | {off['seconds']:.2f} | {write['seconds']:.2f} | {cached['seconds']:.2f} | "
            f"{cached['clean_pass']:.2f} | "
            f"{first['seconds']:.2f} ({first['source']}) | {again['seconds']:.2f} ({again['source']}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()

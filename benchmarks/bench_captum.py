"""krypton.captum.Occlusion vs captum.attr.Occlusion: same process, same model, same arguments.

Window (3, 16, 16), stride (3, 4, 4) on a 224x224 image, ResNet18 and VGG16 (torchvision, random
weights). Captum re-runs the whole network per position, so the full 53x53 grid takes hours on a 2-core
CPU; both libraries therefore occlude only a central `--region` square (a sub-grid of the same grid):
the model is wrapped so that its input is that square, pasted into the full image. Every call still
runs the whole 224x224 network; only the number of positions shrinks.

Also reports the engine alone on the same positions (exact vs batched naive, `krypton.modes`), which
is the speedup a user who already batches well can expect.

    .venv/bin/python benchmarks/bench_captum.py [--region 48] [--models resnet18 vgg16] [--repeat 1] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from krypton.api import captured  # noqa: E402
from krypton.captum import Occlusion  # noqa: E402
from krypton.modes.exact import run_exact  # noqa: E402
from krypton.modes.naive import run_naive  # noqa: E402
from krypton.modes.occlusions import Occlusions  # noqa: E402

from _common import torchvision_model  # noqa: E402

WINDOW, STRIDE = (3, 16, 16), (3, 4, 4)


class Region(nn.Module):
    """`model` on `image`, with the square [top:top+size, left:left+size] taken from the input."""

    def __init__(self, model: nn.Module, image: torch.Tensor, top: int, left: int, size: int):
        super().__init__()
        self.model = model
        self.register_buffer("image", image)
        self.register_buffer("clean", image[:, :, top : top + size, left : left + size].clone())
        h, w = image.shape[-2:]
        self.pads = (left, w - left - size, top, h - top - size)

    def forward(self, region: torch.Tensor) -> torch.Tensor:
        return self.model(self.image + nn.functional.pad(region - self.clean, self.pads))


REPEAT = 1  # --repeat: best of several runs, for a machine shared with other jobs


def timed(fn, *args, **kwargs):
    best, result = float("inf"), None
    for _ in range(REPEAT):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, result


def engine_only(model: nn.Module, image: torch.Tensor, top: int, size: int) -> tuple[float, float, int]:
    """Seconds for exact (auto batch) and naive (batch 16) on the same positions, full-image boxes."""
    starts = np.arange(0, size - WINDOW[1] + 1, STRIDE[1]) + top
    yy, xx = np.meshgrid(starts, starts, indexing="ij")
    lo = np.stack([np.zeros(yy.size, dtype=np.int64), yy.ravel(), xx.ravel()], axis=1)
    occ = Occlusions(image, lo, lo + np.asarray(WINDOW), baseline=torch.zeros_like(image))
    graph = captured(model, image)
    exact_s, _ = timed(run_exact, graph, occ)
    naive_s, _ = timed(run_naive, model, occ, 16)
    return exact_s, naive_s, occ.count


def bench(name: str, size: int, target: int = 7) -> None:
    model, side = torchvision_model(name)
    image = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    top = (side - size) // 2
    wrapped = Region(model, image, top, top, size).eval()
    region = image[:, :, top : top + size, top : top + size].clone()
    args = {"sliding_window_shapes": WINDOW, "strides": STRIDE, "target": target}
    positions = (-(-(size - WINDOW[1]) // STRIDE[1]) + 1) ** 2
    start = time.perf_counter()
    Occlusion(wrapped).attribute(region, **args)  # the first call includes torch.export capture
    cold_s = time.perf_counter() - start
    for ppe in (1, 64):
        captum_s, want = timed(CaptumOcclusion(wrapped).attribute, region, perturbations_per_eval=ppe, **args)
        ours = Occlusion(wrapped)
        krypton_s, got = timed(ours.attribute, region, perturbations_per_eval=ppe, **args)
        assert ours.stats["mode"] == "exact", ours.stats
        err = float((got - want).abs().max())
        print(
            f"{name:<9} ppe={ppe:<3} positions={positions:<4} captum {captum_s:7.1f} s  krypton {krypton_s:6.1f} s"
            f"  (batch {ours.stats['batch_size']:>2})  ratio {captum_s / krypton_s:5.2f}x  max|diff| {err:.1e}",
            flush=True,
        )
    exact_s, naive_s, count = engine_only(model, image, top, size)
    print(
        f"{name:<9} engine only, {count} positions: naive (batch 16) {naive_s:6.1f} s  exact {exact_s:6.1f} s"
        f"  ratio {naive_s / exact_s:5.2f}x;  krypton first call incl. capture {cold_s:6.1f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--region", type=int, default=48, help="side of the central square that is occluded")
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg16"])
    parser.add_argument("--repeat", type=int, default=1, help="report the best of this many runs of each")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is steadier on a busy machine)")
    opts = parser.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    global REPEAT
    REPEAT = opts.repeat
    print(
        f"window {WINDOW}, stride {STRIDE}, central {opts.region}x{opts.region} of 224x224, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, best of {REPEAT}, load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for name in opts.models:
        bench(name, opts.region)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

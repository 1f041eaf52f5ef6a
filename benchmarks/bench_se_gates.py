"""The squeeze-excitation approximation (`local_gates=True`) on SE networks with learned weights (issue 17).

No SE-family weights install offline, so MobileNetV3-small, EfficientNet-B0 and RegNetY-400MF (torchvision)
are distilled here from the bundled EfficientNet-Lite0 (`distilled_resnet18.distilled`, cached in
`benchmarks/.cache/`; trained on first use). Per model, on the scikit-image photos of the ImageNet demo
(patch 16, stride 8, fill 0, the exact map's target): `analyze`'s MAC ratio without and with local gates,
then exact and approximate (tau 1, local gates only) timed side by side, and SSIM of the approximate map
against exact, raw (`krypton.ssim`) and rendered (the paper's measure).

    .venv/bin/python benchmarks/bench_se_gates.py [--models mobilenet_v3_small efficientnet_b0 regnet_y_400mf]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from distilled_resnet18 import distilled  # noqa: E402

import krypton  # noqa: E402
from krypton.io.preprocess import Preprocess  # noqa: E402
from krypton.models.demos import DEMOS  # noqa: E402
from krypton.modes.quality import rendered_ssim  # noqa: E402

from _common import timed  # noqa: E402

MODELS = ("mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf")
PATCH, STRIDE = 16, 8


def photos() -> list[tuple[str, torch.Tensor]]:
    pre = Preprocess((224, 224), 3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize="crop")
    return [(im.name, pre(im.pixels())[0]) for im in DEMOS["imagenet"].images()]


def run(arch: str) -> str:
    model = distilled(arch)
    plain = krypton.analyze(model, (3, 224, 224), patch=PATCH, stride=STRIDE)
    gated = krypton.analyze(model, (3, 224, 224), patch=PATCH, stride=STRIDE, local_gates=True)
    raw, drawn, ratios = [], [], []
    for name, image in photos():
        exact_s, exact = timed(lambda image=image: krypton.explain(model, image, patch=PATCH, stride=STRIDE))
        approx_s, approx = timed(
            lambda image=image, target=exact.target: krypton.explain(
                model, image, mode="approximate", tau=1.0, local_gates=True, target=target, patch=PATCH, stride=STRIDE
            )
        )
        raw.append(krypton.ssim(exact.heatmap, approx.heatmap))
        drawn.append(rendered_ssim(exact.heatmap, approx.heatmap, exact.probability))
        ratios.append(exact_s / approx_s)
        print(f"  {arch} {name}: SSIM {raw[-1]:.3f} / {drawn[-1]:.3f}; exact {exact_s:.2f} s, gates {approx_s:.2f} s "
              f"(paths {exact.stats['path']} / {approx.stats['path']})", flush=True)  # fmt: skip
    return (
        f"| {arch} | {len(raw)} | {plain.speedup:.2f} | {gated.speedup:.2f} | {statistics.mean(raw):.3f} "
        f"({min(raw):.3f}) | {statistics.mean(drawn):.3f} ({min(drawn):.3f}) | {sum(r >= 0.9 for r in raw)}/{len(raw)} "
        f"| {statistics.mean(ratios):.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    rows = [run(arch) for arch in args.models]
    print(
        "| model (distilled) | photos | analyze, exact | analyze, local gates | SSIM raw mean (min) | "
        "SSIM rendered mean (min) | photos with raw SSIM >= 0.9 | measured exact / gates time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

"""The two drill-down rules side by side on every real model and image available offline (issue 14).

`rule="paper"`: stage 2 on the cells with the largest coarse-map drops (the paper's Sec. 4.2);
`rule="regions"` (krypton's two-stage default): cells where the coarse map drops most or changes most
steeply, grown into contiguous regions; `rule="refine"`: several levels, the lattice spacing halved where
the map varies most. All get the same budget: the two-stage rules a fraction r of the fine cells and the
coarse stride from the target speedup t, refine the speedup Eq. 28 predicts for that budget; tau 1 (no
thresholding), so only the choice of cells differs. Each image: exact
once (the reference), then every setting with every rule; SSIM on raw probability maps (`krypton.ssim`)
and on rendered heat maps (the paper's measure), wall seconds of each run in the same process.

Models: the 16 chest X-rays (Xception), the MRI slice (VGG16), the scikit-image photos
(EfficientNet-Lite0), and the same photos on ResNet18 distilled from EfficientNet-Lite0
(`distilled_resnet18.py`, trained and cached on first use, ~5 minutes).

    .venv/bin/python benchmarks/bench_drilldown.py [--models xray mri imagenet distilled]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402

import krypton  # noqa: E402
from krypton.models.demos import DEMOS  # noqa: E402
from krypton.modes.approximate import drilldown_gain, parse_drilldown  # noqa: E402
from krypton.modes.quality import rendered_ssim  # noqa: E402

from _common import timed  # noqa: E402

GRID = {"xray": (16, 8), "mri": (32, 8), "imagenet": (32, 8), "distilled": (32, 8)}  # patch, stride
BUDGETS = [{"fraction": 0.25, "speedup": 2.0}, {"fraction": 0.1, "speedup": 5.0}]  # ours; the paper's
RULES = ("paper", "regions", "refine")  # refine gets the same predicted gain: speedup = Eq. 28's prediction


def model_and_images(name: str) -> tuple[torch.nn.Module, list[tuple[str, torch.Tensor]]]:
    demo = DEMOS["imagenet" if name == "distilled" else name]
    loaded = demo.load()
    images = [(im.name, loaded.preprocess(im.pixels())[0]) for im in demo.images()]
    if name != "distilled":
        return loaded.module, images
    from distilled_resnet18 import distilled_resnet18

    return distilled_resnet18(), images


def gain(budget: dict, stride: int) -> float:
    """The two-stage budget's predicted gain in positions (Eq. 28), which refine then spends."""
    settings = parse_drilldown(budget)
    return round(drilldown_gain(settings, (stride, stride)), 2)


def run(name: str) -> dict[tuple[str, str], list[tuple[float, float, float, float]]]:
    """Per (budget, rule): (SSIM raw, SSIM rendered, seconds, exact seconds) for every image."""
    patch, stride = GRID[name]
    model, images = model_and_images(name)
    rows: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    for image_name, image in images:
        exact_s, exact = timed(lambda image=image: krypton.explain(model, image, patch=patch, stride=stride))
        for budget in BUDGETS:
            label = f"r {budget['fraction']}, t {budget['speedup']:g}"
            for rule in RULES:
                spec = {**budget, "rule": rule} if rule != "refine" else {"rule": rule, "speedup": gain(budget, stride)}
                seconds, approx = timed(
                    lambda image=image, spec=spec, target=exact.target: krypton.explain(
                        model, image, mode="approximate", tau=1.0, drilldown=spec,
                        target=target, patch=patch, stride=stride,
                    )
                )  # fmt: skip
                raw = krypton.ssim(exact.heatmap, approx.heatmap)
                drawn = rendered_ssim(exact.heatmap, approx.heatmap, exact.probability)
                rows.setdefault((label, rule), []).append((raw, drawn, seconds, exact_s))
                print(f"  {name} {image_name}: {label}, {rule}: SSIM {raw:.3f} / {drawn:.3f}, "
                      f"{seconds:.2f} s (exact {exact_s:.2f} s)", flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(GRID), choices=list(GRID))
    args = parser.parse_args()
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    table = [
        "| model | images | patch/stride | budget | rule | SSIM raw mean (min) | SSIM rendered mean (min) | "
        "images with raw SSIM >= 0.9 | seconds mean | vs exact (mean of per-image ratios) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.models:
        patch, stride = GRID[name]
        for (label, rule), values in run(name).items():
            raw, drawn, seconds, exact_s = zip(*values)
            good = sum(r >= 0.9 for r in raw)
            ratio = statistics.mean(e / s for e, s in zip(exact_s, seconds))
            table.append(
                f"| {name} | {len(values)} | {patch}/{stride} | {label} | {rule} | "
                f"{statistics.mean(raw):.3f} ({min(raw):.3f}) | {statistics.mean(drawn):.3f} ({min(drawn):.3f}) | "
                f"{good}/{len(values)} | {statistics.mean(seconds):.2f} | {ratio:.2f}x |"
            )
    print("\n".join(table))


if __name__ == "__main__":
    main()

"""Tuned approximate settings on the real models: what `krypton.tune` chooses for SSIM >= 0.9, what it
achieves on held-out images, and how fast it runs against exact mode and both naive baselines.

Per bundled demo (real pretrained weights, real images): tune on a few images (tau x drill-down x local
gates where the model has gates), then on each held-out image time naive (as given; channels-last
inputs), exact and the tuned approximate setting side by side, with SSIM on raw maps and on rendered
ones (the paper's measure).

    .venv/bin/python benchmarks/bench_tuned.py [--demos mri imagenet xray]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import krypton  # noqa: E402
from krypton.models.demos import DEMOS  # noqa: E402
from krypton.modes.quality import rendered_ssim  # noqa: E402

from _common import timed  # noqa: E402

SETTINGS = {  # demo: (patch, stride, sample images, held-out images)
    "mri": (32, 8, 1, 2),
    "imagenet": (32, 8, 2, 2),
    "xray": (16, 8, 2, 2),
}


def images_of(name: str, count: int) -> tuple[object, list]:
    demo = DEMOS[name]
    loaded = demo.load()
    pictures = [loaded.preprocess(im.pixels())[0] for im in demo.images()]
    if name == "mri":  # one real slice offline: mirrored and re-cropped copies stand in for more
        pixels = demo.images()[0].pixels()
        pictures += [loaded.preprocess(pixels[:, ::-1].copy())[0], loaded.preprocess(pixels[12:-4, 8:-8])[0]]
    return loaded.module, pictures[:count]


def run(name: str) -> None:
    patch, stride, n_sample, n_held = SETTINGS[name]
    model, pictures = images_of(name, n_sample + n_held)
    sample, held = pictures[:n_sample], pictures[n_sample:]
    tune_s, result = timed(lambda: krypton.tune(model, sample, patch=patch, stride=stride, target_ssim=0.9))
    settings = result.settings
    print(f"{name}: tuned in {tune_s:.0f} s -> {settings} (predicted {result.predicted_speedup:.2f}x over exact)")
    common = dict(patch=patch, stride=stride)
    for k, image in enumerate(held):
        naive_s, _ = timed(lambda image=image: krypton.explain(model, image, mode="naive", path="naive", **common))
        exact_s, exact = timed(lambda image=image: krypton.explain(model, image, **common))
        approx_s, approx = timed(
            lambda image=image, target=exact.target: krypton.explain(
                model, image, mode="approximate", target=target, **common, **settings
            )
        )
        raw = krypton.ssim(exact.heatmap, approx.heatmap)
        drawn = rendered_ssim(exact.heatmap, approx.heatmap, exact.probability)
        print(f"| {name} | {k} | {patch}/{stride} | {settings['tau']} | {settings['drilldown'] or 'off'} | "
              f"{settings['local_gates']} | {raw:.3f} | {drawn:.3f} | {naive_s:.1f} | {exact_s:.1f} | {approx_s:.1f} | "
              f"{naive_s / approx_s:.1f}x | {exact_s / approx_s:.2f}x |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demos", nargs="+", default=list(SETTINGS))
    args = parser.parse_args()
    print(
        "| demo | held-out image | patch/stride | tau | drill-down | local gates | SSIM raw | SSIM rendered | "
        "naive s (channels-last inputs) | exact s | tuned s | vs naive | vs exact |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.demos:
        run(name)


if __name__ == "__main__":
    main()

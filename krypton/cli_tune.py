"""`krypton tune` and `krypton explain --quality Q`: tuning profiles from the command line.

`krypton tune` runs `krypton.tune` (tau, drill-down and local gates together) on sample images and writes
the profile (`krypton.modes.profiles`). `--quality Q` on `explain` uses the profile for that model, patch
and stride that promises at least Q, tuning first (and saying so) when there is none.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from krypton.cli_common import UsageError, _default_patch, _floats, _images, _load, _model_args, _positive


def add_parser(commands: Any) -> None:
    tune = commands.add_parser(
        "tune",
        help="choose approximate settings (tau, drill-down, local gates) for a quality target; write a profile",
        description="Tune approximate inference for a model on sample images and write a profile that "
        "`krypton explain --mode approximate --quality Q` then uses. With no IMAGE: a bundled demo's images "
        "other than the one it shows by default. A third of the images (at least one) are held out to "
        "check the promise.",
    )
    tune.add_argument("images", nargs="*", metavar="IMAGE", help="sample images (files or DEMO:N tokens)")
    _model_args(tune)
    tune.add_argument("--patch", type=_positive, metavar="N", help="patch side (default: as for explain)")
    tune.add_argument("--stride", type=_positive, metavar="N", help="stride (default: as for explain)")
    tune.add_argument("--target-ssim", type=float, default=0.9, metavar="Q", help="quality target (default 0.9)")
    tune.add_argument("--taus", type=_floats, metavar="T,T,...", help="tau values to try (default 0.9 ... 0.4)")
    tune.add_argument("--out", metavar="FILE", help="profile file (default: the user profile folder)")


def run_tune(args: argparse.Namespace) -> int:
    from krypton.models import DEMOS

    if not 0 < args.target_ssim <= 1:
        raise UsageError(f"--target-ssim must be in (0, 1], got {args.target_ssim}")
    demo = DEMOS.get(args.model)
    images = _sample_images(args, demo, _images)
    loaded = _load(args)
    patch, stride = _default_patch(loaded.preprocess.size, args.patch, args.stride, demo)
    tensors = [loaded.preprocess(pixels)[0] for _, _, pixels in images]
    path, profile, result = tune_profile(loaded, args.model, tensors, patch, stride, args.target_ssim, args.taus,
                                         args.out)  # fmt: skip
    print(result.summary())
    print(f"profile: {path}")
    return 0


def _sample_images(args: argparse.Namespace, demo: Any, read: Any) -> list:
    if args.images:
        return read(args, demo)
    if demo is None:
        raise UsageError(f"give sample IMAGEs to tune {args.model} on")
    images = demo.images()
    others = [im for i, im in enumerate(images) if i != demo.default_image] or images
    return [(im.name, im.label, im.pixels()) for im in others[:6]]


def tune_profile(loaded: Any, model: str, tensors: list, patch: int, stride: int, target: float,
                 taus: Any = None, out: Any = None) -> tuple[Any, dict[str, Any], Any]:  # fmt: skip
    """Tune on `tensors` (a third held out), save the profile; (path, profile, TuneResult)."""
    import krypton
    from krypton.modes import profiles

    held = max(1, len(tensors) // 3) if len(tensors) > 1 else 0
    sample, heldout = tensors[: len(tensors) - held], tensors[len(tensors) - held :]
    options = {"taus": tuple(taus)} if taus else {}
    started = time.perf_counter()
    result = krypton.tune(loaded.module, sample, heldout_images=heldout, patch=patch, stride=stride,
                          target_ssim=target, **options)  # fmt: skip
    profile = profiles.to_profile(result, model, patch, stride, len(sample))
    profile["tuning_s"] = round(time.perf_counter() - started, 1)
    return profiles.save(profile, out), profile, result


def quality_settings(args: argparse.Namespace, loaded: Any, demo: Any, patch: int, stride: int,
                     images: list) -> tuple[dict[str, Any], str]:  # fmt: skip
    """Approximate settings for `--quality`, from a profile (tuning first when none exists), and the
    expected quality in words."""
    from krypton.modes import profiles

    found = profiles.find(args.model, patch, stride, args.quality)
    if found is None:
        if demo is not None:
            others = [im for i, im in enumerate(demo.images()) if i != demo.default_image][:6]
            pixels, source = [im.pixels() for im in others], f"{len(others)} other bundled images of {demo.name}"
        else:
            pixels, source = [p for _, _, p in images], "the images being explained"
        print(f"note: no tuning profile for {args.model} at patch {patch}, stride {stride} and quality "
              f"{args.quality}: tuning first on {source} (once; `krypton tune` does this ahead)")  # fmt: skip
        tensors = [loaded.preprocess(p)[0] for p in pixels]
        path, profile, _ = tune_profile(loaded, args.model, tensors, patch, stride, args.quality)
    else:
        profile, path = found
    print(f"profile: {path} -> {profiles.settings_of(profile)}")
    return profiles.settings_of(profile), profiles.expectation(profile)

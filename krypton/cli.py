"""The `krypton` command: `explain` images with a model, `analyze` a model's speedup, list the `demos`.

Every failure a user can cause (unreadable image, unknown model, mismatched weights, a patch larger
than the image, ...) ends as one line on stderr and exit code 2, never a traceback; set KRYPTON_DEBUG=1
to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from krypton.choices import MODES, STYLES
from krypton.cli_common import (
    CT_WINDOW_NAMES,
    DEFAULT_MODEL,
    EXIT_USAGE,
    Parser,
    UsageError,
    _ct_window,
    _default_patch,
    _drilldown,
    _floats,
    _images,
    _load,
    _message,
    _model_args,
    _port,
    _positive,
    _scale,
    _summary_line,
    _tau,
)

EPILOG = """examples:
  krypton explain                                   # a bundled chest X-ray, pneumonia Xception
  krypton explain xray:3 xray:NORMAL2-IM-1427-0001  # other bundled X-rays (see `krypton demos`)
  krypton explain --model imagenet --target "Egyptian cat" photo.jpg
  krypton explain --model resnet18 --weights resnet18.pth --patch 32 --stride 8 photo.png
  krypton explain --model classifier.onnx --size 224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 scan.dcm
  krypton analyze --model mri --patch 32 --stride 16
"""


DEBUG_NOTE = "Failures are one line on stderr with exit code 2; set KRYPTON_DEBUG=1 to see the traceback."


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="krypton",
        description="Occlusion-based explanations of CNN predictions, made fast by incremental inference.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    explain = commands.add_parser(
        "explain",
        help="explain model predictions on images (heat map PNG + raw .npz/.json)",
        description="Slide an occluding patch over each image and map how much the prediction drops. "
        "With no arguments: a bundled chest X-ray explained by the pneumonia Xception. Writes "
        "OUT/<image>-<mode>.png (picture) and .npz/.json (raw results), so runs in different modes "
        "do not overwrite each other. A one-logit model is read as a binary classifier "
        "(P(positive) = sigmoid(logit)). " + DEBUG_NOTE,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    explain.add_argument(
        "images", nargs="*", metavar="IMAGE", help="PNG/JPEG/16-bit/DICOM files, or DEMO:N / DEMO:NAME bundled images"
    )
    _model_args(explain)
    explain.add_argument("--target", metavar="CLASS", help="class index or name to explain (default: the top class)")
    explain.add_argument(
        "--patch",
        type=_positive,
        metavar="N",
        help="occluding patch side in model-input pixels (default: per demo, else ~1/7 of the image)",
    )
    explain.add_argument(
        "--stride", type=_positive, metavar="N", help="step between patch positions (default: patch/2)"
    )
    explain.add_argument(
        "--fill",
        type=_floats,
        default=(0.0,),
        metavar="V[,V,V]",
        help="patch value in model-input units, one or one per channel (default 0: mid-gray for "
        "[-1,1] models, the mean colour for ImageNet-normalised ones)",
    )
    explain.add_argument(
        "--mode",
        choices=MODES,
        default="exact",
        help="naive: full re-inference; exact: incremental, same numbers (default); "
        "approximate: faster, slightly different maps",
    )
    explain.add_argument(
        "--tau",
        type=_tau,
        metavar="T",
        help="approximate mode: projective-field threshold in (0, 1]; smaller is faster and coarser "
        "(default 0.7; 1 = exact)",
    )
    explain.add_argument(
        "--drilldown",
        nargs="?",
        const=True,
        type=_drilldown,
        metavar="SPEC",
        help="approximate mode: adaptive drill-down (a coarse pass, then the most important cells at the "
        "fine stride); alone or 'on' for the defaults fraction=0.25,speedup=3, or e.g. "
        "fraction=0.25,speedup=3 or fraction=0.1,coarse_stride=8 (speedup or coarse_stride, not both); "
        "rule=refine,speedup=4: several levels, a quarter of the positions in all (the tuner's choice)",
    )
    explain.add_argument(
        "--quality",
        type=float,
        metavar="Q",
        help="approximate mode: use the tuning profile for this model, patch and stride that promises SSIM >= Q "
        "(tuning first, once, when there is none; see `krypton tune`)",
    )
    explain.add_argument(
        "--compare-exact",
        action="store_true",
        help="approximate mode: also run exact mode and report the map's SSIM against it (otherwise the "
        "approximate map is labelled 'quality not verified')",
    )
    explain.add_argument(
        "--animate",
        action="store_true",
        help="also write NAME-MODE.gif: the patch sliding over the image while the heat map fills in",
    )
    explain.add_argument("--out", default="krypton-out", metavar="DIR", help="output folder (default: krypton-out)")
    explain.add_argument(
        "--style",
        choices=STYLES,
        default="overlay",
        help="overlay: per-pixel probability drop (default); paper: jet_r map as in the paper",
    )
    explain.add_argument(
        "--scale",
        type=_scale,
        default="auto",
        metavar="auto|D",
        help="overlay colour scale: a fixed probability drop D in (0, 1] shown at full colour (maps comparable "
        "across images and modes), or auto = this map's largest drop but at least 0.05 (default); "
        "the caption states which",
    )
    volumes = explain.add_argument_group(
        "volumes and signals",
        "IMAGE may also be a NIfTI file (.nii, .nii.gz), a folder holding one DICOM series, or a .npy array "
        "((D, H, W) or (C, D, H, W) volume; (L,) or (C, L) signal). Models: .pt2 exported with a 5-D or 3-D "
        "input, or a MONAI network, e.g. --model monai:densenet121 --weights ct.pth. Patch and stride apply "
        "to every spatial axis (default patch 16, stride 8).",
    )
    volumes.add_argument(
        "--window",
        type=_ct_window,
        metavar="NAME|C,W",
        help=f"CT window: a preset ({', '.join(CT_WINDOW_NAMES)}) or centre,width in HU (default: percentile scaling)",
    )
    volumes.add_argument(
        "--percentiles",
        type=_floats,
        default=(1.0, 99.0),
        metavar="LO,HI",
        help="without --window: these intensity percentiles map to 0 and 1 (default 1,99)",
    )
    volumes.add_argument("--volume", type=int, metavar="N", help="which volume of a 4-D NIfTI (time/diffusion axis)")
    volumes.add_argument(
        "--nifti", action="store_true", help="also write the heat map as NIfTI in the input's geometry (affine kept)"
    )
    explain.add_argument("--device", choices=("cpu", "cuda"), help="where to run (default: where the model is)")
    explain.add_argument("--batch-size", type=_positive, metavar="N", help="positions per batch (default: automatic)")
    explain.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    analyze = commands.add_parser(
        "analyze",
        help="per-op FLOP table and theoretical speedup of incremental inference",
        description="Count multiply-accumulates of naive vs incremental inference for every op of the model.",
    )
    _model_args(analyze)
    analyze.add_argument("--patch", type=_positive, metavar="N", help="patch side (default: as for explain)")
    analyze.add_argument("--stride", type=_positive, metavar="N", help="stride (default: patch/2)")
    commands.add_parser(
        "demos",
        help="list the bundled demo models and images",
        description="List the bundled demos, their packages and images.",
    )
    serve = commands.add_parser(
        "serve",
        help="interactive web demo in the browser",
        description="Serve the interactive web demo (explain, drag a region, brush pixels away, compare modes). "
        "Listens on 127.0.0.1 only unless --host says otherwise.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    serve.add_argument("--port", type=_port, default=8000, help="port, 1-65535 (default: 8000)")
    serve.add_argument("--workers", type=_positive, default=1, metavar="N", help="explanations at once (default: 1)")
    from krypton.cli_tune import add_parser as add_tune_parser
    from krypton.scale.cli_batch import add_parser as add_batch_parser

    add_tune_parser(commands)
    add_batch_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `krypton` script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a one-line usage error (2)
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    warnings.showwarning = _one_line_warning
    try:
        if args.command == "serve":
            from krypton.web import serve

            serve(args.host, args.port, workers=args.workers)
            return 0
        if args.command == "demos":
            return list_demos()
        if args.command == "tune":
            from krypton.cli_tune import run_tune

            return run_tune(args)
        if args.command == "batch":
            from krypton.scale.cli_batch import run as run_batch

            return run_batch(args)
        return run_explain(args) if args.command == "explain" else run_analyze(args)
    except KeyboardInterrupt:
        print("krypton: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `krypton demos | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # every user-facing failure becomes one line
        if os.environ.get("KRYPTON_DEBUG"):
            raise
        print(f"krypton: error: {_message(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """krypton's own warnings (e.g. a fallback to naive mode) as one line; library chatter is hidden."""
    text = " ".join(str(message).split())
    if text.startswith("krypton"):
        print(f"krypton: warning: {text.removeprefix('krypton:').strip()}", file=sys.stderr)


def _out_dir(text: str) -> Path:
    path = Path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {path}: {exc.strerror or exc}") from None
    return path


def run_explain(args: argparse.Namespace) -> int:
    import krypton
    from krypton.models import DEMOS
    from krypton.outputs import save, save_raw

    approximate_only = args.tau is not None or args.drilldown is not None or args.compare_exact
    if (approximate_only or args.quality is not None) and args.mode != "approximate":
        raise UsageError("--tau, --drilldown, --quality and --compare-exact need --mode approximate")
    if args.quality is not None:
        if not 0 < args.quality <= 1:
            raise UsageError(f"--quality must be in (0, 1] (an SSIM), got {args.quality}")
        if args.tau is not None or args.drilldown is not None:
            raise UsageError("--quality chooses tau and drill-down from a profile: give either --quality or them")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA GPU is available here")
    if args.target is not None and args.target.strip().lstrip("-").isdigit() and int(args.target) < 0:
        raise UsageError(f"--target {args.target}: a class index must be >= 0")
    if args.model == DEFAULT_MODEL and args.images and all(":" in t and not Path(t).exists() for t in args.images):
        args.model = args.images[0].split(":", 1)[0]  # `krypton explain mri:0` uses the mri demo
    demo = DEMOS.get(args.model)
    out = _out_dir(args.out)
    from krypton.io.volumes import is_volume_path

    if args.model == "lesion3d" or (args.images and all(t.startswith("lesion3d:") for t in args.images)):
        args.model = "lesion3d"  # the synthetic 3-D demo: its own volumes, no files
        from krypton.cli_volumes import run_explain_volumes

        return run_explain_volumes(args, out)
    if args.images and any(is_volume_path(t) for t in args.images):
        from krypton.cli_volumes import run_explain_volumes

        return run_explain_volumes(args, out)
    images = _images(args, demo)
    _warn_other_modality(args, demo)
    started = time.perf_counter()
    loaded = _load(args)
    pre = loaded.preprocess
    print(f"model: {loaded.name} ({time.perf_counter() - started:.1f} s to load); input {pre.describe()}")
    for note in loaded.notes:
        print(f"note: {note}")
    patch, stride = _default_patch(pre.size, args.patch, args.stride, demo)
    target = loaded.class_index(args.target)
    kwargs: dict[str, Any] = dict(
        target=target,
        patch=patch,
        stride=stride,
        mode=args.mode,
        fill=list(args.fill) if len(args.fill) > 1 else args.fill[0],
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    if args.tau is not None:
        kwargs["tau"] = args.tau
    if args.drilldown is not None:
        kwargs["drilldown"] = args.drilldown
    expected = None
    if args.quality is not None:
        from krypton.cli_tune import quality_settings

        settings, expected = quality_settings(args, loaded, demo, patch, stride, images)
        kwargs.update(settings)
    if args.compare_exact:
        kwargs["compare_exact"] = True
    used: set[str] = set()
    for name, truth, pixels in images:
        name = name if name not in used else f"{name}_{len(used)}"  # same file name from two folders
        used.add(name)
        tensor, shown = pre(pixels)
        try:
            result = krypton.explain(loaded.module, tensor, **kwargs)
        except TypeError as exc:
            if "tau" in str(exc) or "drilldown" in str(exc):
                raise UsageError("this krypton version does not support --tau/--drilldown yet") from None
            raise
        result.display_image = shown
        result.class_names = loaded.class_names
        if expected is not None and not args.compare_exact:
            result.stats["quality"] = expected
        stem = f"{name}-{args.mode}"  # per mode: an approximate run does not overwrite the exact one
        picture = save(
            result,
            out / f"{stem}.png",
            shown,
            class_names=loaded.class_names,
            style=args.style,
            scale=args.scale,
            name=f"{loaded.name} - {name}" + (f" (labelled {truth})" if truth else ""),
        )
        meta = {"model": loaded.name, "image": name, "preprocess": pre.describe(), "picture": str(picture)}
        save_raw(result, out / stem, class_names=loaded.class_names, meta=meta)
        print(_summary_line(name, result, loaded, picture))
        if args.animate:
            print(f"animation: {result.animate(out / f'{stem}.gif', shown, scale=args.scale)}")
        if result.stats.get("quality"):
            print(
                f"note: approximate map, quality {result.stats['quality']}"
                + (" (add --compare-exact to measure it)" if "not verified" in result.stats["quality"] else "")
            )
        if result.probability >= EXTREME and (demo is None or truth is None):
            print(
                f"note: p={result.probability:.4f} is extreme; if {name} is not the kind of image {loaded.name} "
                "was trained on (modality, view, intensity range), the map explains an out-of-range input"
            )
    return 0


EXTREME = 0.9995  # a clean-image probability this close to 1 on a user's image deserves a second look


def _warn_other_modality(args: argparse.Namespace, demo: Any) -> None:
    """A bundled image of another demo (an MRI through the X-ray model) is a wrong pairing: say so."""
    from krypton.models import DEMOS

    if demo is None:  # the user's own model: bundled images of any kind are a legitimate test
        return
    for token in args.images:
        owner = token.split(":", 1)[0] if ":" in token and not Path(token).exists() else None
        if owner in DEMOS and owner != demo.name:
            theirs, ours = DEMOS[owner].title.split(",")[0], demo.title.split(",")[0]
            print(
                f"krypton: warning: {token} is an image of the {owner} demo ({theirs}), but the model is the "
                f"{demo.name} demo ({ours}): it was not trained on such images",
                file=sys.stderr,
            )


def run_analyze(args: argparse.Namespace) -> int:
    import krypton
    from krypton.models import DEMOS

    loaded = _load(args)
    pre = loaded.preprocess
    patch, stride = _default_patch(pre.size, args.patch, args.stride, DEMOS.get(args.model))
    analysis = krypton.analyze(loaded.module, (pre.channels, *pre.size), patch=patch, stride=stride)
    print(f"model: {loaded.name}, input {pre.channels}x{pre.size[0]}x{pre.size[1]}, patch {patch}, stride {stride}")
    print(analysis.table())
    print(f"theoretical speedup of exact incremental inference over naive: {analysis.speedup:.2f}x")
    return 0


def list_demos() -> int:
    from krypton.models import DEMOS, ModelError, volume_demo

    for demo in DEMOS.values():
        print(f"{demo.name}: {demo.title}")
        print(f"  packages: {demo.requirement}; default patch {demo.patch}, stride {demo.stride}")
        try:
            images = demo.images()
            default = demo.default_image
        except ModelError as exc:
            print(f"  not installed: {exc}")
            continue
        for i, image in enumerate(images):
            label = f" [{image.label}]" if image.label else ""
            mark = " (default)" if i == default else ""
            print(f"  {demo.name}:{i:<3} {image.name}{label}{mark}  {image.path}")
    print(f"{volume_demo.NAME}: {volume_demo.TITLE}")
    print(f"  trained on first use (~30 s), cached in {volume_demo.cache_path()}; patch 8, stride 4")
    for k in range(volume_demo.IMAGES):
        print(f"  {volume_demo.NAME}:{k:<3} synthetic volume 32^3 [{volume_demo.CLASSES[int(k % 2 == 0)]}]")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

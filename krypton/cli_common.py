"""What the `krypton` subcommands share: argument types (each error one line naming what is allowed),
the model options, the usage error, and the one-line result summary.

`cli` (explain, analyze, demos, serve), `cli_volumes` and `scale.cli_batch` import from here; this module
imports none of them and nothing heavy at import time, so `krypton --help` stays instant.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from krypton.choices import RESIZE

EXIT_USAGE = 2
DEFAULT_MODEL = "xray"


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line, exit code 2."""


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers separated by commas, got {text!r}")
    return values


def _unit_interval(text: str, expected: str) -> float:
    """A number in (0, 1] (tau, a colour scale); anything else names what was `expected`."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _tau(text: str) -> float:
    return _unit_interval(text, "a number with 0 < tau <= 1")


def _scale(text: str) -> float | str:
    return text if text == "auto" else _unit_interval(text, "'auto' or a probability drop in (0, 1]")


CT_WINDOW_NAMES = ("brain", "lung", "soft-tissue", "bone")  # krypton.io.volumes.CT_WINDOWS, named here for --help


def _ct_window(text: str) -> tuple[float, float] | str:
    if text in CT_WINDOW_NAMES:
        return text
    try:
        values = _floats(text)
    except argparse.ArgumentTypeError:
        values = ()
    if len(values) != 2 or values[1] <= 0:
        presets = ", ".join(CT_WINDOW_NAMES)
        raise argparse.ArgumentTypeError(f"expected a preset ({presets}) or CENTER,WIDTH with WIDTH > 0, got {text!r}")
    return values[0], values[1]


def _size(text: str) -> tuple[int, ...]:
    """One size per spatial axis as given (SIZE, H,W or D,H,W); one value means every axis."""
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts if p.strip()]
    except ValueError:
        values = []
    if len(values) not in (1, 2, 3) or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected SIZE, H,W or D,H,W with positive integers, got {text!r}")
    return tuple(values)


def image_size(size: tuple[int, ...] | None) -> tuple[int, int] | None:
    """--size for images: H,W (one value: square)."""
    if size is None:
        return None
    if len(size) == 3:
        raise UsageError(f"--size {','.join(map(str, size))}: images take SIZE or H,W (D,H,W is for volumes)")
    return (size[0], size[-1])


def _drilldown(text: str) -> bool | dict[str, Any]:
    """'on' / 'off', or key=value pairs: fraction=0.25,speedup=3 or coarse_stride=8 (checked here, before
    any model loads)."""
    if text.lower() in ("on", "true", "yes", "1"):
        return True
    if text.lower() in ("off", "false", "no", "0"):
        return False
    spec: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if key.strip() == "rule":
            spec["rule"] = value.strip()
            continue
        try:
            number = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"expected on, off or KEY=VALUE[,KEY=VALUE], got {text!r}")
        spec[key.strip()] = int(number) if key.strip() == "coarse_stride" and number.is_integer() else number
    from krypton.modes.approximate import parse_drilldown

    try:
        parse_drilldown(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def _int_between(text: str, low: int, high: float, expected: str) -> int:
    """An integer in [low, high]; anything else names what was `expected`."""
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _port(text: str) -> int:
    return _int_between(text, 1, 65535, "a port number between 1 and 65535")


def _positive(text: str) -> int:
    return _int_between(text, 1, math.inf, "a positive integer")


def _model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME|FILE",
        help="demo (xray, mri, imagenet), torchvision architecture, or .pt2/.onnx/.keras/.h5 file "
        f"(default: {DEFAULT_MODEL})",
    )
    group.add_argument(
        "--weights",
        metavar="FILE|random",
        help="state-dict file for a torchvision architecture; 'random' keeps random weights (for speed tests)",
    )
    group.add_argument(
        "--size",
        type=_size,
        metavar="H[,W]",
        help="model input size (default: from the model); volumes and signals: D,H,W or L (or one value "
        "for every axis), the input is resampled to it (the NIfTI affine follows)",
    )
    group.add_argument(
        "--mean",
        type=_floats,
        metavar="M[,M,M]",
        help="normalisation mean of [0,1] pixels (default: the model's own; 0.5 for model files, i.e. [-1, 1])",
    )
    group.add_argument(
        "--std",
        type=_floats,
        metavar="S[,S,S]",
        help="normalisation std of [0,1] pixels (default: the model's own; 0.5 for model files)",
    )
    group.add_argument(
        "--resize",
        choices=RESIZE,
        help="fitting an image of another aspect ratio: crop (centre crop; the borders are not explained), "
        "pad (black bars; the whole image is explained) or stretch (distorted) "
        "(default: crop for torchvision/ImageNet models, stretch for the others; printed with the input)",
    )
    group.add_argument("--labels", metavar="FILE", help="class names, one per line (as many as the model has classes)")


def _summary_line(name: str, result: Any, loaded: Any, picture: Path) -> str:
    from krypton.outputs.maps import effect_size

    stats = result.stats
    speed = stats.get("theoretical_speedup")
    mode = result.mode if result.mode == stats.get("requested_mode", result.mode) else f"{result.mode} (fallback)"
    extra = f", {speed:.2f}x fewer MACs than naive" if speed else ""
    if stats.get("path") and stats["path"] != "incremental" and result.mode != "naive":
        extra += f" (computed by {stats['path']} inference)"
    return (
        f"{name}: {loaded.label(result.target)} p={result.probability:.3f}, largest drop "
        f"{effect_size(result):.3g} | {stats.get('positions')} positions "
        f"in {stats.get('wall_time_s', 0.0):.1f} s, {mode}{extra} -> {picture}"
    )


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other krypton error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"krypton: error: {message} (see `{self.prog} --help`)\n")


def _message(exc: BaseException) -> str:
    from krypton.io import ImageError
    from krypton.models import ModelError

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (UsageError, ModelError, ImageError, ValueError, FileNotFoundError)):
        return text
    return f"{type(exc).__name__}: {text} (set KRYPTON_DEBUG=1 for the traceback)"


def _load(args: argparse.Namespace) -> Any:
    """The model with the user's preprocessing overrides applied."""
    from krypton.models import load_model, with_overrides

    size = image_size(args.size)
    loaded = load_model(args.model, weights=args.weights, size=size)
    return with_overrides(loaded, size, args.mean, args.std, args.labels, getattr(args, "resize", None))


def _default_patch(size: tuple[int, int], patch: int | None, stride: int | None, demo: Any) -> tuple[int, int]:
    from krypton.models.demos import default_grid

    patch, stride = default_grid(size, demo, patch, stride)
    if patch > min(size):
        raise UsageError(
            f"patch {patch} is larger than the model input ({size[0]}x{size[1]}); use --patch <= {min(size)}"
        )
    return patch, stride


def _images(args: argparse.Namespace, demo: Any) -> list[tuple[str, str | None, Any]]:
    """(name, true label or None, [0, 1] pixels) per IMAGE, read before the slow model load: typos fail fast."""
    from krypton.io import read_image
    from krypton.models import demo_image, model_kind

    if not args.images:
        model_kind(args.model)  # an unknown model is the first thing to report
        if demo is None:
            raise UsageError(f"give at least one IMAGE to explain with {args.model}")
        image = demo.images()[demo.default_image]
        return [(image.name, image.label, image.pixels())]
    found = []
    for token in args.images:
        named = demo_image(token) if not Path(token).exists() else None
        if named is not None:
            found.append((named[1].name, named[1].label, named[1].pixels()))
        else:
            found.append((Path(token).stem, None, read_image(token)))
    return found

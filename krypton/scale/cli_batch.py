"""`krypton batch`: explain a folder, glob or list of images, resumably, on one or many workers.

Wired into the `krypton` command by `krypton.cli` (`add_parser` + `run`); it reuses that module's
model options and argument types so that `batch` and `explain` take the same flags. `python -m
krypton.scale batch ...` runs it standalone.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from krypton.choices import MODES, STYLES

EPILOG = """examples:
  krypton batch xray: --out xray-maps                          # the 16 bundled X-rays, one worker per CPU
  krypton batch scans/ --out maps --model resnet18 --weights r18.pth --patch 32 --stride 16
  krypton batch 'data/**/*.png' --out maps --model model.onnx --workers 8
  krypton batch list.txt --out maps --cluster auto              # join the Ray cluster running here
  krypton batch scans/ --out maps --cluster ray://head:10001     # or a remote one (paths must exist there)
re-run the same command to resume: finished images are skipped, missing or failed ones redone.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `batch` subcommand to `krypton`'s subparsers (parser_class is krypton's one-line-error Parser)."""
    from krypton.cli_common import _drilldown, _floats, _model_args, _positive, _tau

    parser = subparsers.add_parser(
        "batch",
        help="explain many images (folder, glob, list file) on one or many workers, resumably",
        description="Explain every image of INPUT and write OUT/<image>.png/.npz/.json plus OUT/manifest.jsonl. "
        "Runs locally (one worker per CPU, on a loopback-only Ray; this process alone with --workers 1) or "
        "on an existing Ray cluster (--cluster). Exit code: 0 when every image was explained, 1 when some "
        "failed (each failure is in the manifest with its reason), 2 for a usage error.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="folder (searched recursively), glob (quote it), list file (.txt/.csv: PATH[,LABEL] per line), "
        "image file, or DEMO: for all bundled images of a demo",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (re-runs resume in it)")
    _model_args(parser)
    group = parser.add_argument_group("explain options (as for `krypton explain`)")
    group.add_argument("--target", metavar="CLASS", help="class index or name (default: each image's top class)")
    group.add_argument("--patch", type=_positive, metavar="N", help="patch side (default: per demo, ~1/7 of input)")
    group.add_argument("--stride", type=_positive, metavar="N", help="step between positions (default: patch/2)")
    group.add_argument("--fill", type=_floats, default=(0.0,), metavar="V[,V,V]", help="patch value (default 0)")
    group.add_argument("--mode", choices=MODES, default="exact", help="default: exact")
    group.add_argument("--tau", type=_tau, metavar="T", help="approximate mode: projective-field threshold (0, 1]")
    group.add_argument(
        "--drilldown", nargs="?", const=True, type=_drilldown, metavar="SPEC", help="approximate mode: drill-down"
    )
    group.add_argument("--style", choices=STYLES, default="overlay", help="picture style")
    group.add_argument("--device", choices=("cpu", "cuda"), help="where workers run the model")
    group.add_argument("--batch-size", type=_positive, metavar="N", help="positions per batch (default: automatic)")
    group.add_argument(
        "--no-resize", action="store_true", help="fail images whose size differs from the model input instead"
    )
    run_group = parser.add_argument_group("run")
    run_group.add_argument(
        "--cluster",
        metavar="local|auto|ADDRESS",
        help="local: a Ray runtime on this machine (loopback only); auto: the cluster started here with "
        "`ray start`; ADDRESS: HOST:PORT or ray://HOST:PORT. Default: local, or this process for 1 worker",
    )
    run_group.add_argument(
        "--workers", type=_positive, metavar="N", help="model copies working in parallel (default: one per CPU)"
    )
    run_group.add_argument(
        "--cpus-per-worker",
        type=_positive,
        metavar="N",
        help="CPU cores (torch threads) per worker (default: 1 on Ray, all for a single in-process worker)",
    )
    run_group.add_argument("--redo", action="store_true", help="explain every image again, even finished ones")
    run_group.add_argument("--no-progress", action="store_true", help="hide the progress lines")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `krypton batch` from parsed arguments; 0 when every image was explained, 1 if some failed."""
    from krypton.cli_common import UsageError, image_size
    from krypton.scale.cluster import ClusterError
    from krypton.scale.run import WorkerLoadError, explain_many
    from krypton.scale.store import BusyError

    if (args.tau is not None or args.drilldown is not None) and args.mode != "approximate":
        raise UsageError("--tau and --drilldown need --mode approximate")
    fill = tuple(args.fill)
    try:
        summary = explain_many(
            args.model,
            args.inputs,
            out_dir=args.out,
            weights=args.weights,
            size=image_size(args.size),
            mean=args.mean,
            std=args.std,
            labels=args.labels,
            target=args.target,
            patch=args.patch,
            stride=args.stride,
            fill=fill if len(fill) > 1 else fill[0],
            mode=args.mode,
            tau=args.tau,
            drilldown=args.drilldown,
            batch_size=args.batch_size,
            device=args.device,
            style=args.style,
            resize=not args.no_resize,
            workers=args.workers,
            cluster=args.cluster,
            cpus_per_worker=args.cpus_per_worker,
            redo=args.redo,
            progress=not args.no_progress,
        )
    except (ClusterError, WorkerLoadError, BusyError) as exc:
        raise UsageError(str(exc)) from None
    return 1 if summary.failed else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m krypton.scale batch ...`: the subcommand on its own, with `krypton`'s error handling."""
    import krypton.cli_common as cli

    parser = cli.Parser(prog="krypton", description="krypton batch (standalone)")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=cli.Parser, required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("krypton: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        import os

        if os.environ.get("KRYPTON_DEBUG"):
            raise
        print(f"krypton: error: {cli._message(exc)}", file=sys.stderr)
        return cli.EXIT_USAGE

"""`krypton explain` on volumes and signals: NIfTI, DICOM series, .npy in; PNG, raw results and NIfTI out.

Kept apart from the image path of `krypton.cli` because everything before the model differs: the
files carry raw intensities (windowed here, not normalised by a `Preprocess`), geometry (an affine to
keep) and 1 to 3 spatial axes; the explanation itself is the same `krypton.explain`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_PATCH, DEFAULT_STRIDE = 16, 8
DEMO_PATCH, DEMO_FILL = 8, 0.3  # the synthetic 32^3 demo: 8^3 patches (a blob is ~5 voxels wide)


class VolumeUsageError(ValueError):
    """A problem with the volumes or options given; one line, exit code 2 (as `cli.UsageError`)."""


def run_explain_volumes(args: argparse.Namespace, out: Path) -> int:
    """Read every input first (typos fail before the model loads), then explain each one."""
    import krypton
    from krypton.cli_common import _summary_line
    from krypton.io.volumes import CT_WINDOWS, is_volume_path, read_volume
    from krypton.models import load_model, with_overrides
    from krypton.outputs import save_raw
    from krypton.outputs.volumes import save_nifti

    demo = args.model == "lesion3d"
    if not demo and not all(is_volume_path(t) for t in args.images):
        raise VolumeUsageError("give either images or volumes/signals in one run, not both")
    window = CT_WINDOWS[args.window] if isinstance(args.window, str) else args.window
    if len(args.percentiles) != 2:
        raise VolumeUsageError(f"--percentiles needs two values LO,HI, got {args.percentiles}")
    if demo:
        inputs = _demo_volumes(args.images)
    else:
        inputs = [(_stem(Path(t)), read_volume(t, args.volume)) for t in args.images]
    started = time.perf_counter()
    loaded = with_overrides(load_model(args.model, weights=args.weights), labels=args.labels, image_input=False)
    print(f"model: {loaded.name} ({time.perf_counter() - started:.1f} s to load)")
    for note in loaded.notes:
        print(f"note: {note}")
    target = loaded.class_index(args.target)
    for stem, volume in inputs:
        tensor, affine, how = _model_input(volume, loaded, window, tuple(args.percentiles), args.size)
        rank = tensor.dim() - 1
        print(f"input {stem}: {'x'.join(map(str, tensor.shape))} ({how})")
        patch = args.patch or (DEMO_PATCH if demo else min(DEFAULT_PATCH, min(tensor.shape[1:])))
        stride = args.stride or max(1, min(DEFAULT_STRIDE, patch // 2))
        fill = args.fill[0] if len(args.fill) == 1 else list(args.fill)
        if demo and tuple(args.fill) == (0.0,):
            fill = DEMO_FILL  # mid-tissue grey: black is far outside the synthetic volumes' intensities
        options: dict[str, Any] = dict(
            target=target, patch=(patch,) * rank, stride=(stride,) * rank, mode=args.mode, fill=fill,
            batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
        )  # fmt: skip
        if args.tau is not None:
            options["tau"] = args.tau
        if args.drilldown is not None:
            options["drilldown"] = args.drilldown
        result = krypton.explain(loaded.module, tensor, **options)
        name = f"{stem}-{args.mode}"
        picture = result.save(out / f"{name}.png", tensor, class_names=loaded.class_names, scale=args.scale,
                              name=f"{loaded.name} - {stem}")  # fmt: skip
        meta = {"model": loaded.name, "image": stem, "input": how, "picture": str(picture)}
        save_raw(result, out / name, class_names=loaded.class_names, meta=meta)
        if args.nifti and rank == 3:
            print(f"heat map as NIfTI: {save_nifti(result, out / f'{name}.nii.gz', affine)}")
        print(_summary_line(stem, result, loaded, picture))
    return 0


def _demo_volumes(tokens: list[str]) -> list[tuple[str, Any]]:
    """The synthetic demo's volumes by token (`lesion3d:3`; none: the first), already in [0, 1]."""
    from krypton.io.volumes import Volume
    from krypton.models import volume_demo

    found = volume_demo.volumes()
    chosen = []
    for token in tokens or ["lesion3d:0"]:
        index = token.partition(":")[2]
        if not index.isdigit() or int(index) >= len(found):
            raise VolumeUsageError(f"{token}: the lesion3d demo has volumes lesion3d:0 to lesion3d:{len(found) - 1}")
        item = found[int(index)]
        chosen.append((f"{item.name}-{item.label}", Volume(item.data, np.eye(4), "synthetic")))
    return chosen


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".npy"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _model_input(  # noqa: ANN202
    volume: Any,
    loaded: Any,
    window: tuple[float, float] | None,
    percentiles: tuple[float, float],
    size: tuple[int, ...] | None = None,
):
    """(model input (C, *spatial), affine of the model's grid, description): windowed to [0, 1] and
    resampled to the model's fixed size when it has one, else to `size` (--size) when given (the
    affine follows the resampling)."""
    import numpy as np
    import torch

    from krypton.io.volumes import window as scale

    if volume.source == "synthetic":
        pixels, how = volume.data, "synthetic volume, already in [0, 1]"
    elif window is not None:
        pixels, how = scale(volume.data, center=window[0], width=window[1]), f"CT window {window[0]:g},{window[1]:g}"
    else:
        pixels, how = scale(volume.data, percentiles=percentiles), f"percentiles {percentiles[0]:g}-{percentiles[1]:g}"
    tensor, affine = torch.from_numpy(np.ascontiguousarray(pixels)), volume.affine
    wanted, whose = loaded.input_shape, "the model's"
    if size is not None:
        rank = tensor.dim() - 1
        size = size * rank if len(size) == 1 else size
        if len(size) != rank:
            raise VolumeUsageError(f"--size {','.join(map(str, size))}: this input has {rank} spatial axes "
                                   f"({'x'.join(map(str, tensor.shape[1:]))}); give {rank} values or one")  # fmt: skip
        if wanted is not None and tuple(wanted[1:]) != tuple(size):
            raise VolumeUsageError(f"--size {','.join(map(str, size))}: {loaded.name} takes a fixed "
                                   f"{'x'.join(map(str, wanted[1:]))} input; leave --size out")  # fmt: skip
        wanted, whose = (tensor.shape[0], *size), "--size"
    if wanted is not None and tuple(tensor.shape) != tuple(wanted):
        if len(wanted) != tensor.dim() or wanted[0] != tensor.shape[0]:
            raise VolumeUsageError(f"{loaded.name} takes inputs of shape {tuple(wanted)}; this input is "
                                   f"{tuple(tensor.shape)} (channels and axes must match)")  # fmt: skip
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[tensor.dim() - 1]
        resized = torch.nn.functional.interpolate(tensor[None], size=tuple(wanted[1:]), mode=mode, align_corners=False)
        if affine is not None and len(wanted) == 4:  # new voxel i sits at old (i + 0.5) * f - 0.5
            factors = np.asarray(tensor.shape[1:], float) / np.asarray(wanted[1:], float)
            linear = affine[:3, :3].copy()
            affine = affine.copy()
            affine[:3, :3] = linear * factors
            affine[:3, 3] = affine[:3, 3] + linear @ ((factors - 1) / 2)
        tensor, how = resized[0], f"{how}, resampled to {whose} {'x'.join(map(str, wanted[1:]))}"
    return tensor, affine, how

"""Which images a batch run covers: a folder, a glob, a list file, bundled demo images, or a list of them.

Every image gets a stable id (its path relative to the input root, without the suffix) that names its
output files, so a re-run of the same command finds the results of the previous one.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".dcm", ".dicom", ".dic"}
LIST_SUFFIXES = {".txt", ".lst", ".list", ".csv"}
MAGIC = re.compile(r"[*?\[]")
UNSAFE = re.compile(r"[^A-Za-z0-9._/-]+")


class InputError(ValueError):
    """The INPUT argument names nothing usable (no such folder, empty glob, empty list file)."""


@dataclass(frozen=True)
class Item:
    """One image of the run. token: a bundled demo image (`xray:NAME`) read by the demo's own reader."""

    id: str
    path: str
    truth: str | None = None
    token: str | None = None

    def read_bytes(self) -> bytes | None:
        """The raw file, shipped to workers on other machines (None for demo images: workers have them)."""
        if self.token is not None:
            return None
        with open(self.path, "rb") as handle:
            return handle.read()

    def pixels(self, data: bytes | None = None) -> np.ndarray:
        """(H, W, C) [0, 1] pixels, from `data` when given (a remote worker) or from the file."""
        from krypton.io import read_image

        if self.token is not None:
            from krypton.models import demo_image

            found = demo_image(self.token)
            assert found is not None
            return found[1].pixels()
        if data is None:
            return read_image(self.path)
        import tempfile

        with tempfile.TemporaryDirectory(prefix="krypton-") as folder:
            local = Path(folder) / Path(self.path).name  # same name: readers look at the suffix
            local.write_bytes(data)
            try:
                return read_image(local)
            except ValueError as exc:
                raise type(exc)(str(exc).replace(str(local), self.path)) from None


@dataclass(frozen=True)
class _Found:
    path: str
    root: Path | None = None  # ids are relative to it (the folder, or the glob's fixed part)
    truth: str | None = None
    token: str | None = None
    demo: str | None = None


def expand(inputs: str | Path | Sequence[str | Path], exclude: str | Path | None = None) -> list[Item]:
    """Items of INPUT: folder (recursive), glob, list file (`path[,label]` per line), image file,
    `DEMO:` (all of a demo's images) or `DEMO:N`; or a sequence of those. Files under `exclude` (the
    output folder) are skipped, so `krypton batch . --out results` does not explain its own pictures."""
    tokens = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not tokens:
        raise InputError("no images given")
    found: list[_Found] = []
    for token in tokens:
        found.extend(_one(str(token)))
    skip = Path(exclude).resolve() if exclude is not None else None
    unique: dict[str, _Found] = {}
    for entry in found:
        if skip is not None and entry.token is None and Path(entry.path).resolve().is_relative_to(skip):
            continue
        unique.setdefault(entry.token or str(Path(entry.path).resolve()), entry)
    if not unique:
        raise InputError(f"no images found in {', '.join(map(str, tokens))}")
    return _with_ids(list(unique.values()))


def _one(token: str) -> list[_Found]:
    path = Path(token).expanduser()
    if not path.exists() and ":" in token and not MAGIC.search(token):
        return _demo(token)
    if MAGIC.search(token) and not path.exists():
        fixed = _parts_before_magic(token)
        matches = sorted(glob.glob(os.path.expanduser(token), recursive=True))
        matched = [m for m in matches if Path(m).is_file()]
        if not matched:
            raise InputError(f"no files match {token}")
        return [_Found(f, Path(*fixed) if fixed else Path(".")) for f in matched]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p, path))
        if not files:
            raise InputError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {path}")
        return [_Found(str(p), path) for p in files]
    if not path.exists():
        raise InputError(f"input not found: {token}")
    if path.suffix.lower() in LIST_SUFFIXES:
        return _list_file(path)
    return [_Found(str(path))]


def _is_image(path: Path, root: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return not hidden and path.suffix.lower() in IMAGE_SUFFIXES


def _parts_before_magic(token: str) -> list[str]:
    parts = Path(os.path.expanduser(token)).parts
    out = []
    for part in parts[:-1]:
        if MAGIC.search(part):
            break
        out.append(part)
    return out


def _list_file(path: Path) -> list[_Found]:
    """One image per line, `path` or `path,label` (tab works too); relative paths are from the list's folder."""
    entries: list[_Found] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, truth = line.replace("\t", ",").partition(",")
        name, expected = name.strip(), truth.strip() or None
        image = Path(name).expanduser()
        image = image if image.is_absolute() else path.parent / image
        if ":" in name and not image.exists():
            entries.extend(replace(f, truth=expected or f.truth) for f in _demo(name))
        else:
            entries.append(_Found(str(image), truth=expected))
    if not entries:
        raise InputError(f"list file {path} names no images")
    return entries


def _demo(token: str) -> list[_Found]:
    """`xray:` / `xray:*` (every image), `xray:3` or `xray:NAME` (one)."""
    from krypton.io import read_image
    from krypton.models import DEMOS, demo_image

    name, _, which = token.partition(":")
    if name not in DEMOS:
        raise InputError(f"input not found: {token} (and {name!r} is no demo: {', '.join(DEMOS)})")
    images = DEMOS[name].images() if which in ("", "*", "all") else [demo_image(token)[1]]  # type: ignore[index]
    out = []
    for image in images:
        custom = image.reader is not read_image  # e.g. the raw MRI slice: only the demo knows its layout
        out.append(_Found(str(image.path), None, image.label, f"{name}:{image.name}" if custom else None, name))
    return out


def _with_ids(entries: list[_Found]) -> list[Item]:
    plain = [Path(f.path) for f in entries if f.root is None and f.demo is None]
    common = Path(os.path.commonpath([str(p.resolve().parent) for p in plain])) if plain else None
    ids = []
    for f in entries:
        if f.demo is not None:
            ids.append(f"{f.demo}/{Path(f.path).name.split('.')[0]}")
            continue
        base = f.root if f.root is not None else common
        assert base is not None
        rel = Path(f.path).resolve().relative_to(base.resolve())
        ids.append(str(rel.with_suffix("")).replace(os.sep, "/"))
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    items: list[Item] = []
    seen: set[str] = set()
    for f, ident in zip(entries, ids):
        if counts[ident] > 1:  # a.png and a.jpg: keep both, told apart by their suffix
            ident = f"{ident}_{Path(f.path).suffix.lstrip('.').lower()}"
        ident = _safe(ident)
        if ident in seen:
            ident = f"{ident}_{len(items)}"
        seen.add(ident)
        items.append(Item(ident, f.path, f.truth, f.token))
    return items


def _safe(ident: str) -> str:
    """A relative path without '..', hidden parts or characters that upset file systems and shells."""
    parts = [UNSAFE.sub("_", p).lstrip(".") or "_" for p in ident.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "image"

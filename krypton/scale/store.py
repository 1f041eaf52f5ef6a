"""The output folder of a batch run: per-image files written atomically, and the run's manifest.

Only the driver writes here (workers send bytes back), so a multi-machine run needs no shared storage,
and a driver killed at any instant leaves whole files or nothing: each file is written to a temporary
name and renamed into place, the `.json` record last. An image counts as finished when its record says
"ok" for the same run key and its picture and arrays exist; everything else is redone on a re-run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.jsonl"
LOCK = ".krypton-batch.lock"
TMP_MARK = ".tmp-"
SUFFIXES = (".png", ".npz", ".json")  # written in this order: the record last


class BusyError(RuntimeError):
    """Another live batch run is writing to the same output folder."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers (and re-runs) see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Store:
    """Paths, resume state and the manifest of one output folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest = self.root / MANIFEST
        self._lock = self.root / LOCK

    # --- run lifetime ----------------------------------------------------------------------------------
    def open(self) -> None:
        """Take the folder (refusing a second live run) and drop temporary files a killed run left."""
        if self._lock.exists():
            try:
                other = int(self._lock.read_text().strip() or 0)
            except (OSError, ValueError):
                other = 0
            if other and other != os.getpid() and _alive(other):
                raise BusyError(f"another krypton batch run (pid {other}) is writing to {self.root}")
        self._lock.write_text(str(os.getpid()))
        for leftover in self.root.rglob(f".*{TMP_MARK}*"):
            leftover.unlink(missing_ok=True)

    def close(self) -> None:
        self._lock.unlink(missing_ok=True)

    # --- per image -------------------------------------------------------------------------------------
    def path(self, item_id: str, suffix: str) -> Path:
        return self.root / f"{item_id}{suffix}"

    def outputs(self, item_id: str) -> dict[str, str]:
        """Output file names relative to the folder, as recorded in the manifest."""
        return {s.lstrip("."): f"{item_id}{s}" for s in SUFFIXES}

    def record(self, item_id: str) -> dict[str, Any] | None:
        """The batch record stored in an image's `.json`, or None when missing or unreadable."""
        try:
            data = json.loads(self.path(item_id, ".json").read_text())
        except (OSError, ValueError):
            return None
        record = data.get("batch") if isinstance(data, dict) else None
        return record if isinstance(record, dict) else None

    def finished(self, item_id: str, key: str) -> dict[str, Any] | None:
        """The record of an image already explained with these settings, else None (to be redone)."""
        record = self.record(item_id)
        if not record or record.get("status") != "ok" or record.get("key") != key:
            return None
        if not all(self.path(item_id, s).exists() for s in (".png", ".npz")):
            return None
        return record

    def write_result(self, item_id: str, files: dict[str, bytes]) -> None:
        """An image's files, each atomically, the `.json` record last (it marks the image finished)."""
        for suffix in SUFFIXES:
            if suffix in files:
                atomic_write(self.path(item_id, suffix), files[suffix])

    # --- manifest --------------------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> None:
        """One JSON line per processed image, flushed at once so a killed run keeps its log."""
        with open(self.manifest, "a") as handle:
            handle.write(json.dumps(record, sort_keys=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_manifest(self) -> list[dict[str, Any]]:
        """All manifest lines; a line torn by a killed run is skipped."""
        if not self.manifest.exists():
            return []
        records = []
        for line in self.manifest.read_text().splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                records.append(value)
        return records

    def compact(self, order: Iterable[str]) -> list[dict[str, Any]]:
        """Rewrite the manifest as one line per image of this run, in input order: the newer of the image's
        own record and its last manifest line (a killed driver may have written one but not the other)."""
        latest: dict[str, dict[str, Any]] = {}
        for record in self.read_manifest():
            if "image" in record:
                latest[record["image"]] = record
        lines = []
        for item_id in order:
            candidates = [r for r in (self.record(item_id), latest.get(item_id)) if r]
            if candidates:
                lines.append(max(candidates, key=lambda r: str(r.get("finished_at", ""))))
        text = "".join(json.dumps(r) + "\n" for r in lines)
        atomic_write(self.manifest, text.encode())
        return lines


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""One worker: loads the model once, then explains image after image and hands back finished files.

The same class runs in-process (one worker, no Ray) and as a Ray actor (many workers, many machines).
Rendering happens here, in parallel, and the results go back as bytes so that only the driver touches
the output folder. A bad image never takes the worker down: its error becomes a "failed" record.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from krypton.scale.inputs import Item
from krypton.scale.spec import ModelSpec, Settings


def one_line(exc: BaseException) -> str:
    """An exception as the one line a manifest or a terminal shows."""
    text = " ".join(str(exc).split())
    if isinstance(exc, (ValueError, OSError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def failed_record(item: Item, reason: str, key: str, info: dict[str, Any]) -> dict[str, Any]:
    """The record of an image the driver gave up on without a worker's answer (e.g. unreadable here)."""
    return {
        "image": item.id,
        "source": item.token or item.path,
        "truth": item.truth,
        "status": "failed",
        "error": reason,
        "label": None,
        "probability": None,
        "time_s": 0.0,
        "settings": info.get("settings"),
        "model": info.get("model_spec"),
        "key": key,
        "worker": "driver",
        "finished_at": now(),
    }


class Explainer:
    """Model + settings, loaded once per worker process; `explain(item)` returns a record and its files.

    A load failure is kept and reported by `ready()` rather than raised: a Ray actor that raises in its
    constructor is only seen as "died", and the user needs the reason (wrong weights, missing package).
    """

    def __init__(self, spec: ModelSpec, settings: Settings, key: str, threads: float | None = None) -> None:
        self.spec, self.settings, self.key = spec, settings, key
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.error: str | None = None
        started = time.perf_counter()
        try:
            if threads:
                import torch

                torch.set_num_threads(max(1, int(threads)))
            self.loaded = spec.load()
            self.kwargs = settings.resolve(self.loaded, spec.model)
        except Exception as exc:
            self.error = one_line(exc)
        self.load_s = time.perf_counter() - started
        self.capture_s = self._capture() if self.error is None else 0.0
        if self.error is None:  # renderer imports, so that the first image is not slower than the rest
            import matplotlib.backends.backend_agg  # noqa: F401
            import matplotlib.figure  # noqa: F401

            import krypton.outputs  # noqa: F401

    def _capture(self) -> float:
        """Capture the model's graph now, once: `krypton.explain` reuses it for every image of this size,
        and the slow first capture then counts as start-up, not as the first image's time."""
        if self.settings.mode == "naive" or self.settings.device not in (None, "cpu"):
            return 0.0
        import torch

        from krypton.pipeline import graph_for

        started = time.perf_counter()
        pre = self.loaded.preprocess
        assert pre is not None  # the spec's loader always says how inputs are prepared
        try:
            graph_for(self.loaded.module, torch.zeros(1, pre.channels, *pre.size))
        except Exception:  # a model the engine cannot capture: explain() falls back and says so per image
            pass
        return time.perf_counter() - started

    def ready(self) -> dict[str, Any]:
        """What the driver needs before it starts: the worker's id, or why the model did not load."""
        if self.error is not None:
            return {"worker": self.worker, "error": self.error}
        return {
            "worker": self.worker,
            "pid": os.getpid(),
            "error": None,
            "model": self.loaded.name,
            "preprocess": self.loaded.preprocess.describe() if self.loaded.preprocess else None,
            "notes": list(self.loaded.notes),
            "settings": self.resolved(),
            "model_spec": {"name": self.loaded.name, **asdict(self.spec)},
            "load_s": self.load_s,
            "capture_s": self.capture_s,
        }

    def resolved(self) -> dict[str, Any]:
        """The settings actually used (defaults filled in), recorded with every image."""
        out = {k: v for k, v in self.kwargs.items() if k != "target"}
        out["target"] = self.settings.target
        out["style"], out["resize"] = self.settings.style, self.settings.resize
        return json.loads(json.dumps(out, default=str))

    def explain(self, item: Item, data: bytes | None = None) -> dict[str, Any]:
        """Explain one image: {"record": manifest record, "files": {".png"/".npz"/".json": bytes}}."""
        if self.error is not None:
            raise RuntimeError(f"worker could not load the model: {self.error}")
        started = time.perf_counter()
        record: dict[str, Any] = {"image": item.id, "source": item.token or item.path, "truth": item.truth}
        try:
            files = self._explain(item, data, record, started)
        except Exception as exc:  # unreadable, wrong size, rejected by the model...: recorded, run goes on
            record.update(status="failed", error=one_line(exc), label=None, probability=None)
            files = {}
        record.setdefault("time_s", round(time.perf_counter() - started, 4))
        record.update(
            settings=self.resolved(),
            model={"name": self.loaded.name, **asdict(self.spec)},  # same as ready()["model_spec"]
            key=self.key,
            worker=self.worker,
            finished_at=now(),
        )
        if files:
            files[".json"] = self._json(files.pop(".json"), record)
        return {"record": record, "files": files}

    def _explain(self, item: Item, data: bytes | None, record: dict[str, Any], started: float) -> dict[str, bytes]:
        import krypton
        from krypton.outputs import png_bytes, save_raw

        pre = self.loaded.preprocess
        assert pre is not None  # the spec's loader always says how inputs are prepared
        pixels = item.pixels(data)
        if not self.settings.resize and tuple(pixels.shape[:2]) != tuple(pre.size):
            h, w = pixels.shape[:2]
            raise ValueError(f"wrong size {h}x{w}: the model takes {pre.size[0]}x{pre.size[1]} (resizing is off)")
        tensor, shown = pre(pixels)
        result = krypton.explain(self.loaded.module, tensor, progress=False, **self.kwargs)
        record.update(
            status="ok",
            error=None,
            target=result.target,
            label=self.loaded.label(result.target),
            probability=result.probability,
            mode=result.mode,
            positions=result.stats.get("positions"),
            explain_s=round(result.stats.get("wall_time_s", 0.0), 4),
            theoretical_speedup=result.stats.get("theoretical_speedup"),
            outputs={s: f"{item.id}.{s}" for s in ("png", "npz", "json")},
        )
        name = f"{self.loaded.name} - {item.id}" + (f" (labelled {item.truth})" if item.truth else "")
        png = png_bytes(result, shown, class_names=self.loaded.class_names, style=self.settings.style, name=name)
        with tempfile.TemporaryDirectory(prefix="krypton-") as folder:
            stem = Path(folder) / "result"
            meta = {"model": self.loaded.name, "image": item.id, "preprocess": pre.describe()}
            npz, js = save_raw(result, stem, class_names=self.loaded.class_names, meta=meta)
            files = {".png": png, ".npz": npz.read_bytes(), ".json": js.read_bytes()}
        record["time_s"] = round(time.perf_counter() - started, 4)
        return files

    @staticmethod
    def _json(raw: bytes, record: dict[str, Any]) -> bytes:
        """The image's `.json` (krypton's usual summary) with the batch record added: it marks it finished."""
        info = json.loads(raw)
        info["picture"] = record["outputs"]["png"]
        info["batch"] = record
        return (json.dumps(info, indent=2) + "\n").encode()

"""`explain_many`: explain a whole dataset, resumably, in this process or on Ray workers.

The driver (this process) decides what is left to do from the output folder, hands images to workers
that each hold the model, writes every result it gets back atomically and logs it in the manifest.
Stopping it at any point (Ctrl-C, a crash, a kill) loses at most the images in flight; running the same
call again does only what is missing or failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krypton.scale.cluster import ClusterError, Pool, all_local, capacity, connect
from krypton.scale.inputs import Item, expand
from krypton.scale.progress import Progress
from krypton.scale.spec import ModelSpec, Settings, run_key
from krypton.scale.store import Store
from krypton.scale.worker import Explainer, failed_record


class WorkerLoadError(RuntimeError):
    """A worker could not load the model or apply the settings; nothing was explained."""


@dataclass
class BatchSummary:
    """Outcome of a run: counts, throughput, where the manifest is, and one record per image."""

    total: int
    explained: int
    skipped: int
    failed: int
    not_done: int
    seconds: float
    images_per_minute: float
    workers: int
    out_dir: Path
    manifest: Path
    line: str
    interrupted: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)


def explain_many(
    model_spec: ModelSpec | str | Path | dict[str, Any],
    images: str | Path | Sequence[str | Path],
    *,
    out_dir: str | Path,
    weights: str | None = None,
    size: tuple[int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    labels: str | None = None,
    target: str | int | None = None,
    patch: int | None = None,
    stride: int | None = None,
    fill: float | tuple[float, ...] = 0.0,
    mode: str = "exact",
    tau: float | None = None,
    drilldown: Any = None,
    batch_size: int | None = None,
    device: str | None = None,
    style: str = "overlay",
    resize: bool = True,
    workers: int | None = None,
    cluster: str | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float | None = None,
    redo: bool = False,
    progress: bool = True,
    verbose: bool = True,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> BatchSummary:
    """Explain every image of `images` (folder, glob, list file, `DEMO:`, or a list) with the model
    described by `model_spec` (demo name, torchvision architecture + `weights`, or model file), writing
    OUT/<image>.png/.npz/.json and OUT/manifest.jsonl. Explain options as in `krypton.explain`
    (patch/stride default to the demo's or ~1/7 of the input); `resize=False` fails images whose size
    differs from the model input instead of resizing them.

    cluster: None / "local" (a loopback-only Ray on this machine, or this process when `workers` is 1),
    "auto" (the running cluster) or an address ("head:6379", "ray://head:10001"). workers: default one
    per CPU here, or as many as the cluster fits; cpus_per_worker: torch threads (and Ray CPUs) of each
    (default: 1 on Ray, all cores for the in-process worker). Finished images are skipped unless `redo`.
    `on_result(record)` is called in this process after each image (for custom progress or logging).
    """
    spec = ModelSpec.of(model_spec, weights=weights, size=size, mean=mean, std=std, labels=labels)
    settings = Settings(target, patch, stride, fill, mode, tau, drilldown, batch_size, device, style, resize)
    key = run_key(spec, settings)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if cluster in (None, "local"):  # a typo in the model fails now, not after starting Ray and workers
        from krypton.models import model_kind

        model_kind(spec.model)
    items = expand(images, exclude=out_dir)
    store = Store(out_dir)
    store.open()
    try:
        finished = {} if redo else {i.id: r for i in items if (r := store.finished(i.id, key)) is not None}
        todo = [i for i in items if i.id not in finished]
        bar = Progress(len(items), len(finished), enabled=progress)
        run = _Run(store, bar, key, on_result)
        count = _worker_count(workers, cluster, len(todo))
        interrupted = False
        try:
            if not todo:
                pass
            elif cluster is None and count == 1:
                _in_process(run, Explainer(spec, settings, key, threads=cpus_per_worker), todo, verbose)
            else:
                gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if device == "cuda" else 0.0)
                cpus = cpus_per_worker or 1
                count = _on_ray(run, spec, settings, key, todo, count, cluster, cpus, gpus, verbose, workers)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            records = store.compact([i.id for i in items])
        line = bar.summary(count if todo else 0, str(store.manifest), interrupted)
        if verbose:
            print(line, flush=True)
        if interrupted:
            raise KeyboardInterrupt
    finally:
        store.close()
    return BatchSummary(
        total=len(items),
        explained=bar.done - bar.failed,
        skipped=bar.skipped,
        failed=bar.failed,
        not_done=bar.todo - bar.done,
        seconds=bar.elapsed(),
        images_per_minute=bar.rate(),
        workers=count if todo else 0,
        out_dir=store.root,
        manifest=store.manifest,
        line=line,
        records=records,
    )


class _Run:
    """The driver's side of every result: write files, log the manifest line, count, call back."""

    def __init__(self, store: Store, bar: Progress, key: str, on_result: Callable | None) -> None:
        self.store, self.bar, self.key, self.on_result = store, bar, key, on_result
        self.info: dict[str, Any] = {}

    def done(self, item: Item, result: dict[str, Any]) -> None:
        record = result["record"]
        self.store.write_result(item.id, result["files"])
        self._log(record)

    def failed(self, item: Item, reason: str) -> None:
        self._log(failed_record(item, reason, self.key, self.info))

    def _log(self, record: dict[str, Any]) -> None:
        self.store.append(record)
        self.bar.update(record)
        if self.on_result is not None:
            self.on_result(record)


def _worker_count(workers: int | None, cluster: str | None, todo: int) -> int:
    if workers is not None:
        return max(1, min(workers, todo))
    if cluster in (None, "local"):
        return max(1, min(os.cpu_count() or 1, todo))
    return todo  # as many as the cluster fits: capped in `_on_ray`


def _check(infos: list[dict[str, Any]]) -> dict[str, Any]:
    for info in infos:
        if info.get("error"):
            raise WorkerLoadError(f"worker {info['worker']} could not start: {info['error']}")
    return infos[0]


def _header(run: _Run, todo: int, where: str, verbose: bool) -> None:
    run.bar.begin()
    info = run.info
    if not verbose:
        return
    print(
        f"model: {info['model']} (loaded in {info['load_s']:.1f} s, graph captured in {info['capture_s']:.1f} s); "
        f"input {info['preprocess']}; "
        f"patch {info['settings']['patch']}, stride {info['settings']['stride']}, mode {info['settings']['mode']}",
        flush=True,
    )
    for note in info.get("notes", []):
        print(f"note: {note}", flush=True)
    print(f"krypton batch: {todo} images to explain on {where}", flush=True)


def _in_process(run: _Run, worker: Explainer, todo: list[Item], verbose: bool) -> None:
    run.info = _check([worker.ready()])
    _header(run, len(todo), "1 worker (this process)", verbose)
    with _ctrl_c_noted() as pressed:
        for item in todo:
            run.done(item, worker.explain(item))  # reading the file is part of it: a bad file becomes "failed"
            if pressed:  # a Ctrl-C whose KeyboardInterrupt landed in a finaliser, where Python drops it
                raise KeyboardInterrupt


@contextlib.contextmanager
def _ctrl_c_noted() -> Iterator[list[bool]]:
    """Ctrl-C raises KeyboardInterrupt as usual and is also noted (a list that turns truthy), for the
    loop to stop at the next image when the exception was swallowed (e.g. raised inside a weakref
    callback, where Python only prints "Exception ignored"). Main thread only; elsewhere nothing changes."""
    pressed: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return

    def note(signum: int, frame: Any) -> None:
        pressed.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _on_ray(
    run: _Run,
    spec: ModelSpec,
    settings: Settings,
    key: str,
    todo: list[Item],
    count: int,
    cluster: str | None,
    cpus: float,
    gpus: float,
    verbose: bool,
    asked: int | None,
) -> int:
    local_cpus = max(os.cpu_count() or 1, int(count * cpus + 0.999))
    with connect(cluster, local_cpus) as ray:
        fits = capacity(ray, cpus, gpus)
        if fits < 1:
            raise ClusterError(f"the Ray cluster has no room for a worker with {cpus} CPUs and {gpus} GPUs")
        if count > fits:
            if asked is not None and verbose:
                print(f"krypton batch: the Ray cluster fits {fits} workers, not {count}", file=sys.stderr)
            count = fits
        pool = Pool(ray, (spec, settings, key), count, cpus, gpus)
        try:
            try:
                run.info = _check(pool.ready())
            except ray.exceptions.RayError as exc:  # e.g. krypton or a model package missing on a node
                lines = str(getattr(exc, "cause", None) or exc).strip().splitlines()
                raise WorkerLoadError(f"a Ray worker failed to start: {lines[-1] if lines else exc}") from None
            ship = not all_local(ray)
            kind = "cluster" if cluster not in (None, "local") else "local"
            where = f"{count} Ray worker{'s' if count != 1 else ''} ({kind})"
            _header(run, len(todo), where + (", images sent to them" if ship else ""), verbose)
            pool.run(todo, ship, run.done, run.failed)
        finally:
            pool.close()
    return count

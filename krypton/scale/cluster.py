"""Ray: start a loopback-only local runtime or join a cluster, and keep a pool of model-holding actors busy.

Facts this relies on (measured on Ray 2.60): `address="local"` never reads the
`/tmp/ray/ray_current_cluster` file that a dead cluster leaves behind (a plain `ray.init()` can hang on
it for minutes), so that file is only consulted for `--cluster auto`; any address is probed with a short
TCP connect first, and joining has a deadline, because `ray.init` retries an unreachable GCS forever.
Ray also rewrites 127.0.0.1 to the machine's LAN address unless the loopback switch below is set, so
joining a loopback-only cluster without it hangs (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` also keeps a
local Ray on 127.0.0.1). A killed actor stays dead by default; `max_restarts`/`max_task_retries` make
Ray restart a killed worker and retry its calls, and the driver replaces a worker that died too often
and gives up on an image that killed its worker repeatedly.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Any

from krypton.scale.inputs import Item

LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
JOIN_TIMEOUT = float(os.environ.get("KRYPTON_RAY_JOIN_TIMEOUT", "120"))
CLUSTER_FILE: str | None = None  # default: where `ray start` writes it, as Ray finds it (see `cluster_file`)
DEPTH = 2  # calls queued per worker: the next image is already there when one finishes
MAX_RESTARTS = 3  # Ray restarts a killed worker this often; then the driver starts a fresh one
MAX_TASK_RETRIES = 2  # Ray re-sends a killed worker's calls this often
MAX_ATTEMPTS = 2  # driver-level tries of an image whose worker died for good


class ClusterError(RuntimeError):
    """Ray is missing, or no cluster answers at the given address."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError(
            "Ray is not installed: pip install 'krypton-obe[ray]' (or run with --workers 1, in this process)"
        ) from None
    return ray


@contextlib.contextmanager
def connect(cluster: str | None, cpus: int) -> Iterator[Any]:
    """Ray for the run: a runtime already initialised by the caller is used and left running; else a
    loopback-only local one (cluster None/"local", `cpus` CPUs) or the cluster at "auto"/ADDRESS, shut
    down at the end."""
    local = cluster in (None, "local")
    address = None if local else resolve_address(str(cluster))
    if local:
        _loopback(LOCAL_ENV)
    elif _host_port(str(address))[0] in LOOPBACK_HOSTS:  # Ray would swap 127.0.0.1 for the LAN address
        _loopback({k: v for k, v in LOCAL_ENV.items() if k == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"})
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if local:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    else:
        _join(ray, str(address))
    try:
        yield ray
    finally:
        ray.shutdown()


def _join(ray: Any, address: str) -> None:
    """`ray.init(address)` with a deadline: it retries a GCS it cannot reach forever, ignoring SIGTERM."""
    box: dict[str, BaseException] = {}

    def start() -> None:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc

    thread = threading.Thread(target=start, name="krypton-ray-join", daemon=True)
    thread.start()
    thread.join(JOIN_TIMEOUT)
    if thread.is_alive():
        raise ClusterError(
            f"the Ray cluster at {address} accepts connections but did not let this process join within "
            f"{JOIN_TIMEOUT:.0f} s (a Ray version mismatch, auth token, or a head that listens on another "
            "address?); see `ray status`"
        )
    if "error" in box:
        raise ClusterError(f"cannot join the Ray cluster at {address}: {_first_line(box['error'])}") from None


def _loopback(values: dict[str, str]) -> None:
    """Keep a local Ray on 127.0.0.1, without auth tokens or usage reports, unless the user set otherwise.

    The variables must be set before Ray starts its processes (they inherit them) and, for the loopback
    switch, before `ray` is imported: Ray reads it once into a constant, which is corrected here when
    something imported Ray earlier (checked against Ray 2.60; re-check when upgrading).
    """
    for key, value in values.items():
        os.environ.setdefault(key, value)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]


def cluster_file() -> str:
    """The file in which `ray start` leaves the address of the cluster on this machine (RAY_TMPDIR/TMPDIR aware)."""
    if CLUSTER_FILE is not None:
        return CLUSTER_FILE
    base = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return os.path.join(base or "/tmp", "ray", "ray_current_cluster")


def resolve_address(cluster: str) -> str:
    """The address to join for "auto" (RAY_ADDRESS, else the cluster file) or ADDRESS, checked to answer."""
    if cluster == "auto":
        address = os.environ.get("RAY_ADDRESS", "").strip()
        source = "RAY_ADDRESS"
        if not address:
            source = cluster_file()
            try:
                with open(source) as handle:
                    address = handle.read().strip()
            except OSError:
                raise ClusterError(
                    "--cluster auto: no Ray cluster is running on this machine (start one with "
                    "`ray start --head`, give its ADDRESS, or leave --cluster out for a local run)"
                ) from None
    else:
        address, source = cluster, "--cluster"
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=3.0).close()
    except OSError as exc:
        stale = ""
        if source not in ("RAY_ADDRESS", "--cluster"):
            stale = f"; {source} is left over from a cluster that ended (`ray stop` removes it)"
        raise ClusterError(
            f"no Ray cluster answers at {address} (from {source}: {exc.strerror or exc}){stale}; "
            "leave --cluster out to run locally"
        ) from None
    return address


def _host_port(address: str) -> tuple[str, int]:
    """'ray://head:10001', 'head:6379', '10.0.0.5' (port 6379, Ray's default)."""
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, ""
    try:
        return host or "127.0.0.1", int(port or (10001 if address.startswith("ray://") else 6379))
    except ValueError:
        raise ClusterError(f"not a Ray address: {address!r} (expected HOST:PORT or ray://HOST:PORT)") from None


def capacity(ray: Any, cpus: float, gpus: float) -> int:
    """How many workers of this size the cluster can run at once (more would wait forever)."""
    resources = ray.cluster_resources()
    fits = int(resources.get("CPU", 0) // cpus) if cpus else 10**6
    if gpus:
        fits = min(fits, int(resources.get("GPU", 0) // gpus))
    return fits


def all_local(ray: Any) -> bool:
    """True when every node is this machine: workers can then read the images from disk themselves."""
    here = ray.util.get_node_ip_address()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return bool(nodes) and all(n.get("NodeManagerAddress") == here for n in nodes)


class Pool:
    """`workers` Explainer actors, each holding the model, fed image by image (least-busy first)."""

    def __init__(self, ray: Any, args: tuple, workers: int, cpus: float, gpus: float) -> None:
        from krypton.scale.worker import Explainer

        self.ray, self.args = ray, args
        self.cls = ray.remote(Explainer).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES
        )
        self.threads = max(1, int(cpus))
        self.actors = [self._start() for _ in range(workers)]
        self.replacements = 2 * workers
        self.inflight: dict[Any, tuple[int, Any, Item]] = {}

    def _start(self) -> Any:
        return self.cls.remote(*self.args, threads=self.threads)

    def ready(self) -> list[dict[str, Any]]:
        """Wait until every worker has loaded the model; their reports (with the first load error, if any)."""
        return self.ray.get([actor.ready.remote() for actor in self.actors])

    def close(self) -> None:
        """Stop the workers (frees their CPUs in a runtime that outlives the run); calls still queued are
        cancelled first, so Ray does not report each of them as failed and due for a retry."""
        for ref in list(self.inflight):
            with contextlib.suppress(Exception):
                self.ray.cancel(ref)
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
        self.actors = []

    def run(
        self,
        items: list[Item],
        ship: bool,
        done: Callable[[Item, dict[str, Any]], None],
        failed: Callable[[Item, str], None],
    ) -> None:
        """Explain `items`; `done(item, result)` per finished call, `failed(item, reason)` when the driver
        gives up on one (unreadable file here, or it keeps killing its worker)."""
        from ray.exceptions import ActorDiedError, RayActorError, RayError

        queue = deque(items)
        attempts: Counter[str] = Counter()
        inflight = self.inflight
        load = [0] * len(self.actors)

        def feed() -> None:
            while queue:
                slot = min(range(len(self.actors)), key=load.__getitem__)
                if load[slot] >= DEPTH:
                    return
                item = queue.popleft()
                try:
                    data = item.read_bytes() if ship else None
                except OSError as exc:
                    failed(item, f"cannot read image {item.path}: {exc.strerror or exc}")
                    continue
                actor = self.actors[slot]
                inflight[actor.explain.remote(item, data)] = (slot, actor, item)
                load[slot] += 1

        feed()
        while inflight:
            ready, _ = self.ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                slot, actor, item = inflight.pop(ref)
                load[slot] -= 1
                try:
                    result = self.ray.get(ref)
                except RayActorError as exc:
                    if isinstance(exc, ActorDiedError) and self.actors[slot] is actor:
                        self._replace(slot)  # once per dead worker, not once per call it had
                    attempts[item.id] += 1
                    if attempts[item.id] >= MAX_ATTEMPTS:
                        failed(item, f"its worker process died {attempts[item.id]} times while explaining it")
                    else:
                        queue.appendleft(item)
                except RayError as exc:
                    failed(item, f"worker error: {_first_line(exc)}")
                else:
                    done(item, result)
            feed()

    def _replace(self, slot: int) -> None:
        """A worker that Ray gave up restarting: start a fresh one in its place, within a budget."""
        if self.replacements <= 0:
            raise ClusterError("workers keep dying (out of memory? see the Ray logs); stopping the run")
        self.replacements -= 1
        with contextlib.suppress(Exception):
            self.ray.kill(self.actors[slot], no_restart=True)
        self.actors[slot] = self._start()


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    text = str(cause if cause is not None else exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__

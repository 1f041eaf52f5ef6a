"""Dataset-scale explanations: `explain_many` over folders of images, in-process or on Ray workers.

Ray is optional (`pip install 'krypton-obe[ray]'`); it is imported only when more than one worker or
a cluster is asked for. Modules: `spec` (what travels to workers), `inputs` (which images), `worker`
(model loaded once, image after image), `cluster` (Ray runtime and actor pool), `store` (atomic
per-image files and the manifest), `progress`, `run` (the driver), `cli_batch` (`krypton batch`).
"""

from __future__ import annotations

from krypton._lazy import lazy_exports

# Imported on first use, so that `krypton batch --help` (via `krypton.scale.cli_batch`) loads no torch.
_EXPORTS = {
    "ClusterError": "krypton.scale.cluster",
    "InputError": "krypton.scale.inputs",
    "Item": "krypton.scale.inputs",
    "expand": "krypton.scale.inputs",
    "BatchSummary": "krypton.scale.run",
    "WorkerLoadError": "krypton.scale.run",
    "explain_many": "krypton.scale.run",
    "ModelSpec": "krypton.scale.spec",
    "Settings": "krypton.scale.spec",
}


__getattr__, __dir__ = lazy_exports("krypton.scale", _EXPORTS, globals())

__all__ = [
    "BatchSummary",
    "ClusterError",
    "InputError",
    "Item",
    "ModelSpec",
    "Settings",
    "WorkerLoadError",
    "expand",
    "explain_many",
]

"""Dataset-scale explanations: `explain_many` over folders of images, in-process or on Ray workers.

Ray is optional (`pip install 'krypton-obe[ray]'`); it is imported only when more than one worker or
a cluster is asked for. Modules: `spec` (what travels to workers), `inputs` (which images), `worker`
(model loaded once, image after image), `cluster` (Ray runtime and actor pool), `store` (atomic
per-image files and the manifest), `progress`, `run` (the driver), `cli_batch` (`krypton batch`).
"""

from krypton.scale.cluster import ClusterError
from krypton.scale.inputs import InputError, Item, expand
from krypton.scale.run import BatchSummary, WorkerLoadError, explain_many
from krypton.scale.spec import ModelSpec, Settings

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

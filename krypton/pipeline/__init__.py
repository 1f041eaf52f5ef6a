"""Run pipeline (stage 5): one place decides how an explanation runs, for every interface.

`evaluate` (run.py) chooses naive or incremental inference by measurement, batches, self-checks,
falls back and writes `RunStats` (stats.py); `graphs` holds captured graphs (memory, disk, remembered
failures) and `plans` recent plans; `guard` keeps model calls out of captures; `fastest_naive` is full
re-inference at its best.
"""

from krypton.pipeline.graphs import graph_for
from krypton.pipeline.guard import call as guarded_call
from krypton.pipeline.run import PATHS, Experience, evaluate, naive_is_enough
from krypton.pipeline.stats import RunStats

__all__ = ["PATHS", "Experience", "RunStats", "evaluate", "graph_for", "guarded_call", "naive_is_enough"]

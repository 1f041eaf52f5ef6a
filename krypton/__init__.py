"""Krypton: fast occlusion-based explanations for CNNs by incremental and approximate inference.

Pipeline, in the order data flows: `capture` (torch.export graph) → `box` (region algebra) →
`rules` (one rule per op) → `engine.plan` (boxes for all positions, batching) → `engine.materialize`
and `engine.incremental` (clean pass, batched incremental pass) → `modes` (naive, exact) →
`explanation` (results) → `api` (explain, analyze).
"""

from krypton.api import Analysis, analyze, explain
from krypton.explanation import Explanation
from krypton.modes.approximate import Drilldown
from krypton.modes.progressive import Update
from krypton.modes.quality import ssim
from krypton.modes.tune import TuneResult, drilldown_for, tune
from krypton.scale import explain_many

__all__ = [
    "Analysis",
    "Drilldown",
    "Explanation",
    "TuneResult",
    "Update",
    "analyze",
    "drilldown_for",
    "explain",
    "explain_many",
    "ssim",
    "tune",
]
__version__ = "0.1.0"

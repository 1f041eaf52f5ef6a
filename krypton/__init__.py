"""Krypton: fast occlusion-based explanations for CNNs by incremental and approximate inference.

Pipeline, in the order data flows: `capture` (torch.export graph) → `box` (region algebra) →
`rules` (one rule per op) → `engine.plan` (boxes for all positions, batching) → `engine.materialize`
and `engine.incremental` (clean pass, batched incremental pass) → `modes` (naive, exact) →
`explanation` (results) → `api` (explain, analyze).
"""

from krypton.api import Analysis, analyze, explain
from krypton.explanation import Explanation

__all__ = ["Analysis", "Explanation", "analyze", "explain"]
__version__ = "0.1.0"

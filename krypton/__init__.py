"""Krypton: fast occlusion-based explanations for CNNs by incremental and approximate inference.

Pipeline, in the order data flows: `capture` (torch.export graph) → `box` (region algebra) →
`rules` (one rule per op) → `engine.plan` (boxes for all positions, batching) → `engine.materialize`
and `engine.incremental` (clean pass, batched incremental pass) → `modes` (naive, exact) →
`explanation` (results) → `api` (explain, analyze).
"""

from __future__ import annotations

from krypton._lazy import lazy_exports

# Public names, imported on first use: `krypton --help` and `import krypton.cli` stay free of torch.
_EXPORTS = {
    "Analysis": "krypton.api",
    "analyze": "krypton.api",
    "explain": "krypton.api",
    "Explanation": "krypton.explanation",
    "Drilldown": "krypton.modes.approximate",
    "Update": "krypton.modes.progressive",
    "ssim": "krypton.modes.quality",
    "TuneResult": "krypton.modes.tune",
    "drilldown_for": "krypton.modes.tune",
    "tune": "krypton.modes.tune",
    "explain_many": "krypton.scale",
}


__getattr__, __dir__ = lazy_exports("krypton", _EXPORTS, globals(), submodules=True)

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

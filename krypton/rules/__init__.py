"""Per-op rules, one module per op family; importing this package fills the table.

Order of the pipeline: `registry` (the table and the sound default) → `pointwise` → `window`
(convolution, pooling, padding) → `shape` (views, permute, cat) → `resample` (slices, upsampling,
softmax over an axis) → `reduction` (global pooling).
"""

from krypton.rules import pointwise, reduction, resample, shape, window  # noqa: F401  (fills RULES)
from krypton.rules.registry import FULL, RULES, Changes, Computed, Frame, Rule, Site, Unsupported, lookup

__all__ = ["FULL", "RULES", "Changes", "Computed", "Frame", "Rule", "Site", "Unsupported", "lookup"]

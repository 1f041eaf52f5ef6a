"""Explanation modes: how the model outputs at every occlusion position are computed.

`naive` re-runs the whole model per position (batched); `exact` uses incremental inference.
Both take the same `Occlusions` and return (P, K) outputs in the same order.
"""

"""Turning foreign models (Keras, ONNX, .pt2) into plain, fast `fx.GraphModule`s the engine can capture.

Exporting once at load time with a dynamic batch axis does three jobs: Keras' eager per-layer overhead
disappears (the exported Xception runs ~15x faster than the Keras model it came from), the graph is
free of the metadata asserts that a second `torch.export` would trip over, and a final softmax or
sigmoid can be removed so that the model returns logits (`Explanation.heatmap` applies the softmax).
"""

from __future__ import annotations

import copy
import warnings
from typing import cast

import torch
from torch import fx, nn

from krypton.models.errors import ModelError

aten = torch.ops.aten
_NOOP_CASTS = {aten.to.dtype_layout, aten.to.dtype, aten.to.device, aten.alias.default}  # all return self when no-op
ONE_LOGIT_NOTE = "one output logit: a binary classifier, explained on P(positive) = sigmoid(logit)"
_PROBABILITY_HEADS = {aten.softmax.int, aten._softmax.default, aten.sigmoid.default}
MAX_BATCH = 1 << 16


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def export_graph(module: nn.Module, example: torch.Tensor, what: str) -> nn.Module:
    """`module` exported at `example`'s (C, H, W) with any batch size, cleaned for re-export.

    Models whose graph bakes in batch 1 (a reshape to [1, N]) are exported at batch 1 and run one item
    at a time; that is still correct, only the naive baseline is slower for them.
    """
    module = module.eval()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example2 = example.expand(2, *example.shape[1:]).contiguous()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, (example2,), dynamic_shapes=({0: batch},), strict=False)
        return clean(program.module())
    except Exception as dynamic_error:  # torch.export raises many unrelated types
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                program = torch.export.export(module, (example[:1],), strict=False)
        except Exception:
            raise ModelError(f"{what} could not be converted to a torch graph: {_first_line(dynamic_error)}") from None
        return PerItem(clean(program.module()))


def clean(exported: nn.Module) -> fx.GraphModule:
    """A plain GraphModule (`.eval()` works) without asserts, shape guards or no-op casts."""
    graph = cast(fx.Graph, copy.deepcopy(exported.graph))
    module = fx.GraphModule(exported, graph)
    for node in list(graph.nodes):
        if node.op == "call_module" and "guards" in str(node.target) and not node.users:
            graph.erase_node(node)  # input-shape guards of the saved program (its batch range)
            continue
        if node.op != "call_function":
            continue
        if node.target in _NOOP_CASTS and _same_meta(node.args[0], node):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif not node.users and "assert" in str(node.target):
            graph.erase_node(node)
    graph.eliminate_dead_code()
    module.recompile()
    return module


def _same_meta(source: object, node: fx.Node) -> bool:
    if not isinstance(source, fx.Node):
        return False
    a, b = source.meta.get("val"), node.meta.get("val")
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.device == b.device


def strip_probability_head(module: fx.GraphModule, allow_sigmoid: bool = False) -> str | None:
    """Remove a final softmax/sigmoid so the model returns logits; returns the removed op's name."""
    output = next(n for n in module.graph.nodes if n.op == "output")
    result = output.args[0]
    single = result[0] if isinstance(result, (list, tuple)) and len(result) == 1 else result
    if not isinstance(single, fx.Node) or single.op != "call_function" or single.target not in _PROBABILITY_HEADS:
        return None
    if single.target is aten.sigmoid.default:
        if not allow_sigmoid:  # several independent sigmoids (multi-label): softmax would change them
            return None
    elif _softmax_dim(single) not in (-1, 1):
        return None
    source = single.args[0]
    assert isinstance(source, fx.Node)
    single.replace_all_uses_with(source)
    module.graph.erase_node(single)
    module.recompile()
    return str(single.target).split(".")[-2]


def _softmax_dim(node: fx.Node) -> int:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", -1)
    return int(dim) if isinstance(dim, int) else -1


class PerItem(nn.Module):
    """Runs a batch-1 graph on each item of a batch (models exported with a fixed batch of 1)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.inner(x[i : i + 1]) for i in range(x.shape[0])])


class ChannelsLast(nn.Module):
    """(B, C, H, W) -> (B, H, W, C) in front of a channels-last model (Keras, NHWC ONNX/.pt2)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 2, 3, 1))


def finish(module: nn.Module, example: torch.Tensor, what: str) -> tuple[nn.Module, list[str], int]:
    """Export and strip a probability head; returns the module, notes on changes and the output count."""
    graph = export_graph(module, example, what)
    with torch.no_grad():
        out = graph(example[:1])
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"{what} must output (batch, classes) scores, got {shape}")
    notes = []
    inner = graph.inner if isinstance(graph, PerItem) else graph
    head = strip_probability_head(cast(fx.GraphModule, inner), allow_sigmoid=out.shape[1] == 1)
    if head:
        notes.append(f"removed the final {head} so the model returns logits")
    if out.shape[1] == 1:
        notes.append(ONE_LOGIT_NOTE)
    return graph, notes, int(out.shape[1])

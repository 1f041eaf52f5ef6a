"""The clean pass: run the captured graph once on the image and keep every value (materialised views).

Stage 4a of the pipeline. Incremental execution reads everything it does not recompute from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import fx

from krypton.capture import Graph, constant


def _lookup(env: dict[fx.Node, Any], value: Any) -> Any:
    if isinstance(value, fx.Node):
        return env[value]
    if isinstance(value, (list, tuple)):
        return type(value)(_lookup(env, v) for v in value)
    if isinstance(value, dict):
        return {k: _lookup(env, v) for k, v in value.items()}
    return value


@torch.no_grad()
def materialize(graph: Graph, image: torch.Tensor) -> dict[fx.Node, Any]:
    """Every node's value for the clean image (batch 1), keyed by node; convolution weights then laid
    out for the windows (`_window_weights`)."""
    env: dict[fx.Node, Any] = {}
    for node in graph.module.graph.nodes:
        if node.op == "placeholder":
            env[node] = image
        elif node.op == "get_attr":
            env[node] = constant(graph, node)
        elif node.op == "call_function":
            env[node] = node.target(*_lookup(env, node.args), **_lookup(env, node.kwargs))
        elif node.op == "call_module":
            env[node] = None  # export's input guards: the shapes were checked by the caller
    _window_weights(graph, env)
    return env


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _window_weights(graph: Graph, env: dict[fx.Node, Any]) -> None:
    """Replace each constant convolution weight in `env` by a channels-last copy (channels-last strides
    even where a size-1 axis leaves the layout ambiguous, as in depthwise weights). Windows are gathered
    channels-last, and a weight in the default layout is reordered on every call: with the copies the
    engine ran ResNet18 5-8 % and VGG16 3-6 % faster (196 positions, RESULTS.md#zoo). The clean pass above used the
    model's own weights; copies are kept on the graph, one per weight version."""
    kept = graph.window_weights
    for call in graph.calls:
        if call.target is not torch.ops.aten.convolution.default:
            continue
        node = call.node.args[1]
        if not isinstance(node, fx.Node) or node.op != "get_attr":
            continue
        value = env[node]
        layout = _CHANNELS_LAST.get(value.dim()) if isinstance(value, torch.Tensor) else None
        if layout is None:
            continue
        key = (value.data_ptr(), value._version, value.dtype)
        hit = kept.get(node)
        if hit is None or hit[0] != key:
            hit = kept[node] = (key, torch.empty_like(value, memory_format=layout).copy_(value))
        env[node] = hit[1]


def static_values(graph: Graph) -> Callable[[fx.Node], Any]:
    """Values of nodes that do not depend on the image (e.g. constant index tensors) for the rules that
    need them: one clean pass on a zero image, on first use, kept on the graph."""

    def value(node: fx.Node) -> Any:
        if graph.static is None:
            val = graph.image.meta["val"]
            graph.static = materialize(graph, torch.zeros(tuple(val.shape), dtype=val.dtype))
        return graph.static[node]

    return value

"""Graph capture: turn an `nn.Module` into a flat list of core-ATen calls the rules understand.

Stage 1 of the pipeline. `torch.export` at the image's shape (batch 1, eval mode), decomposed to core
ATen. Parameters and buffers become constants; the one user input is the image. Every call node gets its
arguments bound to the op schema with defaults filled in, because exported nodes drop trailing defaults
(max-pool's padding, dilation and ceil_mode).
"""

from __future__ import annotations

import logging
import operator
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from krypton._borrow import borrowed


class CaptureError(RuntimeError):
    """The model could not be captured as a graph; callers fall back to naive inference."""


@dataclass
class Call:
    """One op application in the captured graph."""

    node: fx.Node
    target: Any  # an OpOverload, or operator.getitem
    args: dict[str, Any]  # schema-bound arguments; tensors are fx.Node
    inputs: list[fx.Node] = field(default_factory=list)  # tensor inputs, in argument order

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def op_name(self) -> str:
        return str(self.target) if self.target is not operator.getitem else "getitem"


@dataclass
class Graph:
    """A captured model: the fx module plus its calls in execution order."""

    module: fx.GraphModule
    image: fx.Node
    calls: list[Call]
    output: fx.Node
    shapes: dict[fx.Node, Any]  # node -> torch.Size, or tuple of sizes for multi-output ops
    static: dict[fx.Node, Any] | None = None  # image-independent values, filled by engine.materialize on use
    unchecked_digest: str | None = None  # loaded from the disk cache and not yet checked against the model
    window_weights: dict[fx.Node, Any] = field(default_factory=dict)  # channels-last weight copies (materialize)


def bind(target: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Map positional/keyword args onto the op's schema names, filling defaults."""
    if target is operator.getitem:
        return {"self": args[0], "index": args[1]}
    bound: dict[str, Any] = {}
    for i, arg in enumerate(target._schema.arguments):
        if i < len(args):
            bound[arg.name] = args[i]
        elif arg.name in kwargs:
            bound[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
        else:
            bound[arg.name] = None
    return bound


def _tensor_inputs(bound: dict[str, Any]) -> list[fx.Node]:
    found: list[fx.Node] = []
    for value in bound.values():
        items = value if isinstance(value, (list, tuple)) else [value]
        found.extend(v for v in items if isinstance(v, fx.Node))
    return found


def _shape_of(node: fx.Node) -> Any:
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return tuple(val.shape)
    if isinstance(val, (list, tuple)):
        return tuple(tuple(v.shape) if isinstance(v, torch.Tensor) else None for v in val)
    return None


def capture(model: nn.Module, example: torch.Tensor) -> Graph:
    """Export `model` at the example's shape; raise CaptureError with the reason on failure."""
    return from_program(export_program(model, example))


def export_program(model: nn.Module, example: torch.Tensor) -> Any:
    """`torch.export` + core-ATen decomposition: the ExportedProgram (its module is indexed by `from_program`)."""
    noisy = logging.getLogger("torch._subclasses.fake_tensor")
    level = noisy.level
    noisy.setLevel(logging.CRITICAL)  # export logs a traceback before raising; we report one line
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with borrowed(model):  # captured in eval mode; the caller's training flags come back
                return torch.export.export(model, (example,), strict=False).run_decompositions()
    except Exception as exc:  # torch.export raises many unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaptureError(f"torch.export could not capture the model: {first}") from exc
    finally:
        noisy.setLevel(level)


def from_program(program: Any) -> Graph:
    """The Graph of an exported program (fresh, or loaded from the cache with the live weights bound)."""
    return graph_of(program.module())


def graph_of(module: fx.GraphModule) -> Graph:
    """Index an (unlifted) exported module: fuse channels-last row linears, split multi-output splits into
    slices, bind every call's arguments."""
    _fuse_row_linears(module)
    _fuse_batched_linears(module)
    _splits_as_slices(module)
    return indexed(module)


def _splits_as_slices(module: fx.GraphModule) -> None:
    """Rewrite `split_with_sizes(x, sizes, dim)[i]` (what split, chunk and tensor_split export as) as
    `slice(x, dim, start_i, end_i)`: one single-output view per piece, so every piece gets its own
    window (a multi-output op only tracks its first output)."""
    aten = torch.ops.aten
    splits = (aten.split_with_sizes.default, aten.split.Tensor)
    for node in list(module.graph.nodes):
        if node.op != "call_function" or node.target not in splits:
            continue
        users = list(node.users)
        if not users or any(u.target is not operator.getitem for u in users):
            continue
        source, dim = node.args[0], (node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0))
        shape = _shape_of(source)
        if shape is None:
            continue
        sizes = node.args[1]
        if node.target is aten.split.Tensor:  # split(x, n): pieces of n, the last one shorter
            total, step = shape[dim], int(sizes)
            sizes = [min(step, total - s) for s in range(0, total, step)]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        for user in users:
            i = user.args[1]
            with module.graph.inserting_before(user):
                piece = module.graph.call_function(aten.slice.Tensor, (source, dim, starts[i], starts[i] + sizes[i]))
            piece.meta = dict(user.meta)
            user.replace_all_uses_with(piece)
            module.graph.erase_node(user)
        module.graph.erase_node(node)
    module.recompile()


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _fuse_row_linears(module: fx.GraphModule) -> None:
    """Rewrite `view(x, [B*H*W, C]) -> addmm -> view(.., [B, H, W, C'])` as one `linear` over the last axis.

    Channels-last MLPs (ConvNeXt) export this way; the flattened view merges the batch with the
    spatial axes, which no box can describe. As a linear over the last axis it is a per-pixel op.
    """
    aten = torch.ops.aten
    views = (aten.view.default, aten._unsafe_view.default, aten.reshape.default)
    for flat in list(module.graph.nodes):
        if flat.op != "call_function" or flat.target not in views:
            continue
        source = flat.args[0]
        src_shape = _shape_of(source)
        mm = _only_user(flat)
        if src_shape is None or len(src_shape) < 3 or mm is None or mm.target != aten.addmm.default:
            continue
        if mm.args[1] is not flat or len(mm.args) > 3 or mm.kwargs:
            continue
        weight_t = mm.args[2]
        back = _only_user(mm)
        if not isinstance(weight_t, fx.Node) or not isinstance(source, fx.Node):
            continue
        if weight_t.target != aten.permute.default or back is None or back.target not in views:
            continue
        out_shape = _shape_of(back)
        if out_shape is None or tuple(out_shape[:-1]) != tuple(src_shape[:-1]):
            continue
        with module.graph.inserting_before(back):
            fused = module.graph.call_function(aten.linear.default, (source, weight_t.args[0], mm.args[0]))
        fused.meta = dict(back.meta)
        back.replace_all_uses_with(fused)
    module.graph.eliminate_dead_code()
    module.recompile()


def _fuse_batched_linears(module: fx.GraphModule) -> None:
    """Rewrite `view(expand(x)) @ view(expand(W.T))` via `bmm`, viewed back to x's shape, as one `linear`.

    `nn.Linear` on a non-contiguous channels-last view (`fc(x.permute(0, 2, 3, 1))`) exports this way: the
    views fold the batch axis into the rows of a batched matrix product, which no box can describe. It is
    the same per-pixel product as `linear(x, W)` (the bias, if any, stays a separate add).
    """
    aten = torch.ops.aten
    views = (aten.view.default, aten._unsafe_view.default, aten.reshape.default)
    for bmm in list(module.graph.nodes):
        if bmm.op != "call_function" or bmm.target != aten.bmm.default:
            continue
        rows, weights = bmm.args[0], bmm.args[1]
        source, weight = _through_view_expand(rows, views), _through_view_expand(weights, views, broadcast=True)
        back = _only_user(bmm)
        if source is None or weight is None or back is None or back.target not in views:
            continue
        if weight.target != aten.permute.default or weight.args[1] not in ([1, 0], [-1, -2], (1, 0)):
            continue
        matrix = weight.args[0]
        src_shape, b_shape, out_shape = _shape_of(source), _shape_of(weights), _shape_of(back)  # B: (n, C, N)
        if not isinstance(matrix, fx.Node) or src_shape is None or b_shape is None or out_shape is None:
            continue
        if len(src_shape) < 3 or len(b_shape) != 3 or src_shape[-1] != b_shape[1]:
            continue
        if tuple(out_shape) != tuple(src_shape[:-1]) + (b_shape[2],):
            continue
        with module.graph.inserting_before(back):
            fused = module.graph.call_function(aten.linear.default, (source, matrix))
        fused.meta = dict(back.meta)
        back.replace_all_uses_with(fused)
    module.graph.eliminate_dead_code()
    module.recompile()


def _through_view_expand(node: Any, views: tuple[Any, ...], broadcast: bool = False) -> fx.Node | None:
    """x for `view(expand(x, x.shape), ...)` (an expand that changes nothing; with `broadcast`, one that
    only adds leading axes, as for the weight matrix), else None."""
    if not isinstance(node, fx.Node) or node.target not in views or not isinstance(node.args[0], fx.Node):
        return None
    expand = node.args[0]
    if expand.target != torch.ops.aten.expand.default or not isinstance(expand.args[0], fx.Node):
        return None
    inner = expand.args[0]
    before, after = tuple(_shape_of(inner) or ()), tuple(_shape_of(expand) or ())
    kept = before == after or (broadcast and 0 < len(before) <= len(after) and after[-len(before) :] == before)
    return inner if kept else None


def indexed(module: fx.GraphModule) -> Graph:
    """The Graph of a module already rewritten by `graph_of` (e.g. one loaded from the disk cache)."""
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise CaptureError(f"the model must take exactly one tensor input, got {len(placeholders)}")
    calls: list[Call] = []
    shapes: dict[fx.Node, Any] = {}
    output = None
    for node in module.graph.nodes:
        shapes[node] = _shape_of(node)
        if node.op == "call_function":
            bound = bind(node.target, node.args, node.kwargs)
            calls.append(Call(node, node.target, bound, _tensor_inputs(bound)))
        elif node.op == "output":
            outs = node.args[0]
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            if len(outs) != 1 or not isinstance(outs[0], fx.Node):
                raise CaptureError("the model must return exactly one tensor")
            output = outs[0]
    if output is None:
        raise CaptureError("the model graph has no output")
    return Graph(module, placeholders[0], calls, output, shapes)


def constant(graph: Graph, node: fx.Node) -> torch.Tensor:
    """Value of a `get_attr` node (a parameter, buffer or lifted constant)."""
    value: Any = graph.module
    for part in str(node.target).split("."):
        value = getattr(value, part)
    return value

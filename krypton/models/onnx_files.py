"""ONNX model files, converted with onnx2torch after folding shape computations for the fixed image size.

Exporters such as tf2onnx write a Keras-style flatten as Shape -> Gather -> Slice -> Concat -> Reshape;
onnx2torch evaluates that chain with numpy, which `torch.export` cannot trace. The image size is fixed
for an explanation, so those computations are folded to constants first (batch kept free via Reshape's
"copy this dimension" 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from krypton.io.preprocess import Preprocess
from krypton.models.errors import ModelError
from krypton.models.exported import ChannelsLast, finish
from krypton.models.loaded import UNKNOWN_PREPROCESSING_NOTE, LoadedModel, binary_names

FOLDABLE = {"Gather", "Slice", "Concat", "Cast", "Unsqueeze", "Squeeze", "Identity", "Mul", "Add", "Sub", "Div",
            "ReduceProd", "Constant", "Shape"}  # fmt: skip


def load_onnx(path: str | Path, size: tuple[int, int] | None = None) -> LoadedModel:
    """An ONNX classifier as a module mapping (B, C, H, W) to (B, K); NHWC inputs are handled."""
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as exc:  # pragma: no cover - both are dependencies
        raise ModelError(f"ONNX support needs onnx and onnx2torch ({exc.name} is missing)") from None
    _register_newer_opsets()
    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"cannot read ONNX model {path}: {str(exc).strip().splitlines()[0]}") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"{path} must take exactly one image tensor, it takes {len(inputs)} inputs")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ModelError(f"{path} takes a {len(dims)}-D input; krypton needs an image batch (B, C, H, W)")
    channels_last = dims[3] in (1, 3) and dims[1] not in (1, 3)
    c, h, w = (dims[3], dims[1], dims[2]) if channels_last else (dims[1], dims[2], dims[3])
    if size is not None:
        h, w = size
    if c not in (1, 3) or min(h, w) <= 0:
        raise ModelError(f"{path} takes input {tuple(dims)}; pass --size H,W for a model without a fixed size")
    concrete = [1, h, w, c] if channels_last else [1, c, h, w]
    folded = fold_shapes(model, concrete)
    try:
        module = convert(folded)
    except Exception as exc:
        raise ModelError(f"onnx2torch cannot convert {path.name}: {_conversion_failure(folded, exc)}") from exc
    _constant_reshapes(module)
    if channels_last:
        module = ChannelsLast(module)
    graph, notes, outputs = finish(module, torch.zeros(1, c, h, w), f"ONNX model {path.name}")
    notes.append(UNKNOWN_PREPROCESSING_NOTE)
    return LoadedModel(graph, path.name, Preprocess((h, w), c), binary_names(outputs), notes, outputs)


def fold_shapes(model, input_dims: list[int]):  # noqa: ANN001, ANN201 - onnx.ModelProto, imported lazily
    """A copy of `model` without Identity nodes, whose Reshape targets computed from tensor shapes are
    constants; dead nodes dropped."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    bypass_identities(graph)
    initializers = {i.name for i in graph.initializer}
    image = next(i for i in graph.input if i.name not in initializers)
    for dim, size in zip(image.type.tensor_type.shape.dim, input_dims):
        dim.Clear()
        dim.dim_value = size
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # shape inference is best effort; without it nothing is folded
        return model
    shapes: dict[str, list[int]] = {}
    for info in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [d.dim_value for d in dims]
    known: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    computed: set[str] = set()
    for node in graph.node:
        if node.op_type not in FOLDABLE:
            continue
        value: np.ndarray | None
        try:
            value = _evaluate(node, known, shapes)
        except Exception:  # anything unusual stays unfolded: onnx2torch will still try it
            value = None
        if value is not None:
            known[node.output[0]] = value
            computed.add(node.output[0])
    for node in graph.node:
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in known:
            target = np.asarray(known[node.input[1]], dtype=np.int64).copy()
            source = shapes.get(node.input[0])
            if 0 in target.tolist():  # allowzero=1 would make it a literal empty axis: leave it alone
                continue
            if target.size and target[0] == 1 and source and source[0] == 1:
                target[0] = 0  # ONNX Reshape: 0 copies the input's batch size (a batch-1 export's constant)
            name = node.output[0] + "__krypton_shape"
            graph.initializer.append(numpy_helper.from_array(target, name))
            node.input[1] = name
            for attribute in node.attribute:
                if attribute.name == "allowzero":  # (the dynamo exporter's default) now 0 means "copy"
                    attribute.i = 0
    _drop_dead_nodes(graph)
    return model


class FixedReshape(torch.nn.Module):
    """Reshape to a constant target with Python ints (0 copies that input dimension, as in ONNX).

    onnx2torch's Reshape reads its target from a tensor, which `torch.export` sees as data-dependent.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)])


def _constant_reshapes(module: torch.fx.GraphModule) -> None:
    """Replace onnx2torch Reshape modules whose target is a constant by `FixedReshape`."""
    from onnx2torch.node_converters.reshape import OnnxReshape

    for node in list(module.graph.nodes):
        if node.op != "call_module" or not isinstance(module.get_submodule(node.target), OnnxReshape):
            continue
        if len(node.args) != 2 or getattr(node.args[1], "op", None) != "get_attr":
            continue
        value = _attr(module, node.args[1].target)
        fixed = FixedReshape(tuple(int(v) for v in value.reshape(-1).tolist()))
        name = f"krypton_reshape_{node.name}"
        module.add_submodule(name, fixed)
        node.target = name
        node.args = (node.args[0],)
    module.graph.eliminate_dead_code()
    module.recompile()


def _attr(module: torch.nn.Module, target: str) -> torch.Tensor:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _evaluate(node, known: dict, shapes: dict) -> np.ndarray | None:  # noqa: ANN001
    """numpy value of a shape-computation node whose inputs are all known, else None."""
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Constant":
        return numpy_helper.to_array(attrs["value"]) if "value" in attrs else None
    if node.op_type == "Shape":
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        return np.asarray(shape[attrs.get("start", 0) : attrs.get("end", len(shape))], dtype=np.int64)
    args: list[Any] = [known.get(name) if name else None for name in node.input]
    if any(a is None for a, name in zip(args, node.input) if name):
        return None
    x: Any = args[0]
    op = node.op_type
    if op == "Gather":
        return np.take(x, args[1], axis=attrs.get("axis", 0))
    if op == "Slice":
        axes = args[3] if len(args) > 3 and args[3] is not None else range(len(args[1]))
        steps = args[4] if len(args) > 4 and args[4] is not None else [1] * len(args[1])
        index = [slice(None)] * x.ndim
        for start, end, axis, step in zip(args[1], args[2], axes, steps):
            index[int(axis)] = slice(int(start), int(end), int(step))
        return x[tuple(index)]
    if op == "Concat":
        return np.concatenate([np.atleast_1d(a) for a in args], axis=attrs.get("axis", 0))
    if op == "Cast":
        return x.astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if op in ("Unsqueeze", "Squeeze"):
        axes = attrs.get("axes", args[1] if len(args) > 1 else None)
        if op == "Squeeze":
            return np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes))
        for axis in sorted(int(a) for a in axes or ()):
            x = np.expand_dims(x, axis)
        return x
    if op == "Identity":
        return x
    if op == "ReduceProd":
        return np.prod(x, keepdims=bool(attrs.get("keepdims", 1))).astype(x.dtype)
    if op == "Div":
        return (np.floor_divide if np.issubdtype(x.dtype, np.integer) else np.divide)(x, args[1]).astype(x.dtype)
    ops = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract}
    return ops[op](x, args[1]).astype(x.dtype)


REDUCTIONS_18 = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                 "ReduceLogSumExp", "ReduceSumSquare")  # fmt: skip


# ops whose schema changed in opsets 19 and 21 only by admitting more element types (float8, int4):
# onnx2torch's converter for the previous version computes the same thing
TYPES_ONLY = {"Reshape": (19, 21), "Cast": (19, 21), "Constant": (19, 21), "Identity": (19, 21), "Shape": (19, 21),
              "Size": (19, 21), "Flatten": (21,), "Squeeze": (21,), "Unsqueeze": (21,), "Transpose": (21,)}  # fmt: skip


def _register_newer_opsets() -> None:
    """Converters onnx2torch 1.5.15 lacks for what `torch.onnx.export` writes at opsets 18-20."""
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter

    for op, versions in TYPES_ONLY.items():
        for version in versions:
            older = [d.version for d in _CONVERTER_REGISTRY if d.operation_type == op and d.domain == ""]
            older = [v for v in older if v < version]
            if older and OperationDescription("", op, version) not in _CONVERTER_REGISTRY:
                add_converter(operation_type=op, version=version)(
                    _CONVERTER_REGISTRY[OperationDescription("", op, max(older))]
                )
    _register_opset18_reductions()


def _register_opset18_reductions() -> None:
    """onnx2torch 1.5.15 converts reductions up to opset 13, where `axes` is an attribute; opset 18 (what
    torch.onnx.export's dynamo exporter writes, e.g. ResNet's global mean) passes it as a constant input."""
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    def convert(node, graph):  # noqa: ANN001, ANN202 - onnx2torch's converter signature
        axes = None
        if len(node.input_values) > 1 and node.input_values[1]:
            axes = [int(a) for a in get_const_value(node.input_values[1], graph).tolist()]
        if not axes and node.attributes.get("noop_with_empty_axes", 0):
            raise NotImplementedError(f"{node.operation_type} with noop_with_empty_axes=1 and no axes")
        module = OnnxReduceStaticAxes(node.operation_type, axes or None, node.attributes.get("keepdims", 1))
        mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
        return OperationConverterResult(torch_module=module, onnx_mapping=mapping)

    for op in REDUCTIONS_18:
        if OperationDescription("", op, 18) not in _CONVERTER_REGISTRY:
            add_converter(operation_type=op, version=18)(convert)


def _conversion_failure(model, exc: Exception) -> str:  # noqa: ANN001 - onnx.ModelProto
    """The first node onnx2torch has no converter for (name, op, opset), else the error with its type."""
    from onnx2torch.node_converters.registry import get_converter

    opsets = {o.domain or "": o.version for o in model.opset_import}
    for node in model.graph.node:
        domain = node.domain or ""
        try:
            get_converter(node.op_type, opsets.get(domain, 1), domain)
        except NotImplementedError:
            return (
                f"node {node.name or node.output[0]!r} uses op {node.op_type} (opset {opsets.get(domain, 1)}), "
                "which onnx2torch cannot convert; export with another opset or replace that op"
            )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}".rstrip(": ")


def bypass_identities(graph) -> None:  # noqa: ANN001 - onnx.GraphProto
    """Let every consumer of an `Identity` read its input directly and drop the node.

    torch.onnx.export writes deduplicated initializers (shared or re-used weights) as Identity nodes,
    which onnx2torch has no converter for; an Identity computes nothing, so bypassing it is exact.
    Identities that produce a graph output are kept (the output name must survive).
    """
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
    if not alias:
        return
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)


def _drop_dead_nodes(graph) -> None:  # noqa: ANN001
    """Remove nodes none of whose outputs feed the graph outputs (the folded shape chains)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(keep))

"""On-disk cache of captured graphs: a second process skips `torch.export` (ResNet18 ~1 s -> ~0.05 s).

What is stored is the captured graph itself, after capture's rewrites, as plain data: each node's name,
op, target (an ATen overload by name), arguments (other nodes by name) and output shapes, read back with
`torch.load(weights_only=True)` (no pickled code) and rebuilt into an `fx.GraphModule` in milliseconds;
`torch.export.load` took 0.2-1.4 s for the same graphs. No weights are stored: the live model's
parameters and buffers are bound by name, so changed weights can never be served stale (the few other
constants a graph holds are stored). The key covers everything else the graph depends on:
torch and krypton versions, the source of `krypton/capture.py` (its rewrites shape the stored graph),
the input's shape and dtype, and per submodule its class, the content of
the file defining that class, its plain attributes (flags, sizes), `extra_repr`, parameter/buffer
names, shapes and dtypes, and the bytes of other tensor attributes (lifted as constants). Models this
cannot describe (hooks, classes without a source file, an instance-level `forward`) are not cached.
Callers also compare the loaded graph's clean output with the model's before trusting it (the run does
this on the clean pass it needs anyway: `graphs.clean_pass`).

On by default in `~/.cache/krypton/graphs`; `KRYPTON_GRAPH_CACHE` names another folder, `off` turns it off.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import operator
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

FORMAT = 2  # bump when what is stored changes
SUFFIX = ".graph"
_PLAIN = (bool, int, float, str, type(None))
_files: dict[str, str] = {}
_classes: dict[type, str | None] = {}


def folder() -> Path | None:
    """The cache folder, or None when caching is off."""
    setting = os.environ.get("KRYPTON_GRAPH_CACHE", "")
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    return Path.home() / ".cache" / "krypton" / "graphs" if setting.lower() in ("", "on", "1", "yes") else Path(setting)


def _file_digest(cls: type) -> str | None:
    if cls not in _classes:
        _classes[cls] = _read_digest(cls)
    return _classes[cls]


def _read_digest(cls: type) -> str | None:
    try:
        path = inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None
    if not path or not os.path.isfile(path):
        return None
    if path not in _files:
        _files[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return _files[path]


def _plain(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def key(model: nn.Module, example: torch.Tensor) -> str | None:
    """A digest of everything the captured graph depends on except weight values; None: do not cache."""
    from krypton import __version__, capture

    h = hashlib.sha256()
    h.update(f"{FORMAT}|{torch.__version__}|{__version__}|{tuple(example.shape)}|{example.dtype}".encode())
    h.update(f"{_read_digest(capture.Graph)}".encode())  # capture's own rewrites shape what is stored
    for name, module in model.named_modules():
        cls = type(module)
        digest = _file_digest(cls)
        hooks = module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__
        if digest is None or hooks:
            return None
        attrs = sorted((k, repr(v)) for k, v in module.__dict__.items() if not k.startswith("_") and _plain(v))
        h.update(f"{name}|{cls.__module__}.{cls.__qualname__}|{digest}|{attrs}|{module.extra_repr()}".encode())
        for pname, t in list(module._parameters.items()) + list(module._buffers.items()):
            h.update(f"{pname}|{None if t is None else (tuple(t.shape), t.dtype)}".encode())
        for aname, value in sorted(module.__dict__.items()):
            if isinstance(value, torch.Tensor):  # a plain tensor attribute: export lifts it as a constant
                h.update(aname.encode() + value.detach().cpu().contiguous().numpy().tobytes())
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return None
    return h.hexdigest()


class NotStorable(Exception):
    """The graph holds something this format does not describe (it is then simply not cached)."""


_TAGGED = {"dtype": torch.dtype, "layout": torch.layout, "memory_format": torch.memory_format}


def _encode(value: Any) -> Any:
    """Plain data for an argument: nodes by name, torch enums by name, containers tagged."""
    if isinstance(value, fx.Node):
        return ("node", value.name)
    if isinstance(value, (list, tuple)):
        return ("tuple" if isinstance(value, tuple) else "list", [_encode(v) for v in value])
    if isinstance(value, dict):
        return ("dict", {str(k): _encode(v) for k, v in value.items()})
    for tag, kind in _TAGGED.items():
        if isinstance(value, kind):
            return (tag, str(value).removeprefix("torch."))
    if isinstance(value, torch.device):
        return ("device", str(value))
    if isinstance(value, _PLAIN):
        return value
    raise NotStorable(type(value).__name__)


def _decode(value: Any, nodes: dict[str, fx.Node]) -> Any:
    if not isinstance(value, tuple):
        return value
    tag, body = value
    if tag == "node":
        return nodes[body]
    if tag in ("list", "tuple"):
        items = [_decode(v, nodes) for v in body]
        return items if tag == "list" else tuple(items)
    if tag == "dict":
        return {k: _decode(v, nodes) for k, v in body.items()}
    if tag == "device":
        return torch.device(body)
    if tag in _TAGGED:
        return getattr(torch, body)
    raise ValueError(f"unknown tag {tag!r}")


def _encode_val(val: Any) -> Any:
    if isinstance(val, torch.Tensor):
        return ("tensor", [int(d) for d in val.shape], str(val.dtype).removeprefix("torch."))
    if isinstance(val, (list, tuple)):
        return ("several", [_encode_val(v) for v in val])
    return None


def _decode_val(val: Any) -> Any:
    """Shape-and-dtype stand-ins (meta tensors) for `node.meta["val"]`, all the engine reads of it."""
    if val is None:
        return None
    if val[0] == "tensor":
        return torch.empty(val[1], dtype=getattr(torch, val[2]), device="meta")
    return [_decode_val(v) for v in val[1]]


def _target_name(node: fx.Node) -> str:
    if node.op != "call_function":
        return str(node.target)
    if node.target is operator.getitem:
        return "getitem"
    if isinstance(node.target, torch._ops.OpOverload):
        return f"{node.target.namespace}::{node.target._opname}.{node.target._overloadname}"
    raise NotStorable(f"call target {node.target}")


def _target(op: str, name: str) -> Any:
    if op != "call_function":
        return name
    if name == "getitem":
        return operator.getitem
    namespace, _, rest = name.partition("::")
    opname, _, overload = rest.rpartition(".")
    return getattr(getattr(getattr(torch.ops, namespace), opname), overload)


def _live(model: nn.Module) -> dict[str, torch.Tensor]:
    live: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    live.update(dict(model.named_buffers(remove_duplicate=False)))
    return live


def _records(module: fx.GraphModule, model: nn.Module) -> dict[str, Any]:
    """The graph as plain data; tensors only for constants that are not the model's own weights."""
    live, nodes, constants = _live(model), [], {}
    for node in module.graph.nodes:
        if node.op == "call_module" and not node.users:
            continue  # export's input guards: the shapes are checked by the caller
        if node.op not in ("placeholder", "get_attr", "call_function", "output"):
            raise NotStorable(node.op)
        if node.op == "get_attr" and node.target not in live:
            value: Any = module
            for part in str(node.target).split("."):
                value = getattr(value, part)
            constants[str(node.target)] = value.detach().clone()
        nodes.append(
            {
                "name": node.name,
                "op": node.op,
                "target": _target_name(node),
                "args": _encode(tuple(node.args)),
                "kwargs": _encode(dict(node.kwargs)),
                "val": _encode_val(node.meta.get("val")),
            }
        )
    return {"format": FORMAT, "nodes": nodes, "constants": constants}


def _rebuild(stored: dict[str, Any], model: nn.Module) -> fx.GraphModule:
    """An `fx.GraphModule` over the stored graph with the live model's weights bound (no copies)."""
    live, graph = _live(model), fx.Graph()
    nodes: dict[str, fx.Node] = {}
    attributes: dict[str, Any] = {}
    for record in stored["nodes"]:
        target = _target(record["op"], record["target"])
        if record["op"] == "get_attr":
            value = stored["constants"].get(target, live.get(target))
            if value is None:
                raise KeyError(target)  # the model no longer has this weight: capture afresh
            attributes[target] = value
        node = graph.create_node(
            record["op"], target, _decode(record["args"], nodes), _decode(record["kwargs"], nodes), record["name"]
        )
        node.meta["val"] = _decode_val(record["val"])
        nodes[record["name"]] = node
    return fx.GraphModule(attributes, graph)


def path_for(digest: str) -> Path | None:
    where = folder()
    return None if where is None else where / f"{digest}{SUFFIX}"


def save(digest: str, module: fx.GraphModule, model: nn.Module) -> None:
    """Store the graph without weights (atomically; a failure only costs the next process a capture)."""
    where = folder()
    if where is None:
        return
    try:
        stored = _records(module, model)
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, prefix="partial-", suffix=SUFFIX)
        os.close(fd)
        torch.save(stored, tmp)
        os.replace(tmp, where / f"{digest}{SUFFIX}")
    except Exception as exc:  # a read-only home, a full disk, a graph the format cannot hold
        logging.getLogger("krypton").debug("graph cache: could not save: %s", exc)


def load(digest: str, model: nn.Module) -> fx.GraphModule | None:
    """The stored graph with `model`'s weights bound, or None (absent, unreadable, or not fitting)."""
    path = path_for(digest)
    if path is None or not path.is_file():
        return None
    try:
        stored = torch.load(path, weights_only=True)
        if stored.get("format") != FORMAT:
            raise ValueError("another format")
        return _rebuild(stored, model)
    except Exception:  # a file from an interrupted write, another torch, weights that no longer fit
        discard(digest)
        return None


def discard(digest: str) -> None:
    """Remove a stored graph (it failed its check against the model)."""
    path = path_for(digest)
    if path is not None:
        path.unlink(missing_ok=True)

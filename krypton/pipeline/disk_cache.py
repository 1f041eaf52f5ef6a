"""On-disk cache of captured programs: a second process skips `torch.export` (ResNet18 ~1 s -> ~0.2 s).

What is stored is the decomposed `ExportedProgram` *without* its weights (each replaced by a zero-stride
tensor of the same shape); on load the live model's parameters and buffers are bound into the module,
so changed weights can never be served stale. The key covers everything else the graph depends on:
torch and krypton versions, the input's shape and dtype, and per submodule its class, the content of
the file defining that class, its plain attributes (flags, sizes), `extra_repr`, parameter/buffer
names, shapes and dtypes, and the bytes of other tensor attributes (lifted as constants). Models this
cannot describe (hooks, classes without a source file, an instance-level `forward`) are not cached.
Callers also compare the loaded graph's clean output with the model's before using it.

Off unless `KRYPTON_GRAPH_CACHE` is set: a folder, or `on` for `~/.cache/krypton/graphs`. Measured
(benchmarks/RESULTS.md): loading pays for ResNet18 (1.1 s -> 0.3 s) but not yet for VGG16 or Inception3,
whose stored graphs load more slowly than a fresh capture, so it is not the default.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = 1  # bump when what is stored changes
_PLAIN = (bool, int, float, str, type(None))
_files: dict[str, str] = {}
_classes: dict[type, str | None] = {}


def folder() -> Path | None:
    """The cache folder, or None when caching is off."""
    setting = os.environ.get("KRYPTON_GRAPH_CACHE", "")
    if setting.lower() in ("", "off", "0", "false", "no"):
        return None
    return Path.home() / ".cache" / "krypton" / "graphs" if setting.lower() in ("on", "1", "yes") else Path(setting)


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
    from krypton import __version__

    h = hashlib.sha256()
    h.update(f"{FORMAT}|{torch.__version__}|{__version__}|{tuple(example.shape)}|{example.dtype}".encode())
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


def _weightless(program: Any) -> dict[str, Any]:
    """Zero-stride stand-ins for the program's weights (same shapes and dtypes, one element stored)."""
    light: dict[str, Any] = {}
    for name, value in program.state_dict.items():
        stand_in = torch.zeros((), dtype=value.dtype).expand(value.shape)
        light[name] = nn.Parameter(stand_in, requires_grad=False) if isinstance(value, nn.Parameter) else stand_in
    return light


def save(digest: str, program: Any) -> None:
    """Store the program without weights (atomically; a failure only costs the next process a capture)."""
    where = folder()
    if where is None:
        return
    try:
        where.mkdir(parents=True, exist_ok=True)
        weights = program._state_dict
        program._state_dict = _weightless(program)
        try:
            fd, tmp = tempfile.mkstemp(dir=where, prefix="partial-", suffix=".pt2")
            os.close(fd)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.export.save(program, tmp)
            os.replace(tmp, where / f"{digest}.pt2")
        finally:
            program._state_dict = weights
    except Exception as exc:  # a read-only home, a full disk: caching is an optimisation
        logging.getLogger("krypton").debug("graph cache: could not save: %s", exc)


def load(digest: str) -> Any | None:
    """The stored program (without weights), or None."""
    where = folder()
    path = None if where is None else where / f"{digest}.pt2"
    if path is None or not path.is_file():
        return None
    chatty = logging.getLogger("torch._export.serde.serialize")  # warns about unused shape symbols
    level = chatty.level
    chatty.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.load(str(path))
    except Exception:  # a file from an interrupted write or another torch: capture again
        path.unlink(missing_ok=True)
        return None
    finally:
        chatty.setLevel(level)


def bind_weights(module: torch.fx.GraphModule, model: nn.Module) -> None:
    """Point the loaded module's parameters and buffers at the live model's tensors (no copies)."""
    live: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    live.update(dict(model.named_buffers(remove_duplicate=False)))
    for name, _ in list(module.named_parameters(remove_duplicate=False)) + list(
        module.named_buffers(remove_duplicate=False)
    ):
        if name not in live:
            raise KeyError(name)
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        value = live[name]
        if leaf in owner._parameters:
            owner._parameters[leaf] = value if isinstance(value, nn.Parameter) else nn.Parameter(value, False)
        else:
            owner._buffers[leaf] = value

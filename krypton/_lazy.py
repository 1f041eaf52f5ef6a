"""Lazy package namespaces: public names imported on first use, so `krypton --help` loads no torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any],
                 submodules: bool = False) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:  # fmt: skip
    """`__getattr__` and `__dir__` for `package`: each name in `exports` comes from its module on first
    use (then cached in `namespace`); with `submodules`, other names may be subpackages not yet imported."""

    def getattr_(name: str) -> Any:
        if name not in exports:
            if submodules:
                try:
                    return importlib.import_module(f"{package}.{name}")
                except ModuleNotFoundError:
                    pass
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(list(namespace) + list(exports))

    return getattr_, dir_

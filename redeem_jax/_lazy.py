"""Submodules imported on first use (PEP 562), so that importing a package costs only what is used."""

from __future__ import annotations

import importlib


def lazy_package(package: str, submodules: dict[str, str], globals_: dict):
    """``(__getattr__, __dir__)`` for ``package``: ``submodules`` maps a public name to
    ``"module"`` or ``"module:attribute"`` (absolute), imported on first access and cached."""

    def __getattr__(name: str):
        target = submodules.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module), attr) if attr else importlib.import_module(module)
        globals_[name] = value
        return value

    def __dir__():
        return sorted(set(globals_) | set(submodules))

    return __getattr__, __dir__

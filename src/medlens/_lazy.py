"""Lazy package exports, so that ``medlens --help`` and the commands that need no model start fast.

A package lists where each public name lives; the module is imported on first access
(PEP 562 module ``__getattr__``). ``tests/test_cli_startup.py`` asserts that the light
commands never import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Callable


def lazy_exports(package: str, where: dict[str, str]) -> Callable[[str], object]:
    """Return a module ``__getattr__`` resolving ``name`` from ``package.<where[name]>``.

    Parameters
    ----------
    package : str
        Dotted name of the package (its ``__name__``).
    where : dict of str to str
        Public name -> submodule that defines it, relative to ``package`` or, when it
        starts with ``medlens.``, absolute.
    """

    def __getattr__(name: str) -> object:
        if name in where:
            module = where[name] if where[name].startswith("medlens.") else f"{package}.{where[name]}"
            return getattr(import_module(module), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__

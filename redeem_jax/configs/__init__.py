"""The experiment configs that ship with the package, selectable by name.

``redeem-jax --config default`` (or ``python -m redeem_jax --config default``) runs
``redeem_jax/configs/default.py``; ``--config path/to/file.py`` still runs any file with a
``get_config()``. The checkout's ``configs/*.py`` re-export these modules, so both spellings
run the same experiment. Each module's docstring says what it shows and what to expect.

    >>> import redeem_jax as rj
    >>> rj.configs.names()
    ('byzantine_gossip', 'default', 'dp', 'million', 'sweep', 'topologies')
    >>> c = rj.configs.get("default")       # a fresh ConfigDict; change it and rj.run(c, workdir)
"""

from __future__ import annotations

import importlib
from pathlib import Path

import ml_collections

__all__ = ["names", "get", "path", "describe"]

_DIR = Path(__file__).resolve().parent


def names() -> tuple[str, ...]:
    """The names of the shipped configs, sorted (each is ``redeem_jax/configs/<name>.py``)."""
    return tuple(sorted(p.stem for p in _DIR.glob("*.py") if not p.stem.startswith("_")))


def path(name: str) -> Path:
    """The file of shipped config ``name`` (what ``--config <name>`` loads); ``KeyError`` if none."""
    if name not in names():
        raise KeyError(f"no shipped config {name!r}; the shipped configs are {', '.join(names())}")
    return _DIR / f"{name}.py"


def get(name: str) -> ml_collections.ConfigDict:
    """A fresh copy of shipped config ``name`` (its ``get_config()``); ``KeyError`` if none."""
    path(name)
    return importlib.import_module(f"{__name__}.{name}").get_config()


def describe(name: str) -> str:
    """The first line of shipped config ``name``'s docstring (what ``--help`` lists)."""
    doc = importlib.import_module(f"{__name__}.{path(name).stem}").__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""

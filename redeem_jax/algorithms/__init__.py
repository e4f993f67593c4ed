"""Algorithms: one file per family, each only an :class:`~redeem_jax.core.Algorithm`.

``REGISTRY`` maps the names of ``config.algorithm.name`` to factories ``factory(optimizer,
**options) -> Algorithm``; the factory's keyword options are the ``config.algorithm`` fields
that algorithm accepts. :func:`register` adds one (a new algorithm is its own file plus one
``register`` call; nothing else in the library changes).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from redeem_jax.algorithms import ad_psgd, apfl, collab, ditto, dsgd, exact_diffusion, gradient_tracking, ifca, push_sum

__all__ = [
    "REGISTRY",
    "register",
    "get",
    "options",
    "dsgd",
    "exact_diffusion",
    "gradient_tracking",
    "push_sum",
    "ad_psgd",
    "ditto",
    "apfl",
]

REGISTRY: dict[str, Callable] = {}


def register(name: str, factory: Callable, *, overwrite: bool = False) -> Callable:
    """Register ``factory(optimizer, **options) -> Algorithm`` under ``name``."""
    if name in REGISTRY and not overwrite and REGISTRY[name] is not factory:
        raise ValueError(f"algorithm {name!r} is already registered")
    REGISTRY[name] = factory
    return factory


def get(name: str) -> Callable:
    """The factory registered under ``name`` (``config.algorithm.name``); one line naming the known ones if none."""
    if name not in REGISTRY:
        raise ValueError(f"{name!r} is not one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def options(name: str) -> dict:
    """The config options of algorithm ``name``: ``{option: default}`` from its factory's signature."""
    sig = inspect.signature(get(name))
    return {
        k: p.default
        for k, p in list(sig.parameters.items())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.default is not inspect.Parameter.empty
        and not k.startswith("_")
    }


def _dsgd(optimizer, order: str = "atc", local_steps: int = 1):
    return dsgd.dsgd(optimizer, order, local_steps)


register("dsgd", _dsgd)
register("fedavg", dsgd.fedavg)
register("diging", gradient_tracking.diging)
register("exact_diffusion", exact_diffusion.exact_diffusion)
register("d2", exact_diffusion.d2)
register("choco_sgd", dsgd.choco_sgd)
register("deepsqueeze", dsgd.deepsqueeze)
register("push_sum", push_sum.push_sum)
register("sgp", push_sum.sgp)
register("push_diging", push_sum.push_diging)
register("ad_psgd", ad_psgd.ad_psgd)


def _ditto(optimizer, lam: float = 1.0, local_steps: int = 1, over: str = "graph"):
    return ditto.ditto(optimizer, lam, local_steps, over=over)


def _apfl(optimizer, alpha: float = 0.5, alpha_lr: float = 0.1, local_steps: int = 1, over: str = "graph"):
    return apfl.apfl(optimizer, alpha, alpha_lr, local_steps, over=over)


register("ditto", _ditto)
register("apfl", _apfl)

# Shared body, personal head (FedPer, FedRep) and the local-only baseline: one self-contained block.
from redeem_jax.algorithms import fedrep, local_only  # noqa: E402

__all__ += ["fedrep", "local_only"]


def _fedrep(
    optimizer, head_steps: int = 1, local_steps: int = 1, personal: str = "head", over: str = "graph", *, _shared=None
):
    # ``_shared`` (the model's shared-coordinate mask) is filled in by rj.build from ``personal``.
    del personal
    return fedrep.fedrep(optimizer, _shared, head_steps, local_steps, over=over)


def _fedper(optimizer, local_steps: int = 1, personal: str = "head", over: str = "graph", *, _shared=None):
    del personal
    return fedrep.fedper(optimizer, _shared, local_steps, over=over)


register("fedrep", _fedrep)
register("fedper", _fedper)
register("local_only", local_only.local_only)
register("ifca", ifca.ifca)
register("collab", collab.collab)

# DiLoCo (Douillard et al. 2023): H inner steps, an outer Nesterov step, one exchange per round.
from redeem_jax.algorithms import diloco  # noqa: E402

__all__ += ["diloco"]
register("diloco", diloco.diloco)

"""Graphs drawn inside the round: the protocol every random or unreliable topology follows.

DESIGN.md ("One round"): the topology gives this round's edges, ``edges(round, key)``. A static
or periodic :class:`~redeem_jax.network.topology.Topology` ignores the key; a *drawn* topology
(Epidemic Learning's random s-out graphs, random matchings, link failures, churn) draws its
edges from the round's graph key inside the jitted step, so a run or a sweep compiles once and
costs no Python per round. The round derives one graph key per round
(``fold_in(round_key, tag("topology"))``) and hands the same :class:`~redeem_jax.core.Edges`
to every channel of that round; the same seed therefore gives the same sequence of graphs, and a
resumed run the same graphs as an uninterrupted one.

A drawn topology subclasses :class:`DrawnTopology` and implements :meth:`DrawnTopology.draw`
(jittable, fixed shapes) and, on the host, :meth:`DrawnTopology.expected_mixing_matrix`
(``E[W(t)]``, which ``rj.theory`` and the tests compare against Monte Carlo).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DrawnTopology", "is_drawn", "FAMILIES", "get", "Straggling", "straggler_mask"]


class DrawnTopology:
    """Base of every topology whose edges are drawn in the round (DESIGN.md, "One round").

    Attributes a subclass sets: ``n`` (nodes), ``K`` (padded in-degree width of every draw),
    ``name``, ``params`` (a dict of its options), ``is_doubly_stochastic`` (True when *every*
    draw is doubly stochastic, so gossip keeps the network mean exactly).
    """

    n: int
    K: int
    name: str = "drawn"
    params: dict[str, Any] = {}
    is_doubly_stochastic: bool = False
    is_drawn: bool = True
    # Fast paths of static graphs (circulant rolls, a fixed period) never apply to a drawn graph.
    is_circulant: bool = False
    period: int = 1
    # Options that are core.Hyper placeholders (a swept p, q or s): draw(round, key, hp) resolves
    # them from the round's hp; hypers_of finds them here, so the step's hp argument holds them.
    hypers: tuple = ()

    def draw(self, round, key, hp=None):
        """This round's edges ``(neighbors i32[N, K], weights f32[N, K], self_weight f32[N],
        mask bool[N, K])`` in the padded layout of DESIGN.md (row i lists whom node i receives
        from; padded slots point at i itself with weight 0 and mask False). Jittable: ``round``
        and ``key`` may be traced, shapes are fixed. ``hp`` (the round's hyper-parameters) is
        passed only to a topology with :attr:`hypers`; others may omit the argument."""
        raise NotImplementedError

    def expected_mixing_matrix(self) -> np.ndarray:
        """``E[W(t)]`` as a dense float64 ``[n, n]`` (host; closed form, not sampled)."""
        raise NotImplementedError

    def sample_mixing_matrix(self, round: int, key, hp=None) -> np.ndarray:
        """The dense ``W(t)`` of one draw (host, for tests and network-DP leakage): row i holds
        what node i receives, ``W[i, j] = weight of j at i``. ``hp``: values of the topology's
        hyper-parameters (:attr:`hypers`), as the round passes them."""
        import jax

        drawn = self.draw(round, key, hp=hp) if self.hypers else self.draw(round, key)
        nbr, w, sw, m = (np.asarray(a) for a in jax.device_get(drawn))
        W = np.zeros((self.n, self.n))
        rows = np.repeat(np.arange(self.n), nbr.shape[1])
        np.add.at(W, (rows, nbr.ravel()), np.where(m, w, 0.0).ravel())
        W[np.arange(self.n), np.arange(self.n)] += sw
        return W

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}(n={self.n}{', ' if opts else ''}{opts})"


def is_drawn(topology) -> bool:
    """True for a topology whose edges are drawn inside the round (:class:`DrawnTopology`)."""
    return bool(getattr(topology, "is_drawn", False))


# Registered names (DESIGN.md, Public API): config.topology.name selects them; the base graph of
# the families that sample a static graph is config.topology.base.
FAMILIES = ("epidemic_oracle", "epidemic_local", "random_matching", "pairwise", "k_out")


def get(name: str, n: int, *, base=None, s=1, k=1, s_max: int | None = None):
    """A drawn topology by its registered name: ``epidemic_oracle`` / ``epidemic_local``
    (de Vos et al. 2023, fan-out ``s``; a :class:`~redeem_jax.core.Hyper` padded to ``s_max``
    when swept), ``random_matching`` / ``pairwise`` (Boyd et al. 2006, on the static ``base``),
    ``k_out`` (``k`` random neighbours of ``base`` per round)."""
    from redeem_jax.network import random_graphs as rg

    if name == "epidemic_oracle":
        return rg.el_oracle(n, s, s_max=s_max)
    if name == "epidemic_local":
        return rg.el_local(n, s, s_max=s_max)
    if base is None:
        raise ValueError(f"{name} samples a static base graph: give base=")
    if name == "random_matching":
        return rg.random_matching(base)
    if name == "pairwise":
        return rg.pairwise(base)
    if name == "k_out":
        return rg.k_out(base, k)
    raise ValueError(f"unknown drawn topology {name!r}; expected one of {', '.join(FAMILIES)}")


# --------------------------------------------------------------------------- stragglers
def straggler_mask(key, n: int, r):
    """``bool[n]``: the nodes that take their local step this round, each independently a
    straggler with probability ``r`` (``uniform(key, [n]) >= r``; ``r`` may be traced). The
    straggler model of the issue (a node skips its local step but still gossips), drawn from
    its own ``fold_in`` of the graph key so no other draw of the round moves."""
    import jax
    import jax.numpy as jnp

    from redeem_jax.core import tag

    u = jax.random.uniform(jax.random.fold_in(key, tag("straggle")), (n,))
    return u >= jnp.asarray(r, jnp.float32)


class Straggling(DrawnTopology):
    """A drawn topology whose nodes straggle: the edges of ``inner`` unchanged, plus an active
    mask (:meth:`active`) in which each node skips its local step with probability ``r`` every
    round; a straggler still gossips, sending its current, un-updated model. An offline node of
    a churning ``inner`` (one with ``online(round, key)``) is inactive as well.

    ``r`` may be a float, a JAX value or a :class:`~redeem_jax.core.Hyper` (resolved from the
    round's ``hp``). The mixing-matrix theory is ``inner``'s: stragglers do not change ``W``.
    Attributes not defined here (``base``, ``policy``, ``online``, ...) are ``inner``'s.
    """

    def __init__(self, inner, r):
        from redeem_jax.core import Hyper

        if not getattr(inner, "is_drawn", False):
            raise ValueError("Straggling wraps a drawn topology (use unreliable.stragglers for a static graph)")
        rv = r.default if isinstance(r, Hyper) else r
        try:
            rv = float(rv)
        except Exception:  # a tracer: checked by whoever traced it
            rv = None
        if rv is not None and not 0.0 <= rv < 1.0:
            raise ValueError(f"stragglers: r must be in [0, 1), got {rv}")
        self.inner, self.r = inner, r
        self.n, self.K, self.name = inner.n, inner.K, inner.name
        self.params = dict(getattr(inner, "params", {}), straggle=r)
        self.is_doubly_stochastic = bool(getattr(inner, "is_doubly_stochastic", False))
        self.hypers = tuple(getattr(inner, "hypers", ())) + ((r,) if isinstance(r, Hyper) else ())

    def __getattr__(self, name):
        # Only reached for names not found on the instance or class: the inner topology's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _call_inner(self, fn, round, key, hp):
        return fn(round, key, hp=hp) if getattr(self.inner, "hypers", ()) else fn(round, key)

    def draw(self, round, key, hp=None):
        """``inner``'s edges of this round (stragglers still gossip)."""
        return self._call_inner(self.inner.draw, round, key, hp)

    def active(self, round, key, hp=None):
        """``bool[n]``: not a straggler (:func:`straggler_mask`) and, under churn, online."""
        from redeem_jax.core import resolve

        act = straggler_mask(key, self.n, resolve(self.r, hp))
        online = getattr(self.inner, "online", None)
        if online is not None:
            act = act & self._call_inner(online, round, key, hp)
        return act

    def with_params(self, **kw):
        """A copy with a new ``straggle`` (JAX value allowed); other keywords go to ``inner``."""
        r = kw.pop("straggle", self.r)
        inner = self.inner.with_params(**kw) if kw else self.inner
        return Straggling(inner, r)

    def expected_mixing_matrix(self) -> np.ndarray:
        """``inner``'s ``E[W]`` (stragglers do not change the mixing)."""
        return self.inner.expected_mixing_matrix()

    def sample_mixing_matrix(self, round: int, key, hp=None) -> np.ndarray:
        """``inner``'s dense ``W`` of this round's draw."""
        return (
            self.inner.sample_mixing_matrix(round, key, hp)
            if getattr(self.inner, "hypers", ())
            else self.inner.sample_mixing_matrix(round, key)
        )

    def __repr__(self) -> str:
        return f"Straggling({self.inner!r}, r={self.r!r})"

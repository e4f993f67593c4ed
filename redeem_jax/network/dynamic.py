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

__all__ = ["DrawnTopology", "is_drawn", "FAMILIES", "get"]


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

"""Byzantine placement and the honest-subgraph quantities attacks and defences need.

Host-side numpy, run once where the config is read: the Byzantine set is a
static ``bool[n]`` mask (DESIGN.md), so its count never changes the compiled
round. The helpers below give the per-node Byzantine weight
``delta_i = sum_{Byzantine k} W_ik`` (He, Karimireddy & Jaggi 2022, Sec. 4) and
the Fiedler vector of the honest subgraph's Laplacian (Gaucher, Dieuleveut &
Hendrikx 2025), both computed from the mixing matrix the run uses, and the
connected components of the honest subgraph (:func:`honest_components`): a
placement that cuts the honest nodes apart leaves no rule able to bring them
to one model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from redeem_jax.network.topology import Topology

__all__ = [
    "place",
    "PLACEMENTS",
    "byzantine_weight",
    "honest_subgraph_weights",
    "honest_laplacian",
    "fiedler_vector",
    "honest_components",
    "byzantine_only_listeners",
    "check_honest_connectivity",
    "warn_if_cut",
    "PlacementWarning",
]


class PlacementWarning(UserWarning):
    """A Byzantine placement that cuts the honest nodes apart (warned before a run)."""


PLACEMENTS = ("random", "highest_degree", "given")


def _n_of(topology_or_n) -> int:
    if isinstance(topology_or_n, Topology):
        return int(topology_or_n.n)
    if isinstance(topology_or_n, bool) or not isinstance(topology_or_n, (int, np.integer)):
        raise ValueError(f"place: expected a Topology or an int n, got {topology_or_n!r}")
    n = int(topology_or_n)
    if n < 1:
        raise ValueError(f"place: n must be >= 1, got {n}")
    return n


def place(topology_or_n, f: int, method: str = "random", seed: int = 0, ids: Sequence[int] | None = None) -> np.ndarray:
    """Choose the Byzantine nodes: ``bool[n]`` with exactly ``f`` True.

    * ``"random"``: ``f`` distinct nodes drawn uniformly with
      ``np.random.default_rng(seed)`` (deterministic for a seed).
    * ``"highest_degree"``: the ``f`` nodes of largest in-degree, ties broken by
      lower id; the placement that maximises the Byzantine weight on hubs
      (e.g. the centre of a star). Needs a :class:`Topology`.
    * ``"given"``: exactly the node ids in ``ids`` (``len(ids) == f``).

    ``f`` must satisfy ``0 <= f < n``: at least one honest node must remain.
    """
    n = _n_of(topology_or_n)
    if isinstance(f, bool) or not isinstance(f, (int, np.integer)):
        raise ValueError(f"place: f must be an integer, got {f!r}")
    f = int(f)
    if f < 0 or f >= n:
        raise ValueError(f"place: need 0 <= f < n, got f={f} with n={n}")
    mask = np.zeros(n, dtype=bool)
    if method == "random":
        rng = np.random.default_rng(seed)
        mask[rng.choice(n, size=f, replace=False)] = True
    elif method == "highest_degree":
        if not isinstance(topology_or_n, Topology):
            raise ValueError("place: method='highest_degree' needs a Topology, not an int n")
        deg = np.asarray(topology_or_n.degrees)
        # lexsort sorts by the last key first: degree descending, then id ascending.
        order = np.lexsort((np.arange(n), -deg))
        mask[order[:f]] = True
    elif method == "given":
        if ids is None:
            raise ValueError("place: method='given' needs ids=")
        arr = np.asarray(ids)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"place: ids must be a 1-D sequence of integers, got {ids!r}")
        if arr.size != f:
            raise ValueError(f"place: got {arr.size} ids but f={f}")
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(f"place: ids must lie in [0, {n}), got {arr.tolist()}")
        if np.unique(arr).size != arr.size:
            raise ValueError(f"place: ids contain duplicates: {arr.tolist()}")
        mask[arr] = True
    else:
        raise ValueError(f"place: unknown method {method!r}; expected one of {PLACEMENTS}")
    return mask


def _check_mask(topology: Topology, byzantine) -> np.ndarray:
    b = np.asarray(byzantine, dtype=bool).reshape(-1)
    if b.shape[0] != topology.n:
        raise ValueError(f"byzantine mask has {b.shape[0]} entries, topology has n={topology.n}")
    return b


def _mixing(topology: Topology, round) -> np.ndarray:
    # A time-varying topology without a round: the period-average matrix is the
    # one whose spectrum governs the long-run (expected) behaviour.
    if round is None and topology.period > 1:
        return topology.mixing_matrices().mean(axis=0)
    return topology.mixing_matrix(round)


def byzantine_weight(topology: Topology, byzantine, round=None) -> np.ndarray:
    """``delta_i = sum_{Byzantine k} W_ik`` for every node, float64 ``[n]``.

    The Byzantine weight of He, Karimireddy & Jaggi (2022, Def. of delta),
    which sets ClippedGossip's radius and the dissensus attack's scaling.
    """
    b = _check_mask(topology, byzantine)
    W = _mixing(topology, round).copy()
    np.fill_diagonal(W, 0.0)
    return W[:, b].sum(axis=1)


def honest_subgraph_weights(topology: Topology, byzantine, round=None):
    """``(W_HH [h, h], honest_ids [h], delta [h])`` of the honest subgraph.

    ``W_HH`` is the mixing matrix restricted to honest rows/columns (float64,
    diagonal kept), ``delta`` the Byzantine weight of each honest node
    (He, Karimireddy & Jaggi 2022).
    """
    b = _check_mask(topology, byzantine)
    W = _mixing(topology, round)
    honest = np.flatnonzero(~b)
    delta = byzantine_weight(topology, b, round)[honest]
    return W[np.ix_(honest, honest)], honest, delta


def honest_laplacian(topology: Topology, byzantine, round=None) -> np.ndarray:
    """Weighted Laplacian ``L = D - A`` of the honest subgraph, float64 ``[h, h]``.

    ``A`` is the off-diagonal honest block of ``W`` symmetrised as
    ``(A + A^T)/2`` (directed graphs get the Laplacian of their symmetric part),
    as in Gaucher, Dieuleveut & Hendrikx (2025).
    """
    W_hh, _, _ = honest_subgraph_weights(topology, byzantine, round)
    A = W_hh.copy()
    np.fill_diagonal(A, 0.0)
    A = 0.5 * (A + A.T)
    return np.diag(A.sum(axis=1)) - A


def fiedler_vector(topology: Topology, byzantine, round=None) -> np.ndarray:
    """Unit Fiedler vector of the honest Laplacian, extended by 0 on Byzantine nodes: ``[n]``.

    The eigenvector of the second-smallest eigenvalue of :func:`honest_laplacian`
    (``numpy.linalg.eigh``): the slowest-mixing disagreement mode of the honest
    nodes, which the spectral attack of Gaucher, Dieuleveut & Hendrikx (2025)
    excites. The sign is fixed so that the entry of largest magnitude (lowest
    id on ties) is positive, making the vector deterministic.
    """
    b = _check_mask(topology, byzantine)
    honest = np.flatnonzero(~b)
    u = np.zeros(topology.n)
    if honest.size < 2:
        return u
    L = honest_laplacian(topology, b, round)
    _, vecs = np.linalg.eigh(L)
    v = vecs[:, 1]
    j = int(np.argmax(np.round(np.abs(v), 12)))  # first index among (near-)ties
    if v[j] < 0:
        v = -v
    u[honest] = v / np.linalg.norm(v)
    return u


def _live_edges(topology: Topology) -> tuple[np.ndarray, np.ndarray]:
    """``(receiver, sender)`` of every edge with a nonzero weight in some round of the period.

    From the padded neighbour lists, O(N·K): a dense [N, N] matrix is out of reach at 10^6 nodes.
    """
    n = topology.n
    nbr = np.asarray(topology.neighbors).reshape(topology.period, n, -1)
    live = (np.asarray(topology.edge_mask) & (np.asarray(topology.weights) != 0)).reshape(nbr.shape)
    recv = np.broadcast_to(np.arange(n)[None, :, None], nbr.shape)
    keep = live & (nbr != recv)
    return recv[keep], nbr[keep]


def honest_components(topology: Topology, byzantine) -> list[np.ndarray]:
    """Connected components of the honest subgraph: sorted int64 node ids, ordered by smallest id.

    Edges count in either direction and in any round of the period (the union graph), so
    one component means the honest nodes can reach each other without relaying through a
    Byzantine node. More than one component means no robust rule can bring the honest
    nodes to one model: every path between two of them crosses an attacker.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    b = _check_mask(topology, byzantine)
    honest = np.flatnonzero(~b)
    if honest.size == 0:
        return []
    recv, send = _live_edges(topology)
    keep = ~b[recv] & ~b[send]
    index = np.full(topology.n, -1, np.int64)
    index[honest] = np.arange(honest.size)
    h = honest.size
    graph = coo_matrix((np.ones(int(keep.sum()), np.int8), (index[recv[keep]], index[send[keep]])), shape=(h, h))
    _, label = connected_components(graph.tocsr(), directed=True, connection="weak")
    order = np.argsort(label, kind="stable")  # honest ids ascend within a label
    groups = np.split(honest[order], np.flatnonzero(np.diff(label[order])) + 1)
    return sorted(groups, key=lambda g: int(g[0]))


def byzantine_only_listeners(topology: Topology, byzantine) -> np.ndarray:
    """Honest nodes that receive from at least one node, all of them Byzantine (sorted ids).

    Such a node hears nothing but what attackers send: whatever rule it runs, it can only
    trust itself or follow them.
    """
    b = _check_mask(topology, byzantine)
    recv, send = _live_edges(topology)
    heard = np.bincount(recv, minlength=topology.n)
    heard_honest = np.bincount(recv[~b[send]], minlength=topology.n)
    return np.flatnonzero(~b & (heard > 0) & (heard_honest == 0)).astype(np.int64)


def _ids(ids: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(map(str, ids[:limit].tolist()))
    return f"[{shown}, ... {ids.size - limit} more]" if ids.size > limit else f"[{shown}]"


def check_honest_connectivity(topology: Topology, byzantine) -> str | None:
    """One line saying how the Byzantine set cuts the honest nodes apart, or None if it does not.

    Names the honest nodes that hear only Byzantine neighbours
    (:func:`byzantine_only_listeners`) and the components of the honest subgraph
    (:func:`honest_components`) when there are several.
    """
    b = _check_mask(topology, byzantine)
    if not b.any():
        return None
    parts = []
    lonely = byzantine_only_listeners(topology, b)
    if lonely.size:
        parts.append(f"honest node(s) {_ids(lonely)} receive only from Byzantine nodes")
    comps = honest_components(topology, b)
    if len(comps) > 1:
        shown = "; ".join(_ids(c) for c in comps[:4]) + ("; ..." if len(comps) > 4 else "")
        parts.append(
            f"the honest nodes form {len(comps)} groups that reach each other only through Byzantine nodes ({shown})"
        )
    if not parts:
        return None
    byz = np.flatnonzero(b)
    return (
        f"Byzantine nodes {_ids(byz)} on {topology.name} (n={topology.n}) cut the honest nodes apart: "
        + "; and ".join(parts)
        + "; the honest nodes cannot reach one model (place the Byzantine nodes "
        "elsewhere or use a better connected graph)"
    )


def warn_if_cut(topology: Topology, byzantine, stacklevel: int = 2) -> str | None:
    """:func:`check_honest_connectivity`, issued as a :class:`PlacementWarning`; returns the message."""
    msg = check_honest_connectivity(topology, byzantine)
    if msg:
        warnings.warn(msg, PlacementWarning, stacklevel=stacklevel + 1)
    return msg

"""Directed graphs with column-stochastic (push-sum) weights.

Push-sum (Kempe, Dobra & Gehrke 2003) and its optimizers (SGP, push-DIGing) run on digraphs
where a node knows only its own out-degree. Node i splits what it holds equally among itself
and its out-neighbours: the out-degree rule

    A[j, i] = 1 / (outdeg_i + 1)   for every edge i → j and for j = i,

so every column of A sums to 1 (A is column stochastic), and in general no row does. One
push-sum step is ``x ← A x``: node j receives ``A[j, i] x_i`` from each in-neighbour i, which
is exactly the receiver-side padded layout of :class:`~redeem_jax.network.topology.Topology`
(row j lists whom j receives from, with weights ``A[j, ·]``). These builders therefore
return ordinary ``Topology`` objects: ``rj.gossip.mix`` and ``rj.channels.gossip`` compute
``A x`` on them unchanged (dense, sparse or roll path).

``Topology``'s public constructors check that every row sums to 1, which a column-stochastic
matrix fails; the builders here check columns instead and assemble the topology with the
module's own ``_build`` (which checks strong connectivity of the union graph).

Edge convention here: an edge ``i → j`` means i *sends* to j (``adjacency[i, j]`` for
:func:`from_adjacency_directed`), the transpose of ``Topology.adjacency`` (i receives from j).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

from redeem_jax.network import topology as _topo

__all__ = [
    "out_degree_weights",
    "directed_ring",
    "directed_exponential",
    "one_peer_directed_exponential",
    "from_adjacency_directed",
    "is_column_stochastic",
    "perron_vector",
    "push_sum_rate",
]

_ATOL = 1e-6  # as topology's stochasticity checks: float32 user matrices pass


def out_degree_weights(adjacency) -> sp.csr_matrix:
    """Column-stochastic push-sum matrix of a digraph by the out-degree rule (Kempe et al. 2003;
    Nedić & Olshevsky 2015, Eq. 2): ``A[j, i] = 1/(outdeg_i + 1)`` for each edge ``i → j`` and
    ``A[i, i] = 1/(outdeg_i + 1)``. ``adjacency[i, j] != 0`` iff ``i → j``; self loops ignored."""
    E = _topo._as_adjacency_csr(adjacency)  # bool, no diagonal
    n = E.shape[0]
    out = np.asarray(E.sum(axis=1)).reshape(-1).astype(np.float64)
    share = 1.0 / (out + 1.0)
    coo = E.tocoo()
    # Sender i's share goes to row j (receiver), column i (sender).
    A = sp.csr_matrix((share[coo.row], (coo.col, coo.row)), shape=(n, n)) + sp.diags(share)
    A = sp.csr_matrix(A)
    A.sort_indices()
    return A


def is_column_stochastic(A, atol: float = _ATOL) -> bool:
    """True when ``A`` (dense or sparse ``[n, n]``) is non-negative with unit column sums."""
    A = sp.csr_matrix(A, dtype=np.float64)
    if A.nnz and A.data.min() < 0:
        return False
    return bool(np.all(np.abs(np.asarray(A.sum(axis=0)).reshape(-1) - 1.0) <= atol))


def _strongly_connected(E: sp.csr_matrix, name: str):
    if E.shape[0] > 1:
        k, _ = csgraph.connected_components(E, directed=True, connection="strong")
        if k > 1:
            raise ValueError(
                f"{name}: digraph is not strongly connected ({k} strongly connected components); "
                "push-sum needs every node to reach every other"
            )


def _column_topology(name: str, mats, params=None) -> _topo.Topology:
    """A Topology from per-round column-stochastic matrices (receiver-side rows)."""
    mats = [sp.csr_matrix(m, dtype=np.float64) for m in mats]
    for t, A in enumerate(mats):
        A.eliminate_zeros()
        if not is_column_stochastic(A):
            cols = np.asarray(A.sum(axis=0)).reshape(-1)
            bad = int(np.argmax(np.abs(cols - 1.0)))
            raise ValueError(f"{name}: round {t} is not column stochastic (column {bad} sums to {cols[bad]:.6g})")
    union = _topo._as_adjacency_csr(mats[0] != 0)
    for A in mats[1:]:
        union = sp.csr_matrix((union + _topo._as_adjacency_csr(A != 0)).astype(bool))
    # union[j, i]: j receives from i, i.e. the edge i → j; strong connectivity is the same either way.
    _strongly_connected(union, name)
    return _topo._build(name, mats, union, params)


def _shift_edges(n: int, offsets) -> sp.csr_matrix:
    """Sender-side adjacency of ``i → i + s mod n`` for every offset s."""
    i = np.arange(n)
    rows = np.concatenate([i for _ in offsets])
    cols = np.concatenate([(i + s) % n for s in offsets])
    keep = rows != cols
    return sp.csr_matrix((np.ones(int(keep.sum()), bool), (rows[keep], cols[keep])), shape=(n, n))


def directed_ring(n: int) -> _topo.Topology:
    """Directed ring ``i → i + 1 mod n`` with out-degree weights: ``A = (I + P)/2``.

    Circulant, so also row stochastic (push-sum weights stay 1); eigenvalues ``(1 + e^{2πik/n})/2``,
    second-largest modulus ``cos(π/n)`` (the push-sum rate, :func:`push_sum_rate`)."""
    n = _topo._check_n(n, "directed_ring", 2)
    return _column_topology("directed_ring", [out_degree_weights(_shift_edges(n, [1]))], dict(directed=True))


def directed_exponential(n: int) -> _topo.Topology:
    """Static directed exponential graph (Assran et al. 2019, Sec. 6; Ying et al. 2021):
    ``i → i + 2^k mod n`` for ``k < ceil(log2 n)``, weights ``1/(τ + 1)`` with τ = ceil(log2 n)."""
    n = _topo._check_n(n, "directed_exponential", 2)
    tau = math.ceil(math.log2(n))
    A = out_degree_weights(_shift_edges(n, [2**k for k in range(tau)]))
    return _column_topology("directed_exponential", [A], dict(tau=tau, directed=True))


def one_peer_directed_exponential(n: int) -> _topo.Topology:
    """One-peer directed exponential graph (Assran et al. 2019, SGP's default; Ying et al. 2021):
    period τ = ceil(log2 n), round t sends ``i → i + 2^(t mod τ)``: ``A(t) = (I + P^(2^t))/2``.
    For n a power of 2 the product of τ consecutive rounds is exactly ``11ᵀ/n``."""
    n = _topo._check_n(n, "one_peer_directed_exponential", 2)
    tau = max(1, math.ceil(math.log2(n)))
    mats = [out_degree_weights(_shift_edges(n, [2**t])) for t in range(tau)]
    return _column_topology("one_peer_directed_exponential", mats, dict(tau=tau, directed=True))


def from_adjacency_directed(adjacency, name: str = "directed") -> _topo.Topology:
    """Push-sum topology of any strongly connected digraph: ``adjacency[i, j] != 0`` iff ``i → j``
    (i sends to j), weights by the out-degree rule (:func:`out_degree_weights`)."""
    E = _topo._as_adjacency_csr(adjacency)
    _strongly_connected(E, name)
    return _column_topology(name, [out_degree_weights(E)], dict(directed=True))


def perron_vector(A) -> np.ndarray:
    """π with ``A π = π``, ``1ᵀπ = 1``: ``A^t → π 1ᵀ`` for a primitive column-stochastic A, so
    push-sum weights tend to ``n π`` and numerators to ``π Σᵢ xᵢ`` (Kempe et al. 2003)."""
    A = np.asarray(A.toarray() if sp.issparse(A) else A, np.float64)
    vals, vecs = np.linalg.eig(A)
    v = np.real(vecs[:, int(np.argmin(np.abs(vals - 1.0)))])
    return v / v.sum()


def push_sum_rate(A) -> float:
    """Second-largest eigenvalue modulus of a static column-stochastic A: the asymptotic
    per-round contraction of push-sum's error ``x_t/w_t − x̄``, since ``x_t − x̄ w_t =
    A^t (x_0 − x̄ 1)`` and ``A^t = π1ᵀ + O(|λ₂|^t)`` (Kempe et al. 2003; Nedić & Olshevsky 2015)."""
    A = np.asarray(A.toarray() if sp.issparse(A) else A, np.float64)
    mods = np.sort(np.abs(np.linalg.eigvals(A)))[::-1]
    return float(mods[1]) if mods.size > 1 else 0.0

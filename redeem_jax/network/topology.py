"""Communication graphs and their gossip (mixing) matrices.

A :class:`Topology` holds, host-side and built once, everything a jitted round
needs to communicate over a graph: the padded neighbour lists of DESIGN.md
(``neighbors i32[n, K]``, ``weights f32[n, K]``, ``self_weight f32[n]``,
``edge_mask bool[n, K]``; a time-varying topology stacks a leading period axis
``T``) and, on demand, the dense mixing matrix ``W`` and its spectral gap.

Conventions
-----------
* ``W[i, j] != 0`` (``j != i``) means node ``i`` *receives* ``x_j``; one gossip
  step is ``x <- W x`` (Lian et al. 2017; Koloskova et al. 2020).
* ``adjacency[i, j]`` is True when ``i`` receives from ``j`` (for undirected
  graphs it is the usual symmetric adjacency); ``degrees`` are in-degrees.
* Padded neighbour slots point at the node itself with weight 0 and
  ``edge_mask`` False, so gathers never go out of bounds.

Weight rules (``weights=``)
---------------------------
* ``"metropolis_hastings"`` (default): ``W_ij = 1/(1 + max(d_i, d_j))`` on
  edges, ``W_ii = 1 - sum_j W_ij`` (Xiao & Boyd 2004). Symmetric and doubly
  stochastic on undirected graphs.
* ``"max_degree"``: ``W_ij = 1/(1 + d_max)`` (Xiao & Boyd 2004); doubly
  stochastic on undirected graphs.
* ``"uniform"``: ``W_ij = 1/(1 + d_i)`` over the neighbours and self. Only
  row-stochastic in general (doubly stochastic on regular graphs).
* an explicit ``[n, n]`` matrix (``[T, n, n]`` for a time-varying family):
  checked to be non-negative, supported on edges, and doubly stochastic
  (``stochastic="row"`` on ``from_*`` constructors relaxes this to rows).
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla

__all__ = [
    "Topology",
    "ring",
    "path",
    "torus",
    "complete",
    "star",
    "hypercube",
    "erdos_renyi",
    "random_regular",
    "exponential",
    "one_peer_exponential",
    "small_world",
    "random_geometric",
    "two_cliques",
    "dumbbell",
    "two_worlds",
    "from_adjacency",
    "from_networkx",
    "from_mixing_matrices",
    "get",
    "FAMILIES",
    "WEIGHT_RULES",
]

WEIGHT_RULES = ("metropolis_hastings", "max_degree", "uniform")
_ATOL = 1e-6  # tolerance of the stochasticity checks (float32 user matrices pass)
_DENSE_SPECTRAL_MAX_N = 2048  # above this, spectral norms use sparse eigensolvers
_MAX_CIRCULANT_SHIFTS = 64  # roll fast path only when few shifts per round
_PAD_WASTE = 4  # padded slots / (nodes + edges) above which padding is lazy
_PADDED_MAX_ENTRIES = 16384**2  # the dense-gossip limit (gossip._DENSE_MAX_N ** 2 entries)
_PADDED_BYTES_PER_SLOT = 4 + 4 + 8 + 1  # neighbors i32, weights f32 and f64, mask


# --------------------------------------------------------------------------- #
# The Topology container
# --------------------------------------------------------------------------- #
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Topology:
    """A (possibly time-varying) communication graph with its mixing matrices.

    Build it with a family function (:func:`ring`, :func:`torus`, ...), with
    :func:`get`, or with :func:`from_adjacency` / :func:`from_networkx` /
    :func:`from_mixing_matrices`. All arrays are host-side numpy, read-only.

    Attributes:
      n: number of nodes.
      name: family name (``"ring"``, ``"torus"``, ...).
      period: number of distinct mixing matrices (1 if static); round ``t``
        uses ``W(t % period)``.
      degrees: int ``[n]`` in-degrees of the union graph over the period.
      neighbors: int32 ``[n, K]`` (``[T, n, K]`` if time-varying): row ``i``
        lists the nodes whose values node ``i`` receives.
      weights: float32 ``[n, K]`` (``[T, n, K]``): ``W[i, neighbors[i, k]]``.
      self_weight: float32 ``[n]`` (``[T, n]``): ``W[i, i]``.
      edge_mask: bool ``[n, K]`` (``[T, n, K]``): False on padded slots.

    Storage is O(n + edges): the per-round CSR matrices. The padded arrays
    (``neighbors``, ``weights``, ``edge_mask``) are built with the topology when
    they hold at most 4x the edge list's slots, and on first access otherwise
    (hub graphs: a star's would be ``n x (n - 1)``); above the dense-gossip size
    limit such a build is refused with a ValueError. Plain gossip never needs them.
      is_doubly_stochastic: every ``W(t)`` has unit row and column sums.
      is_symmetric: every ``W(t)`` is symmetric.
      params: family parameters (e.g. ``rows``/``cols`` of a torus).
    """

    n: int
    name: str
    period: int
    degrees: np.ndarray
    self_weight: np.ndarray
    is_doubly_stochastic: bool
    is_symmetric: bool
    params: Mapping[str, Any]
    _sparse: tuple  # per-round scipy CSR float64 W(t): the O(n + edges) storage
    _adjacency_csr: Any  # union graph, bool CSR, i receives from j
    _self_weight64: np.ndarray
    _circulant: Any  # None or (shifts int[T, S], weights f64[T, S], self f64[T])
    _width: int  # K: max off-diagonal in-degree over the rounds (>= 1)
    _num_edges: int  # off-diagonal entries of W(t), summed over the period
    _cache: dict

    # ------------------------------------------------------------------ shape
    @property
    def K(self) -> int:
        """Padded neighbour-list width: max in-degree over all rounds (>= 1)."""
        return self._width

    @property
    def num_edges(self) -> int:
        """Off-diagonal entries of ``W(t)`` summed over the period (directed edges used)."""
        return self._num_edges

    @property
    def is_padding_wasteful(self) -> bool:
        """True when the padded ``[T, n, K]`` lists would hold over 4x the slots of the
        edge list (hub graphs such as :func:`star`): those keep only the CSR form and
        build the padded arrays on first access (see :meth:`padded_nbytes`)."""
        return self.period * self.n * self.K > _PAD_WASTE * (self.period * self.n + self.num_edges)

    def live_edge_counts(self) -> np.ndarray:
        """int64 ``[T]``: the nonzero off-diagonal weights of each ``W(t)`` in float32 (the rows
        one gossip exchange sends in round t), counted on the host without padded lists."""
        if "live_edges" not in self._cache:
            self._cache["live_edges"] = np.array(
                [int(np.count_nonzero(_offdiag(w).data.astype(np.float32))) for w in self._sparse], np.int64
            )
        return self._cache["live_edges"]

    def padded_nbytes(self) -> int:
        """Bytes of the padded neighbour arrays (``neighbors``, ``weights``, float64 weights,
        ``edge_mask``) whether or not they are built."""
        return self.period * self.n * self.K * _PADDED_BYTES_PER_SLOT

    @property
    def neighbors(self) -> np.ndarray:
        """int32 ``[n, K]`` (``[T, n, K]``): row ``i`` lists the nodes ``i`` receives from."""
        return self._padded()[0]

    @property
    def weights(self) -> np.ndarray:
        """float32 ``[n, K]`` (``[T, n, K]``): ``W[i, neighbors[i, k]]`` (0 on padded slots)."""
        return self._padded()[1]

    @property
    def edge_mask(self) -> np.ndarray:
        """bool ``[n, K]`` (``[T, n, K]``): False on padded slots."""
        return self._padded()[2]

    @property
    def _weights64(self) -> np.ndarray:
        # float64 copy: float64 gossip stays exact
        return self._padded()[3]

    def _padded(self):
        """``(neighbors, weights f32, edge_mask, weights f64)``, built from the CSR matrices on
        first use; refused above the dense-gossip size limit when the padding is wasteful."""
        if "padded" not in self._cache:
            entries = self.period * self.n * self.K
            if entries > _PADDED_MAX_ENTRIES and self.is_padding_wasteful:
                raise ValueError(
                    f"{self.name}: padded neighbour lists [n={self.n}, K={self.K}] would need "
                    f"{self.padded_nbytes() / 2**30:.1f} GiB for {self.num_edges} edges (limit "
                    f"{_PADDED_MAX_ENTRIES} slots, as dense gossip); plain gossip (rj.gossip.mix) "
                    "does not need them, per-neighbourhood rules do: use a graph of smaller maximum degree"
                )
            self._cache["padded"] = _padded_arrays(self._sparse)
        return self._cache["padded"]

    def _degree_buckets(self, t: int = 0):
        """Round ``t``'s in-edges grouped by in-degree class, for gossip on hub graphs.

        Class ``c`` holds the nodes of off-diagonal in-degree in ``(2^(c-2), 2^(c-1)]``
        (class 0: no in-edge), each class padded to its own largest degree, so all
        classes together hold at most ``n + 2 * edges`` slots whatever the maximum
        degree. Returns ``(buckets, inverse)``: ``buckets`` a list of ``(rows int[n_b],
        neighbors int32[n_b, K_b], weights f64[n_b, K_b])`` (slots in the padded lists'
        order, padding pointing at the node itself with weight 0), and ``inverse`` with
        ``concat(per-bucket rows)[inverse] == arange(n)``.
        """
        key = ("buckets", t)
        if key not in self._cache:
            o = _offdiag(self._sparse[t])
            deg = np.diff(o.indptr)
            cls = np.zeros(self.n, np.int64)
            has = deg > 0
            cls[has] = np.ceil(np.log2(deg[has])).astype(np.int64) + 1
            order = np.argsort(cls, kind="stable")
            buckets = []
            for c in np.unique(cls):
                rows = order[cls[order] == c]
                k_b = int(deg[rows].max())
                slot = np.arange(k_b)
                valid = slot[None, :] < deg[rows][:, None]
                idx = np.where(valid, o.indptr[rows][:, None] + slot[None, :], 0)
                nbr = np.where(valid, o.indices[idx] if o.nnz else 0, rows[:, None]).astype(np.int32)
                w = np.where(valid, o.data[idx] if o.nnz else 0.0, 0.0)
                buckets.append((rows, nbr, w))
            inverse = np.empty(self.n, np.int64)
            inverse[np.concatenate([b[0] for b in buckets])] = np.arange(self.n)
            self._cache[key] = (buckets, inverse)
        return self._cache[key]

    @property
    def is_time_varying(self) -> bool:
        return self.period > 1

    @property
    def is_circulant(self) -> bool:
        """True when every ``W(t)`` is circulant with few shifts (roll fast path)."""
        return self._circulant is not None

    @property
    def adjacency(self) -> np.ndarray:
        """bool ``[n, n]``, no self loops: ``adjacency[i, j]`` iff ``i`` receives from ``j``
        in some round of the period (union graph). Built on first access."""
        if "adjacency" not in self._cache:
            a = self._adjacency_csr.toarray().astype(bool)
            a.setflags(write=False)
            self._cache["adjacency"] = a
        return self._cache["adjacency"]

    def _round_index(self, round) -> int:
        if round is None:
            return 0
        return int(round) % self.period

    # --------------------------------------------------------------- matrices
    def mixing_matrix(self, round: int | None = None) -> np.ndarray:
        """Dense float64 ``W(round % period)`` (``round=None`` means round 0)."""
        return self._sparse[self._round_index(round)].toarray()

    def mixing_matrices(self) -> np.ndarray:
        """Dense float64 ``[period, n, n]`` stack of all mixing matrices."""
        return np.stack([w.toarray() for w in self._sparse])

    def sparse_mixing_matrix(self, round: int | None = None) -> sp.csr_matrix:
        """scipy CSR float64 ``W(round % period)`` (no dense ``n x n`` array)."""
        return self._sparse[self._round_index(round)].copy()

    # --------------------------------------------------------------- spectral
    def rho(self, round: int | None = None) -> float:
        """``||W - 11^T/n||_2`` of ``W(round % period)`` (round 0 if None).

        The per-step contraction factor of gossip on the disagreement
        (Xiao & Boyd 2004; Koloskova et al. 2020 use ``p = 1 - rho^2``). For a
        time-varying topology this is one round's matrix; see
        :meth:`effective_rho` for the rate over a whole period.
        """
        t = self._round_index(round)
        key = ("rho", t)
        if key not in self._cache:
            self._cache[key] = _rho_of(self, [t])
        return self._cache[key]

    def spectral_gap(self, round: int | None = None) -> float:
        """``1 - ||W - 11^T/n||_2`` of ``W(round % period)`` (round 0 if None).

        For a time-varying topology this is one round's matrix (often 0, e.g.
        one-peer exponential graphs whose single rounds are disconnected);
        ``1 - effective_rho()`` is the per-round gap over a period.
        """
        return 1.0 - self.rho(round)

    def effective_rho(self) -> float:
        """Per-round contraction over a period: ``||W(T-1)...W(0) - J||_2^(1/T)``.

        Equals :meth:`rho` for static topologies; 0 for one-peer exponential
        graphs with ``n`` a power of 2 (Ying et al. 2021, exact averaging).
        """
        if self.period == 1:
            return self.rho()
        key = ("effective_rho",)
        if key not in self._cache:
            r = _rho_of(self, list(range(self.period)))
            self._cache[key] = float(r ** (1.0 / self.period))
        return self._cache[key]

    # ----------------------------------------------------------------- degree
    def degree_stats(self) -> dict:
        """``dict(min, max, mean)`` of the (union-graph) in-degrees."""
        d = self.degrees
        return dict(min=int(d.min()), max=int(d.max()), mean=float(d.mean()))

    # ------------------------------------------------------------ jnp export
    def edge_arrays(self, round=None):
        """``(neighbors [n,K], weights [n,K], self_weight [n], edge_mask [n,K])`` as jnp.

        ``round`` may be a Python int or a traced integer under ``jit``: the
        stacked ``[T, ...]`` arrays are indexed with ``round % T``. Static
        topologies ignore ``round``. Padded slots point at the node itself with
        weight 0 and mask False.
        """
        import jax.numpy as jnp

        arrays = (self.neighbors, self.weights, self.self_weight, self.edge_mask)
        if self.period == 1:
            return tuple(jnp.asarray(a) for a in arrays)
        if round is None or isinstance(round, (int, np.integer)):
            t = self._round_index(round)
            return tuple(jnp.asarray(a[t]) for a in arrays)
        t = jnp.asarray(round) % self.period
        return tuple(jnp.asarray(a)[t] for a in arrays)

    # --------------------------------------------------------------- interop
    def to_networkx(self, round: int | None = None):
        """networkx graph with edge attribute ``weight = W(round)[i, j]``.

        ``nx.Graph`` when the union adjacency is symmetric, else ``nx.DiGraph``
        with an edge ``j -> i`` whenever ``i`` receives from ``j``. Edges of the
        union graph that are unused in this round get weight 0.
        """
        A = self._adjacency_csr.tocoo()
        W = self._sparse[self._round_index(round)]
        symmetric = (abs(self._adjacency_csr.astype(np.int8) - self._adjacency_csr.T.astype(np.int8))).nnz == 0
        G = nx.Graph() if symmetric else nx.DiGraph()
        G.add_nodes_from(range(self.n))
        for i, j in zip(A.row.tolist(), A.col.tolist()):
            if symmetric and j < i:
                continue
            G.add_edge(j, i, weight=float(W[i, j]))
        return G

    def __repr__(self) -> str:
        # repr must stay instant: skip the O(n^3) dense norm for large graphs.
        cheap = ("rho", 0) in self._cache or self.n <= 512 or self.is_circulant
        gap = f"{self.spectral_gap():.6g}" if cheap else "not computed"
        return f"Topology(name={self.name!r}, n={self.n}, K={self.K}, period={self.period}, spectral_gap={gap})"


# --------------------------------------------------------------------------- #
# Spectral norms
# --------------------------------------------------------------------------- #
def _rho_of(topo: Topology, rounds: Sequence[int]) -> float:
    """``||W(rounds[-1]) ... W(rounds[0]) - J||_2``."""
    n = topo.n
    if n == 1:
        return 0.0
    if topo._circulant is not None:
        # Circulant matrices share the Fourier basis and are normal, so the
        # norm of the (product) disagreement operator is the largest |eigenvalue|
        # off the constant mode: exact and O(n log n) for any n.
        lam = np.ones(n, dtype=complex)
        shifts, ws, selfw = topo._circulant
        for t in rounds:
            c = np.zeros(n)
            c[0] += selfw[t]
            np.add.at(c, shifts[t] % n, ws[t])
            lam = lam * np.fft.fft(c)
        return float(np.abs(lam[1:]).max())
    if n <= _DENSE_SPECTRAL_MAX_N:
        P = np.eye(n)
        for t in rounds:
            P = topo._sparse[t] @ P
        return float(np.linalg.norm(P - 1.0 / n, 2))
    mats = [topo._sparse[t] for t in rounds]

    def matvec(v):
        v = np.asarray(v).reshape(-1)
        v = v - v.mean()  # W J = J W = J for doubly stochastic W; project out the mean
        for m in mats:
            v = m @ v
        return v - v.mean()

    def rmatvec(v):
        v = np.asarray(v).reshape(-1)
        v = v - v.mean()
        for m in reversed(mats):
            v = m.T @ v
        return v - v.mean()

    op = spla.LinearOperator((n, n), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    if topo.is_doubly_stochastic:
        if len(mats) == 1 and topo.is_symmetric:
            val = spla.eigsh(op, k=1, which="LM", tol=1e-10, return_eigenvectors=False)
            return float(abs(val[0]))
        val = spla.svds(op, k=1, tol=1e-10, return_singular_vectors=False)
        return float(val[0])
    raise ValueError(
        f"rho of a non doubly stochastic topology with n={n} > {_DENSE_SPECTRAL_MAX_N} "
        "needs the dense matrix; use np.linalg.norm(topo.mixing_matrix() - 1/n, 2)"
    )


# --------------------------------------------------------------------------- #
# Builders: checks, weight rules, padding
# --------------------------------------------------------------------------- #
def _check_n(n, family: str, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{family}: n must be an integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"{family}: n must be >= 1, got n={n}")
    if n < minimum:
        raise ValueError(f"{family}: n must be >= {minimum}, got n={n}")
    return n


def _csr_from_edges(n: int, rows, cols, symmetric: bool) -> sp.csr_matrix:
    """bool CSR adjacency (``[i, j]``: i receives from j), self loops dropped."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    cols = np.asarray(cols, dtype=np.int64).reshape(-1)
    if symmetric:
        rows, cols = np.concatenate([rows, cols]), np.concatenate([cols, rows])
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    A = sp.csr_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
    A.sum_duplicates()
    A.data[:] = 1
    return A.astype(bool)


def _as_adjacency_csr(A, n_expected: int | None = None) -> sp.csr_matrix:
    if sp.issparse(A):
        A = sp.csr_matrix(A)
    else:
        A = np.asarray(A)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"adjacency must be a square [n, n] matrix, got shape {A.shape}")
        A = sp.csr_matrix(A != 0)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"adjacency must be a square [n, n] matrix, got shape {A.shape}")
    if A.shape[0] < 1:
        raise ValueError("n must be >= 1, got an empty adjacency")
    if n_expected is not None and A.shape[0] != n_expected:
        raise ValueError(f"adjacency has {A.shape[0]} nodes, expected {n_expected}")
    return _offdiag(A).astype(bool)


def _offdiag(M) -> sp.csr_matrix:
    """CSR copy of ``M`` without its diagonal and explicit zeros, indices sorted."""
    coo = sp.coo_matrix(M)
    keep = (coo.row != coo.col) & (coo.data != 0)
    out = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=M.shape)
    out.sum_duplicates()
    out.sort_indices()
    return out


def _rule_weights(A: sp.csr_matrix, rule: str) -> sp.csr_matrix:
    """Mixing matrix of a named weight rule on the receive-adjacency ``A``."""
    n = A.shape[0]
    deg = np.asarray(A.sum(axis=1)).reshape(-1).astype(np.float64)
    coo = A.tocoo()
    r, c = coo.row, coo.col
    if rule == "metropolis_hastings":
        w = 1.0 / (1.0 + np.maximum(deg[r], deg[c]))
    elif rule == "max_degree":
        w = np.full(r.size, 1.0 / (1.0 + (deg.max() if n else 0.0)))
    elif rule == "uniform":
        w = 1.0 / (1.0 + deg[r])
    else:
        raise ValueError(f"unknown weight rule {rule!r}; expected one of {WEIGHT_RULES} or an explicit [n, n] matrix")
    W = sp.csr_matrix((w, (r, c)), shape=(n, n))
    selfw = 1.0 - np.asarray(W.sum(axis=1)).reshape(-1)
    return (W + sp.diags(selfw)).tocsr()


def _as_weight_csr(Wm, n: int) -> sp.csr_matrix:
    if sp.issparse(Wm):
        W = sp.csr_matrix(Wm, dtype=np.float64)
    else:
        Wm = np.asarray(Wm, dtype=np.float64)
        if Wm.shape != (n, n):
            raise ValueError(f"weight matrix must have shape ({n}, {n}), got {Wm.shape}")
        W = sp.csr_matrix(Wm)
    if W.shape != (n, n):
        raise ValueError(f"weight matrix must have shape ({n}, {n}), got {W.shape}")
    if not np.all(np.isfinite(W.data)):
        raise ValueError("weights must be finite")
    W.eliminate_zeros()
    return W


def _check_weights(W: sp.csr_matrix, A: sp.csr_matrix | None, stochastic: str, t: int | None = None):
    where = "" if t is None else f" (round {t})"
    if W.nnz and W.data.min() < 0:
        coo = W.tocoo()
        k = int(np.argmin(coo.data))
        raise ValueError(f"negative weights{where}: W[{coo.row[k]}, {coo.col[k]}] = {coo.data[k]:.3g}")
    if A is not None:
        off = W.tocoo()
        keep = off.row != off.col
        rr, cc = off.row[keep], off.col[keep]
        on_edge = np.asarray(A[rr, cc]).reshape(-1) if rr.size else np.zeros(0, bool)
        if rr.size and not on_edge.all():
            k = int(np.flatnonzero(~on_edge)[0])
            raise ValueError(
                f"weights on non-edges{where}: W[{rr[k]}, {cc[k]}] = "
                f"{off.data[keep][k]:.3g} but there is no edge {cc[k]} -> {rr[k]}"
            )
    rows = np.asarray(W.sum(axis=1)).reshape(-1)
    bad = np.flatnonzero(np.abs(rows - 1.0) > _ATOL)
    if bad.size:
        raise ValueError(f"weights not row-stochastic{where}: row {bad[0]} sums to {rows[bad[0]]:.6g}")
    if stochastic == "doubly":
        cols = np.asarray(W.sum(axis=0)).reshape(-1)
        bad = np.flatnonzero(np.abs(cols - 1.0) > _ATOL)
        if bad.size:
            raise ValueError(
                f"weights not doubly stochastic{where}: column {bad[0]} sums to {cols[bad[0]]:.6g} "
                "(pass stochastic='row' to allow row-stochastic matrices)"
            )
    elif stochastic != "row":
        raise ValueError(f"stochastic must be 'doubly' or 'row', got {stochastic!r}")


def _is_doubly(W: sp.csr_matrix) -> bool:
    cols = np.asarray(W.sum(axis=0)).reshape(-1)
    rows = np.asarray(W.sum(axis=1)).reshape(-1)
    return bool(np.all(np.abs(cols - 1) <= _ATOL) and np.all(np.abs(rows - 1) <= _ATOL))


def _is_sym(W: sp.csr_matrix) -> bool:
    D = (W - W.T).tocsr()
    return D.nnz == 0 or float(np.abs(D.data).max()) <= 1e-12


def _check_connected(A: sp.csr_matrix, family: str):
    n = A.shape[0]
    if n == 1:
        return
    k, _ = csgraph.connected_components(A, directed=True, connection="strong")
    if k > 1:
        raise ValueError(
            f"{family}: disconnected graph ({k} strongly connected components); gossip cannot reach consensus"
        )


def _pad(mats: Sequence[sp.csr_matrix]):
    """Padded neighbour arrays ``[T, n, K]`` of the per-round off-diagonal supports."""
    n = mats[0].shape[0]
    offs = [_offdiag(W) for W in mats]
    K = max(1, max(int(np.diff(o.indptr).max()) if n else 0 for o in offs))
    T = len(mats)
    nbr = np.broadcast_to(np.arange(n, dtype=np.int32)[None, :, None], (T, n, K)).copy()
    wts = np.zeros((T, n, K), dtype=np.float64)
    mask = np.zeros((T, n, K), dtype=bool)
    selfw = np.zeros((T, n), dtype=np.float64)
    for t, (W, o) in enumerate(zip(mats, offs)):
        deg = np.diff(o.indptr)
        rows = np.repeat(np.arange(n), deg)
        slot = np.arange(o.nnz) - o.indptr[rows]
        nbr[t, rows, slot] = o.indices
        wts[t, rows, slot] = o.data
        mask[t, rows, slot] = True
        selfw[t] = W.diagonal()
    return nbr, wts, mask, selfw


def _detect_circulant(nbr, wts, mask, selfw):
    """(shifts [T,S], weights [T,S], self [T]) if every round is circulant, else None.

    Circulant means ``W[i, (i - s) % n] = c_s`` for all ``i``: then gossip is a
    sum of ``jnp.roll``s, which XLA fuses into one streaming pass.
    """
    T, n, K = nbr.shape
    if n < 2:
        return None
    shifts_all, w_all = [], []
    for t in range(T):
        if not np.allclose(selfw[t], selfw[t, 0], rtol=0, atol=1e-12):
            return None
        deg = mask[t].sum(axis=1)
        if np.any(deg != deg[0]) or deg[0] > _MAX_CIRCULANT_SHIFTS:
            return None
        s = (np.arange(n)[:, None] - nbr[t]) % n
        s = np.where(mask[t], s, n)  # padded slots sort last
        order = np.argsort(s, axis=1, kind="stable")
        s_sorted = np.take_along_axis(s, order, axis=1)[:, : deg[0]]
        w_sorted = np.take_along_axis(wts[t], order, axis=1)[:, : deg[0]]
        if np.any(s_sorted != s_sorted[0]) or not np.allclose(w_sorted, w_sorted[0], rtol=0, atol=1e-12):
            return None
        shifts_all.append(s_sorted[0])
        w_all.append(w_sorted[0])
    S = max(1, max(len(s) for s in shifts_all))
    shifts = np.zeros((T, S), dtype=np.int64)
    weights = np.zeros((T, S), dtype=np.float64)
    for t in range(T):
        shifts[t, : len(shifts_all[t])] = shifts_all[t]
        weights[t, : len(w_all[t])] = w_all[t]
    return shifts, weights, selfw[:, 0].copy()


def _ro(a):
    a.setflags(write=False)
    return a


def _padded_arrays(mats: Sequence[sp.csr_matrix], padded=None):
    """``(neighbors i32, weights f32, edge_mask, weights f64)``, ``[n, K]`` or ``[T, n, K]``."""
    nbr, wts, mask, _ = _pad(mats) if padded is None else padded
    squeeze = (lambda a: a[0]) if len(mats) == 1 else (lambda a: a)
    return (
        _ro(np.ascontiguousarray(squeeze(nbr)).astype(np.int32)),
        _ro(np.ascontiguousarray(squeeze(wts)).astype(np.float32)),
        _ro(np.ascontiguousarray(squeeze(mask))),
        _ro(np.ascontiguousarray(squeeze(wts))),
    )


def _build(
    name: str, mats: Sequence[sp.csr_matrix], adjacency: sp.csr_matrix, params: Mapping[str, Any] | None = None
) -> Topology:
    """Assemble a Topology from already-validated per-round CSR matrices (O(n + edges))."""
    n = mats[0].shape[0]
    T = len(mats)
    _check_connected(adjacency, name)
    offdeg = [np.diff(_offdiag(W).indptr) if n else np.zeros(0, int) for W in mats]
    width = max(1, max(int(d.max()) if d.size else 0 for d in offdeg))
    edges = sum(int(d.sum()) for d in offdeg)
    cache = {}
    circ = None
    if T * n * width <= _PAD_WASTE * (T * n + edges):
        # Compact: build the padded lists now, as every consumer has so far.
        padded = _pad(mats)
        cache["padded"] = _padded_arrays(mats, padded)
        uniform = all(np.all(d == d[0]) for d in offdeg if d.size)
        if uniform and width <= _MAX_CIRCULANT_SHIFTS:  # else _detect_circulant says None
            circ = _detect_circulant(*padded)
    selfw = np.stack([W.diagonal() for W in mats])
    degrees = np.asarray(adjacency.sum(axis=1)).reshape(-1).astype(np.int64)
    squeeze = (lambda a: a[0]) if T == 1 else (lambda a: a)
    return Topology(
        n=n,
        name=name,
        period=T,
        degrees=_ro(degrees),
        self_weight=_ro(np.ascontiguousarray(squeeze(selfw)).astype(np.float32)),
        is_doubly_stochastic=all(_is_doubly(W) for W in mats),
        is_symmetric=all(_is_sym(W) for W in mats),
        params=types.MappingProxyType(dict(params or {})),
        _sparse=tuple(mats),
        _adjacency_csr=adjacency,
        _self_weight64=_ro(np.ascontiguousarray(squeeze(selfw))),
        _circulant=circ,
        _width=width,
        _num_edges=edges,
        _cache=cache,
    )


def _from_graph(name: str, A: sp.csr_matrix, weights, params=None, stochastic: str = "doubly") -> Topology:
    """Static topology from a receive-adjacency and a weight rule or matrix."""
    n = A.shape[0]
    _check_connected(A, name)
    if isinstance(weights, str):
        W = _rule_weights(A, weights)
        # Named rules are correct by construction; only "uniform" (and MH on
        # directed graphs) may be row-stochastic only, which is documented.
        _check_weights(W, None, "row")
    else:
        W = _as_weight_csr(weights, n)
        _check_weights(W, A, stochastic)
    return _build(name, [W], A, params)


def _time_varying(
    name: str, adjs: Sequence[sp.csr_matrix], weights, params=None, stochastic: str = "doubly"
) -> Topology:
    n = adjs[0].shape[0]
    union = adjs[0]
    for a in adjs[1:]:
        union = (union + a).astype(bool)
    union = sp.csr_matrix(union)
    _check_connected(union, name)
    mats = []
    if isinstance(weights, str):
        for a in adjs:
            W = _rule_weights(a, weights)
            _check_weights(W, None, "row")
            mats.append(W)
    else:
        Ws = list(weights) if not sp.issparse(weights) else [weights]
        if len(Ws) != len(adjs):
            raise ValueError(f"{name}: explicit weights must be a [T={len(adjs)}, n, n] stack")
        for t, (Wt, a) in enumerate(zip(Ws, adjs)):
            W = _as_weight_csr(Wt, n)
            _check_weights(W, a, stochastic, t)
            mats.append(W)
    return _build(name, mats, union, params)


# --------------------------------------------------------------------------- #
# Families
# --------------------------------------------------------------------------- #
def _circulant_adj(n: int, offsets: Sequence[int], symmetric: bool) -> sp.csr_matrix:
    """Node ``i`` receives from ``i - s mod n`` for every offset ``s``."""
    i = np.arange(n)
    rows = np.concatenate([i for _ in offsets]) if offsets else np.zeros(0, int)
    cols = np.concatenate([(i - s) % n for s in offsets]) if offsets else np.zeros(0, int)
    return _csr_from_edges(n, rows, cols, symmetric)


def ring(n: int, weights="metropolis_hastings") -> Topology:
    """Cycle graph C_n (n=2: one edge; n=1: a single node).

    With Metropolis–Hastings weights (1/3 per edge, Xiao & Boyd 2004),
    ``rho = 1/3 + (2/3) cos(2 pi / n)`` for ``n >= 3`` (see ``theory.rho_ring``).
    """
    n = _check_n(n, "ring")
    A = _circulant_adj(n, [1] if n > 1 else [], symmetric=True)
    return _from_graph("ring", A, weights)


def path(n: int, weights="metropolis_hastings") -> Topology:
    """Path graph P_n: the ring without its closing edge (weights: Xiao & Boyd 2004 rules)."""
    n = _check_n(n, "path")
    i = np.arange(n - 1)
    return _from_graph("path", _csr_from_edges(n, i + 1, i, True), weights)


def torus(rows: int, cols: int | None = None, weights="metropolis_hastings") -> Topology:
    """2-D torus (periodic grid) of ``rows x cols`` nodes (square when ``cols`` is None).

    Node ``(r, c)`` has index ``r * cols + c``. Needs ``rows, cols >= 3`` (a
    side of 2 would double edges). With MH weights (1/5) an ``m x m`` torus has
    ``rho = 3/5 + (2/5) cos(2 pi / m)`` (Xiao & Boyd 2004; ``theory.rho_torus``).
    """
    cols = rows if cols is None else cols
    for v, nm in ((rows, "rows"), (cols, "cols")):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"torus: {nm} must be an integer, got {v!r}")
    rows, cols = int(rows), int(cols)
    if rows < 3 or cols < 3:
        raise ValueError(f"torus too small: needs rows, cols >= 3, got {rows}x{cols}")
    n = rows * cols
    r, c = np.divmod(np.arange(n), cols)
    right = r * cols + (c + 1) % cols
    down = ((r + 1) % rows) * cols + c
    i = np.arange(n)
    A = _csr_from_edges(n, np.concatenate([i, i]), np.concatenate([right, down]), True)
    return _from_graph("torus", A, weights, params=dict(rows=rows, cols=cols))


def complete(n: int, weights="metropolis_hastings") -> Topology:
    """Complete graph K_n; MH weights give ``W = 11^T/n`` (exact averaging, rho = 0)."""
    n = _check_n(n, "complete")
    A = sp.csr_matrix(np.ones((n, n), dtype=bool) & ~np.eye(n, dtype=bool))
    return _from_graph("complete", A, weights)


def star(n: int, weights="metropolis_hastings") -> Topology:
    """Star with centre node 0 and ``n - 1`` leaves (the federated/server pattern).

    MH weights (Xiao & Boyd 2004): ``1/n`` per edge, so the centre averages
    exactly while each leaf keeps ``1 - 1/n`` of its own value.
    """
    n = _check_n(n, "star")
    leaves = np.arange(1, n)
    return _from_graph("star", _csr_from_edges(n, leaves, np.zeros_like(leaves), True), weights)


def hypercube(n: int, weights="metropolis_hastings") -> Topology:
    """Hypercube on ``n = 2^k`` nodes (argument is the node count, not the dimension).

    Nodes ``i`` and ``i XOR 2^b`` are linked. With MH weights ``1/(k+1)``,
    ``rho = (k-1)/(k+1)`` (Xiao & Boyd 2004; ``theory.rho_hypercube(k)``).
    """
    n = _check_n(n, "hypercube")
    if n & (n - 1):
        raise ValueError(f"hypercube: n must be a power of 2, got n={n}")
    k = n.bit_length() - 1
    i = np.arange(n)
    rows = np.concatenate([i for _ in range(k)]) if k else np.zeros(0, int)
    cols = np.concatenate([i ^ (1 << b) for b in range(k)]) if k else np.zeros(0, int)
    return _from_graph("hypercube", _csr_from_edges(n, rows, cols, True), weights, params=dict(dim=k))


def _gnp_pairs(n: int, p: float, rng: np.random.Generator):
    """The edges ``(i, j)``, ``j < i``, of one G(n, p) draw in O(n + edges) time and memory.

    Geometric skipping (Batagelj & Brandes 2005, "Efficient generation of large random
    networks", Alg. 1), vectorized: the gaps between successive present pairs in the
    lexicographic order of the ``N = n(n-1)/2`` pairs are iid Geometric(p), so their
    cumulative sums are the present pairs' indices; index ``k`` is row
    ``i = floor((1 + sqrt(1 + 8k)) / 2)``, column ``k - i(i-1)/2``.
    """
    total = n * (n - 1) // 2
    if p <= 0.0 or total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    chunks, last = [], -1
    mean = total * p
    while last < total - 1:
        # Enough gaps to pass the end with overwhelming probability; loop otherwise.
        size = int(mean + 8 * math.sqrt(mean * (1 - p) + 1) + 16)
        k = last + np.cumsum(rng.geometric(p, size=size), dtype=np.int64)
        chunks.append(k[k < total])
        last = int(k[-1])
    k = np.concatenate(chunks)
    i = np.floor((1 + np.sqrt(1 + 8 * k.astype(np.float64))) / 2).astype(np.int64)
    # float64 sqrt can be one off near perfect squares when k ~ 1e12: fix exactly.
    i -= i * (i - 1) // 2 > k
    i += (i + 1) * i // 2 <= k
    return i, k - i * (i - 1) // 2


_ER_PAIRWISE_MAX_N = 1024  # up to here, networkx's pairwise draw (graphs of earlier versions)


def erdos_renyi(n: int, p: float, seed: int = 0, weights="metropolis_hastings", max_tries: int = 100) -> Topology:
    """Erdős–Rényi G(n, p) (Erdős & Rényi 1959), resampled until connected.

    Tries seeds ``seed, seed + 1, ...`` (the one used is in ``params["seed"]``);
    raises ValueError after ``max_tries``. MH weights by default (Xiao & Boyd 2004).
    For ``n <= 1024`` each pair is drawn as networkx's ``gnp_random_graph`` does (the
    graphs of earlier versions, seed for seed); above, in O(n + edges) by geometric
    skipping (Batagelj & Brandes 2005, :func:`_gnp_pairs`): a 10^5-node graph of mean
    degree 20 builds in seconds, where the pairwise draw needs 5·10^9 coin flips.
    """
    n = _check_n(n, "erdos_renyi")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"erdos_renyi: p must be in [0, 1], got p={p}")
    for t in range(max_tries):
        if n <= _ER_PAIRWISE_MAX_N:
            G = nx.gnp_random_graph(n, p, seed=seed + t)
            if nx.is_connected(G):
                return _from_networkx_graph("erdos_renyi", G, weights, dict(p=p, seed=seed + t))
            continue
        i, j = _gnp_pairs(n, p, np.random.default_rng(seed + t))
        A = _csr_from_edges(n, i, j, symmetric=True)
        if csgraph.connected_components(A, directed=False, return_labels=False) == 1:
            return _from_graph("erdos_renyi", A, weights, {"p": p, "seed": seed + t})
    raise ValueError(
        f"erdos_renyi(n={n}, p={p}): graph not connected after {max_tries} tries; "
        f"increase p (connectivity threshold ~ ln(n)/n = {math.log(max(n, 2)) / n:.3g})"
    )


def random_regular(n: int, k: int, seed: int = 0, weights="metropolis_hastings", max_tries: int = 100) -> Topology:
    """Uniform random ``k``-regular graph (networkx, Steger & Wormald 1999), resampled until connected.

    All weight rules give ``1/(k+1)`` per edge (regular graph, Xiao & Boyd 2004).
    """
    n = _check_n(n, "random_regular", minimum=2)
    if not 1 <= k < n:
        raise ValueError(f"random_regular: need 1 <= k < n, got n={n}, k={k}")
    if (n * k) % 2:
        raise ValueError(f"random_regular: n*k must be even, got n={n}, k={k}")
    for t in range(max_tries):
        G = nx.random_regular_graph(k, n, seed=seed + t)
        if nx.is_connected(G):
            return _from_networkx_graph("random_regular", G, weights, dict(k=k, seed=seed + t))
    raise ValueError(f"random_regular(n={n}, k={k}): graph not connected after {max_tries} tries")


def exponential(n: int, weights="metropolis_hastings") -> Topology:
    """Static exponential graph (Ying et al. 2021): ``i -> i + 2^j mod n``, ``j < ceil(log2 n)``.

    Directed; every node has in- and out-degree ``tau = ceil(log2 n)``, so the
    three named weight rules all give the paper's ``1/(tau + 1)``, and
    ``rho = 1 - 2/(1 + tau)`` for even ``n`` (``theory.rho_exponential``).
    """
    n = _check_n(n, "exponential")
    tau = math.ceil(math.log2(n)) if n > 1 else 0
    A = _circulant_adj(n, [2**j for j in range(tau)], symmetric=False)
    return _from_graph("exponential", A, weights, params=dict(tau=tau))


def one_peer_exponential(n: int, weights="metropolis_hastings") -> Topology:
    """One-peer exponential graph (Ying et al. 2021): ``W(t) = (I + P^(2^(t mod tau)))/2``.

    ``P`` is the cyclic shift (node ``i`` receives from ``i - 2^(t mod tau)``),
    period ``tau = ceil(log2 n)``. For ``n`` a power of 2 the product of ``tau``
    consecutive matrices is exactly ``11^T/n``.
    """
    n = _check_n(n, "one_peer_exponential")
    tau = math.ceil(math.log2(n)) if n > 1 else 0
    if tau == 0:
        return _from_graph("one_peer_exponential", sp.csr_matrix((1, 1), dtype=bool), weights, params=dict(tau=1))
    adjs = [_circulant_adj(n, [2**t], symmetric=False) for t in range(tau)]
    return _time_varying("one_peer_exponential", adjs, weights, params=dict(tau=tau))


def small_world(
    n: int, k: int, p: float, seed: int = 0, weights="metropolis_hastings", max_tries: int = 100
) -> Topology:
    """Connected Watts–Strogatz small-world graph (Watts & Strogatz 1998).

    Ring lattice of degree ``k`` with each edge rewired with probability ``p``;
    resampled by networkx until connected. MH weights by default (Xiao & Boyd 2004).
    """
    n = _check_n(n, "small_world", minimum=3)
    if not 2 <= k < n:
        raise ValueError(f"small_world: need 2 <= k < n, got n={n}, k={k}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"small_world: p must be in [0, 1], got p={p}")
    try:
        G = nx.connected_watts_strogatz_graph(n, k, p, tries=max_tries, seed=seed)
    except nx.NetworkXError as e:
        raise ValueError(
            f"small_world(n={n}, k={k}, p={p}): graph not connected after {max_tries} tries ({e})"
        ) from None
    return _from_networkx_graph("small_world", G, weights, dict(k=k, p=p, seed=seed))


def random_geometric(
    n: int, radius: float, seed: int = 0, weights="metropolis_hastings", max_tries: int = 100
) -> Topology:
    """Random geometric graph in the unit square (Penrose 2003), resampled until connected.

    Nodes at uniform positions, linked within Euclidean distance ``radius`` (the
    sensor-network model of Boyd et al. 2006). MH weights by default (Xiao & Boyd 2004).
    """
    n = _check_n(n, "random_geometric")
    if radius <= 0:
        raise ValueError(f"random_geometric: radius must be > 0, got {radius}")
    for t in range(max_tries):
        G = nx.random_geometric_graph(n, radius, seed=seed + t)
        if nx.is_connected(G):
            return _from_networkx_graph("random_geometric", G, weights, dict(radius=radius, seed=seed + t))
    raise ValueError(
        f"random_geometric(n={n}, radius={radius}): graph not connected after {max_tries} tries; increase radius"
    )


def two_cliques(n: int, weights="metropolis_hastings") -> Topology:
    """Two cliques of sizes ``n//2`` and ``n - n//2`` joined by one bridge edge (dumbbell).

    A bottleneck graph: its spectral gap is ``O(1/n^2)``, the worst case for
    gossip at a given edge count.
    """
    n = _check_n(n, "two_cliques", minimum=2)
    h = n // 2
    a = np.zeros((n, n), dtype=bool)
    a[:h, :h] = True
    a[h:, h:] = True
    a[h - 1, h] = a[h, h - 1] = True
    np.fill_diagonal(a, False)
    return _from_graph("two_cliques", sp.csr_matrix(a), weights)


dumbbell = two_cliques


def two_worlds(n: int, weights="metropolis_hastings") -> Topology:
    """Two cliques of ``h = n // 2`` nodes joined by a perfect matching (node ``i`` of the first
    to node ``i + h`` of the second): the honest graph of the two-worlds argument behind the
    breakdown bound of Gaucher, Dieuleveut & Hendrikx (2025, robust gossip).

    Every node has ``h − 1`` neighbours in its own world and exactly one across. With unit
    weights the Laplacian splits into the symmetric and antisymmetric parts of the two worlds,
    ``L_K`` and ``L_K + 2I`` (``L_K = hI − J`` the clique's): spectrum ``{0, 2, h (×h−1),
    h + 2 (×h−1)}``, so for intra weight ``a`` and cross weight ``c`` (``2c ≤ ha``) the algebraic
    connectivity is ``μ_min = 2c``, its eigenvector the ±1 world indicator. A Byzantine neighbour
    of weight ``b = c = μ_min/2`` at every node can mirror the cross neighbour (send
    ``2xᵢ − x_cross``), so no rule can tell the two worlds apart (``experiments/breakdown.py``).
    ``n`` must be even and ≥ 4.
    """
    n = _check_n(n, "two_worlds", minimum=4)
    if n % 2:
        raise ValueError(f"two_worlds: n must be even (two worlds of n/2 nodes), got {n}")
    h = n // 2
    a = np.zeros((n, n), dtype=bool)
    a[:h, :h] = True
    a[h:, h:] = True
    idx = np.arange(h)
    a[idx, idx + h] = a[idx + h, idx] = True
    np.fill_diagonal(a, False)
    return _from_graph("two_worlds", sp.csr_matrix(a), weights)


# --------------------------------------------------------------------------- #
# User-supplied graphs and matrices
# --------------------------------------------------------------------------- #
def _from_networkx_graph(name, G, weights, params=None, stochastic="doubly"):
    nodes = list(G.nodes())
    n = len(nodes)
    if n < 1:
        raise ValueError(f"{name}: n must be >= 1, got an empty graph")
    S = nx.to_scipy_sparse_array(G, nodelist=nodes, weight=None, format="csr")
    A = S.T if G.is_directed() else S  # networkx u -> v means v receives from u
    return _from_graph(name, _as_adjacency_csr(A), weights, params, stochastic)


def from_adjacency(A, weights="metropolis_hastings", name: str = "custom", stochastic: str = "doubly") -> Topology:
    """Topology from an adjacency matrix ``A[i, j] != 0`` iff ``i`` receives from ``j``.

    ``A`` may be dense or scipy sparse; its diagonal is ignored. A symmetric
    ``A`` is an undirected graph. Explicit ``weights`` matrices are checked to
    be non-negative, supported on edges and ``stochastic`` ("doubly" or "row").
    """
    return _from_graph(name, _as_adjacency_csr(A), weights, stochastic=stochastic)


def from_networkx(G, weights="metropolis_hastings", name: str = "networkx", stochastic: str = "doubly") -> Topology:
    """Topology from a networkx (Di)Graph; nodes are indexed in ``G.nodes()`` order.

    A directed edge ``u -> v`` means ``v`` receives from ``u``. Self loops are ignored.
    """
    return _from_networkx_graph(name, G, weights, stochastic=stochastic)


def from_mixing_matrices(Ws, name: str = "custom", stochastic: str = "doubly") -> Topology:
    """Topology from explicit mixing matrices ``[W_0, ..., W_{T-1}]`` (or one ``[n, n]``).

    The graph is the support of the matrices; the union over the period must
    be strongly connected. Each ``W_t`` must be non-negative and ``stochastic``
    ("doubly", default, as D-SGD needs for exact averaging; or "row").
    """
    if sp.issparse(Ws):
        Ws = [Ws]
    elif not isinstance(Ws, (list, tuple)):
        arr = np.asarray(Ws, dtype=np.float64)
        if arr.ndim == 2:
            Ws = [arr]
        elif arr.ndim == 3:
            Ws = list(arr)
        else:
            raise ValueError(f"mixing matrices must be [n, n] or [T, n, n], got shape {arr.shape}")
    if len(Ws) == 0:
        raise ValueError("need at least one mixing matrix")
    first = Ws[0]
    n = first.shape[0] if hasattr(first, "shape") else len(first)
    if n < 1:
        raise ValueError("n must be >= 1, got an empty mixing matrix")
    mats = []
    for t, Wt in enumerate(Ws):
        W = _as_weight_csr(Wt, n)
        _check_weights(W, None, stochastic, t if len(Ws) > 1 else None)
        mats.append(W)
    adjs = [_as_adjacency_csr(W != 0) for W in mats]
    union = adjs[0]
    for a in adjs[1:]:
        union = (union + a).astype(bool)
    return _build(name, mats, sp.csr_matrix(union))


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #
def _torus_n(n: int, rows: int | None = None, cols: int | None = None, **kw) -> Topology:
    if rows is None and cols is None:
        m = math.isqrt(int(n)) if n >= 0 else 0
        if m * m != n:
            raise ValueError(f"torus: n={n} is not a perfect square; pass rows= and cols=")
        rows = m
    elif rows is None:
        rows = n // cols
    elif cols is None:
        cols = n // rows
    topo = torus(rows, cols, **kw)
    if topo.n != n:
        raise ValueError(f"torus: rows*cols = {topo.n} != n = {n}")
    return topo


FAMILIES: dict[str, Callable[..., Topology]] = {
    "ring": ring,
    "path": path,
    "torus": _torus_n,
    "complete": complete,
    "star": star,
    "hypercube": hypercube,
    "erdos_renyi": erdos_renyi,
    "random_regular": random_regular,
    "exponential": exponential,
    "one_peer_exponential": one_peer_exponential,
    "small_world": small_world,
    "random_geometric": random_geometric,
    "two_cliques": two_cliques,
    "dumbbell": two_cliques,
}


def _directed_family(name: str) -> Callable[..., Topology]:
    def make(n: int, weights=None) -> Topology:
        # Directed graphs always carry the out-degree rule's column-stochastic weights (push-sum,
        # Kempe et al. 2003); the symmetric weight rules do not apply, so ``weights`` is ignored.
        from redeem_jax.network import directed

        return getattr(directed, name)(n)

    make.__name__ = name
    make.__doc__ = f"``rj.network.directed.{name}`` (column stochastic, for push-sum, SGP, push-DIGing)."
    return make


for _name in ("directed_ring", "directed_exponential", "one_peer_directed_exponential"):
    FAMILIES[_name] = _directed_family(_name)


def get(name: str, n: int, **options) -> Topology:
    """Resolve a config name to a topology: ``get("erdos_renyi", 32, p=0.2, seed=1)``.

    Every family in :data:`FAMILIES` takes the node count ``n`` first (a torus
    takes ``rows``/``cols`` options, or a perfect-square ``n``).
    """
    key = str(name).lower().replace("-", "_")
    if key not in FAMILIES:
        raise ValueError(f"unknown topology {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[key](n, **options)

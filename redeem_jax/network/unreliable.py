"""Unreliable networks: link failures and node churn over any static topology (issue 13).

A :class:`Unreliable` topology wraps a static base :class:`~redeem_jax.network.topology.Topology`
(ring, torus, erdos_renyi, ...) and, every round, draws which of the base's links and nodes are
up, inside the jitted step (the drawn-topology protocol of :mod:`redeem_jax.network.dynamic`).

Failure models (all drawn from the round's graph key, fixed shapes, no Python per round):

* **link failures** (:func:`link_failures`): each *undirected* base edge ``{i, j}`` is up
  independently with probability ``p``. Both directions fail together: the host numbers the
  undirected pairs ``(min(i,j), max(i,j))`` of the base once (``slot -> pair id``), the round
  draws one Bernoulli per pair, ``u = uniform(key, [m]) < p``, and every slot gathers its pair's
  draw. A directed base (a slot ``i <- j`` with no ``j <- i``) still gets one draw per pair.
* **churn** (:func:`churn`): each node online independently with probability ``q``; or an on/off
  two-state Markov chain per node with mean span lengths (``mean_on``, ``mean_off``); or a
  user trace ``bool[rounds, n]``. An offline node neither sends nor receives: its row of ``W`` is
  ``e_i`` (it keeps its state) and every edge touching it is down.

Weight policies (FIELD_NOTES "Dynamic graphs"):

* ``policy="self"``: keep the base weights; each missing weight goes back to the node itself.
  ``W(t) = I + sum_e z_e A_e`` with zero-row-sum, zero-column-sum (for a doubly stochastic base)
  edge terms, so a doubly stochastic base stays doubly stochastic in every draw and the network
  mean is kept exactly.
* ``policy="renormalize"``: divide what arrived (own weight included) by its total, as the EPFL
  simulator and decentralizepy do: row-stochastic only, the network mean drifts.

Hyper-parameters that sweep (``p``, ``q``): either a :class:`~redeem_jax.core.Hyper`
(``link_failures(base, core.hyper("topology.link_up", 0.5))``, what a config builds), resolved at
draw time from the round's ``hp`` (``draw(round, key, hp)``; ``rj.sweep`` vmaps it, one compile),
or a plain attribute holding a JAX value (a tracer): :meth:`Unreliable.with_params` returns a copy
with new values that shares the precomputed arrays (pair ids, dense base ``W``), for a step built
inside a traced function. Host precomputation never touches either.

Theory (host, float64): :meth:`Unreliable.expected_mixing_matrix` (``E[W]``),
:func:`second_moment` (``E[W^T (I - J) W]``) and :func:`mean_square_contraction`
(``lambda = lambda_max`` of it on ``1^perp``): closed forms for ``policy="self"``, exact
enumeration for ``policy="renormalize"`` (small graphs).
"""

from __future__ import annotations

import copy
import math

import jax
import jax.numpy as jnp
import numpy as np

from redeem_jax.core import Hyper, resolve
from redeem_jax.network.dynamic import DrawnTopology

__all__ = [
    "POLICIES",
    "Unreliable",
    "churn",
    "dense_mixing",
    "enumerate_second_moment",
    "link_failures",
    "live_counts",
    "mean_square_contraction",
    "second_moment",
    "stragglers",
]

POLICIES = ("self", "renormalize")
_ENUM_LIMIT = 20  # at most 2**20 up/down patterns in an exact enumeration


def _concrete(x) -> float | None:
    """``float(x)`` when ``x`` is a concrete number (a :class:`~redeem_jax.core.Hyper`: its
    default), ``None`` for a tracer."""
    x = resolve(x, None)
    try:
        return float(x)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


class Unreliable(DrawnTopology):
    """A static base topology whose links fail and whose nodes churn, drawn every round.

    Build it with :func:`link_failures` or :func:`churn`. ``p`` (link-up probability) and ``q``
    (node-online probability, Bernoulli churn) may be JAX values (see the module docstring).
    ``node_model`` is ``"always"``, ``"bernoulli"``, ``"markov"`` or ``"trace"``.
    """

    def __init__(
        self,
        base,
        *,
        p=1.0,
        node_model="always",
        q=1.0,
        mean_on=None,
        mean_off=None,
        trace=None,
        beyond="hold",
        seed=0,
        policy="self",
        name=None,
    ):
        if getattr(base, "is_drawn", False) or getattr(base, "period", 1) != 1:
            raise ValueError(
                f"unreliable: the base must be a static Topology (period 1); got {getattr(base, 'name', base)!r}"
            )
        if policy not in POLICIES:
            raise ValueError(f"unreliable: policy must be one of {POLICIES}, got {policy!r}")
        if node_model not in ("always", "bernoulli", "markov", "trace"):
            raise ValueError(f"unreliable: unknown node model {node_model!r}")
        for label, v in (("p", p), ("q", q)):
            c = _concrete(v)
            if c is not None and not 0.0 <= c <= 1.0:
                raise ValueError(f"unreliable: {label} must be in [0, 1], got {c}")
        self.base, self.policy, self.node_model = base, policy, node_model
        self.p, self.q = p, q
        self.n = int(base.n)
        nbr, w, sw, mask = (np.asarray(a) for a in (base.neighbors, base.weights, base.self_weight, base.edge_mask))
        self.K = int(nbr.shape[1])
        self._nbr, self._w, self._sw, self._mask = (
            nbr.astype(np.int32),
            w.astype(np.float32),
            sw.astype(np.float32),
            mask,
        )
        # One id per undirected pair {i, j}: both directions of a link share one Bernoulli draw.
        rows = np.repeat(np.arange(self.n), self.K).reshape(self.n, self.K)
        lo, hi = np.minimum(rows, nbr), np.maximum(rows, nbr)
        keys = np.where(mask, lo.astype(np.int64) * self.n + hi, -1)
        uniq, first, inv = np.unique(keys[mask], return_index=True, return_inverse=True)
        # Pairs numbered in the order of their first slot (row-major), so that on a base where every
        # pair has one slot and no slot is padding (a directed circulant) the pair draws are the
        # slots in order and draw() reshapes them instead of gathering (benchmarks/dynamic_graphs.py).
        rank = np.empty(len(uniq), np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
        uniq = uniq[np.argsort(rank)]
        self._pairs = np.stack([uniq // self.n, uniq % self.n], 1).astype(np.int64)  # [m, 2]
        eid = np.zeros((self.n, self.K), np.int32)
        eid[mask] = rank[inv.reshape(-1)].astype(np.int32)
        self._eid = eid
        self._eid_is_slot = bool(mask.all() and np.array_equal(eid.reshape(-1), np.arange(eid.size)))
        self.m = len(uniq)
        self.seed = int(seed)
        self.beyond = beyond
        self._trace = None
        self._window = 0
        if node_model == "markov":
            if mean_on is None or mean_off is None or mean_on < 1 or mean_off < 1:
                raise ValueError("unreliable: Markov churn needs mean_on >= 1 and mean_off >= 1 (rounds)")
            self.mean_on, self.mean_off = float(mean_on), float(mean_off)
            a, b = 1.0 / self.mean_on, 1.0 / self.mean_off
            self.q = b / (a + b)  # stationary online probability
            # The chain forgets its start once a step coalesces (prob a + b per step, see _markov_online):
            # choose the window so that a non-coalesced window has probability <= 1e-9.
            r = abs(1.0 - a - b)
            if r >= 1:
                raise ValueError("unreliable: mean_on = mean_off = 1 is a deterministic alternation, not churn")
            self._window = 1 if r == 0 else int(min(4096, math.ceil(math.log(1e-9) / math.log(r)) + 1))
        if node_model == "trace":
            tr = np.asarray(trace, bool)
            if tr.ndim != 2 or tr.shape[1] != self.n or tr.shape[0] < 1:
                raise ValueError(f"unreliable: a churn trace must be bool[rounds, {self.n}], got shape {tr.shape}")
            if beyond not in ("hold", "cycle"):
                raise ValueError(f"unreliable: beyond must be 'hold' or 'cycle', got {beyond!r}")
            self._trace = tr
        # p or q given as core.Hyper (a swept config field): draw(round, key, hp) resolves them.
        self.hypers = tuple(v for v in (self.p, self.q) if isinstance(v, Hyper))
        self.name = name or f"unreliable_{base.name}"
        self.params = {"base": base.name, "p": p, "node_model": node_model, "q": self.q, "policy": policy}
        base_doubly = bool(getattr(base, "is_doubly_stochastic", False))
        # "self" keeps the columns summing to 1 only when each link's weight is the same both ways
        # (a failed i <- j returns W_ij to i, a failed j <- i returns W_ji to j): a symmetric base W.
        self.is_doubly_stochastic = base_doubly and policy == "self" and _symmetric_weights(nbr, w, mask)

    # ------------------------------------------------------------------ hyper-parameters
    def with_params(self, **kw) -> Unreliable:
        """A copy with new ``p`` and/or ``q`` (JAX values allowed), sharing the host arrays: how a
        sweep passes a traced hyper-parameter (the module docstring)."""
        bad = set(kw) - {"p", "q"}
        if bad:
            raise ValueError(f"unreliable: with_params takes p and q, got {sorted(bad)}")
        if "q" in kw and self.node_model != "bernoulli":
            raise ValueError("unreliable: q is a parameter of Bernoulli churn only")
        new = copy.copy(self)
        for k, v in kw.items():
            setattr(new, k, v)
        new.params = dict(self.params, **kw)
        new.hypers = tuple(v for v in (new.p, new.q) if isinstance(v, Hyper))
        return new

    # ------------------------------------------------------------------ drawing
    def _markov_online(self, round):
        """Online mask at ``round`` of a stationary two-state chain per node (on->off w.p.
        a = 1/mean_on, off->on w.p. b = 1/mean_off), a deterministic function of (seed, round).

        Grand coupling: the transition into round s uses one uniform ``V(s)[i]`` from the fixed
        chain key, ``on_next = V < (1 - a if on else b)``; a step with ``V < min(b, 1-a)`` or
        ``V >= max(b, 1-a)`` sends both states to the same one (probability a + b), after which
        the state no longer depends on the start. Round t simulates the window (t - w, t] from a
        stationary draw, so every round's mask is exactly the chain's except when no step of
        the window coalesced (probability |1 - a - b|^(w-1) <= 1e-9 by the choice of w).
        """
        a, b, w = 1.0 / self.mean_on, 1.0 / self.mean_off, self._window
        chain_key = jax.random.fold_in(jax.random.PRNGKey(self.seed), 0x6368)
        t = jnp.asarray(round, jnp.int32)
        # V(s) for s = t - w .. t, indexed by s + w >= 0 so fold_in sees a non-negative int.
        idx = t + jnp.arange(w + 1, dtype=jnp.int32)
        V = jax.vmap(lambda s: jax.random.uniform(jax.random.fold_in(chain_key, s), (self.n,)))(idx)
        x0 = V[0] < b / (a + b)

        def step(x, v):
            x = v < jnp.where(x, 1.0 - a, b)
            return x, None

        x, _ = jax.lax.scan(step, x0, V[1:])
        return x

    def online(self, round, key, hp=None):
        """bool[n]: which nodes are online this round (the same draw :meth:`draw` uses)."""
        k_node = jax.random.split(key)[1]
        if self.node_model == "always":
            return jnp.ones((self.n,), bool)
        if self.node_model == "bernoulli":
            return jax.random.uniform(k_node, (self.n,)) < jnp.asarray(resolve(self.q, hp), jnp.float32)
        if self.node_model == "markov":
            return self._markov_online(round)
        tr = jnp.asarray(self._trace)
        r = jnp.asarray(round, jnp.int32)
        R = self._trace.shape[0]
        t = r % R if self.beyond == "cycle" else jnp.minimum(r, R - 1)
        return tr[t]

    def link_up(self, key, hp=None):
        """bool[m]: which undirected base pairs are up this round, independently with probability
        ``ceil(p 2^16) / 2^16`` each (p to 16 bits; the pairs numbered by their first slot)."""
        if self.m == 0:
            return jnp.zeros((0,), bool)
        k_link = jax.random.split(key)[0]
        # 16 random bits per pair, two pairs per 32-bit word of the raw threefry_2x32 on m/2 counters
        # (half a Threefry block per word, where jax.random.uniform spends a whole block per value):
        # 4x fewer blocks. At d = 64 the draw was as much work as the gossip it gates
        # (benchmarks/dynamic_graphs.py). P(up) = ceil(p 2^16) / 2^16: p rounded up to a multiple of
        # 2^-16 (a float32 uniform rounds it to 2^-23); exact for p = 0, 1 and multiples of 2^-16.
        from jax.extend.random import threefry_2x32

        thr = jnp.ceil(jnp.asarray(resolve(self.p, hp), jnp.float32) * 65536.0).astype(jnp.uint32)
        kd = jax.random.key_data(k_link)
        if kd.shape != (2,):  # a non-Threefry key: its own 32-bit draws, top 16 bits each
            return (jax.random.bits(k_link, (self.m,), jnp.uint32) >> 16) < thr
        words = threefry_2x32(kd, jnp.arange((self.m + 1) // 2, dtype=jnp.uint32))
        return jnp.concatenate([(words & jnp.uint32(0xFFFF)) < thr, (words >> 16) < thr])[: self.m]

    def draw(self, round, key, hp=None):
        """This round's edges ``(neighbors, weights, self_weight, mask)`` (DESIGN.md, "One
        round"): slot ``i <- j`` is live when its pair is up and both ends are online; the
        weights follow ``self.policy`` (module docstring). Jittable, fixed shapes."""
        nbr, w, sw, mask = (jnp.asarray(a) for a in (self._nbr, self._w, self._sw, self._mask))
        on = self.online(round, key, hp)
        if not self.m:
            up = jnp.zeros_like(mask)
        elif self._eid_is_slot:
            up = self.link_up(key, hp).reshape(mask.shape)
        else:
            up = self.link_up(key, hp)[jnp.asarray(self._eid)]
        live = mask & up & on[:, None] & on[nbr]
        w_live = jnp.where(live, w, 0.0)
        if self.policy == "self":
            # Missing weight returns to the node itself: W = I + sum_e z_e A_e (doubly stochastic
            # when the base is). An offline node's row is exactly e_i.
            self_w = sw + _row_sum(jnp.where(mask, w, 0.0) - w_live)
            self_w = jnp.where(on, self_w, 1.0)
        else:
            total = sw + _row_sum(w_live)
            safe = jnp.where(total > 0, total, 1.0)
            w_live = w_live / safe[:, None]
            self_w = jnp.where(total > 0, sw / safe, 1.0)
            self_w = jnp.where(on, self_w, 1.0)
        return nbr, w_live, self_w, live

    # ------------------------------------------------------------------ theory (host)
    def _node_probs(self) -> list[tuple[float, np.ndarray]]:
        """The per-round node-online laws as (weight, q_v[n]) with independent nodes: one law for
        Bernoulli/Markov churn (the stationary chain's marginal in a round is Bernoulli(pi_on)
        per node, independently), one 0/1 vector per trace row (time average over the trace)."""
        if self.node_model == "always":
            return [(1.0, np.ones(self.n))]
        if self.node_model in ("bernoulli", "markov"):
            q = _concrete(self.q)
            if q is None:
                raise ValueError("unreliable: theory needs a concrete q")
            return [(1.0, np.full(self.n, q))]
        R = self._trace.shape[0]
        return [(1.0 / R, row.astype(float)) for row in self._trace]

    def _p(self) -> float:
        p = _concrete(self.p)
        if p is None:
            raise ValueError("unreliable: theory needs a concrete p")
        return p

    def _edge_terms(self):
        """Dense base W, ``B0`` (all links down: the diagonal of row sums) and the edge terms
        ``A_e`` ([m, n, n]) with ``W = B0 + sum_e z_e A_e`` under ``policy="self"``."""
        W = np.asarray(self.base.mixing_matrix(), float)
        n = self.n
        B0 = np.diag(W.sum(1))
        A = np.zeros((self.m, n, n))
        for e, (i, j) in enumerate(self._pairs):  # host-side construction, once per theory call
            for r, c in ((i, j), (j, i)):
                if r != c and W[r, c] != 0:
                    A[e, r, c] += W[r, c]
                    A[e, r, r] -= W[r, c]
        return W, B0, A

    def second_moment(self) -> np.ndarray:
        """``E[W^T (I - J) W]`` exactly (module function :func:`second_moment`)."""
        return second_moment(self)

    def expected_mixing_matrix(self) -> np.ndarray:
        """``E[W(t)]`` (float64 [n, n]).

        ``policy="self"``: ``E[W_ij] = p q_i q_j W_ij`` off the diagonal, the diagonal takes the
        rest of the row (``W = B0 + sum_e z_e A_e`` with ``E[z_e] = p q_i q_j``).
        ``policy="renormalize"``: node i online (prob q_i) renormalizes over the slots that
        arrived, each independently with probability ``p q_j``; the row is the exact average over
        the ``2^deg_i`` arrival patterns (offline: ``e_i``). Trace churn: averaged over its rows.
        """
        p = self._p()
        out = np.zeros((self.n, self.n))
        for weight, qv in self._node_probs():
            if self.policy == "self":
                _, B0, A = self._edge_terms()
                ez = p * qv[self._pairs[:, 0]] * qv[self._pairs[:, 1]]
                out += weight * (B0 + np.einsum("e,eab->ab", ez, A))
            else:
                out += weight * self._renorm_mean(p, qv)
        return out

    def _renorm_mean(self, p, qv):
        n = self.n
        EW = np.zeros((n, n))
        for i in range(n):  # host: one exact enumeration per row
            slots = np.nonzero(self._mask[i])[0]
            js, ws = self._nbr[i, slots].astype(int), self._w[i, slots].astype(float)
            d = len(js)
            if d > _ENUM_LIMIT:
                raise ValueError(
                    f"unreliable: E[W] under renormalize enumerates 2^deg patterns; degree {d} is too large"
                )
            pj = p * qv[js]
            pats = ((np.arange(2**d)[:, None] >> np.arange(d)) & 1).astype(bool)  # [P, d]
            prob = np.prod(np.where(pats, pj, 1 - pj), axis=1)
            total = self._sw[i] + pats @ ws
            safe = np.where(total > 0, total, 1.0)
            row = np.zeros(n)
            row[i] += np.sum(prob * np.where(total > 0, self._sw[i] / safe, 1.0))
            np.add.at(row, js, (prob[:, None] * pats * ws / safe[:, None]).sum(0))
            EW[i] = qv[i] * row
            EW[i, i] += 1 - qv[i]
        return EW


# ---------------------------------------------------------------------- constructors
def _symmetric_weights(nbr, w, mask) -> bool:
    """Host: whether the padded base weights are symmetric, ``W_ij == W_ji`` (sparse, O(n K))."""
    import scipy.sparse as sp

    n = nbr.shape[0]
    rows = np.repeat(np.arange(n), nbr.shape[1]).reshape(nbr.shape)
    S = sp.csr_matrix((np.where(mask, w, 0.0).astype(np.float64)[mask], (rows[mask], nbr[mask])), shape=(n, n))
    D = abs(S - S.T)
    return bool(D.nnz == 0 or D.max() <= 1e-6)


def _row_sum(a):
    """``a.sum(1)`` over the K slots as K - 1 elementwise adds: XLA's CPU reduction fusion made the
    row sum 10x the whole gossip round at N = 65536 (benchmarks/dynamic_graphs.py)."""
    out = a[:, 0]
    for k in range(1, a.shape[1]):
        out = out + a[:, k]
    return out


def link_failures(base, p, policy="self", *, name=None) -> Unreliable:
    """Each undirected edge of ``base`` is up independently with probability ``p`` every round
    (both directions together); missing weights follow ``policy`` ("self" or "renormalize").
    ``p`` may be a JAX value. Random link failures as in Koloskova et al. 2020 (Assumption 4,
    expected consensus rate of a random W) and the EPFL / decentralizepy simulators."""
    return Unreliable(base, p=p, node_model="always", policy=policy, name=name)


def churn(
    base, q=None, *, mean_on=None, mean_off=None, trace=None, beyond="hold", p=1.0, seed=0, policy="self", name=None
) -> Unreliable:
    """Node churn over ``base``: each node online with probability ``q`` (i.i.d. per round; may
    be a JAX value), or on/off spans with geometric lengths of means ``mean_on`` / ``mean_off``
    (a two-state Markov chain per node seeded by ``seed``, stationary from round 0), or a user
    ``trace`` bool[rounds, n] followed exactly (rounds past its end: ``beyond="hold"`` repeats the
    last row, ``"cycle"`` wraps around). ``p`` adds independent link failures on top. An offline
    node keeps its state (row ``e_i``); edges touching it are down."""
    given = [x is not None for x in (q, mean_on if mean_on is not None else mean_off, trace)]
    if sum(given) != 1:
        raise ValueError("churn: give exactly one of q, (mean_on, mean_off) or trace")
    if q is not None:
        return Unreliable(base, p=p, node_model="bernoulli", q=q, policy=policy, seed=seed, name=name)
    if trace is not None:
        return Unreliable(base, p=p, node_model="trace", trace=trace, beyond=beyond, policy=policy, name=name)
    return Unreliable(
        base, p=p, node_model="markov", mean_on=mean_on, mean_off=mean_off, seed=seed, policy=policy, name=name
    )


def stragglers(base, r, *, name=None):
    """Stragglers (issue 13; the slow workers of Lian et al. 2018, Sec. 1): each node of ``base``
    independently skips its local step with probability ``r`` every round, drawn from the
    round's graph key (``rj.network.dynamic.straggler_mask``), and still gossips its current,
    un-updated model. The graph's edges are ``base``'s: a static ``base`` becomes a drawn
    topology with every link up (``link_failures(base, 1.0)``), a drawn one (link failures,
    churn, EL, matchings) keeps its own draw, and under churn an offline node is inactive too.
    The round's ``ctx.edges.active`` carries the mask; algorithms mask their local update with
    ``ctx.where_active`` / ``ctx.skip_step``. ``r`` in [0, 1) may be a JAX value or a Hyper."""
    from redeem_jax.network.dynamic import Straggling

    if not getattr(base, "is_drawn", False):
        base = link_failures(base, 1.0, name=name or base.name)
    return Straggling(base, r)


# ---------------------------------------------------------------------- metrics helpers
def live_counts(edges):
    """``(live_nodes, live_edges)`` as int32 scalars from one round's drawn arrays (an
    :class:`~redeem_jax.core.Edges` or the ``(neighbors, weights, self_weight, mask)`` tuple).

    ``live_edges``: directed links that carried a message (``mask.sum()``; an undirected link up
    counts twice). ``live_nodes``: nodes that sent or received at least one message this round.
    An online node whose links all failed looks like an offline one in the arrays; the exact
    online mask is :meth:`Unreliable.online` with the round's graph key. An algorithm reports
    them from its update, ``metrics["live_nodes"], metrics["live_edges"] = live_counts(ctx.edges)``
    (host-free: two reductions in the jitted round)."""
    if isinstance(edges, tuple):
        nbr, mask = edges[0], edges[3]
    else:
        nbr, mask = edges.neighbors, edges.mask
    mask = jnp.asarray(mask)
    n = mask.shape[0]
    received = jnp.any(mask, axis=1)
    sent = jnp.zeros((n,), jnp.int32).at[jnp.asarray(nbr).reshape(-1)].add(mask.reshape(-1).astype(jnp.int32)) > 0
    return jnp.sum(received | sent).astype(jnp.int32), jnp.sum(mask).astype(jnp.int32)


def dense_mixing(n, edges):
    """The dense ``W`` [n, n] of drawn arrays (jittable, vmappable): ``W[i, j]`` = weight of j at
    node i (``DrawnTopology.sample_mixing_matrix`` as jnp, for Monte Carlo)."""
    nbr, w, sw, mask = edges
    K = nbr.shape[1]
    rows = jnp.repeat(jnp.arange(n), K)
    W = jnp.zeros((n, n), w.dtype).at[rows, nbr.reshape(-1)].add(jnp.where(mask, w, 0.0).reshape(-1))
    return W + jnp.diag(sw)


# ---------------------------------------------------------------------- second moment
def _center(n):
    return np.eye(n) - np.ones((n, n)) / n


def second_moment(topology: Unreliable) -> np.ndarray:
    """``E[W^T (I - J) W]`` (float64 [n, n]) of one round.

    ``policy="self"`` (closed form): with ``W = B0 + sum_e z_e A_e`` and ``M = I - J``,
    ``E[W^T M W] = B0 M B0 + sum_e E[z_e](B0 M A_e + A_e^T M B0) + sum_{e,f} G_ef A_e^T M A_f``,
    ``G_ef = E[z_e z_f] = p^(1 + [e != f]) prod_{v in e u f} q_v`` (link draws independent per
    pair, nodes independent; a shared endpoint counts once). ``policy="renormalize"``: exact
    enumeration over every link and node pattern (:func:`enumerate_second_moment`)."""
    if topology.policy != "self":
        return enumerate_second_moment(topology)
    p = topology._p()
    n, pairs = topology.n, topology._pairs
    _, B0, A = topology._edge_terms()
    M = _center(n)
    out = np.zeros((n, n))
    inc = np.zeros((topology.m, n), bool)
    inc[np.arange(topology.m), pairs[:, 0]] = True
    inc[np.arange(topology.m), pairs[:, 1]] = True
    MA = np.einsum("bc,fcd->fbd", M, A)
    for weight, qv in topology._node_probs():
        ez = p * qv[pairs[:, 0]] * qv[pairs[:, 1]]
        union = inc[:, None, :] | inc[None, :, :]  # [m, m, n]
        G = p * p * np.prod(np.where(union, qv, 1.0), axis=-1)
        G[np.diag_indices(topology.m)] = ez
        H = np.einsum("ef,eab->fab", G, A)  # sum_e G_ef A_e
        S = B0 @ M @ B0 + np.einsum("e,ab,bc,ecd->ad", ez, B0, M, A)
        S = S + S.T - B0 @ M @ B0 + np.einsum("fba,fbd->ad", H, MA)
        out += weight * S
    return out


def enumerate_second_moment(topology: Unreliable, moment="second"):
    """Exact ``E[W^T (I - J) W]`` (or ``E[W]`` with ``moment="first"``) by enumerating every
    up/down pattern of the m links and (churning) n nodes, weighting by its probability and
    building ``W`` with a NumPy re-implementation of the weight policy (an independent
    reference for :meth:`Unreliable.draw`). Feasible for ``m + n <= 20``."""
    p = topology._p()
    n, m = topology.n, topology.m
    nbr, w, sw, mask, eid = (
        topology._nbr,
        topology._w.astype(float),
        topology._sw.astype(float),
        topology._mask,
        topology._eid,
    )
    M = _center(n)
    out = np.zeros((n, n))
    for weight, qv in topology._node_probs():
        free = np.nonzero((qv > 0) & (qv < 1))[0]  # nodes whose state is random
        if m + len(free) > _ENUM_LIMIT:
            raise ValueError(f"unreliable: exact enumeration over {m} links and {len(free)} nodes is too large")
        P = 2 ** (m + len(free))
        bits = ((np.arange(P)[:, None] >> np.arange(m + len(free))) & 1).astype(bool)
        up, onf = bits[:, :m], bits[:, m:]
        on = np.broadcast_to(qv > 0.5, (P, n)).copy()
        on[:, free] = onf
        prob = np.prod(np.where(up, p, 1 - p), axis=1) * np.prod(np.where(onf, qv[free], 1 - qv[free]), axis=1)
        live = mask[None] & up[:, eid] & on[:, :, None] & on[:, nbr]  # [P, n, K]
        wl = np.where(live, w[None], 0.0)
        if topology.policy == "self":
            selfw = np.where(on, sw + (np.where(mask, w, 0.0)[None] - wl).sum(-1), 1.0)
        else:
            tot = sw + wl.sum(-1)
            safe = np.where(tot > 0, tot, 1.0)
            wl = wl / safe[..., None]
            selfw = np.where(on, np.where(tot > 0, sw / safe, 1.0), 1.0)
        Ws = np.zeros((P, n, n))
        pidx = np.repeat(np.arange(P), n * topology.K)
        ridx = np.tile(np.repeat(np.arange(n), topology.K), P)
        np.add.at(Ws, (pidx, ridx, np.tile(nbr.reshape(-1), P)), wl.reshape(-1))
        Ws[:, np.arange(n), np.arange(n)] += selfw
        if moment == "first":
            out += weight * np.einsum("p,pab->ab", prob, Ws)
        else:
            out += weight * np.einsum("p,pba,bc,pcd->ad", prob, Ws, M, Ws)
    return out


def mean_square_contraction(topology: Unreliable) -> float:
    """``lambda = lambda_max(E[W^T (I - J) W])`` on ``1^perp``: one round's expected mean-square
    contraction of the consensus distance, ``E||(I-J) W x||^2 <= lambda ||(I-J) x||^2`` for a
    doubly stochastic W (Boyd et al. 2006, randomized gossip; Koloskova et al. 2020, Assumption
    4 with ``p = 1 - lambda``). Markov churn: the one-round (stationary) value; consecutive
    rounds are correlated, so ``lambda^t`` is not the t-round rate there."""
    S = second_moment(topology)
    n = topology.n
    # Restrict to 1^perp with an orthonormal basis Q of it (S need not vanish on 1 under
    # renormalize, where W 1 = 1 but 1^T W != 1^T).
    Q = np.linalg.qr(np.concatenate([np.ones((n, 1)), np.eye(n)[:, : n - 1]], 1))[0][:, 1:]
    R = Q.T @ S @ Q
    return float(np.linalg.eigvalsh((R + R.T) / 2).max())

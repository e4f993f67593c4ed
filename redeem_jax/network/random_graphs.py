"""Random graphs drawn every round: Epidemic Learning, randomized gossip, k-out peer sampling.

Every class here is a :class:`~redeem_jax.network.dynamic.DrawnTopology`: ``draw(round, key)``
is jittable with fixed shapes (the round's graph key decides the graph; ``round`` is unused),
``expected_mixing_matrix()`` is ``E[W]`` in closed form and ``second_moment()`` is the exact
``M = E[W^T (I - J) W]`` (``J = 11^T / n``), derived in closed form or by exact enumeration of a
small finite distribution, never sampled. :func:`mean_square_contraction` turns ``M`` into the
one-round mean-square contraction ``lambda = lambda_max(M restricted to 1^perp)``:

    E || (I - J) W x ||^2  <=  lambda * || (I - J) x ||^2        for every x.

For a doubly stochastic draw ``(I - J) W x = W x - xbar 1`` (the mean is kept), so this is the
usual consensus rate. For a row-stochastic draw (EL-Local, k-out) ``W 1 = 1`` still gives
``M 1 = 0`` and the same bound on the disagreement around the *new* mean, but the mean itself
drifts (``1^T W x / n != xbar``).

Models (the papers' definitions; the distribution each ``draw`` samples is stated exactly):

* :class:`ELOracle` -- Epidemic Learning EL-Oracle (de Vos et al. 2023, Alg. 1 with a global
  s-regular sampler): every node receives from s others and sends to s others, weights
  ``1/(s+1)``. Drawn as a relabelled random circulant (see the class; the relabelling is a
  keyed swap-or-not permutation by default, a uniform one with ``relabel="uniform"``).
* :class:`ELLocal` -- EL-Local (de Vos et al. 2023): every node pushes to s uniform others;
  receivers average what arrived, weights ``1/(1 + in-degree)``.
* :func:`random_matching` / :func:`pairwise` -- randomized gossip (Boyd, Ghosh, Prabhakar &
  Shah 2006, IEEE Trans. Inf. Theory 52(6)): matched pairs average,
  ``W = I - sum_e (e_i - e_j)(e_i - e_j)^T / 2``.
* :func:`k_out` -- random k-out peer sampling on a base graph (pull): each node receives from
  ``min(k, deg)`` uniform distinct neighbours, weights ``1/(k_i + 1)``.
"""

from __future__ import annotations

import math

import numpy as np

from redeem_jax.core import Hyper, resolve
from redeem_jax.network.dynamic import DrawnTopology

__all__ = [
    "ELOracle",
    "ELLocal",
    "swap_or_not",
    "RandomMatching",
    "Pairwise",
    "KOut",
    "el_oracle",
    "el_local",
    "random_matching",
    "pairwise",
    "k_out",
    "mean_square_contraction",
    "el_oracle_contraction",
    "pairwise_complete_contraction",
    "matching_complete_contraction",
    "el_local_overflow_probability",
]


# ----------------------------------------------------------------------------- helpers
def _fan_out(value, s_max, lo: int, hi: int, label: str):
    """``(default, s_max, option)`` of a fan-out that may be swept: ``value`` is an int or a
    :class:`~redeem_jax.core.Hyper` (the sweep's traced s); ``s_max`` (structural) is the padded
    width, ``None`` for the static draw. Traced mode is ``s_max is not None``."""
    default = int(round(resolve(value, None)))
    if isinstance(value, Hyper) and s_max is None:
        s_max = default
    if s_max is not None:
        s_max = int(s_max)
        if not lo <= default <= s_max <= hi:
            raise ValueError(f"{label} needs {lo} <= s <= s_max <= {hi}, got s={default}, s_max={s_max}")
    elif not lo <= default <= hi:
        raise ValueError(f"{label} needs {lo} <= s <= {hi}, got s={default}")
    return default, s_max, value


def _traced_fan_out(option, hp, s_max: int):
    """The round's fan-out as an int32 scalar in ``[1, s_max]`` (hp holds it as a float32)."""
    import jax.numpy as jnp

    s = jnp.round(jnp.asarray(resolve(option, hp), jnp.float32)).astype(jnp.int32)
    return jnp.clip(s, 1, s_max)


def _partner_layout(partner):
    """Padded K = 1 layout of a matching given ``partner[i]`` (``i`` itself when unmatched):
    a matched node keeps 1/2 and takes 1/2 of its partner (Boyd et al. 2006, Sec. II)."""
    import jax.numpy as jnp

    n = partner.shape[0]
    matched = partner != jnp.arange(n, dtype=partner.dtype)
    w = jnp.where(matched, 0.5, 0.0).astype(jnp.float32)
    sw = jnp.where(matched, 0.5, 1.0).astype(jnp.float32)
    return partner[:, None].astype(jnp.int32), w[:, None], sw, matched[:, None]


def _undirected_edges(base):
    """Host edge list ``(u, v)`` with ``u < v`` of a static base topology with a symmetric
    adjacency (gossip pairs average both ways, so the base must be undirected)."""
    if getattr(base, "is_drawn", False) or getattr(base, "period", 1) != 1:
        raise ValueError("the base graph must be a static Topology (period 1, not drawn)")
    A = np.asarray(base.adjacency, bool)
    if not np.array_equal(A, A.T):
        raise ValueError("randomized gossip needs an undirected base graph (symmetric adjacency)")
    u, v = np.nonzero(np.triu(A, 1))
    if u.size == 0:
        raise ValueError("the base graph has no edges")
    return u.astype(np.int32), v.astype(np.int32), A


def _laplacian(n, u, v, w):
    """Weighted graph Laplacian ``sum_e w_e (e_u - e_v)(e_u - e_v)^T`` (float64, dense)."""
    L = np.zeros((n, n))
    np.add.at(L, (u, u), w)
    np.add.at(L, (v, v), w)
    np.add.at(L, (u, v), -w)
    np.add.at(L, (v, u), -w)
    return L


def _dense_w(nbr, w, sw, mask):
    """jnp dense ``W`` of one draw (row i: what node i receives); for tests and the MC checks."""
    import jax.numpy as jnp

    n, K = nbr.shape
    rows = jnp.repeat(jnp.arange(n), K)
    W = jnp.zeros((n, n), jnp.float32).at[rows, nbr.reshape(-1)].add(jnp.where(mask, w, 0.0).reshape(-1))
    return W + jnp.diag(sw)


# ----------------------------------------------------------------------------- EL-Oracle
class ELOracle(DrawnTopology):
    """EL-Oracle (de Vos et al. 2023, "Epidemic Learning", Sec. 3): an s-regular digraph per round;
    node i averages itself and its s in-neighbours with weights ``1/(s+1)`` (doubly stochastic).

    The draw: a permutation ``pi`` of the labels (the relabelling, below) and s distinct shifts
    ``c_1..c_s`` drawn uniformly without replacement from ``{1, ..., n-1}``, independently of
    ``pi``; the node at position ``a`` of ``pi`` receives from the nodes at positions
    ``a + c_r (mod n)``, ``W = P C P^T`` with C the circulant. So every node receives from s
    distinct others and sends to s distinct others, no self loops, fixed shapes, O(n s) work --
    a relabelled random circulant, *not* the uniform s-regular digraph. The random circulant C
    alone already has the exchangeable first two moments below (see ``relabel=False`` in
    :meth:`draw`), and they are invariant under conjugation by any permutation, so
    ``E[P C P^T] = E[C]`` and ``E[(P C P^T)^T (P C P^T)] = P E[C^T C] P^T = E[C^T C]`` for *every*
    law of ``pi`` independent of the shifts: the moments are exact whichever relabelling is used,
    and they equal those of the uniform s-regular digraph (any exchangeable s-regular law):

    ``relabel`` (the law of ``pi``): ``"keyed"`` (default; ``True`` means it) -- a keyed
    swap-or-not permutation of Z_n (:func:`swap_or_not`, Hoang, Morris & Rogaway 2012), O(n)
    elementwise work and no sort, not uniform over the n! permutations; ``"uniform"`` -- a
    uniform permutation (``jax.random.permutation``: a sort of n keys per round, which costs
    several gossip rounds at N >= 4096 on CPU, docs/performance.md); ``False`` -- none (a random circulant in the fixed
    labelling: the graphs of successive rounds commute).

        E[W]       = I/(s+1) + s/((s+1)(n-1)) (11^T - I)
        E[W^T W]   = the same matrix  (diag: a column holds s+1 entries 1/(s+1), so 1/(s+1);
                     rows of W^T W sum to 1 and exchangeability spreads the rest evenly)
        lambda     = (1/(s+1)) (1 - s/(n-1))  = (n-1-s)/((s+1)(n-1)),

    with *equality* ``E||Wx - xbar 1||^2 = lambda ||x - xbar 1||^2`` for every x.

    A swept fan-out (``s`` a :class:`~redeem_jax.core.Hyper`, or ``s_max`` given): ``K = s_max``,
    the s_max Floyd shifts are put in a uniformly random order and the first s (traced) are live,
    the rest masked. A uniform s_max-subset in uniform order is a uniform injection, so its first
    s entries are a uniform s-subset: the same law as the static draw with that s (not the same
    graphs unless s = s_max, where the live shifts are the static draw's set).
    """

    name = "el_oracle"
    is_doubly_stochastic = True

    def __init__(self, n: int, s, relabel: bool | str = True, s_max: int | None = None):
        n = int(n)
        if n < 2:
            raise ValueError(f"EL-Oracle needs n >= 2, got n={n}")
        s, self.s_max, self._s_opt = _fan_out(s, s_max, 1, n - 1, "EL-Oracle")
        self.n, self.s, self.K, self.relabel = n, s, (s if self.s_max is None else self.s_max), _relabel_mode(relabel)
        self.hypers = (self._s_opt,) if isinstance(self._s_opt, Hyper) else ()
        self.params = {"s": s, "relabel": self.relabel}
        if self.s_max is not None:
            self.params["s_max"] = self.s_max

    def draw(self, round, key, hp=None):
        import jax
        import jax.numpy as jnp

        if self.s_max is not None:
            return self._draw_traced(key, hp)
        n, s = self.n, self.s
        k_perm, k_shift = jax.random.split(key)
        shifts = _floyd_subset(k_shift, n - 1, s) + 1  # s distinct shifts in {1..n-1}
        if not self.relabel:
            # relabel=False: a random circulant in the fixed labelling. Its E[W] and E[W^T W] are
            # those above too: a difference c_r - c_r' of two distinct shifts is uniform over the
            # n - 1 non-zero residues (n - 2 ordered pairs each), so every off-diagonal entry of
            # E[W^T W] is equal. It skips the per-round permutation (a sort), the cost at large n.
            nbr = (jnp.arange(n, dtype=jnp.int32)[:, None] + shifts[None, :]) % n
            w = jnp.full((n, s), 1.0 / (s + 1), jnp.float32)
            return nbr, w, jnp.full((n,), 1.0 / (s + 1), jnp.float32), jnp.ones((n, s), bool)
        nbr = _relabelled_circulant(k_perm, n, shifts, self.relabel)
        w = jnp.full((n, s), 1.0 / (s + 1), jnp.float32)
        return nbr, w, jnp.full((n,), 1.0 / (s + 1), jnp.float32), jnp.ones((n, s), bool)

    def _draw_traced(self, key, hp):
        """The draw with a traced fan-out s <= s_max (class docstring): same keys as the static draw."""
        import jax
        import jax.numpy as jnp

        n, K = self.n, self.s_max
        s = _traced_fan_out(self._s_opt, hp, K)
        k_perm, k_shift = jax.random.split(key)
        shifts = _floyd_subset(k_shift, n - 1, K) + 1
        # Floyd's output is a uniform set in a biased order (slot r comes from {0..m-K+r}): a
        # uniform order makes every prefix a uniform subset. K is small, so this sort is cheap.
        shifts = shifts[jax.random.permutation(jax.random.fold_in(k_shift, 1), K)]
        live = jnp.broadcast_to(jnp.arange(K, dtype=jnp.int32)[None, :] < s, (n, K))
        me = jnp.arange(n, dtype=jnp.int32)
        if self.relabel:
            nbr = _relabelled_circulant(k_perm, n, shifts, self.relabel)
        else:
            nbr = (me[:, None] + shifts[None, :]) % n
        inv = 1.0 / (s.astype(jnp.float32) + 1.0)
        nbr = jnp.where(live, nbr, me[:, None]).astype(jnp.int32)
        w = jnp.where(live, inv, 0.0).astype(jnp.float32)
        return nbr, w, jnp.full((n,), inv, jnp.float32), live

    def expected_mixing_matrix(self) -> np.ndarray:
        n, s = self.n, self.s
        return np.eye(n) / (s + 1) + s / ((s + 1) * (n - 1)) * (np.ones((n, n)) - np.eye(n))

    def second_moment(self) -> np.ndarray:
        """``E[W^T (I - J) W] = E[W^T W] - J = lambda (I - J)`` (doubly stochastic: W^T J W = J)."""
        n = self.n
        return el_oracle_contraction(n, self.s) * (np.eye(n) - np.ones((n, n)) / n)


def _floyd_subset(key, m: int, s: int):
    """A uniformly random s-subset of {0..m-1} as int32[s] in O(s^2) work (Floyd's algorithm,
    Bentley & Floyd 1987): for j = m-s..m-1 draw t in [0, j]; keep t unless already chosen, else
    j. A sort or top_k over m values would cost O(m) or O(m log m) every round."""
    import jax
    import jax.numpy as jnp

    ts = jax.random.randint(key, (s,), 0, jnp.arange(m - s + 1, m + 1), dtype=jnp.int32)
    chosen = jnp.full((s,), -1, jnp.int32)
    for r in range(s):  # s is static and small (a fan-out): unrolled, no per-node loop
        j = m - s + r
        t = ts[r]
        chosen = chosen.at[r].set(jnp.where(jnp.any(chosen == t), j, t))
    return chosen


_RELABEL_MODES = ("keyed", "uniform")
# Swap-or-not rounds of the keyed relabelling. Any permutation keeps EL-Oracle's two moments exact;
# the rounds only decide how scrambled the labels look (each round swaps about half the labels
# with a keyed partner); each costs a few integer operations per label (docs/performance.md).
SWAP_ROUNDS = 6
_ROUNDS_PER_STEP = 3  # SWAP_ROUNDS / _ROUNDS_PER_STEP >= 2 loop steps (see _relabelled_circulant)


def _relabel_mode(relabel):
    if relabel is True:
        return "keyed"
    if relabel is False or relabel is None:
        return False
    if relabel not in _RELABEL_MODES:
        raise ValueError(f"EL-Oracle: relabel must be True, False, 'keyed' or 'uniform', got {relabel!r}")
    return relabel


def _fmix(h):
    # murmur3's 32-bit finaliser (Appleby): full avalanche, so one output bit of it is a fair coin.
    import jax.numpy as jnp

    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _swap_round(x, off, seed, n: int):
    # One swap-or-not round: x and its partner off - x (mod n) share the coin F(max(x, x')).
    import jax.numpy as jnp

    d = off - x
    xp = jnp.where(d < 0, d + n, d)
    coin = _fmix(jnp.maximum(x, xp).astype(jnp.uint32) * jnp.uint32(0x9E3779B9) + seed) >> 31
    return jnp.where(coin == 1, xp, x)


def _swap_keys(key, n: int, rounds: int):
    import jax
    import jax.numpy as jnp

    k_off, k_seed = jax.random.split(key)
    return (jax.random.randint(k_off, (rounds,), 0, n, dtype=jnp.int32), jax.random.bits(k_seed, (rounds,), jnp.uint32))


def swap_or_not(key, x, n: int, rounds: int = SWAP_ROUNDS, inverse: bool = False):
    """A keyed permutation of Z_n applied elementwise to ``x`` (int32 in [0, n)): the swap-or-not
    shuffle of Hoang, Morris & Rogaway (CRYPTO 2012, Fig. 1). Round r draws ``K_r`` uniform in
    Z_n and a hash seed; ``x' = K_r - x (mod n)`` and x becomes x' when the keyed coin
    ``F_r(max(x, x'))`` is 1. Each round is an involution on Z_n (x and x' share the coin), so
    the whole is a bijection for any n, with no cycle-walking; ``inverse=True`` runs the rounds
    backwards. O(rounds) elementwise integer work per label, no sort."""
    import jax.numpy as jnp

    offs, seeds = _swap_keys(key, n, rounds)
    x = jnp.asarray(x, jnp.int32)
    for r in range(rounds - 1, -1, -1) if inverse else range(rounds):  # static, few rounds
        x = _swap_round(x, offs[r], seeds[r], n)
    return x


def _relabelled_circulant(key, n: int, shifts, mode: str):
    """``nbr[i, r] = pi^{-1}(pi(i) + c_r mod n)``: node i sits at position pi(i) and receives from
    the nodes s_r positions further on (:class:`ELOracle`)."""
    import jax
    import jax.numpy as jnp

    me = jnp.arange(n, dtype=jnp.int32)
    if mode == "uniform":
        perm = jax.random.permutation(key, n).astype(jnp.int32)  # position -> node
        pos = jnp.zeros(n, jnp.int32).at[perm].set(me)  # node -> position
    else:
        offs, seeds = _swap_keys(key, n, SWAP_ROUNDS)
        R = SWAP_ROUNDS

        # The rounds run in a loop of >= 2 steps (one step would be inlined) so both tables are
        # materialised: XLA CPU fuses straight-line code into the gather below and re-ran every
        # round (and the Threefry draws of the round keys) for each of the n*s gathered labels,
        # 25-50x slower; an optimization_barrier is dropped before fusion on CPU. Three rounds
        # per step: fewer loop steps, whose fixed cost dominates at N = 4096.
        def body(i, c):
            pos, perm = c
            for j in range(_ROUNDS_PER_STEP):  # static: a few rounds per loop step
                r = i * _ROUNDS_PER_STEP + j
                pos = _swap_round(pos, offs[r], seeds[r], n)
                perm = _swap_round(perm, offs[R - 1 - r], seeds[R - 1 - r], n)
            return pos, perm

        pos, perm = jax.lax.fori_loop(0, R // _ROUNDS_PER_STEP, body, (me, me))
    a = pos[:, None] + shifts[None, :].astype(jnp.int32)
    return perm.at[jnp.where(a >= n, a - n, a)].get(mode="promise_in_bounds")


def el_oracle(n: int, s, relabel: bool | str = True, s_max: int | None = None) -> ELOracle:
    """EL-Oracle of de Vos et al. 2023 on n nodes with s out-/in-neighbours per round
    (``relabel``: ``True``/``"keyed"`` a keyed swap-or-not relabelling, ``"uniform"`` a uniform
    one (a sort per round), ``False`` none: a random circulant; all have the same two moments).
    ``s`` may be a :class:`~redeem_jax.core.Hyper` (a swept fan-out, padded to ``s_max``)."""
    return ELOracle(n, s, relabel, s_max)


def el_oracle_contraction(n: int, s: int) -> float:
    """Exact EL-Oracle mean-square contraction ``(n-1-s)/((s+1)(n-1))`` (derivation: :class:`ELOracle`;
    de Vos et al. 2023 bound the same quantity for EL-Oracle; this is its exact value)."""
    return (n - 1 - s) / ((s + 1) * (n - 1))


# ----------------------------------------------------------------------------- EL-Local
def _pair_sum_pmf(r: int, q11: float, q10: float, q01: float, q00: float) -> np.ndarray:
    """Exact joint pmf ``P[X = a, Y = b]`` of ``(X, Y) = sum of r iid pairs`` of Bernoullis with
    joint law ``(q11, q10, q01, q00)`` (a 2-D convolution, O(r^3) on the host)."""
    P = np.zeros((r + 1, r + 1))
    P[0, 0] = 1.0
    for _ in range(r):  # host enumeration, not jitted code
        Q = q00 * P
        Q[1:, :] += q10 * P[:-1, :]
        Q[:, 1:] += q01 * P[:, :-1]
        Q[1:, 1:] += q11 * P[:-1, :-1]
        P = Q
    return P


class ELLocal(DrawnTopology):
    """EL-Local (de Vos et al. 2023, "Epidemic Learning", Sec. 3): every node pushes its model to
    s distinct others drawn uniformly (independently per sender); receiver i averages its own
    model and the D_i that arrived with weights ``1/(1 + D_i)``. Row-stochastic, not doubly
    stochastic: the network mean drifts.

    Layout: the in-degree is random, so ``K = n - 1`` (the largest possible) and each receiver's
    senders are packed to the front of its row through a dense ``[n, n]`` intermediate -- the
    small-N path (O(n^2) memory per round; fine for the few hundred nodes EL experiments use).

    Moments (``p = s/(n-1)``, ``D ~ Bin(n-1, p)`` is any node's in-degree):

        E[W]_ii = mu1 = E[1/(1+D)] = (1 - (1-p)^n) / (n p),   E[W]_ij = (1 - mu1)/(n-1).

    The law is exchangeable, and ``M 1 = 0`` (W 1 = 1), so ``M = lambda (I - J)`` with
    ``lambda = tr M / (n-1)`` and ``tr M = E||W||_F^2 - E||W^T 1||^2 / n``; ``E||W||_F^2 = n mu1``
    (row i holds 1+D_i entries 1/(1+D_i)), and the column sums give
    ``E||W^T 1||^2 = n mu1 + 2 n(n-1) T1 + n(n-1)(n-2) T2`` with
    ``T1 = E[W_jj W_ij]``, ``T2 = E[W_ij W_kj]`` (i, j, k distinct), computed by exact
    enumeration of the joint in-degrees (:meth:`second_moment`).

    A swept fan-out (``s`` a :class:`~redeem_jax.core.Hyper`, or ``s_max``): each sender takes the
    ``s_max`` largest uniforms and pushes to the first s (traced); ``top_k`` sorts, so these are
    exactly the static draw's s targets (the same graphs, for every s).
    """

    name = "el_local"
    is_doubly_stochastic = False

    def __init__(self, n: int, s, s_max: int | None = None):
        n = int(n)
        if n < 2:
            raise ValueError(f"EL-Local needs n >= 2, got n={n}")
        s, self.s_max, self._s_opt = _fan_out(s, s_max, 1, n - 1, "EL-Local")
        self.n, self.s, self.K, self.params = n, s, n - 1, {"s": s}
        self.hypers = (self._s_opt,) if isinstance(self._s_opt, Hyper) else ()
        if self.s_max is not None:
            self.params["s_max"] = self.s_max

    def draw(self, round, key, hp=None):
        import jax
        import jax.numpy as jnp

        n, s = self.n, self.s
        # s distinct uniform targets per sender: the s largest of n iid uniforms, self excluded.
        u = jax.random.uniform(key, (n, n))
        u = jnp.where(jnp.eye(n, dtype=bool), -1.0, u)
        if self.s_max is None:
            _, targets = jax.lax.top_k(u, s)  # [sender, s]
            senders = jnp.repeat(jnp.arange(n), s)
            A = jnp.zeros((n, n), bool).at[targets.reshape(-1), senders].set(True)  # A[i, j]: j -> i
        else:
            _, targets = jax.lax.top_k(u, self.s_max)
            pushes = jnp.arange(self.s_max)[None, :] < _traced_fan_out(self._s_opt, hp, self.s_max)
            senders = jnp.repeat(jnp.arange(n), self.s_max)
            # (target, sender) pairs are distinct, so set() writes each cell once: live or not.
            A = (
                jnp.zeros((n, n), bool)
                .at[targets.reshape(-1), senders]
                .set(jnp.broadcast_to(pushes, targets.shape).reshape(-1))
            )
        # stable sort puts each receiver's senders first (ascending id); padded slots -> i itself.
        order = jnp.argsort(~A, axis=1, stable=True)[:, : n - 1].astype(jnp.int32)
        mask = jnp.take_along_axis(A, order, axis=1)
        nbr = jnp.where(mask, order, jnp.arange(n, dtype=jnp.int32)[:, None])
        inv = 1.0 / (1.0 + A.sum(1).astype(jnp.float32))
        w = jnp.where(mask, inv[:, None], 0.0).astype(jnp.float32)
        return nbr, w, inv, mask

    def _mu1(self) -> float:
        n, p = self.n, self.s / (self.n - 1)
        return (1.0 - (1.0 - p) ** n) / (n * p)

    def expected_mixing_matrix(self) -> np.ndarray:
        n, mu1 = self.n, self._mu1()
        return mu1 * np.eye(n) + (1 - mu1) / (n - 1) * (np.ones((n, n)) - np.eye(n))

    def contraction(self) -> float:
        """``lambda = tr E[W^T (I-J) W] / (n-1)`` by exact enumeration (see the class docstring)."""
        n, s = self.n, self.s
        p = s / (n - 1)
        q11 = s * (s - 1) / ((n - 1) * (n - 2)) if n > 2 else 0.0  # one sender hits both i and j
        q10 = p - q11
        q00 = 1.0 - 2 * p + q11
        mu1 = self._mu1()
        # T1 = E[A_ij / ((1+D_i)(1+D_j))]: given j -> i, D_i = 1 + X, D_j = B + Y, with B = [i -> j]
        # ~ Bern(p) and (X, Y) summed over the n-2 other senders (each hits i and/or j jointly).
        T1 = 0.0
        if n >= 2:
            P = _pair_sum_pmf(n - 2, q11, q10, q10, q00)
            a = np.arange(n - 1)[:, None]
            b = np.arange(n - 1)[None, :]
            T1 = p * float(np.sum(P * ((1 - p) / ((2 + a) * (1 + b)) + p / ((2 + a) * (2 + b)))))
        # T2 = E[A_ij A_kj / ((1+D_i)(1+D_k))]: given j -> i and j -> k, D_i = 1 + B1 + X,
        # D_k = 1 + B2 + Y (B1 = [k -> i], B2 = [i -> k] iid Bern(p)), (X, Y) over n-3 senders.
        T2 = 0.0
        if n >= 3 and q11 > 0:
            P = _pair_sum_pmf(n - 3, q11, q10, q10, q00)
            a = np.arange(n - 2)[:, None]
            b = np.arange(n - 2)[None, :]
            f = sum(
                pb1 * pb2 / ((2 + b1 + a) * (2 + b2 + b))
                for b1, pb1 in ((0, 1 - p), (1, p))
                for b2, pb2 in ((0, 1 - p), (1, p))
            )
            T2 = q11 * float(np.sum(P * f))
        col2 = n * mu1 + 2 * n * (n - 1) * T1 + n * (n - 1) * (n - 2) * T2  # E||W^T 1||^2
        return (n * mu1 - col2 / n) / (n - 1)

    def second_moment(self) -> np.ndarray:
        """``E[W^T (I - J) W] = lambda (I - J)`` (exchangeable law with M 1 = 0)."""
        n = self.n
        return self.contraction() * (np.eye(n) - np.ones((n, n)) / n)


def el_local(n: int, s, s_max: int | None = None) -> ELLocal:
    """EL-Local of de Vos et al. 2023: each of n nodes pushes to s uniform others per round
    (``s`` may be a :class:`~redeem_jax.core.Hyper`, padded to ``s_max``)."""
    return ELLocal(n, s, s_max)


def el_local_overflow_probability(n: int, s: int, cap: int) -> float:
    """Union bound ``n P[Bin(n-1, s/(n-1)) > cap]`` on some EL-Local in-degree exceeding ``cap``
    (the exact per-node in-degree law; for sizing a capped layout, which :class:`ELLocal` avoids
    by using ``K = n - 1``)."""
    m, p = n - 1, s / (n - 1)
    tail = sum(math.comb(m, d) * p**d * (1 - p) ** (m - d) for d in range(cap + 1, m + 1))
    return min(1.0, n * tail)


# ----------------------------------------------------------------------------- gossip
class RandomMatching(DrawnTopology):
    """Randomized gossip on random matchings (Boyd et al. 2006, synchronous variant): every round
    each edge of the undirected base graph gets a distinct uniform priority (a random permutation
    of the edges) and an edge is kept when it has the top priority at *both* endpoints (a locally
    dominant matching: jittable, segment max, not always maximal). Matched pairs average:
    ``W = I - sum_{kept e} a_e a_e^T / 2``, ``a_e = e_u - e_v``, doubly stochastic, symmetric,
    a projection (W^T W = W). K = 1.

    Edge e = (u, v) is kept iff its priority is the maximum over the ``d_u + d_v - 1`` edges
    touching u or v, so ``p_e = 1/(d_u + d_v - 1)`` exactly, and

        E[W] = I - L_p / 2,   M = E[W^T W] - J = E[W] - J,   lambda = 1 - lambda_2(L_p) / 2,

    with ``L_p`` the Laplacian weighted by ``p_e``. Complete graph: ``lambda = 1 - n/(2(2n-3))``.
    """

    name = "random_matching"
    is_doubly_stochastic = True

    def __init__(self, base):
        self.base = base
        self._u, self._v, A = _undirected_edges(base)
        self.n, self.K, self.params = int(base.n), 1, {"base": base.name}
        deg = A.sum(1)
        self._p = 1.0 / (deg[self._u] + deg[self._v] - 1.0)

    def draw(self, round, key):
        import jax
        import jax.numpy as jnp

        n, m = self.n, self._u.size
        u, v = jnp.asarray(self._u), jnp.asarray(self._v)
        prio = jax.random.permutation(key, m).astype(jnp.int32)
        best = jax.ops.segment_max(jnp.concatenate([prio, prio]), jnp.concatenate([u, v]), num_segments=n)
        keep = (prio == best[u]) & (prio == best[v])
        partner = jnp.arange(n, dtype=jnp.int32)
        partner = partner.at[jnp.where(keep, u, n)].set(v, mode="drop")
        partner = partner.at[jnp.where(keep, v, n)].set(u, mode="drop")
        return _partner_layout(partner)

    def expected_mixing_matrix(self) -> np.ndarray:
        return np.eye(self.n) - _laplacian(self.n, self._u, self._v, self._p) / 2

    def second_moment(self) -> np.ndarray:
        return self.expected_mixing_matrix() - np.ones((self.n, self.n)) / self.n


class Pairwise(DrawnTopology):
    """Boyd et al. 2006 randomized gossip, one tick per round: one edge of the undirected base graph,
    uniform over its m edges, and its two ends average. ``W = I - a a^T/2`` (a projection), so

        E[W] = I - L/(2m),   M = E[W] - J,   lambda = 1 - lambda_2(L)/(2m)

    (FIELD_NOTES: E[W^T W] = I - L/(2m)); complete graph: ``lambda = 1 - 1/(n-1)``. K = 1.
    """

    name = "pairwise"
    is_doubly_stochastic = True

    def __init__(self, base):
        self.base = base
        self._u, self._v, _ = _undirected_edges(base)
        self.n, self.K, self.params = int(base.n), 1, {"base": base.name}

    def draw(self, round, key):
        import jax
        import jax.numpy as jnp

        e = jax.random.randint(key, (), 0, self._u.size)
        a, b = jnp.asarray(self._u)[e], jnp.asarray(self._v)[e]
        partner = jnp.arange(self.n, dtype=jnp.int32).at[a].set(b).at[b].set(a)
        return _partner_layout(partner)

    def expected_mixing_matrix(self) -> np.ndarray:
        m = self._u.size
        return np.eye(self.n) - _laplacian(self.n, self._u, self._v, np.full(m, 1.0 / (2 * m)))

    def second_moment(self) -> np.ndarray:
        return self.expected_mixing_matrix() - np.ones((self.n, self.n)) / self.n


def random_matching(base) -> RandomMatching:
    """Random locally dominant matching of the static undirected ``base`` per round (Boyd et al. 2006)."""
    return RandomMatching(base)


def pairwise(base) -> Pairwise:
    """One uniform random edge of the static undirected ``base`` per round (Boyd et al. 2006)."""
    return Pairwise(base)


def pairwise_complete_contraction(n: int) -> float:
    """Pairwise gossip on the complete graph: ``1 - n/(2m) = 1 - 1/(n-1)`` (lambda_2(L) = n, m = n(n-1)/2)."""
    return 1.0 - 1.0 / (n - 1)


def matching_complete_contraction(n: int) -> float:
    """Locally dominant matching on the complete graph: ``p_e = 1/(2n-3)``, ``L_p = p (nI - 11^T)``,
    so ``1 - n/(2(2n-3))``."""
    return 1.0 - n / (2.0 * (2 * n - 3))


# ----------------------------------------------------------------------------- k-out
class KOut(DrawnTopology):
    """Random k-out peer sampling on a base graph (pull; e.g. the EL-Local pull variant restricted to
    a graph): each node i independently receives from ``k_i = min(k, d_i)`` distinct neighbours of
    the base (``d_i`` its in-degree there), uniform without replacement, weights ``1/(k_i + 1)``.
    Row-stochastic; doubly stochastic in general *not* (a node picked by many pulls weighs more),
    so the mean drifts even on regular bases. K = min(k, max degree).

    Rows are independent, so with ``m_i = E[w_i]`` (row i as a vector) and
    ``S = sum_i E[w_i w_i^T]``:  ``M = S - (S + u u^T - sum_i m_i m_i^T)/n``, ``u = sum_i m_i``;
    ``E[w_i w_i^T] = c_i^2 [e_i e_i^T + r_i (e_i 1_Ni^T + 1_Ni e_i^T + diag 1_Ni)
    + r'_i (1_Ni 1_Ni^T - diag 1_Ni)]`` with ``c_i = 1/(k_i+1)``, ``r_i = k_i/d_i``,
    ``r'_i = k_i(k_i-1)/(d_i(d_i-1))`` (inclusion probabilities of a uniform k_i-subset).

    A swept k (a :class:`~redeem_jax.core.Hyper`, or ``k_max``): ``top_k`` of the ``min(k_max,
    max degree)`` largest uniforms, the first k live; sorted, so exactly the static draw's slots.
    """

    name = "k_out"
    is_doubly_stochastic = False

    def __init__(self, base, k, k_max: int | None = None):
        if getattr(base, "is_drawn", False) or getattr(base, "period", 1) != 1:
            raise ValueError("the base graph must be a static Topology (period 1, not drawn)")
        k, self.k_max, self._k_opt = _fan_out(k, k_max, 1, 1 << 30, "k_out")
        self.hypers = (self._k_opt,) if isinstance(self._k_opt, Hyper) else ()
        A = np.asarray(base.adjacency, bool)
        self.base, self._A = base, A
        self.n = int(base.n)
        deg = A.sum(1)
        self._deg = deg
        self._ki = np.minimum(k, deg)
        Kb = max(1, int(deg.max()))
        self.K, self.k, self.params = min(k if self.k_max is None else self.k_max, Kb), k, {"base": base.name, "k": k}
        # padded base neighbour lists (host, once): row i lists i's in-neighbours, then i itself.
        order = np.argsort(~A, axis=1, kind="stable")[:, :Kb]
        valid = np.take_along_axis(A, order, axis=1)
        self._nbr = np.where(valid, order, np.arange(self.n)[:, None]).astype(np.int32)
        self._valid = valid

    def draw(self, round, key, hp=None):
        import jax
        import jax.numpy as jnp

        n, K = self.n, self.K
        valid = jnp.asarray(self._valid)
        u = jnp.where(valid, jax.random.uniform(key, valid.shape), -1.0)
        top, slot = jax.lax.top_k(u, K)  # K largest iid uniforms: a uniform subset
        mask = top >= 0.0  # fewer than K real neighbours: padding
        if self.k_max is None:
            c = jnp.asarray(1.0 / (self._ki + 1.0), jnp.float32)
        else:
            k = _traced_fan_out(self._k_opt, hp, self.k_max)
            mask = mask & (jnp.arange(K)[None, :] < k)
            c = 1.0 / (jnp.minimum(k, jnp.asarray(self._deg, jnp.int32)).astype(jnp.float32) + 1.0)
        nbr = jnp.where(
            mask, jnp.take_along_axis(jnp.asarray(self._nbr), slot, axis=1), jnp.arange(n, dtype=jnp.int32)[:, None]
        )
        return nbr.astype(jnp.int32), jnp.where(mask, c[:, None], 0.0).astype(jnp.float32), c, mask

    def _coeffs(self):
        d = self._deg.astype(float)
        k = self._ki.astype(float)
        c = 1.0 / (k + 1.0)
        r = np.where(d > 0, k / np.maximum(d, 1), 0.0)
        r2 = np.where(d > 1, k * (k - 1) / np.maximum(d * (d - 1), 1), 0.0)
        return c, r, r2

    def expected_mixing_matrix(self) -> np.ndarray:
        c, r, _ = self._coeffs()
        return np.diag(c) + (c * r)[:, None] * self._A

    def second_moment(self) -> np.ndarray:
        n, A = self.n, self._A.astype(float)
        c, r, r2 = self._coeffs()
        c2 = c * c
        S = np.diag(c2)
        S += (c2 * r)[:, None] * A + ((c2 * r)[:, None] * A).T  # e_i 1_Ni^T + transpose
        S += np.diag(A.T @ (c2 * r))  # diag 1_Ni
        S += A.T @ ((c2 * r2)[:, None] * A) - np.diag(A.T @ (c2 * r2))
        Ew = self.expected_mixing_matrix()  # row i = m_i
        u = Ew.sum(0)
        cc = S + np.outer(u, u) - Ew.T @ Ew  # E[(W^T 1)(W^T 1)^T]
        return S - cc / n


def k_out(base, k, k_max: int | None = None) -> KOut:
    """Random k-out peer sampling (pull) on the static ``base``: each node receives from k uniform
    distinct base neighbours (all of them when fewer), weights 1/(k_i + 1). ``k`` may be a
    :class:`~redeem_jax.core.Hyper` (a swept fan-out, padded to ``k_max``)."""
    return KOut(base, k, k_max)


# ----------------------------------------------------------------------------- theory
def mean_square_contraction(topology) -> float:
    """``lambda = lambda_max`` of ``E[W^T (I - J) W]`` on ``1^perp`` (host, from the exact second
    moment ``topology.second_moment()``): ``E||(I-J) W x||^2 <= lambda ||(I-J) x||^2`` for every x
    (the mean-square rate of randomized gossip, Boyd et al. 2006 Sec. II; of EL, de Vos et al.
    2023). For row-stochastic
    draws it bounds the disagreement around the new mean only; the mean drifts."""
    if not hasattr(topology, "second_moment"):
        raise TypeError(f"{type(topology).__name__} has no exact second moment E[W^T (I-J) W]")
    n = topology.n
    P = np.eye(n) - np.ones((n, n)) / n
    M = topology.second_moment()
    M = P @ ((M + M.T) / 2) @ P
    return float(np.linalg.eigvalsh(M)[-1])

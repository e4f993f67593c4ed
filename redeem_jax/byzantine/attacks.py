"""Byzantine attacks: what the f Byzantine nodes send.

Three kinds, all pure and jittable (see ``docs/attacks.md``):

* **Vector attacks** (the server / ByzFL setting): ``atk = get(name)``,
  ``atk(honest [h, d], f, key, **options) -> [f, d]``. ``f`` is a static int;
  the attacker is omniscient and sees every honest vector. The f rows are
  identical unless the attack says otherwise (``gaussian``).
* **Edge attacks** (decentralized gossip): ``edge = get_edge_attack(name)``,
  ``edge(messages [n, K, d], x [n, d], neighbors, weights, self_weight,
  edge_mask, byzantine bool[n], key, **options) -> messages``. Only slots whose
  sender ``neighbors[i, k]`` is Byzantine, with ``edge_mask`` True and an
  honest target ``i``, are overwritten; every other slot is returned as is.
* **Data poisoning**: :func:`label_flip`, :func:`poison_node_data`.

Every vector attack also takes the keyword options ``mask`` (bool ``[h]``:
which rows of ``honest`` are real) and ``num_byzantine`` (a possibly traced
count used in place of ``f`` in the attack's statistics). :func:`lift` uses
them to apply a vector attack at every node of a graph, where the number of
honest and Byzantine in-neighbours differs from node to node, with static
shapes.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from redeem_jax import _threefry
from redeem_jax.metrics import masked_mean, weighted_rows

_threefry.install()  # same random bits, drawn ~10x faster on CPU (docs/performance.md)

__all__ = [
    "get",
    "ATTACKS",
    "get_edge_attack",
    "EDGE_ATTACKS",
    "sign_flip",
    "gaussian",
    "huge",
    "inf",
    "nan",
    "alie",
    "alie_z_max",
    "ipm",
    "mimic",
    "alie_opt",
    "ipm_opt",
    "sign_flip_opt",
    "label_flip",
    "poison_node_data",
    "dissensus",
    "make_spectral_attack",
    "lift",
    "STRENGTH",
]

_P_CLIP = 1e-6  # keeps Phi^-1 finite when n, f make ALIE's quantile degenerate
_HI = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------- #
# Shared helpers
# --------------------------------------------------------------------------- #
def _float_dtype(dtype, where: str):
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"attacks.{where}: got {dtype.name} rows; attacks forge float vectors, cast the honest "
            "rows / messages to a float dtype (float32, bfloat16, ...) first"
        )
    return dtype


def _vector_attack(fn):
    """A vector attack computed in ``promote(dtype, float32)`` and returned in the honest rows'
    dtype: float16 / bfloat16 means, standard deviations, SVDs and line searches overflow or
    lose precision (ALIE's squared deviations pass 65504 at |x| ≈ 256). Integer rows are refused."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(honest, f, key=None, **options):
        honest = jnp.asarray(honest)
        dt = _float_dtype(honest.dtype, name)
        return fn(honest.astype(jnp.promote_types(dt, jnp.float32)), f, key, **options).astype(dt)

    return wrapper


def _edge_attack(fn):
    """An edge attack computed in ``promote(dtype, float32)`` and returned in the messages'
    dtype; integer messages are refused."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(messages, x, neighbors, weights, self_weight, edge_mask, *args, **options):
        messages, x = jnp.asarray(messages), jnp.asarray(x)
        dt = _float_dtype(messages.dtype, name)
        _float_dtype(x.dtype, name)
        ct = jnp.promote_types(dt, jnp.float32)
        out = fn(messages.astype(ct), x.astype(ct), neighbors, weights, self_weight, edge_mask, *args, **options)
        return out.astype(dt)

    return wrapper


def _check(honest, f):
    honest = jnp.asarray(honest)
    if honest.ndim != 2:
        raise ValueError(f"honest must be [h, d], got shape {honest.shape}")
    if isinstance(f, bool) or not isinstance(f, (int, np.integer)):
        raise ValueError(f"f must be a static Python int, got {f!r}")
    if f < 0:
        raise ValueError(f"f must be >= 0, got {f}")
    return honest, int(f)


def _rows(v, f):
    return jnp.broadcast_to(v, (f,) + v.shape)


def _mean(x, mask):
    if mask is None:
        return masked_mean(x)
    m = jnp.asarray(mask, bool)
    # where, not multiply: a masked-out row may hold NaN/inf (0 * NaN is NaN in the GEMV).
    return masked_mean(jnp.where(m[:, None], x, 0), m)


def _std(x, mask, mu):
    sq = jnp.square(x - mu)
    if mask is None:
        return jnp.sqrt(weighted_rows(jnp.full((x.shape[0],), 1.0, x.dtype), sq) / max(x.shape[0] - 1, 1))
    m = jnp.asarray(mask, bool)
    # ddof = 1 as in Baruch et al.; one valid row gives std 0 rather than NaN.
    dof = jnp.maximum(jnp.sum(m) - 1, 1).astype(x.dtype)
    return jnp.sqrt(weighted_rows(m.astype(x.dtype), jnp.where(m[:, None], sq, 0)) / dof)


# --------------------------------------------------------------------------- #
# Vector attacks
# --------------------------------------------------------------------------- #
@_vector_attack
def sign_flip(honest, f: int, key=None, *, scale=1.0, mask=None, num_byzantine=None):
    """Sign flipping: every Byzantine vector is ``-scale * mean(honest)``.

    The reversed-gradient attack of Allen-Zhu et al. (2020) / Karimireddy et al.
    (2021) as implemented in ByzFL ("SignFlipping"); ``scale = 1``.
    """
    honest, f = _check(honest, f)
    return _rows(-scale * _mean(honest, mask), f)


@_vector_attack
def ipm(honest, f: int, key=None, *, epsilon=0.1, mask=None, num_byzantine=None):
    """Inner-product manipulation, "fall of empires" (Xie, Koyejo & Gupta 2020, Sec. 3).

    Every Byzantine vector is ``-epsilon * mean(honest)``: small ``epsilon``
    (0.1) makes the aggregate's inner product with the true gradient negative
    against median-like rules, large ``epsilon`` (~2+) against the mean.
    """
    honest, f = _check(honest, f)
    return _rows(-epsilon * _mean(honest, mask), f)


@_vector_attack
def gaussian(honest, f: int, key=None, *, sigma=1.0, centered=True, mask=None, num_byzantine=None):
    """Gaussian attack: ``mean(honest) + N(0, sigma^2 I)``, independent per attacker.

    The random-noise Byzantine baseline (Blanchard et al. 2017, Sec. 5; ByzFL
    "Gaussian"). ``centered=False`` sends pure noise ``N(0, sigma^2 I)``.
    Needs ``key``.
    """
    honest, f = _check(honest, f)
    if key is None:
        raise ValueError("gaussian attack needs a PRNG key")
    noise = sigma * jax.random.normal(key, (f, honest.shape[1]), honest.dtype)
    return _mean(honest, mask)[None] + noise if centered else noise


@_vector_attack
def huge(honest, f: int, key=None, *, value=1e38, mask=None, num_byzantine=None):
    """Huge values: ``value`` (default 1e38, near float32's max) in every coordinate.

    Breaks the mean (Blanchard et al. 2017, Lemma 1) and overflows any rule that
    squares or sums raw inputs. In float16 1e38 is already +inf.
    """
    honest, f = _check(honest, f)
    return jnp.full((f, honest.shape[1]), value, honest.dtype)


@_vector_attack
def inf(honest, f: int, key=None, *, mask=None, num_byzantine=None):
    """+inf in every coordinate: the non-finite input robust rules must survive (DESIGN.md)."""
    honest, f = _check(honest, f)
    return jnp.full((f, honest.shape[1]), jnp.inf, honest.dtype)


@_vector_attack
def nan(honest, f: int, key=None, *, mask=None, num_byzantine=None):
    """NaN in every coordinate: the non-finite input robust rules must survive (DESIGN.md)."""
    honest, f = _check(honest, f)
    return jnp.full((f, honest.shape[1]), jnp.nan, honest.dtype)


def alie_z_max(n: int, f: int) -> float:
    """ALIE's factor ``z_max = Phi^-1((n - f - s) / (n - f))``, ``s = floor(n/2 + 1) - f``.

    Baruch, Baruch & Goldberg (2019), Sec. 4 ("A little is enough"): the largest
    z for which the Byzantine vector still looks closer to the centre than
    enough honest ones. It is <= 0 for small f (n = 50: f = 5 -> 0.084,
    f = 10 -> 0.253). The quantile is clipped to ``[1e-6, 1 - 1e-6]`` where
    n, f make it degenerate (``f >= n/2``, or ``n - f < 2``).
    """
    n, f = int(n), int(f)
    if n - f < 1:
        raise ValueError(f"alie_z_max: need n > f, got n={n}, f={f}")
    s = math.floor(n / 2 + 1) - f
    p = (n - f - s) / (n - f)
    p = min(max(p, _P_CLIP), 1 - _P_CLIP)
    return statistics.NormalDist().inv_cdf(p)


def _alie_z_traced(n, f):
    s = jnp.floor(n / 2 + 1) - f
    p = (n - f - s) / jnp.maximum(n - f, 1)
    return jax.scipy.special.ndtri(jnp.clip(p, _P_CLIP, 1 - _P_CLIP))


def _alie_factor(h, f, z, mask, num_byzantine):
    if z is not None:
        return z
    if mask is None and num_byzantine is None:
        return alie_z_max(h + f, f)
    hc = h if mask is None else jnp.sum(jnp.asarray(mask, bool))
    fc = f if num_byzantine is None else num_byzantine
    return _alie_z_traced(jnp.asarray(hc + fc, jnp.float32), jnp.asarray(fc, jnp.float32))


@_vector_attack
def alie(honest, f: int, key=None, *, z=None, mask=None, num_byzantine=None):
    """A Little Is Enough (Baruch, Baruch & Goldberg 2019, Alg. 3): ``mean - z * std``.

    Coordinate-wise mean and standard deviation (ddof = 1) of the honest
    vectors. By default ``z = z_max(n, f)`` with ``n = h + f``
    (:func:`alie_z_max`); pass ``z`` for a fixed factor (ByzFL uses 1.5).
    """
    honest, f = _check(honest, f)
    mu = _mean(honest, mask)
    sd = _std(honest, mask, mu)
    zf = _alie_factor(honest.shape[0], f, z, mask, num_byzantine)
    return _rows(mu - jnp.asarray(zf, honest.dtype) * sd, f)


@_vector_attack
def mimic(honest, f: int, key=None, *, mask=None, num_byzantine=None):
    """Mimic (Karimireddy, He & Jaggi 2022, Sec. 5): all f copy one honest vector.

    The copied worker is the one with the largest ``|projection|`` on the top
    principal direction of the centred honest vectors (exact SVD), the worker
    whose over-representation most biases the aggregate under heterogeneity.
    Ties go to the lowest index. (The paper tracks the direction online across
    rounds; this is the one-round, exact version.)
    """
    honest, f = _check(honest, f)
    mu = _mean(honest, mask)
    c = honest - mu
    if mask is not None:
        c = jnp.where(jnp.asarray(mask, bool)[:, None], c, 0)
    u, s, _ = jnp.linalg.svd(c, full_matrices=False)
    score = jnp.abs(u[:, 0] * s[0])
    if mask is not None:
        score = jnp.where(jnp.asarray(mask, bool), score, -1.0)
    return _rows(honest[jnp.argmax(score)], f)


# --------------------------------------------------------------------------- #
# Optimized (line-searched) attacks
# --------------------------------------------------------------------------- #
def _default_grid(dtype):
    # Geometric: the damaging factor spans orders of magnitude across rules.
    # 24 points (×1.5 apart) resolve the damage curve; each costs one aggregation per round.
    return jnp.geomspace(1e-2, 1e2, 24, dtype=dtype)


def _line_search(honest, f, mask, make_byz, default, grid, aggregator, agg_f):
    """Return ``make_byz(a*)``, ``a*`` maximising ``||agg(honest + byz) - mean(honest)||`` on the grid.

    The default factor is appended to the grid, so the optimized attack never
    does less damage than the fixed-factor one.
    """
    if aggregator is None:
        raise ValueError("optimized attacks need aggregator=, a callable agg(x, f) -> [d]")
    dt = honest.dtype
    g = _default_grid(dt) if grid is None else jnp.asarray(grid, dt).reshape(-1)
    g = jnp.concatenate([g, jnp.reshape(jnp.asarray(default, dt), (1,))])
    mu = _mean(honest, mask)
    af = f if agg_f is None else agg_f
    if mask is not None:
        full_mask = jnp.concatenate([jnp.asarray(mask, bool), jnp.ones((f,), bool)])

    def damage(a):
        x = jnp.concatenate([honest, make_byz(a)], axis=0)
        out = aggregator(x, af) if mask is None else aggregator(x, af, mask=full_mask)
        dmg = jnp.linalg.norm(out - mu)
        # NaN damage means the aggregator failed loudly; never prefer it.
        return jnp.where(jnp.isnan(dmg), -jnp.inf, dmg)

    # lax.map, not vmap: the grid's aggregations run one after another in a fixed memory
    # footprint (vmapping sort-heavy rules over the grid was 2x slower on CPU).
    best = g[jnp.argmax(jax.lax.map(damage, g))]
    return make_byz(best)


@_vector_attack
def alie_opt(
    honest, f: int, key=None, *, aggregator=None, z=None, grid=None, agg_f=None, mask=None, num_byzantine=None
):
    """Optimized ALIE: ``mean - z * std`` with z line-searched against ``aggregator``.

    Baruch et al. (2019)'s direction, with the factor chosen (as in ByzFL's
    "Optimal ALIE" / Allouah et al. 2023) to maximise
    ``||aggregator(honest ++ byz, f) - mean(honest)||`` over a static grid
    (default ``geomspace(1e-2, 1e2, 24)`` plus the default factor ``z`` or
    ``z_max``), evaluated over the grid with ``lax.map``. ``agg_f`` overrides the f passed to the
    aggregator.
    """
    honest, f = _check(honest, f)
    mu = _mean(honest, mask)
    sd = _std(honest, mask, mu)
    z0 = _alie_factor(honest.shape[0], f, z, mask, num_byzantine)
    return _line_search(honest, f, mask, lambda a: _rows(mu - a * sd, f), z0, grid, aggregator, agg_f)


@_vector_attack
def ipm_opt(
    honest, f: int, key=None, *, aggregator=None, epsilon=0.1, grid=None, agg_f=None, mask=None, num_byzantine=None
):
    """Optimized IPM: ``-epsilon * mean`` with epsilon line-searched against ``aggregator``.

    Xie et al. (2020)'s direction; the factor maximises
    ``||aggregator(honest ++ byz, f) - mean(honest)||`` over a static grid
    (default ``geomspace(1e-2, 1e2, 24)`` plus ``epsilon``), evaluated with ``lax.map``.
    """
    honest, f = _check(honest, f)
    mu = _mean(honest, mask)
    return _line_search(honest, f, mask, lambda a: _rows(-a * mu, f), epsilon, grid, aggregator, agg_f)


@_vector_attack
def sign_flip_opt(
    honest, f: int, key=None, *, aggregator=None, scale=1.0, grid=None, agg_f=None, mask=None, num_byzantine=None
):
    """Optimized sign flipping: ``-scale * mean`` with scale line-searched against ``aggregator``.

    Same search as :func:`ipm_opt` (the two attacks share a direction) but
    starting from the sign-flip factor ``scale = 1`` (Allen-Zhu et al. 2020).
    """
    honest, f = _check(honest, f)
    mu = _mean(honest, mask)
    return _line_search(honest, f, mask, lambda a: _rows(-a * mu, f), scale, grid, aggregator, agg_f)


_VECTOR = {
    "sign_flip": sign_flip,
    "gaussian": gaussian,
    "huge": huge,
    "inf": inf,
    "nan": nan,
    "alie": alie,
    "ipm": ipm,
    "mimic": mimic,
    "alie_opt": alie_opt,
    "ipm_opt": ipm_opt,
    "sign_flip_opt": sign_flip_opt,
}
ATTACKS = tuple(_VECTOR)


def get(name: str, **options) -> Callable:
    """Resolve a vector attack by name: ``get("alie")(honest, f, key) -> [f, d]``.

    ``options`` are bound with ``functools.partial`` (e.g. ``get("alie", z=1.5)``).
    """
    key = str(name).lower().replace("-", "_")
    if key not in _VECTOR:
        raise ValueError(f"unknown attack {name!r}; expected one of {ATTACKS}")
    fn = _VECTOR[key]
    return functools.partial(fn, **options) if options else fn


# --------------------------------------------------------------------------- #
# Data poisoning
# --------------------------------------------------------------------------- #
def label_flip(y, num_classes: int):
    """Label flipping ``y -> num_classes - 1 - y`` (Allen-Zhu et al. 2020; ByzFL "LabelFlipping")."""
    y = jnp.asarray(y)
    return (num_classes - 1 - y).astype(y.dtype)


def poison_node_data(node_data, byzantine_mask, num_classes: int):
    """Flip the labels (:func:`label_flip`) of the Byzantine nodes' real rows in a NodeData.

    Padding rows beyond ``sizes[i]`` keep their zeros, so padded data stays
    recognisable; honest nodes are untouched.
    """
    y = jnp.asarray(node_data.y)
    b = jnp.asarray(byzantine_mask, bool)
    if b.shape != (y.shape[0],):
        raise ValueError(f"byzantine_mask must be bool[{y.shape[0]}], got shape {b.shape}")
    real = jnp.arange(y.shape[1])[None, :] < jnp.asarray(node_data.sizes)[:, None]
    sel = (b[:, None] & real).reshape(real.shape + (1,) * (y.ndim - 2))
    return node_data._replace(y=jnp.where(sel, label_flip(y, num_classes), y))


# --------------------------------------------------------------------------- #
# Edge (decentralized) attacks
# --------------------------------------------------------------------------- #
def _slots(neighbors, edge_mask, byzantine):
    """``(byz_slot, honest_slot)`` bool ``[n, K]``.

    byz_slot: a real edge from a Byzantine sender into an honest target (the
    only slots an attack writes). honest_slot: a real edge from an honest sender.
    """
    byzantine = jnp.asarray(byzantine, bool)
    neighbors = jnp.asarray(neighbors)
    edge_mask = jnp.asarray(edge_mask, bool)
    byz_sender = byzantine[neighbors]
    byz_slot = edge_mask & byz_sender & ~byzantine[:, None]
    honest_slot = edge_mask & ~byz_sender
    return byz_slot, honest_slot


def _write(messages, byz_slot, new):
    return jnp.where(byz_slot[..., None], new, messages).astype(messages.dtype)


def _byz_weight(weights, byz_slot):
    delta = jnp.sum(jnp.where(byz_slot, weights, 0), axis=1)
    return delta, jnp.where(delta > 0, delta, 1)


@_edge_attack
def dissensus(messages, x, neighbors, weights, self_weight, edge_mask, byzantine, key=None, *, epsilon=1.5):
    """Dissensus (He, Karimireddy & Jaggi 2022, Sec. 5): reverse the honest gossip update.

    Every Byzantine neighbour of an honest target ``i`` sends
    ``x_i - epsilon * H_i / delta_i`` with ``H_i = sum_{honest k} W_ik (m_ik - x_i)``
    (``m_ik`` the honest message, ``= x_j`` in plain gossip) and
    ``delta_i = sum_{Byzantine k} W_ik``. The gossip update at ``i`` becomes
    ``x_i + (1 - epsilon) H_i``: cancelled at ``epsilon = 1``, reversed at
    ``epsilon = 2`` (the paper uses 1.5). Masked sums over the K slots; no loop.
    """
    messages = jnp.asarray(messages)
    x = jnp.asarray(x).astype(messages.dtype)
    w = jnp.asarray(weights).astype(messages.dtype)
    byz_slot, honest_slot = _slots(neighbors, edge_mask, byzantine)
    diff = messages - x[:, None, :]
    # where, not multiply: a message already overwritten with NaN must not leak in.
    H = jnp.sum(jnp.where(honest_slot[..., None], w[..., None] * diff, 0), axis=1)
    _, safe = _byz_weight(w, byz_slot)
    new = x - epsilon * H / safe[:, None]
    return _write(messages, byz_slot, new[:, None, :])


def make_spectral_attack(topology, byzantine, epsilon: float = 1.0, direction=None, round=None):
    """Spectral attack (Gaucher, Dieuleveut & Hendrikx 2025): push along the honest Fiedler vector.

    ``u`` is the unit Fiedler vector of the honest subgraph's Laplacian
    (:func:`redeem_jax.byzantine.fiedler_vector`, numpy ``eigh`` on the host,
    once). The returned edge attack makes every Byzantine neighbour of an
    honest target ``i`` send ``x_i + epsilon * u_i * v / delta_i``, with ``v``
    the unit ``direction`` (default ``1/sqrt(d)``) and ``delta_i`` the Byzantine
    weight at ``i``; so the Byzantine part of ``i``'s gossip update is exactly
    ``epsilon * u_i * v``. Gossip then reaches the honest fixed point
    ``L_H x_H = epsilon * (u ⊙ 1[delta > 0]) v^T``; when every honest node has
    a Byzantine neighbour it is ``x_H = (epsilon / lambda_2) u v^T``: the
    slowest-mixing mode, amplified by ``1/lambda_2``.
    """
    from redeem_jax.byzantine import placement as _byz

    u_host = _byz.fiedler_vector(topology, byzantine, round)
    mask_host = np.asarray(byzantine, bool)
    default_eps, default_dir = epsilon, direction

    @_edge_attack
    def spectral(
        messages,
        x,
        neighbors,
        weights,
        self_weight,
        edge_mask,
        byzantine=mask_host,
        key=None,
        *,
        epsilon=default_eps,
        direction=default_dir,
    ):
        messages = jnp.asarray(messages)
        dt = messages.dtype
        x = jnp.asarray(x).astype(dt)
        w = jnp.asarray(weights).astype(dt)
        d = messages.shape[-1]
        if direction is None:
            v = jnp.full((d,), 1.0 / math.sqrt(d), dt)
        else:
            v = jnp.asarray(direction, dt).reshape(d)
            v = v / jnp.linalg.norm(v)
        byz_slot, _ = _slots(neighbors, edge_mask, byzantine)
        _, safe = _byz_weight(w, byz_slot)
        u = jnp.asarray(u_host, dt)
        new = x + epsilon * (u / safe)[:, None] * v[None, :]
        return _write(messages, byz_slot, new[:, None, :])

    spectral.fiedler = u_host
    return spectral


def lift(vector_attack, **options) -> Callable:
    """Turn a vector attack into an edge attack (ByzFL-style attacks on a graph).

    Every Byzantine sender into honest target ``i`` sends the vector attack
    computed from ``i``'s honest in-neighbours' messages, with ``f`` = the
    number of ``i``'s Byzantine in-neighbours (as a server would see it;
    cf. He, Karimireddy & Jaggi 2022, Sec. 5). Vmapped over targets with the
    attack's ``mask`` / ``num_byzantine`` options, so shapes stay static; the
    attack is called with static ``f = K`` (one row per slot). Optimized
    attacks under ``lift`` call ``aggregator(x, agg_f or K, mask=...)``.
    ``vector_attack`` may be a name. Byzantine -> Byzantine slots are unchanged.
    """
    atk = get(vector_attack) if isinstance(vector_attack, str) else vector_attack

    @_edge_attack
    def lifted(messages, x, neighbors, weights, self_weight, edge_mask, byzantine, key=None, **call_options):
        opts = {**options, **call_options}
        messages = jnp.asarray(messages)
        n, K, _ = messages.shape
        byz_slot, honest_slot = _slots(neighbors, edge_mask, byzantine)
        nbyz = jnp.sum(byz_slot, axis=1)

        def per_target(m_i, h_i, b_i, k_i):
            return atk(m_i, K, k_i, mask=h_i, num_byzantine=b_i, **opts)

        if key is None:
            out = jax.vmap(lambda m, h, b: per_target(m, h, b, None))(messages, honest_slot, nbyz)
        else:
            out = jax.vmap(per_target)(messages, honest_slot, nbyz, jax.random.split(key, n))
        return _write(messages, byz_slot, out)

    return lifted


_EDGE = {"dissensus": dissensus}

# Each attack's main factor, set by ``config.byzantine.strength`` (ALIE's z, IPM's ε, ...).
STRENGTH = {
    "sign_flip": "scale",
    "sign_flip_opt": "scale",
    "gaussian": "sigma",
    "huge": "value",
    "alie": "z",
    "alie_opt": "z",
    "ipm": "epsilon",
    "ipm_opt": "epsilon",
    "dissensus": "epsilon",
    "spectral": "epsilon",
}
EDGE_ATTACKS = ("dissensus", "spectral") + tuple(f"lift:{a}" for a in ATTACKS)


def get_edge_attack(name: str, **options) -> Callable:
    """Resolve an edge attack: ``"dissensus"``, or ``"lift:<vector attack>"`` (:func:`lift`).

    The spectral attack depends on the graph and the Byzantine set: build it
    with :func:`make_spectral_attack`. ``options`` are bound to the function.
    """
    key = str(name).lower().replace("-", "_")
    if key == "spectral":
        raise ValueError(
            "the spectral attack needs the topology: use attacks.make_spectral_attack(topology, byzantine, epsilon=...)"
        )
    if key.startswith("lift:"):
        return lift(key[5:], **options)
    if key not in _EDGE:
        raise ValueError(f"unknown edge attack {name!r}; expected one of {EDGE_ATTACKS}")
    fn = _EDGE[key]
    return functools.partial(fn, **options) if options else fn

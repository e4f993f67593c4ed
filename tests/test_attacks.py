"""Attacks (vector, edge, data poisoning) and Byzantine placement.

Properties and independent NumPy references written from the papers'
definitions; no golden numbers that depend on PRNG internals.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm as scipy_norm

from redeem_jax import attacks, byzantine, gossip
from redeem_jax import topology as T
from redeem_jax.data.sampling import NodeData


# --------------------------------------------------------------------------- #
# Stand-in aggregators (the real ones live in redeem_jax.aggregators)
# --------------------------------------------------------------------------- #
def agg_mean(x, f):
    return jnp.mean(x, axis=0)


def agg_median(x, f):
    return jnp.median(x, axis=0)


def agg_trimmed_mean(x, f):
    s = jnp.sort(x, axis=0)
    return jnp.mean(s[f : x.shape[0] - f], axis=0)


def agg_masked_mean(x, f, mask=None):
    m = jnp.ones(x.shape[0], bool) if mask is None else mask
    return jnp.sum(jnp.where(m[:, None], x, 0), 0) / jnp.maximum(jnp.sum(m), 1)


def _honest(h=12, d=6, seed=0, shift=1.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(h, d)) + shift).astype(np.float32)


def _opts(name):
    return {"aggregator": agg_median} if name.endswith("_opt") else {}


# --------------------------------------------------------------------------- #
# Vector attacks
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", attacks.ATTACKS)
@pytest.mark.parametrize("f", [0, 1, 4])
def test_shapes_dtypes_jit(name, f):
    x = jnp.asarray(_honest(9, 5))
    atk = attacks.get(name, **_opts(name))
    out = jax.jit(atk, static_argnums=1)(x, f, jax.random.PRNGKey(0))
    assert out.shape == (f, 5) and out.dtype == jnp.float32


def test_registry_errors_and_binding():
    with pytest.raises(ValueError, match="unknown attack"):
        attacks.get("nope")
    x = jnp.asarray(_honest())
    np.testing.assert_array_equal(attacks.get("alie", z=1.5)(x, 2), attacks.alie(x, 2, z=1.5))
    with pytest.raises(ValueError, match="aggregator"):
        attacks.alie_opt(x, 2)
    with pytest.raises(ValueError, match="key"):
        attacks.gaussian(x, 2)
    with pytest.raises(ValueError):
        attacks.sign_flip(x[0], 2)


def test_sign_flip_and_ipm_closed_forms():
    x = jnp.asarray(_honest())
    mean = np.asarray(x, np.float64).mean(axis=0)  # the closed form, in float64
    out = attacks.sign_flip(x, 3)
    np.testing.assert_allclose(out, np.broadcast_to(-mean, (3, x.shape[1])), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(attacks.sign_flip(x, 2, scale=4.0), -4.0 * np.stack([mean] * 2), rtol=1e-6)
    for eps in (0.1, 2.0):
        kw = {} if eps == 0.1 else {"epsilon": eps}
        np.testing.assert_allclose(attacks.ipm(x, 3, **kw), np.stack([-eps * np.asarray(mean)] * 3), rtol=1e-6)


def test_constant_attacks():
    x = jnp.asarray(_honest())
    assert np.all(np.asarray(attacks.huge(x, 2)) == np.float32(1e38))
    assert np.all(np.asarray(attacks.huge(x, 2, value=-5.0)) == -5.0)
    assert np.all(np.isposinf(attacks.inf(x, 2)))
    assert np.all(np.isnan(attacks.nan(x, 2)))


def test_gaussian_statistics():
    x = jnp.asarray(_honest(8, 20000, shift=3.0))
    out = np.asarray(attacks.gaussian(x, 3, jax.random.PRNGKey(0), sigma=2.0))
    noise = out - np.asarray(x).mean(0)
    # 60000 iid N(0, 4) draws: mean within ~5 standard errors, std within 2%.
    assert abs(noise.mean()) < 5 * 2.0 / np.sqrt(noise.size)
    assert abs(noise.std() / 2.0 - 1) < 0.02
    assert not np.allclose(out[0], out[1])  # independent attackers
    pure = np.asarray(attacks.gaussian(x, 2, jax.random.PRNGKey(1), sigma=1.0, centered=False))
    assert abs(pure.mean()) < 5 / np.sqrt(pure.size)


@pytest.mark.parametrize("n,f,z", [(50, 5, 0.084), (50, 10, 0.253)])
def test_alie_z_max_field_notes(n, f, z):
    assert round(attacks.alie_z_max(n, f), 3) == z
    s = np.floor(n / 2 + 1) - f
    assert attacks.alie_z_max(n, f) == pytest.approx(scipy_norm.ppf((n - f - s) / (n - f)), abs=1e-9)


def test_alie_z_max_nonpositive_for_small_f():
    assert attacks.alie_z_max(50, 1) <= 0.0
    assert attacks.alie_z_max(51, 1) <= 0.0


@pytest.mark.parametrize("z", [None, 1.5])
def test_alie_matches_numpy(z):
    h, f = 45, 5
    xn = _honest(h, 7, seed=3)
    zz = attacks.alie_z_max(h + f, f) if z is None else z
    ref = xn.mean(0) - zz * xn.std(0, ddof=1)
    out = attacks.alie(jnp.asarray(xn), f, z=z)
    np.testing.assert_allclose(out, np.stack([ref] * f), rtol=1e-5, atol=1e-6)
    if z is None:
        # The traced z_max (used under lift) agrees with the host one.
        out_m = attacks.alie(jnp.asarray(xn), f, mask=jnp.ones(h, bool), num_byzantine=f)
        np.testing.assert_allclose(out_m, out, rtol=1e-5, atol=1e-6)


def test_mimic_copies_top_projection_row():
    rng = np.random.default_rng(1)
    dirn = rng.normal(size=10)
    xn = (rng.normal(size=(15, 1)) * 3 * dirn + 0.1 * rng.normal(size=(15, 10)) + 2).astype(np.float32)
    c = xn - xn.mean(0)
    _, _, vt = np.linalg.svd(c.astype(np.float64), full_matrices=False)
    i_ref = int(np.argmax(np.abs(c @ vt[0])))
    out = np.asarray(attacks.mimic(jnp.asarray(xn), 4))
    assert out.shape == (4, 10)
    np.testing.assert_array_equal(out, np.stack([xn[i_ref]] * 4))


def _damage(agg, honest, byz, f):
    return float(jnp.linalg.norm(agg(jnp.concatenate([honest, byz]), f) - jnp.mean(honest, 0)))


@pytest.mark.parametrize("agg", [agg_trimmed_mean, agg_median], ids=["trimmed_mean", "median"])
@pytest.mark.parametrize("opt,fixed", [("alie_opt", "alie"), ("ipm_opt", "ipm"), ("sign_flip_opt", "sign_flip")])
def test_optimized_at_least_as_damaging(agg, opt, fixed):
    f = 4
    for seed in range(3):
        x = jnp.asarray(_honest(16, 8, seed=seed, shift=0.5))
        atk = jax.jit(functools.partial(attacks.get(opt), aggregator=agg), static_argnums=1)
        d_opt = _damage(agg, x, atk(x, f), f)
        d_fix = _damage(agg, x, attacks.get(fixed)(x, f), f)
        assert d_opt >= d_fix * (1 - 1e-5) - 1e-6
    assert d_opt > 0


def test_optimized_custom_grid_and_beats_fixed_against_mean():
    x = jnp.asarray(_honest(16, 8, shift=1.0))
    # Against the mean the damage grows with the factor: the search picks the largest.
    out = attacks.ipm_opt(x, 3, aggregator=agg_mean, grid=jnp.array([0.5, 1.0, 7.0]))
    np.testing.assert_allclose(out, np.stack([-7.0 * np.asarray(x).mean(0)] * 3), rtol=1e-6)


# --------------------------------------------------------------------------- #
# Data poisoning
# --------------------------------------------------------------------------- #
def test_label_flip_and_poison_node_data():
    y = jnp.arange(10)
    np.testing.assert_array_equal(attacks.label_flip(y, 10), 9 - np.arange(10))
    ys = jnp.asarray(np.random.default_rng(0).integers(0, 10, size=(4, 5)), jnp.int32)
    sizes = jnp.array([5, 3, 5, 2], jnp.int32)
    ys = jnp.where(jnp.arange(5)[None] < sizes[:, None], ys, 0)  # zero padding, as stack_parts
    nd = NodeData(x=jnp.zeros((4, 5, 3)), y=ys, sizes=sizes)
    b = np.array([False, True, False, True])
    out = attacks.poison_node_data(nd, b, 10)
    assert isinstance(out, NodeData) and out.y.dtype == ys.dtype
    np.testing.assert_array_equal(out.y[~b], ys[~b])
    for i in np.flatnonzero(b):
        s = int(sizes[i])
        np.testing.assert_array_equal(out.y[i, :s], 9 - ys[i, :s])
        np.testing.assert_array_equal(out.y[i, s:], 0)
    assert out.x is nd.x and out.sizes is nd.sizes


# --------------------------------------------------------------------------- #
# Edge attacks
# --------------------------------------------------------------------------- #
def _setup(topo, byz, d=3, seed=0):
    nb, w, sw, em = topo.edge_arrays()
    x = jax.random.normal(jax.random.PRNGKey(seed), (topo.n, d))
    return x, gossip.gather(topo, x), nb, w, sw, em, jnp.asarray(byz)


def _assert_only_byzantine_slots(before, after, nb, em, byz):
    byz = np.asarray(byz)
    slot = np.asarray(em) & byz[np.asarray(nb)] & ~byz[:, None]
    np.testing.assert_array_equal(np.asarray(after)[~slot], np.asarray(before)[~slot])
    assert np.any(np.asarray(after)[slot] != np.asarray(before)[slot])


@pytest.mark.parametrize("eps", [1.0, 1.5, 2.0])
def test_dissensus_closed_form_with_combine(eps):
    topo = T.erdos_renyi(10, 0.5, seed=2)
    byz = byzantine.place(topo, 3, seed=1)
    x, m, nb, w, sw, em, b = _setup(topo, byz)
    out = jax.jit(functools.partial(attacks.dissensus, epsilon=eps))(m, x, nb, w, sw, em, b)
    _assert_only_byzantine_slots(m, out, nb, em, byz)
    W = topo.mixing_matrix()
    xn = np.asarray(x, np.float64)
    new = np.asarray(gossip.combine(x, out, w, sw))
    delta = byzantine.byzantine_weight(topo, byz)
    for i in np.flatnonzero(~byz):
        hon = [j for j in range(topo.n) if j != i and not byz[j] and W[i, j] > 0]
        H = sum(W[i, j] * (xn[j] - xn[i]) for j in hon)
        # Honest part of the update scaled by (1 - eps): cancelled at 1, reversed at 2.
        expect = xn[i] + (1 - eps) * H if delta[i] > 0 else xn[i] + H
        np.testing.assert_allclose(new[i], expect, rtol=1e-4, atol=1e-5)


def test_dissensus_keeps_honest_nodes_apart():
    topo = T.complete(8)
    byz = byzantine.place(topo, 2, method="given", ids=[0, 5])
    x, m, nb, w, sw, em, b = _setup(topo, byz, d=4, seed=3)
    h = ~byz
    out = attacks.get_edge_attack("dissensus")(m, x, nb, w, sw, em, b)
    attacked = gossip.combine(x, out, w, sw)
    plain = gossip.combine(x, m, w, sw)
    cd0 = float(gossip.consensus_distance(x[h]))
    assert float(gossip.consensus_distance(attacked[h])) >= cd0
    assert float(gossip.consensus_distance(plain[h])) < cd0


def test_dissensus_ignores_nan_in_byzantine_slots():
    topo = T.ring(6)
    byz = byzantine.place(topo, 1, method="given", ids=[2])
    x, m, nb, w, sw, em, b = _setup(topo, byz)
    m_nan = jnp.where(jnp.asarray(byz)[nb][..., None], jnp.nan, m)
    out = attacks.dissensus(m_nan, x, nb, w, sw, em, b)
    assert np.all(np.isfinite(np.asarray(out)[~byz]))


def _hub_path(h):
    """Honest path 0..h-1 plus node h connected to every honest node."""
    A = np.zeros((h + 1, h + 1), bool)
    for i in range(h - 1):
        A[i, i + 1] = A[i + 1, i] = True
    A[h, :h] = A[:h, h] = True
    return T.from_adjacency(A)


def test_spectral_messages_along_fiedler_and_fixed_point():
    h, eps = 6, 0.5
    topo = _hub_path(h)
    byz = np.zeros(h + 1, bool)
    byz[h] = True
    atk = attacks.make_spectral_attack(topo, byz, epsilon=eps)
    x, m, nb, w, sw, em, b = _setup(topo, byz, d=3)
    out = jax.jit(atk)(m, x, nb, w, sw, em, b)
    _assert_only_byzantine_slots(m, out, nb, em, byz)
    L = byzantine.honest_laplacian(topo, byz)
    lam, vec = np.linalg.eigh(L)
    u = atk.fiedler
    assert abs(abs(u[:h] @ vec[:, 1]) - 1) < 1e-8 and u[h] == 0
    delta = byzantine.byzantine_weight(topo, byz)
    v = np.ones(3) / np.sqrt(3)
    slot = np.asarray(em) & byz[np.asarray(nb)]
    for i, k in zip(*np.nonzero(slot)):
        push = (np.asarray(out)[i, k] - np.asarray(x)[i]) * delta[i]
        np.testing.assert_allclose(push, eps * u[i] * v, atol=1e-5)

    # Gossip under the attack converges to x_H = (eps / lambda_2) u v^T from consensus.
    def step(xx, _):
        msgs = atk(gossip.gather(topo, xx), xx, nb, w, sw, em, b)
        return gossip.combine(xx, msgs, w, sw), None

    xT, _ = jax.lax.scan(step, jnp.zeros((h + 1, 3)), None, length=400)
    np.testing.assert_allclose(np.asarray(xT)[:h], eps / lam[1] * np.outer(u[:h], v), atol=1e-3)


def test_spectral_custom_direction_and_registry_message():
    topo = _hub_path(5)
    byz = np.array([False] * 5 + [True])
    atk = attacks.make_spectral_attack(topo, byz, epsilon=1.0, direction=jnp.array([0.0, 3.0]))
    x, m, nb, w, sw, em, b = _setup(topo, byz, d=2)
    out = np.asarray(atk(m, x, nb, w, sw, em, b))
    slot = np.asarray(em) & byz[np.asarray(nb)]
    np.testing.assert_allclose(out[slot][:, 0], np.asarray(x)[np.nonzero(slot)[0], 0], atol=1e-6)
    with pytest.raises(ValueError, match="make_spectral_attack"):
        attacks.get_edge_attack("spectral")
    with pytest.raises(ValueError, match="unknown edge attack"):
        attacks.get_edge_attack("nope")


@pytest.mark.parametrize(
    "name,opts", [("sign_flip", {}), ("ipm", {"epsilon": 0.5}), ("alie", {}), ("alie", {"z": 1.5}), ("mimic", {})]
)
def test_lift_matches_per_target_loop(name, opts):
    topo = T.erdos_renyi(14, 0.55, seed=4)
    byz = byzantine.place(topo, 4, seed=2)
    x, m, nb, w, sw, em, b = _setup(topo, byz, d=4, seed=5)
    lifted = attacks.lift(name, **opts)
    out = np.asarray(jax.jit(lifted)(m, x, nb, w, sw, em, b))
    _assert_only_byzantine_slots(m, out, nb, em, byz)
    nbn, emn, mn = np.asarray(nb), np.asarray(em), np.asarray(m)
    atk = attacks.get(name, **opts)
    checked = 0
    for i in np.flatnonzero(~byz):
        hon = emn[i] & ~byz[nbn[i]]
        bslots = np.flatnonzero(emn[i] & byz[nbn[i]])
        if bslots.size == 0 or hon.sum() < 2:
            continue
        ref = np.asarray(atk(jnp.asarray(mn[i][hon]), int(bslots.size)))
        for r, k in enumerate(bslots):
            np.testing.assert_allclose(out[i, k], ref[r], rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked >= 3
    # Byzantine -> Byzantine slots keep the gathered messages.
    bb = emn & byz[nbn] & byz[:, None]
    np.testing.assert_array_equal(out[bb], mn[bb])


def test_lift_random_and_optimized_attacks_jit():
    topo = T.ring(8)
    byz = byzantine.place(topo, 2, method="given", ids=[1, 4])
    x, m, nb, w, sw, em, b = _setup(topo, byz)
    g = attacks.get_edge_attack("lift:gaussian", sigma=0.1)
    out = jax.jit(g)(m, x, nb, w, sw, em, b, jax.random.PRNGKey(0))
    _assert_only_byzantine_slots(m, out, nb, em, byz)
    o = attacks.lift("alie_opt", aggregator=agg_masked_mean, agg_f=1)
    out = jax.jit(o)(m, x, nb, w, sw, em, b)
    _assert_only_byzantine_slots(m, out, nb, em, byz)
    assert np.all(np.isfinite(np.asarray(out)))


# --------------------------------------------------------------------------- #
# Placement and honest-subgraph helpers
# --------------------------------------------------------------------------- #
def test_place_random_exact_and_deterministic():
    topo = T.ring(20)
    a = byzantine.place(topo, 5, seed=3)
    assert a.dtype == bool and a.shape == (20,) and a.sum() == 5
    np.testing.assert_array_equal(a, byzantine.place(20, 5, seed=3))
    assert any(not np.array_equal(a, byzantine.place(20, 5, seed=s)) for s in range(4, 10))
    assert byzantine.place(20, 0).sum() == 0


def test_place_highest_degree_and_given():
    s = byzantine.place(T.star(9), 1, method="highest_degree")
    assert np.flatnonzero(s).tolist() == [0]
    # A ring is regular: ties go to the lowest ids.
    assert np.flatnonzero(byzantine.place(T.ring(9), 3, method="highest_degree")).tolist() == [0, 1, 2]
    g = byzantine.place(10, 3, method="given", ids=[7, 2, 4])
    assert np.flatnonzero(g).tolist() == [2, 4, 7]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(f=-1),
        dict(f=10),
        dict(f=11),
        dict(f=2, method="bogus"),
        dict(f=2, method="given", ids=[1]),
        dict(f=2, method="given", ids=[1, 10]),
        dict(f=2, method="given", ids=[-1, 3]),
        dict(f=2, method="given", ids=[3, 3]),
        dict(f=2, method="given"),
        dict(f=2, method="highest_degree"),
    ],
)
def test_place_errors(kwargs):
    with pytest.raises(ValueError):
        byzantine.place(10, **kwargs)


def test_honest_subgraph_helpers():
    topo = T.erdos_renyi(9, 0.5, seed=1)
    byz = byzantine.place(topo, 3, seed=0)
    W = topo.mixing_matrix()
    delta = byzantine.byzantine_weight(topo, byz)
    for i in range(9):
        assert delta[i] == pytest.approx(sum(W[i, k] for k in np.flatnonzero(byz) if k != i))
    Whh, ids, dh = byzantine.honest_subgraph_weights(topo, byz)
    np.testing.assert_array_equal(ids, np.flatnonzero(~byz))
    np.testing.assert_allclose(Whh, W[np.ix_(ids, ids)])
    np.testing.assert_allclose(dh, delta[ids])
    L = byzantine.honest_laplacian(topo, byz)
    np.testing.assert_allclose(L.sum(1), 0, atol=1e-12)
    # Honest rows of W sum to 1, so L = I - W_HH - diag(delta) (the honest gossip generator).
    np.testing.assert_allclose(L, np.eye(len(ids)) - Whh - np.diag(dh), atol=1e-12)

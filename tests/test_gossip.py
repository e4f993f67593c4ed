"""Gossip: every implementation equals W @ x; gather/combine; measured contraction rate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from redeem_jax import gossip as G
from redeem_jax import topology as T

FAMILIES = [
    T.ring(16),
    T.path(9),
    T.torus(4),
    T.torus(3, 5),
    T.complete(6),
    T.star(7),
    T.hypercube(16),
    T.erdos_renyi(20, 0.3, seed=1),
    T.random_regular(14, 3, seed=2),
    T.exponential(16),
    T.exponential(12),
    T.one_peer_exponential(16),
    T.one_peer_exponential(12),
    T.small_world(18, 4, 0.3, seed=3),
    T.random_geometric(20, 0.45, seed=4),
    T.two_cliques(10),
    T.from_adjacency(
        np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]]), weights="uniform", name="directed_cycle", stochastic="row"
    ),
]


def _methods(topo):
    return ["auto", "dense", "sparse"] + (["roll"] if topo.is_circulant else [])


@pytest.mark.parametrize("topo", FAMILIES, ids=lambda t: f"{t.name}{t.n}")
def test_all_methods_equal_dense_matrix_with_traced_round(topo):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(topo.n, 5)), jnp.float32)
    methods = _methods(topo)
    # One compile per topology: the round is traced, every method in one program.
    f = jax.jit(lambda x, r: [G.mix(topo, x, r, method=m) for m in methods])
    for r in range(topo.period + 2):
        want = topo.mixing_matrix(r) @ np.asarray(x, np.float64)
        for m, got in zip(methods, f(x, jnp.int32(r))):
            assert got.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, err_msg=m)
        eager = G.mix(topo, x, r, method="sparse")  # static round path
        np.testing.assert_allclose(np.asarray(eager), want, atol=1e-5)


@pytest.mark.parametrize("topo", [T.ring(12), T.one_peer_exponential(8), T.star(5)], ids=lambda t: t.name)
def test_gather_combine_consistent_with_W(topo):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(topo.n, 3)), jnp.float32)
    for r in range(topo.period):
        msgs = G.gather(topo, x, r)
        nbr, w, sw, mask = topo.edge_arrays(r)
        assert msgs.shape == (topo.n, topo.K, 3)
        np.testing.assert_array_equal(np.asarray(msgs), np.asarray(x)[np.asarray(nbr)])
        y = G.combine(x, msgs, w, sw)
        np.testing.assert_allclose(np.asarray(y), topo.mixing_matrix(r) @ np.asarray(x, np.float64), atol=1e-5)
        np.testing.assert_allclose(np.asarray(y), np.asarray(G.mix(topo, x, r, method="sparse")), atol=1e-6)


def test_combine_ignores_nan_on_padded_slots():
    topo = T.star(5)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(5, 4)), jnp.float32)
    nbr, w, sw, mask = topo.edge_arrays()
    msgs = G.gather(topo, x)
    poisoned = jnp.where(mask[..., None], msgs, jnp.nan)  # attacker writes NaN on padding
    y = G.combine(x, poisoned, w, sw)
    assert bool(jnp.isfinite(y).all())
    np.testing.assert_allclose(np.asarray(y), np.asarray(G.combine(x, msgs, w, sw)))


def test_dtypes_kept_and_float64_exact():
    topo = T.one_peer_exponential(16)
    xb = jnp.ones((16, 3), jnp.bfloat16)
    assert G.mix(topo, xb, 0, method="sparse").dtype == jnp.bfloat16
    assert G.mix(topo, xb, 0, method="dense").dtype == jnp.bfloat16
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(3).normal(size=(16, 4)), jnp.float64)
        for m in ("dense", "sparse", "roll"):
            y = x
            for r in range(topo.period):
                y = G.mix(topo, y, r, method=m)
            assert y.dtype == jnp.float64
            np.testing.assert_allclose(
                np.asarray(y), np.broadcast_to(np.asarray(x).mean(0), (16, 4)), atol=1e-14, rtol=0
            )


def test_trailing_shapes_and_mean_preserved():
    topo = T.erdos_renyi(12, 0.4, seed=5)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(12, 2, 3)), jnp.float32)
    y = G.mix(topo, x)
    assert y.shape == x.shape
    np.testing.assert_allclose(np.asarray(y.mean(0)), np.asarray(x.mean(0)), atol=1e-6)
    v = jnp.arange(12.0)
    np.testing.assert_allclose(np.asarray(G.mix(topo, v)), topo.mixing_matrix() @ np.arange(12.0), atol=1e-5)


def test_consensus_distance():
    x = np.random.default_rng(5).normal(size=(7, 4))
    want = np.mean(np.sum((x - x.mean(0)) ** 2, axis=1))
    np.testing.assert_allclose(float(G.consensus_distance(jnp.asarray(x))), want, rtol=1e-5)
    assert float(G.consensus_distance(jnp.ones((5, 3)))) == 0.0
    batched = G.consensus_distance(jnp.stack([jnp.asarray(x), 2 * jnp.asarray(x)]))
    np.testing.assert_allclose(np.asarray(batched), [want, 4 * want], rtol=1e-5)


def test_method_resolution_and_errors():
    small = "sparse" if jax.default_backend() == "cpu" else "dense"
    assert G.resolve_method(T.ring(16)) == small
    assert G.resolve_method(T.complete(16)) == "dense"
    assert G.resolve_method(T.ring(1024)) == "sparse"
    assert G.resolve_method(T.one_peer_exponential(1024)) == "sparse"
    assert G.resolve_method(T.ring(1024), "roll") == "roll"
    assert G.resolve_method(T.torus(32)) == "sparse"
    assert G.resolve_method(T.erdos_renyi(600, 0.3)) == "dense"  # dense graph
    with pytest.raises(ValueError, match="circulant"):
        G.mix(T.torus(4), jnp.ones((16, 2)), method="roll")
    with pytest.raises(ValueError, match="unknown gossip method"):
        G.mix(T.ring(4), jnp.ones((4, 2)), method="fft")
    with pytest.raises(ValueError, match="GiB"):
        G.mix(T.ring(20000), jnp.ones((20000, 1)), method="dense")
    with pytest.raises(ValueError, match="rows"):
        G.mix(T.ring(4), jnp.ones((5, 2)))


def test_large_ring_roll_equals_sparse():
    topo = T.exponential(2048)
    x = jnp.asarray(np.random.default_rng(6).normal(size=(2048, 8)), jnp.float32)
    a = jax.jit(lambda x: G.mix(topo, x, method="roll"))(x)
    b = jax.jit(lambda x: G.mix(topo, x, method="sparse"))(x)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def _tail_rho(topo, rounds, tail):
    """exp(slope / 2) of log consensus distance over the last `tail` rounds (float64)."""
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(7).normal(size=(topo.n, 3)), jnp.float64)

        def step(x, r):
            y = G.mix(topo, x, r)
            return y, G.consensus_distance(y)

        _, dist = jax.jit(lambda x: jax.lax.scan(step, x, jnp.arange(rounds)))(x0)
        logd = np.log(np.asarray(dist))
    t = np.arange(rounds)[-tail:]
    slope = np.polyfit(t, logd[-tail:], 1)[0]
    return float(np.exp(slope / 2))


@pytest.mark.parametrize(
    "topo, rounds",
    [(T.ring(16), 300), (T.ring(24), 500), (T.torus(5), 80), (T.torus(6), 120)],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_measured_contraction_matches_rho(topo, rounds):
    # Distance decays like rho^(2t) once the fast modes have died (FIELD_NOTES).
    measured = _tail_rho(topo, rounds, rounds // 2)
    assert abs(measured - topo.rho()) / topo.rho() < 1e-2


def test_many_neighbour_slots_use_loop_path():
    # K > 32 takes the fori_loop accumulation in mix(sparse) and combine.
    topo = T.erdos_renyi(120, 0.5, seed=8)
    assert topo.K > 32
    x = jnp.asarray(np.random.default_rng(9).normal(size=(120, 3)), jnp.float32)
    want = topo.mixing_matrix() @ np.asarray(x, np.float64)
    f = jax.jit(lambda x: (G.mix(topo, x, method="sparse"), G.combine(x, G.gather(topo, x), *topo.edge_arrays()[1:3])))
    for got in f(x):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)

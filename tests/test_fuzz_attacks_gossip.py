"""Property-based tests (hypothesis) of every attack and every gossip path.

* every vector attack of ``rj.attacks.ATTACKS`` and every edge attack (dissensus, spectral,
  ``lift:<attack>``): the right shape and dtype, finite when the honest rows are finite (rows a
  mask marks absent may hold NaN / inf), messages of honest senders untouched;
* ``rj.gossip.mix`` (dense, sparse, roll) and ``robust_gossip(rule="gossip")``: finite inputs give
  finite outputs and the network mean is kept (doubly stochastic W);
* ``robust_gossip`` with every decentralized rule and some aggregators: honest nodes stay finite
  when Byzantine rows are NaN, ±inf or ±1e38, with or without an edge attack on top.

Shapes, topologies and dtypes come from small fixed sets so that compilations are reused.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import redeem_jax as rj
from redeem_jax.byzantine import attacks as A
from redeem_jax.network import gossip as G

pytestmark = [
    pytest.mark.fuzz,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]  # 1e38 in float16

DTYPES = {"float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}
# Magnitudes whose attack outputs stay representable (an optimized attack scales by up to 1e2).
SCALES = {"float32": (1e-3, 1.0, 1e3, 1e6), "float16": (1e-2, 1.0, 30.0), "bfloat16": (1e-2, 1.0, 1e3, 1e6)}
POISON = (np.nan, np.inf, -np.inf, 1e38, -1e38)
EPS = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}

TOPOLOGIES = {
    "ring6": lambda: rj.topology.ring(6),
    "path5": lambda: rj.topology.path(5),
    "star5": lambda: rj.topology.star(5),
    "er8": lambda: rj.topology.erdos_renyi(8, 0.5, seed=3),
    "ope8": lambda: rj.topology.one_peer_exponential(8),  # time-varying
    "torus9": lambda: rj.topology.torus(3),
}


@functools.cache
def _topo(name):
    return TOPOLOGIES[name]()


def _rows(seed, shape, scale, dtype):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, DTYPES[dtype])


def _f32(a):
    return np.asarray(jnp.asarray(a).astype(jnp.float32))


# --------------------------------------------------------------------------- vector attacks
@functools.cache
def _vector_attack(name, f, masked):
    """``attack(honest, key, mask)`` jitted once per (attack, f, masked) and shape."""
    opts = {"aggregator": rj.aggregators.get("median")} if name.endswith("_opt") else {}
    atk = A.get(name)

    def call(honest, key, mask):
        extra = {"mask": mask, "num_byzantine": f} if masked else {}
        return atk(honest, f, key, **opts, **extra)

    return jax.jit(call)


@given(
    name=st.sampled_from(A.ATTACKS),
    shape=st.sampled_from([(3, 4), (5, 2)]),
    f=st.sampled_from([1, 2]),
    dtype=st.sampled_from(sorted(DTYPES)),
    data=st.data(),
    seed=st.integers(0, 2**16),
    masked=st.booleans(),
    poison=st.sampled_from(POISON),
)
def test_vector_attacks_shape_dtype_and_finite(name, shape, f, dtype, data, seed, masked, poison):
    scale = data.draw(st.sampled_from(SCALES[dtype]), label="scale")
    honest = _rows(seed, shape, scale, dtype)
    mask = None
    if masked:
        # Rows a mask marks absent are not the attacker's to read: poison them.
        mask = np.random.default_rng(seed + 1).random(shape[0]) < 0.6
        mask[0] = True
        honest = jnp.where(jnp.asarray(mask)[:, None], honest, jnp.asarray(poison, honest.dtype))
        mask = jnp.asarray(mask)
    out = _vector_attack(name, f, masked)(honest, jax.random.PRNGKey(seed), mask)
    assert out.shape == (f, shape[1]) and out.dtype == DTYPES[dtype]
    v = _f32(out)
    if name == "nan":
        assert np.all(np.isnan(v))
    elif name == "inf":
        assert np.all(v == np.inf)
    elif name == "huge":
        assert np.all(v == float(jnp.asarray(1e38, DTYPES[dtype]).astype(jnp.float32)))  # inf in float16
    else:
        assert np.all(np.isfinite(v)), (name, v)


# --------------------------------------------------------------------------- edge attacks
EDGE = ("dissensus", "spectral") + tuple(f"lift:{a}" for a in A.ATTACKS)


@functools.cache
def _spectral(topo_name, byz_ids):
    byz = np.zeros(_topo(topo_name).n, bool)
    byz[list(byz_ids)] = True
    return A.make_spectral_attack(_topo(topo_name), byz)


@functools.cache
def _edge_attack(name, topo_name, byz_ids):
    if name == "spectral":
        atk = _spectral(topo_name, byz_ids)
    elif name.startswith("lift:") and name.endswith("_opt"):
        # Under lift the attack is called with f = K: score it against the median with f = 1.
        atk = A.get_edge_attack(name, aggregator=rj.aggregators.get("median"), agg_f=1)
    else:
        atk = A.get_edge_attack(name)
    nbr, w, sw, em = _topo(topo_name).edge_arrays(0)
    byz = np.zeros(_topo(topo_name).n, bool)
    byz[list(byz_ids)] = True
    # One program per (attack, graph, dtype): faster than the eager op-by-op first calls.
    return jax.jit(lambda msgs, x, key: atk(msgs, x, nbr, w, sw, em, jnp.asarray(byz), key))


def _byz_ids(data, n):
    ids = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=2, unique=True), label="byzantine")
    if len(ids) == n:
        ids = ids[:1]
    return tuple(sorted(ids))


@given(
    name=st.sampled_from(EDGE),
    topo_name=st.sampled_from(["ring6", "star5", "er8"]),
    dtype=st.sampled_from(sorted(DTYPES)),
    d=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_edge_attacks_touch_only_byzantine_slots_and_stay_finite(name, topo_name, dtype, d, seed, data):
    topo = _topo(topo_name)
    byz_ids = _byz_ids(data, topo.n)
    byz = np.zeros(topo.n, bool)
    byz[list(byz_ids)] = True
    scale = data.draw(st.sampled_from(SCALES[dtype]), label="scale")
    x = _rows(seed, (topo.n, d), scale, dtype)
    nbr, w, sw, em = topo.edge_arrays(0)
    msgs = G.gather(topo, x)
    out = _edge_attack(name, topo_name, byz_ids)(msgs, x, jax.random.PRNGKey(seed))
    assert out.shape == msgs.shape and out.dtype == msgs.dtype
    written = np.asarray(em) & byz[np.asarray(nbr)] & ~byz[:, None]
    np.testing.assert_array_equal(_f32(out)[~written], _f32(msgs)[~written])
    if name not in ("lift:huge", "lift:inf", "lift:nan"):
        assert np.all(np.isfinite(_f32(out)[written])), name


# --------------------------------------------------------------------------- gossip paths
def _gossip(path, topo, x, r):
    if path == "robust_gossip[gossip]":
        ch = rj.channels.robust_gossip(topo, "gossip", 0, np.zeros(topo.n, bool))
        ctx = rj.core.Ctx(jnp.int32(r), jax.random.PRNGKey(0), rj.core.Edges.of(topo, r), jnp.ones(topo.n, bool), {})
        return ch.update(x, ch.init(x), ctx)[0]
    return G.mix(topo, x, r, method=path)


@given(
    topo_name=st.sampled_from(sorted(TOPOLOGIES)),
    path=st.sampled_from(["dense", "sparse", "roll", "robust_gossip[gossip]"]),
    dtype=st.sampled_from(sorted(DTYPES)),
    d=st.sampled_from([1, 3]),
    r=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_gossip_of_finite_rows_is_finite_and_keeps_the_mean(topo_name, path, dtype, d, r, seed, data):
    topo = _topo(topo_name)
    if path == "roll" and not topo.is_circulant:
        path = "sparse"
    scale = data.draw(st.sampled_from(SCALES[dtype] + ((1e37,) if dtype != "float16" else (1e4,))), label="scale")
    x = _rows(seed, (topo.n, d), scale, dtype)
    y = _gossip(path, topo, x, r)
    assert y.shape == x.shape and y.dtype == x.dtype
    yv, xv = _f32(y).astype(np.float64), _f32(x).astype(np.float64)
    assert np.all(np.isfinite(yv))
    assert topo.is_doubly_stochastic
    # One rounding of each output row to the dtype (sums are float32): error ≤ (K + 2)·eps·max|x|.
    tol = (topo.K + 2) * max(EPS[dtype], 2.0**-23) * np.abs(xv).max() + 1e-30
    np.testing.assert_allclose(yv.mean(0), xv.mean(0), rtol=0, atol=tol)


RULES = ("clipped_gossip", "ios", "cs_plus", "trimmed_mean", "median", "krum")


@functools.cache
def _channel(topo_name, rule, byz_ids, attack):
    topo = _topo(topo_name)
    byz = np.zeros(topo.n, bool)
    byz[list(byz_ids)] = True
    tamper = None
    if attack == "dissensus":
        tamper = rj.channels.edge_tamper(A.dissensus, attack)
    elif attack == "lift:alie":
        tamper = rj.channels.edge_tamper(A.lift("alie"), attack)
    elif attack == "global:sign_flip":
        tamper = rj.channels.global_view(rj.channels.vector_tamper(A.sign_flip), byz)
    agg = rule if rule in rj.byzantine.rules.DECENTRALIZED_RULES else rj.aggregators.get(rule)
    ch = rj.channels.robust_gossip(topo, agg, 1, byz, tamper)

    @jax.jit  # one program per (channel, dtype): faster than the eager op-by-op first calls
    def exchange(x, key):
        ctx = rj.core.Ctx(jnp.int32(0), key, rj.core.Edges.of(topo, 0), jnp.asarray(~byz), {})
        return ch.update(x, ch.init(x), ctx)[0]

    return exchange, byz


@given(
    topo_name=st.sampled_from(["ring6", "path5", "star5", "er8", "torus9"]),
    rule=st.sampled_from(RULES),
    attack=st.sampled_from([None, "dissensus", "lift:alie", "global:sign_flip"]),
    poison=st.sampled_from(POISON),
    dtype=st.sampled_from(sorted(DTYPES)),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_robust_gossip_honest_nodes_stay_finite_under_poisoned_byzantine_rows(
    topo_name, rule, attack, poison, dtype, seed, data
):
    topo = _topo(topo_name)
    byz_ids = _byz_ids(data, topo.n)[:1]  # b = 1
    if topo.K + 1 < rj.byzantine.rules.min_inputs(rule, 1):  # no neighbourhood is large enough: refused
        with pytest.raises(ValueError, match="lower aggregation.tolerance or use a denser topology"):
            _channel(topo_name, rule, byz_ids, attack)
        return
    exchange, byz = _channel(topo_name, rule, byz_ids, attack)
    scale = data.draw(st.sampled_from(SCALES[dtype]), label="scale")
    x = _rows(seed, (topo.n, 3), scale, dtype)
    x = jnp.where(jnp.asarray(byz)[:, None], jnp.asarray(poison, x.dtype), x)
    y = exchange(x, jax.random.PRNGKey(seed))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.all(np.isfinite(_f32(y)[~byz])), (rule, attack, poison)

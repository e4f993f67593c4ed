"""Robust gossip on low-degree nodes, CS+'s step size at scale, dtypes of rules, attacks and gossip."""

import json
import tracemalloc
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.linalg as spla

import redeem_jax as rj
from redeem_jax.byzantine import attacks as A
from redeem_jax.byzantine import rules as R
from redeem_jax.network import gossip as G

from _configs import small_config


def _ctx(topo, byz, r=0):
    return rj.core.Ctx(jnp.int32(r), jax.random.PRNGKey(r), rj.core.Edges.of(topo, r), jnp.asarray(~byz), {})


def _short_honest(topo, byz, need):
    """Honest nodes with fewer than ``need`` rows (own + neighbours): from the padded lists."""
    return (1 + np.asarray(topo.edge_mask).sum(-1) < need) & ~byz


# --------------------------------------------------------------------------- low-degree nodes
@pytest.mark.parametrize("family,byz_id", [("path", 2), ("star", 3), ("star", 0)])
@pytest.mark.parametrize("rule", ["trimmed_mean", "median"])
def test_low_degree_honest_nodes_keep_their_own_value(family, byz_id, rule):
    # b = 1 on a path or a star: a degree-1 node aggregates 2 rows, below the 2b + 1 the rule needs.
    # The trimmed mean of 2 rows with b = 1 is the empty mean (0): without the fallback the node's
    # parameters were zeroed every round, path ends without a Byzantine neighbour included.
    topo = rj.topology.get(family, 6)
    byz = np.zeros(6, bool)
    byz[byz_id] = True
    agg = rj.aggregators.get(rule)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ch = rj.channels.robust_gossip(topo, agg, 1, byz)
    short = _short_honest(topo, byz, 3)
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 3)) + 5.0
    y, s = ch.update(x, ch.init(x), _ctx(topo, byz))
    y = np.asarray(y)
    np.testing.assert_array_equal(y[short], np.asarray(x)[short])  # kept exactly, never zeroed
    assert np.all(np.abs(y[~byz]) > 1.0)
    # Nodes with enough rows get the rule itself over own row + neighbours (an independent loop).
    nbr, em = np.asarray(topo.neighbors), np.asarray(topo.edge_mask)
    for i in np.flatnonzero(~short & ~byz):
        rows = np.asarray(x)[np.concatenate([[i], nbr[i][em[i]]])]
        np.testing.assert_allclose(y[i], np.asarray(agg(jnp.asarray(rows), 1)), rtol=1e-6)
    counts = rj.channels.channel_metrics({"consensus": s}, 0)
    assert int(counts["robust_fallback_nodes"]) == short.sum()
    # Warned before the run, where the topology is concrete: how many, and an example.
    msgs = [str(w.message) for w in rec if "robust_fallback_nodes" in str(w.message)]
    assert len(msgs) == 1 and f"{short.sum()} honest node(s)" in msgs[0] and "degree 1" in msgs[0]


def test_counter_sums_calls_of_one_round_and_restarts_each_round():
    topo = rj.topology.path(5)
    byz = np.zeros(5, bool)
    byz[2] = True
    with pytest.warns(UserWarning):
        ch = rj.channels.robust_gossip(topo, rj.aggregators.get("trimmed_mean"), 1, byz)
    x = jnp.ones((5, 2))
    s = ch.init(x)
    assert int(rj.channels.channel_metrics({"c": s}, 0)["robust_fallback_nodes"]) == 0
    _, s = ch.update(x, s, _ctx(topo, byz, 0))
    _, s = ch.update(x, s, _ctx(topo, byz, 0))
    assert int(rj.channels.channel_metrics({"c": s}, 0)["robust_fallback_nodes"]) == 4  # 2 ends, twice
    assert int(rj.channels.channel_metrics({"c": s}, 1)["robust_fallback_nodes"]) == 0  # a stale count
    _, s = ch.update(x, s, _ctx(topo, byz, 1))
    assert int(rj.channels.channel_metrics({"c": s}, 1)["robust_fallback_nodes"]) == 2


@pytest.mark.parametrize("family", ["path", "star"])
def test_run_reports_fallbacks_and_keeps_low_degree_parameters(family, tmp_path):
    c = small_config(
        **{
            "num_nodes": 6,
            "topology.name": family,
            "byzantine.num": 1,
            "byzantine.attack": "sign_flip",
            "aggregation.rule": "trimmed_mean",
            "aggregation.tolerance": 1,
            "num_rounds": 4,
            "eval_every": 2,
            "model.hidden": (4,),
        }
    )
    with pytest.warns(UserWarning, match="robust_fallback_nodes"):
        res = rj.run(c, workdir=tmp_path)
    exp = res.experiment
    short = _short_honest(exp.topology, ~exp.honest, 3)
    assert short.sum() >= 1
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r["robust_fallback_nodes"] for r in rows if r["round"] > 0]
    assert logged and all(v == short.sum() for v in logged)  # per round, the same every round here
    params = np.asarray(res.params)
    assert np.all(np.isfinite(params[exp.honest]))
    assert np.all(np.abs(params[short]).max(axis=1) > 0)  # ATC: the exchange is the round's last step


def test_rules_defined_at_any_degree_never_fall_back():
    topo = rj.topology.path(5)
    byz = np.zeros(5, bool)
    byz[2] = True
    for rule in ("clipped_gossip", "ios", "cs_plus", "gossip"):
        assert R.min_inputs(rule, 1) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ch = rj.channels.robust_gossip(topo, rule, 1, byz)
        x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
        _, s = ch.update(x, ch.init(x), _ctx(topo, byz))
        assert int(rj.channels.channel_metrics({"c": s}, 0)["robust_fallback_nodes"]) == 0


def test_min_inputs_of_aggregator_rules_follow_their_preconditions():
    assert R.min_inputs("trimmed_mean", 1) == 3
    assert R.min_inputs(rj.aggregators.get("median"), 2) == 5
    assert R.min_inputs("krum", 1) == 5
    assert R.min_inputs("mean", 3) == 1

    def stateful_rule(x, f, mask=None, start=None):  # the experiment layer's wrapper keeps __name__ only
        return x[0]

    stateful_rule.__name__ = "centered_clipping"
    assert R.min_inputs(stateful_rule, 1) == 3
    assert R.min_inputs(lambda x, f, mask=None: x[0], 1) == 1  # unknown precondition: no fallback


# --------------------------------------------------------------------------- CS+ step size
@pytest.mark.parametrize(
    "topo",
    [
        rj.topology.ring(40),
        rj.topology.path(33),
        rj.topology.star(20),
        rj.topology.erdos_renyi(50, 0.2, seed=1),
        rj.topology.one_peer_exponential(16),
    ],
    ids=lambda t: t.name,
)
def test_laplacian_step_sparse_equals_dense(topo):
    dense = R.laplacian_step(topo, "dense")
    L = np.eye(topo.n) - 0.5 * (topo.mixing_matrices() + np.swapaxes(topo.mixing_matrices(), 1, 2))
    np.testing.assert_allclose(dense, 1.0 / max(np.linalg.eigvalsh(L)[:, -1].max(), 1e-12), rtol=1e-10)
    np.testing.assert_allclose(R.laplacian_step(topo, "sparse"), dense, rtol=2e-3)
    assert R.laplacian_step(topo, "gershgorin") <= dense * (1 + 1e-12)  # an upper bound on λ: a smaller step


def test_laplacian_step_at_20000_nodes_forms_no_dense_matrix(monkeypatch):
    topo = rj.topology.ring(20000)

    def refuse(*a, **k):
        raise AssertionError("a dense n x n matrix was formed")

    monkeypatch.setattr(rj.topology.Topology, "mixing_matrix", refuse)
    monkeypatch.setattr(rj.topology.Topology, "mixing_matrices", refuse)
    monkeypatch.setattr(np.linalg, "eigvalsh", refuse)
    seen = []
    eigsh = spla.eigsh

    def spy(L, *a, **k):
        seen.append((L.shape, L.nnz))
        return eigsh(L, *a, **k)

    monkeypatch.setattr(spla, "eigsh", spy)
    tracemalloc.start()
    try:
        step = R.laplacian_step(topo)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == [((20000, 20000), 3 * 20000)]  # the sparse Laplacian: 3 entries a row
    assert peak < 64 * 2**20  # a dense float64 Laplacian alone is 3.2 GB
    # MH ring of even n: λ_max(I − W) = 1 − (1/3 + (2/3)cos π) = 4/3.
    np.testing.assert_allclose(step, 0.75, rtol=1e-3)


def test_dense_laplacian_beyond_the_gossip_limit_is_refused_like_dense_gossip():
    topo = rj.topology.ring(G._DENSE_MAX_N + 1)
    with pytest.raises(ValueError, match="use method='sparse'") as gossip_err:
        G.resolve_method(topo, "dense")
    with pytest.raises(ValueError, match="use method='sparse'") as step_err:
        R.laplacian_step(topo, "dense")
    assert str(step_err.value).split(" with ")[1] == str(gossip_err.value).split(" with ")[1]


# --------------------------------------------------------------------------- dtypes
def _edge_inputs(dtype, scale=1.0):
    topo = rj.topology.torus(3)
    x = (jax.random.normal(jax.random.PRNGKey(0), (9, 4)) * scale).astype(dtype)
    nbr, w, sw, em = topo.edge_arrays(0)
    byz = np.zeros(9, bool)
    byz[4] = True
    return topo, x, G.gather(topo, x), nbr, w, sw, em, jnp.asarray(byz)


INT_CALLS = {
    "gossip.mix": lambda xi: G.mix(rj.topology.ring(4), xi),
    "gossip.combine": lambda xi: G.combine(xi, xi[:, None], jnp.ones((4, 1)), jnp.zeros(4)),
    "rules.clipped_gossip": lambda xi: R.clipped_gossip(xi[0], xi[1:], jnp.ones(3), 1.0, jnp.ones(3, bool), 1),
    "rules.ios": lambda xi: R.ios(xi[0], xi[1:], jnp.ones(3), 1.0, jnp.ones(3, bool), 1),
    "rules.cs_plus": lambda xi: R.cs_plus(xi[0], xi[1:], jnp.ones(3), 1.0, jnp.ones(3, bool), 1, 0.5),
    **{
        f"attacks.{a}": (
            lambda a: (
                lambda xi: A.get(a)(
                    xi,
                    1,
                    jax.random.PRNGKey(0),
                    **({"aggregator": rj.aggregators.get("median")} if a.endswith("_opt") else {}),
                )
            )
        )(a)
        for a in A.ATTACKS
    },
    "attacks.dissensus": lambda xi: A.dissensus(
        xi[:, None],
        xi,
        jnp.zeros((4, 1), jnp.int32),
        jnp.ones((4, 1)),
        jnp.zeros(4),
        jnp.ones((4, 1), bool),
        jnp.arange(4) == 0,
    ),
}


@pytest.mark.parametrize("where", sorted(INT_CALLS))
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_rows_are_refused_in_one_line(where, dtype):
    xi = jnp.ones((4, 3), dtype)
    with pytest.raises(TypeError) as err:
        INT_CALLS[where](xi)
    text = str(err.value)
    assert "\n" not in text and where in text and jnp.dtype(dtype).name in text


@pytest.mark.parametrize("name", ["clipped_gossip", "ios", "cs_plus"])
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_rules_compute_half_precision_in_float32(name, dtype):
    # |x| ~ 300: squared distances pass float16's 65504 (a float16 rule dropped every neighbour as
    # "infinitely far"); bfloat16 sums lose the small clipped terms.
    topo, x, msgs, nbr, w, sw, em, byz = _edge_inputs(dtype, scale=300.0)
    step = 0.6
    call = {
        "clipped_gossip": lambda *a: R.clipped_gossip(*a, 1),
        "ios": lambda *a: R.ios(*a, 1),
        "cs_plus": lambda *a: R.cs_plus(*a, 1, step),
    }[name]
    out = jax.vmap(call)(x, msgs, w, sw, em)
    ref = jax.vmap(call)(x.astype(jnp.float32), msgs.astype(jnp.float32), w, sw, em)
    assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref.astype(dtype), np.float32), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["alie", "mimic", "sign_flip", "gaussian"])
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_vector_attacks_compute_half_precision_in_float32(name, dtype):
    honest = (jax.random.normal(jax.random.PRNGKey(2), (6, 5)) * 300.0).astype(dtype)
    out = A.get(name)(honest, 2, jax.random.PRNGKey(3))
    ref = A.get(name)(honest.astype(jnp.float32), 2, jax.random.PRNGKey(3))
    assert out.dtype == dtype and out.shape == (2, 5)
    assert np.all(np.isfinite(np.asarray(out, np.float32)))
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref.astype(dtype), np.float32))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_edge_attacks_compute_half_precision_in_float32(dtype):
    topo, x, msgs, nbr, w, sw, em, byz = _edge_inputs(dtype, scale=300.0)
    spectral = A.make_spectral_attack(topo, np.asarray(byz))
    for atk in (A.dissensus, spectral, A.lift("alie")):
        out = atk(msgs, x, nbr, w, sw, em, byz, jax.random.PRNGKey(0))
        ref = atk(msgs.astype(jnp.float32), x.astype(jnp.float32), nbr, w, sw, em, byz, jax.random.PRNGKey(0))
        assert out.dtype == dtype and out.shape == msgs.shape
        np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref.astype(dtype), np.float32))

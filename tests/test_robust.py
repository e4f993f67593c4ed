"""Robust communication in the round: reductions to plain gossip, non-finite inputs, bounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.byzantine import rules as robust
from redeem_jax.config import ConfigError

from _configs import small_config


def _setup(topo, d=5, seed=0):
    x = jax.random.normal(jax.random.PRNGKey(seed), (topo.n, d))
    nbr, w, sw, em = topo.edge_arrays(0)
    return x, rj.gossip.gather(topo, x), nbr, w, sw, em


RULES = {
    "clipped_gossip": lambda xi, m, w, s, mk, b, step: robust.clipped_gossip(xi, m, w, s, mk, b),
    "ios": lambda xi, m, w, s, mk, b, step: robust.ios(xi, m, w, s, mk, b),
    "cs_plus": lambda xi, m, w, s, mk, b, step: robust.cs_plus(xi, m, w, s, mk, b, step),
}


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("family", ["torus", "erdos_renyi", "exponential"])
def test_rules_tolerating_nobody_are_plain_gossip(name, family):
    topo = rj.topology.get(family, 16, **({"p": 0.4} if family == "erdos_renyi" else {}))
    x, msgs, nbr, w, sw, em = _setup(topo)
    out = jax.vmap(lambda xi, m, wi, si, mi: RULES[name](xi, m, wi, si, mi, 0, 1.0))(x, msgs, w, sw, em)
    np.testing.assert_allclose(out, rj.gossip.mix(topo, x), atol=1e-5)


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e38])
def test_non_finite_or_huge_byzantine_messages_never_poison_honest_nodes(name, bad):
    topo = rj.topology.torus(4)
    byz = np.zeros(16, bool)
    byz[[0, 5]] = True
    x, msgs, nbr, w, sw, em = _setup(topo)
    from_byz = jnp.asarray(byz)[nbr] & em
    msgs = jnp.where(from_byz[..., None], bad, msgs)
    step = robust.laplacian_step(topo)
    out = jax.vmap(lambda xi, m, wi, si, mi: RULES[name](xi, m, wi, si, mi, 2, step))(x, msgs, w, sw, em)
    honest = ~byz
    assert np.all(np.isfinite(np.asarray(out)[honest]))
    # Honest nodes stay inside the hull-ish region of honest values (no blow-up toward 1e38).
    assert np.max(np.abs(np.asarray(out)[honest])) <= np.max(np.abs(np.asarray(x))) + 1e-4


def test_clipped_gossip_moves_at_most_delta_tau_from_the_honest_update():
    # Each Byzantine slot contributes W_ik·clip(·, τ_i), so its total pull is at most δ_i·τ_i
    # beyond what the honest neighbours (also clipped at τ_i) contribute (He et al. 2022, Lemma 1).
    topo = rj.topology.torus(4)
    byz = np.zeros(16, bool)
    byz[[3, 9]] = True
    x, msgs, nbr, w, sw, em = _setup(topo, d=3, seed=1)
    from_byz = np.asarray(jnp.asarray(byz)[nbr] & em)
    evil = jnp.where(jnp.asarray(from_byz)[..., None], 50.0, msgs)
    b = 1
    clean_mask = em & ~jnp.asarray(from_byz)
    for i in np.flatnonzero(~byz):
        out = robust.clipped_gossip(x[i], evil[i], w[i], sw[i], em[i], b)
        diff = np.asarray(evil[i] - x[i])
        dist = np.linalg.norm(diff, axis=1)
        wi = np.asarray(w[i]) * np.asarray(em[i])
        order = np.argsort(dist)
        keep = np.cumsum(wi[order]) <= (wi.sum() - np.sort(wi)[-b:].sum()) * (1 + 1e-6)
        tau = dist[order][keep].max() if keep.any() else 0.0
        honest_part = sum(
            wi[k] * diff[k] * min(1, tau / max(dist[k], 1e-30)) for k in range(len(wi)) if clean_mask[i, k]
        )
        delta = wi[from_byz[i]].sum()
        assert np.linalg.norm(np.asarray(out) - np.asarray(x[i]) - honest_part) <= delta * tau + 1e-5


def test_global_edge_attack_overwrites_exactly_the_byzantine_senders():
    topo = rj.topology.exponential(16)
    byz = np.zeros(16, bool)
    byz[[2, 7, 11]] = True
    x, msgs, nbr, w, sw, em = _setup(topo)
    atk = rj.channels.global_view(rj.channels.vector_tamper(rj.attacks.get("sign_flip")), byz)
    ctx = rj.core.Ctx(jnp.int32(0), jax.random.PRNGKey(0), rj.core.Edges.of(topo, 0), jnp.asarray(~byz), {})
    out, _ = atk.update(msgs, x, ctx.edges, jnp.asarray(byz), atk.init(5), ctx)
    from_byz = np.asarray(jnp.asarray(byz)[nbr] & em)
    np.testing.assert_array_equal(np.asarray(out)[~from_byz], np.asarray(msgs)[~from_byz])
    expected = -np.asarray(x)[~byz].mean(0)
    np.testing.assert_allclose(np.asarray(out)[from_byz], np.broadcast_to(expected, (from_byz.sum(), 5)), atol=1e-6)


def test_server_rule_free_and_attack_free_is_fedavg():
    x_prev = jnp.broadcast_to(jnp.arange(4.0), (6, 4))
    x_local = x_prev + jax.random.normal(jax.random.PRNGKey(0), (6, 4))
    ctx = rj.core.Ctx(jnp.int32(0), jax.random.PRNGKey(0), None, jnp.ones(6, bool), {})
    for comm in (
        rj.channels.server(),
        rj.channels.server(byzantine=np.zeros(6, bool), message_dtype="float32", rule=rj.aggregators.get("mean")),
    ):
        out, _ = comm.update(x_local, comm.init(x_prev), ctx)  # the server holds x_prev's model
        np.testing.assert_allclose(out, jnp.broadcast_to(x_local.mean(0), (6, 4)), atol=1e-6)


def _byz_config(**over):
    return small_config(
        **{
            "num_nodes": 16,
            "topology.name": "torus",
            "num_rounds": 20,
            "byzantine.num": 3,
            "byzantine.attack": "nan",
            "aggregation.rule": "clipped_gossip",
            **over,
        }
    )


def test_nan_attackers_leave_honest_metrics_finite_and_compile_once():
    res = rj.run(_byz_config())
    assert res.compilations == 1
    for k, v in res.final.items():
        assert np.isfinite(v), k
    assert res.experiment.honest.sum() == 13


def test_plain_gossip_is_poisoned_by_nan_attackers():
    res = rj.run(_byz_config(**{"aggregation.rule": "mean"}))
    assert not np.isfinite(res.final["node_test_loss_mean"])


BAD = [
    ({"byzantine.num": 16}, "config.byzantine.num: must be < num_nodes"),
    ({"byzantine.placement": "given", "byzantine.ids": (1, 1, 2)}, "config.byzantine.ids"),
    ({"byzantine.placement": "given", "byzantine.ids": (1, 2)}, "config.byzantine.ids"),
    ({"byzantine.attack": "none"}, "config.byzantine.attack: byzantine.num > 0 needs an attack"),
    ({"byzantine.attack": "alie_light"}, "config.byzantine.attack: 'alie_light' is not one of"),
    ({"byzantine.placement": "central"}, "config.byzantine.placement: 'central' is not one of"),
    (
        {"algorithm.name": "fedavg", "byzantine.attack": "dissensus", "aggregation.rule": "median"},
        "config.byzantine.attack: 'dissensus' sends a different vector",
    ),
    ({"algorithm.name": "fedavg", "aggregation.rule": "clipped_gossip"}, "config.aggregation.rule: 'clipped_gossip'"),
    ({"aggregation.tolerance": 16}, "config.aggregation.tolerance: must be < num_nodes"),
]


@pytest.mark.parametrize("over,match", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_invalid_byzantine_fields_get_clear_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        rj.config.validate(_byz_config(**over))


PATHS = [
    ("dsgd", "alie", "clipped_gossip", "global"),
    ("dsgd", "sign_flip", "trimmed_mean", "neighbourhood"),
    ("dsgd", "spectral", "ios", "global"),
    ("dsgd", "dissensus", "cs_plus", "global"),
    ("dsgd", "label_flip", "nnm+median", "global"),
    ("fedavg", "alie_opt", "nnm+trimmed_mean", "global"),
    ("fedavg", "gaussian", "krum", "global"),
    ("fedavg", "label_flip", "median", "global"),
]


@pytest.mark.parametrize("algorithm,attack,rule,view", PATHS, ids=["-".join(p[:3]) for p in PATHS])
def test_every_config_path_runs_in_one_compilation(algorithm, attack, rule, view):
    c = _byz_config(
        **{
            "num_nodes": 9,
            "byzantine.num": 1,
            "byzantine.attack": attack,
            "aggregation.rule": rule,
            "algorithm.name": algorithm,
            "byzantine.view": view,
            "num_rounds": 6,
            "eval_every": 3,
            "model.hidden": (8,),
        }
    )
    res = rj.run(c)
    assert res.compilations == 1
    assert np.isfinite(res.final["node_test_loss_mean"])
    assert res.final["round"] == 6


def test_unknown_rule_name_is_a_config_error():
    with pytest.raises(ConfigError, match="config.aggregation.rule"):
        rj.run(_byz_config(**{"aggregation.rule": "krumm"}))


def test_federated_nnm_trimmed_mean_holds_where_the_mean_breaks():
    # f = n/5 workers run sign flipping with the factor line-searched against the rule in use.
    def fed(rule, attack):
        c = rj.config.base_config()
        c.num_nodes, c.algorithm.name = 20, "fedavg"
        c.data.batch_size, c.model.hidden = 16, (64,)  # as in experiments/byzantine_federated.py
        c.optimizer.name, c.optimizer.learning_rate = "momentum", 0.05
        c.num_rounds, c.eval_every, c.checkpoint_every, c.progress, c.plots = 150, 150, 0, False, False
        c.aggregation.rule = rule
        if attack != "none":
            c.byzantine.num, c.byzantine.attack = 4, attack
        else:
            c.aggregation.tolerance = 4
        return rj.run(c).final["test_accuracy"]

    clean = fed("nnm+trimmed_mean", "none")
    assert clean >= 0.9
    assert fed("mean", "sign_flip_opt") < 0.5
    assert fed("nnm+trimmed_mean", "sign_flip_opt") >= clean - 0.05

"""D-SGD, gradient tracking (DIGing) and Choco-SGD keep working on graphs drawn every round
(issue 13, point 4), checked against closed forms that hold for *any* sequence of doubly
stochastic mixing matrices W(t):

* on fᵢ(x) = ½‖x − bᵢ‖² with plain SGD of step η, ATC D-SGD's network mean obeys
  x̄_{t+1} = W-independent  x̄_t − η·mean(x_t − b) = (1 − η) x̄_t + η b̄, since 1ᵀW(t) = 1ᵀ;
  so x̄_t − b̄ = (1 − η)ᵗ (x̄₀ − b̄) exactly. Choco-SGD keeps the same recursion: its gossip
  x + γ(W − I)x̂ leaves the mean unchanged for any compressor (Koloskova et al. 2019);
* DIGing (Nedić, Olshevsky & Shi 2017, built for time-varying graphs) keeps Σᵢ yᵢ = Σᵢ ∇fᵢ(xᵢ)
  every round and reaches the exact optimum b̄ at every node.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.algorithms import dsgd, gradient_tracking
from redeem_jax.local.optim import local_optimizer
from redeem_jax.network import compress
from redeem_jax.network import random_graphs as rg
from redeem_jax.network import unreliable as U

N, D, ETA = 8, 3, 0.1

GRAPHS = {
    "epidemic_oracle_s2": lambda: rg.el_oracle(N, 2),
    "ring_link_failures_p05": lambda: U.link_failures(rj.topology.ring(N), 0.5),
    "ring_churn_q07": lambda: U.churn(rj.topology.ring(N), 0.7),
    "random_matching_hypercube": lambda: rg.random_matching(rj.topology.hypercube(N)),
}


def _oracle():
    def update(x, s, ctx, B):
        return 0.5 * jnp.sum((x - B) ** 2, axis=1), x - B, s

    return rj.core.Oracle(lambda x: (), update)


def _run(algo, channels, topo, rounds, B, x0):
    oracle = _oracle()
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(3), topology=topo)
    step = rj.round.make_step(algo, oracle, channels, topology=topo)

    def body(s, _):
        s, _m = step(s, B, {})
        return s, s.algorithm

    return jax.jit(lambda s: jax.lax.scan(body, s, None, length=rounds)[1])(state)


def _problem():
    rng = np.random.default_rng(0)
    B = jnp.asarray(rng.normal(size=(N, D)) * 2.0, jnp.float32)
    x0 = jnp.asarray(rng.normal(size=(N, D)) * 3.0, jnp.float32)
    return B, x0


def _check_mean_recursion(xs, B, x0, rounds):
    bbar = np.asarray(B, np.float64).mean(0)
    t = np.arange(1, rounds + 1)[:, None]
    want = bbar + (1 - ETA) ** t * (np.asarray(x0, np.float64).mean(0) - bbar)
    np.testing.assert_allclose(np.asarray(xs, np.float64).mean(1), want, atol=2e-5)


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_dsgd_network_mean_follows_centralized_gradient_descent_on_drawn_graphs(graph):
    topo = GRAPHS[graph]()
    B, x0 = _problem()
    algo = dsgd.dsgd(local_optimizer("sgd", ETA), "atc")
    xs = _run(algo, {k: rj.channels.gossip(topo) for k in algo.exchanges}, topo, 30, B, x0).x
    _check_mean_recursion(xs, B, x0, 30)
    # the graphs are really drawn: the nodes disagree (heterogeneous bᵢ), yet stay near b̄
    assert float(np.std(np.asarray(xs[-1]), axis=0).max()) > 1e-3


@pytest.mark.parametrize("graph", ["epidemic_oracle_s2", "ring_link_failures_p05"])
def test_choco_sgd_keeps_the_mean_recursion_on_drawn_graphs(graph):
    topo = GRAPHS[graph]()
    B, x0 = _problem()
    algo = dsgd.choco_sgd(local_optimizer("sgd", ETA))
    q = compress.get("top_k", ratio=0.34)
    channels = {k: rj.channels.choco(rj.channels.gossip(topo), q, 0.3) for k in algo.exchanges}
    xs = _run(algo, channels, topo, 30, B, x0).x
    _check_mean_recursion(xs, B, x0, 30)


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_diging_tracks_the_gradient_sum_and_reaches_the_optimum_on_drawn_graphs(graph):
    topo = GRAPHS[graph]()
    B, x0 = _problem()
    algo = gradient_tracking.diging(local_optimizer("sgd", 0.2), "atc")
    states = _run(algo, {k: rj.channels.gossip(topo) for k in algo.exchanges}, topo, 600, B, x0)
    # Σ y = Σ g (the trackers' sum is the sum of the last gradients) in every round
    np.testing.assert_allclose(
        np.asarray(states.y).sum(1), np.asarray(states.g).sum(1), atol=1e-4 * max(1.0, float(np.abs(states.g).max()))
    )
    bbar = np.asarray(B).mean(0)
    np.testing.assert_allclose(np.asarray(states.x[-1]), np.broadcast_to(bbar, (N, D)), atol=1e-4)


def test_dp_sgd_on_a_drawn_graph_is_the_plain_run_without_noise_or_clipping():
    """DP-SGD is the oracle, the graph the channel: with no noise and no clipping a private run
    on a drawn graph equals the non-private one (the same graphs: the topology's key stream does
    not depend on the oracle). Its ε does not depend on the graph (tests/test_private_runs.py)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _configs import small_config

    base = {
        "data.batch_size": 16,
        "optimizer.name": "sgd",
        "optimizer.learning_rate": 0.1,
        "num_rounds": 10,
        "eval_every": 10,
        "topology.link_up": 0.5,
    }
    plain = rj.run(small_config(**base))
    dp = rj.run(
        small_config(
            **base, **{"privacy.mode": "dp_sgd", "privacy.noise_multiplier": 0.0, "privacy.clip_norm": float("inf")}
        )
    )
    np.testing.assert_allclose(np.asarray(dp.params), np.asarray(plain.params), rtol=1e-4, atol=1e-5)

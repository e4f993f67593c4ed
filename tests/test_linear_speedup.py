"""Linear speedup of D-SGD (issue 16): config-level gradient noise against the exact closed forms.

ATC D-SGD on identical quadratics ``f_i = ½||x - b||^2`` with ``oracle.grad_noise = sigma`` is run
from configs (experiments/linear_speedup.py's ``config``: whitened noiseless linear regression,
full batch) on ring, torus, star and complete graphs; after a burn-in the per-round
``||x_bar - b||^2`` and consensus distance are averaged and compared with
``rj.theory.dsgd_noise_average_variance`` / ``dsgd_noise_consensus_distance`` within 3 standard
errors (batch means over all seeds). The closed forms are also checked against the discrete
Lyapunov equation of the dense error recursion (an independent computation).
"""

import numpy as np
import pytest
from scipy import linalg

import redeem_jax as rj
from redeem_jax.experiment.sweep import vmapped_axes
from tests._configs import load_experiment

ETA, SIGMA, D = 0.1, 1.0, 4
SEEDS, BURN, ROUNDS, BATCH = 4, 300, 2000, 100
CASES = [("ring", 16), ("torus", 16), ("star", 16), ("complete", 16), ("ring", 4)]


@pytest.fixture(scope="module")
def runs():
    ls = load_experiment("linear_speedup")
    out = {}
    for topo, n in CASES:
        m = ls.measure(ls.config(n, topo, ETA, SIGMA, D), np.arange(SEEDS), BURN, ROUNDS, BATCH)
        out[topo, n] = {
            "avg": ls.summarize(m["avg"][0]),
            "cons": ls.summarize(m["cons"][0]),
            "theory": ls.theory(m["exp"], ETA, SIGMA),
            "W": m["exp"].topology.mixing_matrix(),
        }
    return out


def _lyapunov(W, eta, sigma, d, order):
    """Stationary covariance of e+ = A e + noise by the discrete Lyapunov equation, dense: the
    average's variance and the consensus distance (independent of the spectral formulas)."""
    n = W.shape[0]
    A = (1 - eta) * W if order == "atc" else W - eta * np.eye(n)
    B = eta * W if order == "atc" else eta * np.eye(n)
    S = linalg.solve_discrete_lyapunov(A, sigma**2 * B @ B.T)
    J = np.full((n, n), 1.0 / n)
    return d * float(np.ones(n) @ S @ np.ones(n)) / n**2, d * float(np.trace((np.eye(n) - J) @ S)) / n


@pytest.mark.parametrize("order", ["atc", "cta"])
@pytest.mark.parametrize("name,n", [("ring", 7), ("torus", 9), ("star", 6), ("erdos_renyi", 10)])
def test_closed_forms_solve_the_lyapunov_equation(name, n, order):
    W = rj.topology.get(name, n, **({"p": 0.5, "seed": 1} if name == "erdos_renyi" else {})).mixing_matrix()
    eta = 0.3
    avg, cons = _lyapunov(W, eta, 0.7, 3, order)
    np.testing.assert_allclose(rj.theory.dsgd_noise_average_variance(eta, 0.7, n, 3), avg, rtol=1e-10)
    np.testing.assert_allclose(rj.theory.dsgd_noise_consensus_distance(W, eta, 0.7, 3, order=order), cons, rtol=1e-10)


def test_closed_forms_edge_cases():
    assert rj.theory.dsgd_noise_average_variance(2.0, 1.0, 4) == np.inf  # |1 - eta| = 1: no stationary law
    # eta -> 0: eta sigma^2 d / (2n), the 1/n linear-speedup term of Lian et al. (2017)
    np.testing.assert_allclose(rj.theory.dsgd_noise_average_variance(1e-6, 2.0, 8, 5) / 1e-6, 4 * 5 / 16, rtol=1e-6)
    W = rj.topology.get("complete", 5).mixing_matrix()
    assert rj.theory.dsgd_noise_consensus_distance(W, 0.1, 1.0) < 1e-20  # W = J: one gossip step is exact
    with pytest.raises(ValueError, match="symmetric"):
        rj.theory.dsgd_noise_consensus_distance(np.roll(np.eye(4), 1, 1), 0.1, 1.0)


@pytest.mark.parametrize("case", CASES, ids=[f"{t}{n}" for t, n in CASES])
def test_stationary_variance_of_the_average_matches_closed_form(runs, case):
    r = runs[case]
    assert abs(r["avg"]["mean"] - r["theory"][0]) < 3 * r["avg"]["se"], (r["avg"], r["theory"][0])


@pytest.mark.parametrize("case", CASES, ids=[f"{t}{n}" for t, n in CASES])
def test_stationary_consensus_distance_matches_spectral_formula(runs, case):
    r = runs[case]
    if case[0] == "complete":  # W = 11^T/n: the rows agree after every round, up to float32 rounding
        assert r["cons"]["mean"] < 1e-10 and r["theory"][1] < 1e-20
        return
    assert abs(r["cons"]["mean"] - r["theory"][1]) < 3 * r["cons"]["se"], (r["cons"], r["theory"][1])
    assert r["cons"]["mean"] > 0.5 * r["theory"][1]  # not a vacuous pass on a huge error bar


def test_variance_of_the_average_scales_as_one_over_n(runs):
    """Linear speedup at fixed eta: 4x the nodes, 1/4 the variance of the average."""
    a4, a16 = runs["ring", 4]["avg"], runs["ring", 16]["avg"]
    ratio = a4["mean"] / a16["mean"]
    se = ratio * np.hypot(a4["se"] / a4["mean"], a16["se"] / a16["mean"])
    assert abs(ratio - 4.0) < 3 * se and se < 0.5, (ratio, se)


def test_grad_noise_is_a_swept_hyper_parameter_and_absent_at_zero():
    ls = load_experiment("linear_speedup")
    exp = rj.build(ls.config(4, "ring"))
    assert exp.hp["oracle.grad_noise"] == SIGMA
    assert vmapped_axes(exp, ["seed", "oracle.grad_noise"]) == ["seed", "oracle.grad_noise"]
    plain = rj.build(ls.config(4, "ring", sigma=0.0))
    assert "oracle.grad_noise" not in plain.hp  # 0: the oracle of before, no extra key or parameter
    with pytest.raises(rj.config.ConfigError, match="oracle.grad_noise"):
        rj.build(ls.config(4, "ring", sigma=-1.0))


def test_sweep_vmaps_grad_noise_in_one_compile_and_matches_the_step():
    """rj.sweep over seeds and oracle.grad_noise: one compile, and each point is the built step's run."""
    import jax

    ls = load_experiment("linear_speedup")
    c = ls.config(4, "ring")
    for k, v in {"num_rounds": 30, "eval_every": 30, "eval.max_test_examples": 8}.items():
        rj.config.set_field(c, k, v)
    df = rj.sweep(c, {"seed": [0, 1], "oracle.grad_noise": [0.5, 2.0]}, progress=False)
    assert df.attrs["traces"] == [1]
    exp = rj.build(c)
    last = df[df["round"] == 30]
    for row in last.itertuples():
        hp = exp.hp_values(**{"oracle.grad_noise": row._2})
        state = exp.init_state(row.seed, hp)
        step = jax.jit(exp.step)
        for _ in range(30):
            state, _m = step(state, exp.node_data, hp)
        cons = float(rj.metrics.consensus_distance(exp.models(state)))
        np.testing.assert_allclose(row.consensus_distance, cons, rtol=1e-4)
    by_sigma = last.groupby("oracle.grad_noise").consensus_distance.mean()
    assert by_sigma[2.0] > 4 * by_sigma[0.5]  # the consensus distance grows as sigma^2 (16x in expectation)

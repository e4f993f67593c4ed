"""Push-sum, SGP and push-DIGing on directed graphs (column-stochastic A), against dense NumPy.

References: the out-degree rule A[j, i] = 1/(outdeg_i + 1) built here from the edge list;
push-sum's state after t rounds is exactly (Aᵗx₀, Aᵗ1) and its error x/w − x̄ contracts like
|λ₂(A)| (A^t = π1ᵀ + O(|λ₂|^t)); the directed ring's A = (I + P)/2 has |λ₂| = cos(π/n). On
quadratics fᵢ = ½‖x − bᵢ‖², SGP stops at the fixed point of x = A(x − α(D⁻¹x − b)) with
D = diag(nπ) (the limit of the weights), off mean(b) by O(α); push-DIGing reaches mean(b).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.algorithms import push_sum as ps
from redeem_jax.local.optim import local_optimizer
from redeem_jax.network import directed

D = 3
# A strongly connected, non-regular digraph (edge i → j): a ring plus chords; out-degrees
# 3, 1, 1, 2, 1, 2, so A is column but not row stochastic and the weights move off 1.
EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (0, 2), (0, 3), (3, 1), (5, 2)]
N = 6


def _digraph():
    E = np.zeros((N, N), bool)
    for i, j in EDGES:
        E[i, j] = True
    return E


def _dense_out_degree(E):
    """A[j, i] = 1/(outdeg_i + 1) on edges i → j and the diagonal, by loops (the reference)."""
    n = E.shape[0]
    A = np.zeros((n, n))
    for i in range(n):
        share = 1.0 / (E[i].sum() + 1)
        A[i, i] = share
        for j in range(n):
            if E[i, j]:
                A[j, i] = share
    return A


def _quadratic_oracle():
    """fᵢ(x) = ½‖x − bᵢ‖² with bᵢ the node data (full gradients, no sampling)."""

    def update(x, s, ctx, B):
        return 0.5 * jnp.sum((x - B) ** 2, axis=1), x - B, s

    return rj.core.Oracle(lambda x: (), update)


def _run(algo, topo, x0, B, rounds):
    """Per round: the models, the algorithm state and the metrics, stacked over rounds."""
    oracle = _quadratic_oracle()
    channels = {"push": rj.channels.gossip(topo)}
    x0 = jnp.asarray(x0, jnp.float32)
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(0), topology=topo)
    step = rj.round.make_step(algo, oracle, channels, topology=topo)
    data = jnp.asarray(B, jnp.float32)

    def body(s, _):
        s, m = step(s, data, {})
        return s, (algo.models(s.algorithm), s.algorithm, m)

    _, out = jax.jit(lambda s: jax.lax.scan(body, s, None, length=rounds))(state)
    return jax.tree.map(lambda a: np.asarray(a, np.float64), out)


def _x0(seed=0):
    return np.random.default_rng(seed).normal(size=(N, D)) * 3.0


# --------------------------------------------------------------------------- graphs
def test_out_degree_rule_and_families():
    E = _digraph()
    topo = directed.from_adjacency_directed(E)
    A = topo.mixing_matrix()
    np.testing.assert_allclose(A, _dense_out_degree(E), atol=0)
    np.testing.assert_allclose(A.sum(0), 1.0, atol=1e-12)
    assert np.abs(A.sum(1) - 1).max() > 0.1  # really not row stochastic
    # receiver-side layout: row j of the padded lists holds j's in-neighbours i with A[j, i]
    nbr, w, mask = topo.neighbors, topo.weights, topo.edge_mask
    for j in range(N):
        got = {int(i): float(v) for i, v, m in zip(nbr[j], w[j], mask[j]) if m}
        want = {i: A[j, i] for i in range(N) if i != j and A[j, i] > 0}
        assert got.keys() == want.keys() and all(abs(got[i] - want[i]) < 1e-7 for i in got)

    n = 8
    P = np.roll(np.eye(n), 1, axis=0)  # P[i + 1, i] = 1: i sends to i + 1
    np.testing.assert_allclose(directed.directed_ring(n).mixing_matrix(), (np.eye(n) + P) / 2, atol=1e-15)
    tau = 3
    expo = sum(np.linalg.matrix_power(P, 2**k) for k in range(tau))
    np.testing.assert_allclose(
        directed.directed_exponential(n).mixing_matrix(), (np.eye(n) + expo) / (tau + 1), atol=1e-15
    )
    one = directed.one_peer_directed_exponential(n)
    assert one.period == tau
    prod = np.eye(n)
    for t in range(tau):
        np.testing.assert_allclose(one.mixing_matrix(t), (np.eye(n) + np.linalg.matrix_power(P, 2**t)) / 2)
        prod = one.mixing_matrix(t) @ prod
    np.testing.assert_allclose(prod, np.full((n, n), 1 / n), atol=1e-15)  # exact averaging per period

    with pytest.raises(ValueError, match="not strongly connected"):
        directed.from_adjacency_directed(np.triu(np.ones((4, 4)), 1))


# --------------------------------------------------------------------------- push-sum
@pytest.mark.parametrize("graph", ["digraph", "ring"])
def test_push_sum_is_the_dense_recursion_and_reaches_the_average(graph):
    topo = directed.from_adjacency_directed(_digraph()) if graph == "digraph" else directed.directed_ring(N)
    A = topo.mixing_matrix()
    x0 = _x0()
    T = 150
    models, st, _ = _run(ps.push_sum(), topo, x0, np.zeros((N, D)), T)
    # Dense float64 reference: after t rounds (Aᵗx₀, Aᵗ1).
    X, w = x0.copy(), np.ones(N)
    for t in range(T):
        X, w = A @ X, A @ w
        if t in (0, 4, 19):
            np.testing.assert_allclose(st.x[t], X, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(st.w[t], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(models[-1], np.broadcast_to(x0.mean(0), (N, D)), atol=1e-5)
    # weights tend to nπ (Perron vector of A), numerators to π Σx
    pi = directed.perron_vector(A)
    np.testing.assert_allclose(st.w[-1], N * pi, atol=1e-5)
    if graph == "digraph":
        assert np.ptp(N * pi) > 0.3  # the weights really are needed: x alone is biased
        assert np.abs(st.x[-1] - x0.mean(0)).max() > 0.3


def test_push_sum_conserves_both_sums_every_round():
    x0 = _x0(1)
    _, st, _ = _run(ps.push_sum(), directed.from_adjacency_directed(_digraph()), x0, np.zeros((N, D)), 60)
    # column stochastic: 1ᵀA = 1ᵀ, so Σx and Σw are invariants (float32 rounding only)
    np.testing.assert_allclose(st.x.sum(1), np.broadcast_to(x0.sum(0), (60, D)), atol=2e-5)
    np.testing.assert_allclose(st.w.sum(1), N, atol=2e-6)


def _late_log_rate(err, lo, hi):
    t = np.arange(lo, hi)
    return np.polyfit(t, np.log(err[lo:hi]), 1)[0]


def test_push_sum_error_decays_at_the_second_eigenvalue_modulus():
    n = 8
    topo = directed.directed_ring(n)
    lam2 = directed.push_sum_rate(topo.mixing_matrix())
    # closed form: eigenvalues (1 + e^{2πik/n})/2, modulus |cos(πk/n)|, largest off k = 0 at k = 1
    assert abs(lam2 - np.cos(np.pi / n)) < 1e-12
    assert abs(lam2 - np.sort(np.abs(np.linalg.eig(topo.mixing_matrix())[0]))[-2]) < 1e-12
    x0 = np.random.default_rng(2).normal(size=(n, D))
    models, _, _ = _run(ps.push_sum(), topo, x0, np.zeros((n, D)), 90)
    err = np.linalg.norm(models - x0.mean(0), axis=(1, 2))
    # A is normal: ‖Aᵗe‖² = Σ_k |λ_k|^{2t}|ê_k|², so late rounds decay at exactly log|λ₂| up to
    # (cos(2π/n)/cos(π/n))^{2t} < 1e-9 here; the error stays far above float32 rounding.
    slope = _late_log_rate(err, 40, 90)
    assert err[89] > 1e-4
    assert abs(slope - np.log(lam2)) < 2e-3, (slope, np.log(lam2))

    # The non-regular digraph (non-normal A, w ≠ 1): same asymptotic rate.
    topo = directed.from_adjacency_directed(_digraph())
    lam2 = directed.push_sum_rate(topo.mixing_matrix())
    x0 = _x0(3)
    lam3 = np.sort(np.abs(np.linalg.eigvals(topo.mixing_matrix())))[-4]  # next modulus off the pair
    models, _, _ = _run(ps.push_sum(), topo, x0, np.zeros((N, D)), 22)
    err = np.linalg.norm(models - x0.mean(0), axis=(1, 2))
    # λ₂ is a complex pair (|λ| = 0.531, next 0.457): the error oscillates around |λ₂|^t and
    # the next mode fades like 0.86^t, so the fit over rounds 8..21 is within 0.03 of log|λ₂|
    # (float64: −0.65 vs −0.633) and far from log|λ₃| = −0.78. Rounds end before float32 noise.
    slope = _late_log_rate(err, 8, 22)
    assert err[21] > 2e-5
    assert abs(slope - np.log(lam2)) < 0.04, (slope, np.log(lam2))
    assert abs(slope - np.log(lam3)) > 0.1


# --------------------------------------------------------------------------- SGP, push-DIGing
def _sgp_fixed_point(A, B, alpha):
    """z* of SGP on fᵢ = ½‖x − bᵢ‖²: with w → nπ = diag(D), x = A(x − α(D⁻¹x − b)) gives
    x* = α(I − A(I − αD⁻¹))⁻¹ A b and z* = D⁻¹x*."""
    n = A.shape[0]
    d = n * directed.perron_vector(A)
    M = np.eye(n) - A @ (np.eye(n) - alpha * np.diag(1 / d))
    return np.linalg.solve(M, alpha * A @ B) / d[:, None]


def test_sgp_constant_step_stops_at_its_biased_fixed_point():
    topo = directed.from_adjacency_directed(_digraph())
    A = topo.mixing_matrix()
    B = np.random.default_rng(4).normal(size=(N, D))
    alpha = 0.2
    models, st, m = _run(ps.sgp(local_optimizer("sgd", alpha)), topo, np.zeros((N, D)), B, 400)
    z_star = _sgp_fixed_point(A, B, alpha)
    np.testing.assert_allclose(models[-1], z_star, atol=1e-5)
    bias = np.abs(z_star - B.mean(0)).max()
    assert bias > 1e-2  # a neighbourhood, not the optimum
    # the bias is O(α): halving α about halves it (closed form)
    half = np.abs(_sgp_fixed_point(A, B, alpha / 2) - B.mean(0)).max()
    assert 0.35 < half / bias < 0.65
    assert np.all(np.isfinite(m["train_loss"]))


@pytest.mark.parametrize("graph", ["digraph", "one_peer"])
def test_push_diging_reaches_the_exact_optimum(graph):
    topo = (
        directed.from_adjacency_directed(_digraph())
        if graph == "digraph"
        else directed.one_peer_directed_exponential(8)
    )
    n = topo.n
    B = np.random.default_rng(5).normal(size=(n, D))
    x0 = np.random.default_rng(6).normal(size=(n, D))
    models, st, _ = _run(ps.push_diging(local_optimizer("sgd", 0.1)), topo, x0, B, 400)
    assert np.abs(models[-1] - B.mean(0)).max() < 1e-5
    # tracking invariant: Σ A·y_t = Σ y_t = Σ ∇F(x_t) (column stochastic, y₀ = ∇F(x₀))
    grads = st.g  # ∇F at the models the round started from
    np.testing.assert_allclose(st.y.sum(1), grads.sum(1), atol=1e-4)


# --------------------------------------------------------------------------- wiring
def test_registry_one_message_per_edge_and_column_check():
    opt = local_optimizer("sgd", 0.1)
    topo = directed.from_adjacency_directed(_digraph())
    for name, width in [("push_sum", D + 1), ("sgp", D + 1), ("push_diging", 2 * D + 1)]:
        algo = rj.algorithms.get(name)(opt)
        assert algo.name == name and not algo.exchanges["push"].robust
        assert rj.algorithms.options(name) == {}
        algo.validate(topo)  # column stochastic: accepted
        _, _, m = _run(algo, topo, _x0(), np.zeros((N, D)), 2)
        # one exchange per round: one row of `width` float32 per live edge
        np.testing.assert_allclose(m["bytes_sent"], len(EDGES) * width * 4)
    # a row-stochastic-only directed topology is refused (push-sum would be biased)
    rows = rj.topology.from_adjacency(_digraph().T, weights="uniform", stochastic="row")
    with pytest.raises(ValueError, match="column-stochastic"):
        rj.algorithms.get("push_sum")(opt).validate(rows)

"""Closed forms for D-SGD's bias, exact methods' rates and Choco constants (`theory`) against
numpy simulations of the recursions on quadratics f_i = (mu_i/2)||x - b_i||^2."""

import warnings

import numpy as np
import pytest

from redeem_jax import theory as th


# --------------------------------------------------------------------------- #
# graphs and helpers (numpy only)
# --------------------------------------------------------------------------- #
def ring(n, w=1 / 3):
    """Ring with weight w per neighbour (w = 1/3: Metropolis-Hastings)."""
    P = np.roll(np.eye(n), 1, axis=1)
    return (1 - 2 * w) * np.eye(n) + w * (P + P.T)


def random_graph(n, p=0.35, seed=0):
    """Connected Erdős–Rényi graph with MH weights 1/(1 + max(d_i, d_j))."""
    rng = np.random.default_rng(seed)
    while True:
        A = np.triu(rng.random((n, n)) < p, 1)
        A = A | A.T
        L = np.diag(A.sum(1)) - A
        if np.sort(np.linalg.eigvalsh(L))[1] > 1e-8:
            break
    d = A.sum(1)
    W = np.where(A, 1.0 / (1.0 + np.maximum(d[:, None], d[None, :])), 0.0)
    return W + np.diag(1.0 - W.sum(1))


def complete(n):
    return np.full((n, n), 1.0 / n)


def tail_rate(err, lo=1e-10, hi=1e-3):
    """exp(slope) of a least-squares fit of log err over the rounds with lo < err < hi."""
    t = np.arange(len(err))
    m = (err > lo) & (err < hi)
    assert m.sum() >= 20, "fit window too short"
    return float(np.exp(np.polyfit(t[m], np.log(err[m]), 1)[0]))


def optimum(B, mu):
    """argmin of sum_i (mu_i/2)||x - b_i||^2 (mu scalar, [n] or [n, 1])."""
    w = np.broadcast_to(np.asarray(mu, dtype=float).reshape(-1), (len(B),))
    return np.average(B, axis=0, weights=w)


def run_dsgd(W, B, step, order, mu, T):
    X = np.zeros_like(B)
    m = mu[:, None]
    for _ in range(T):
        X = W @ X - step * m * (X - B) if order == "cta" else W @ (X - step * m * (X - B))
    return X


def run_diging(W, B, step, mu, order, T, X0):
    G = lambda X: mu * (X - B)  # noqa: E731
    X, Y = X0.copy(), G(X0)
    errs, xs = [], optimum(B, mu)
    for _ in range(T):
        if order == "cta":
            Xn = W @ X - step * Y
            Y = W @ Y + G(Xn) - G(X)
        else:
            Xn = W @ (X - step * Y)
            Y = W @ (Y + G(Xn) - G(X))
        X = Xn
        errs.append(np.linalg.norm(X - xs))
    return X, np.array(errs)


def run_ed(W, B, step, mu, T, X0, combine):
    """Exact diffusion (combine = (I + W)/2) or D^2 (combine = W)."""
    G = lambda X: mu * (X - B)  # noqa: E731
    xs = optimum(B, mu)
    Xp, Gp = X0, G(X0)
    X = combine @ (X0 - step * Gp)
    errs = [np.linalg.norm(X - xs)]
    for _ in range(T - 1):
        Gc = G(X)
        X, Xp, Gp = combine @ (2 * X - Xp - step * (Gc - Gp)), X, Gc
        errs.append(np.linalg.norm(X - xs))
    return X, np.array(errs)


GRAPHS = {"ring8": ring(8), "ring16": ring(16), "er12": random_graph(12, seed=3)}


# --------------------------------------------------------------------------- #
# D-SGD fixed point and bias
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", list(GRAPHS))
@pytest.mark.parametrize("order", ["cta", "atc"])
def test_dsgd_fixed_point_matches_simulation(name, order):
    W = GRAPHS[name]
    n = len(W)
    B = np.random.default_rng(1).normal(size=(n, 3))
    step = 0.2
    x = th.dsgd_fixed_point(W, B, step, order)
    sim = run_dsgd(W, B, step, order, np.ones(n), T=600)
    np.testing.assert_allclose(sim, x, rtol=0, atol=1e-10)
    # fixed-point equation of the recursion
    nxt = W @ x - step * (x - B) if order == "cta" else W @ (x - step * (x - B))
    np.testing.assert_allclose(nxt, x, rtol=0, atol=1e-12)
    # the plain closed forms of the brief / field notes
    I = np.eye(n)
    ref = (
        step * np.linalg.solve(step * I + I - W, B)
        if order == "cta"
        else step * np.linalg.solve(I - (1 - step) * W, W @ B)
    )
    np.testing.assert_allclose(x, ref, rtol=0, atol=1e-12)
    # the mean is exact for equal curvatures: 1^T(I - W) = 0
    np.testing.assert_allclose(x.mean(0), B.mean(0), rtol=0, atol=1e-12)
    # 1-D b keeps its shape
    assert th.dsgd_fixed_point(W, B[:, 0], step, order).shape == (n,)


@pytest.mark.parametrize("order", ["cta", "atc"])
def test_dsgd_fixed_point_heterogeneous_curvature(order):
    W = GRAPHS["er12"]
    n = len(W)
    rng = np.random.default_rng(2)
    B, mu = rng.normal(size=(n, 2)), rng.uniform(0.5, 2.0, size=n)
    step = 0.2
    x = th.dsgd_fixed_point(W, B, step, order, curvature=mu)
    sim = run_dsgd(W, B, step, order, mu, T=1500)
    np.testing.assert_allclose(sim, x, rtol=0, atol=1e-10)
    res = th.dsgd_consensus_bias(W, B, step, order, curvature=mu)
    xs = (mu[:, None] * B).sum(0) / mu.sum()
    np.testing.assert_allclose(res["optimum"], xs, atol=1e-14)
    assert res["weighted_mean_error"] < 1e-12  # sum mu_i x_i = sum mu_i b_i exactly
    assert res["mean_error"] > 1e-4  # but the plain mean is off


@pytest.mark.parametrize("order", ["cta", "atc"])
def test_dsgd_bias_linear_in_step(order):
    W = ring(8)
    B = np.random.default_rng(3).normal(size=(8, 2))
    # x_inf ~ 1 xbar + alpha L^+ b (CTA), 1 xbar + alpha L^+ W b (ATC), L = I - W
    L_pinv = np.linalg.pinv(np.eye(8) - W)
    lead = L_pinv @ B if order == "cta" else L_pinv @ W @ B
    limit = np.sqrt(np.mean(np.sum(lead**2, axis=1)))
    prev = None
    for step in (4e-3, 2e-3, 1e-3):
        r = th.dsgd_consensus_bias(W, B, step, order)
        assert r["mean_error"] < 1e-12
        c = np.sqrt(r["consensus_error"])
        assert c / step == pytest.approx(limit, rel=0.03)
        assert r["distance_to_optimum"] == pytest.approx(r["consensus_error"], rel=1e-9)
        if prev is not None:
            assert c / prev == pytest.approx(0.5, rel=0.01)
        prev = c


@pytest.mark.parametrize("order", ["cta", "atc"])
def test_dsgd_mode_shrink_diagonalises_fixed_point(order):
    W = GRAPHS["er12"]
    lam, U = np.linalg.eigh(W)
    B = np.random.default_rng(4).normal(size=(len(W), 3))
    for step, mu in ((0.1, 1.0), (0.3, 1.7)):
        s = th.dsgd_mode_shrink(lam, step, order, mu=mu)
        x = th.dsgd_fixed_point(W, B, step, order, curvature=np.full(len(W), mu))
        np.testing.assert_allclose(U @ (s[:, None] * (U.T @ B)), x, rtol=0, atol=1e-12)
    assert th.dsgd_mode_shrink(1.0, 0.1, order) == pytest.approx(1.0)
    lam0 = 0.5
    ref = 0.1 / (0.1 + 1 - lam0) if order == "cta" else 0.1 * lam0 / (1 - 0.9 * lam0)
    assert th.dsgd_mode_shrink(lam0, 0.1, order) == pytest.approx(ref)


@pytest.mark.parametrize("order", ["cta", "atc"])
def test_dsgd_rate(order):
    W = GRAPHS["ring8"]
    B = np.random.default_rng(5).normal(size=(8, 2))
    mu, step = 1.0, 0.3
    x = th.dsgd_fixed_point(W, B, step, order)
    X = np.random.default_rng(6).normal(size=B.shape)
    errs = []
    for _ in range(200):
        X = W @ X - step * (X - B) if order == "cta" else W @ (X - step * (X - B))
        errs.append(np.linalg.norm(X - x))
    assert tail_rate(np.array(errs)) == pytest.approx(th.dsgd_rate(W, step, mu, order), rel=1e-3)
    assert th.dsgd_rate(W, step, mu, order) == pytest.approx(th.linear_rate(W, step, mu, "dsgd", order), abs=1e-12)


# --------------------------------------------------------------------------- #
# exact methods: linear rates
# --------------------------------------------------------------------------- #
# (graph, step) with a real dominant mode, so the tail fit of log error is clean
DIGING_CASES = [
    ("ring8", 0.2, "cta"),
    ("ring16", 0.1, "cta"),
    ("er12", 0.2, "cta"),
    ("ring8", 0.5, "atc"),
    ("ring16", 0.2, "atc"),
    ("er12", 0.3, "atc"),
]


@pytest.mark.parametrize("name,step,order", DIGING_CASES)
def test_diging_converges_at_closed_form_rate(name, step, order):
    W = GRAPHS[name]
    n, mu = len(W), 1.0
    rng = np.random.default_rng(7)
    B = rng.normal(size=(n, 3))
    X, errs = run_diging(W, B, step, mu, order, 4000, rng.normal(size=B.shape))
    np.testing.assert_allclose(X, np.broadcast_to(B.mean(0), X.shape), rtol=0, atol=1e-10)
    r = th.diging_rate(W, step, mu, order)
    assert r > 1 - step * mu + 1e-3  # a consensus mode, not the mean, sets the rate
    assert tail_rate(errs) == pytest.approx(r, rel=1e-3)
    assert th.linear_rate(W, step, mu, "diging", order) == pytest.approx(r, abs=1e-10)


def test_diging_cta_rate_above_one_diverges():
    W, step = ring(12), 0.5
    assert th.diging_rate(W, step, 1.0, "cta") > 1.2
    assert th.diging_rate(W, step, 1.0, "atc") < 1.0
    B = np.random.default_rng(8).normal(size=(12, 1))
    with np.errstate(over="ignore", invalid="ignore"):
        _, errs = run_diging(W, B, step, 1.0, "cta", 200, np.zeros_like(B))
    assert not errs[-1] < 1e6


@pytest.mark.parametrize("name,step", [("ring8", 0.8), ("ring16", 0.5), ("er12", 0.5)])
def test_exact_diffusion_converges_at_closed_form_rate(name, step):
    W = GRAPHS[name]
    n, mu = len(W), 1.0
    rng = np.random.default_rng(9)
    B = rng.normal(size=(n, 2))
    X, errs = run_ed(W, B, step, mu, 1500, rng.normal(size=B.shape), 0.5 * (np.eye(n) + W))
    np.testing.assert_allclose(X, np.broadcast_to(B.mean(0), X.shape), rtol=0, atol=1e-10)
    r = th.exact_diffusion_rate(W, step, mu)
    assert r > abs(1 - step * mu) + 1e-3
    assert tail_rate(errs) == pytest.approx(r, rel=1e-3)
    assert th.linear_rate(W, step, mu, "exact_diffusion") == pytest.approx(r, abs=1e-10)


@pytest.mark.parametrize("name,step", [("ring8", 0.8), ("ring16", 0.5), ("er12", 0.8)])
def test_d2_converges_at_closed_form_rate(name, step):
    W = GRAPHS[name]
    n, mu = len(W), 1.0
    rng = np.random.default_rng(10)
    B = rng.normal(size=(n, 2))
    X, errs = run_ed(W, B, step, mu, 1500, rng.normal(size=B.shape), W)
    np.testing.assert_allclose(X, np.broadcast_to(B.mean(0), X.shape), rtol=0, atol=1e-10)
    r = th.d2_rate(W, step, mu)
    assert tail_rate(errs) == pytest.approx(r, rel=1e-3)
    assert th.linear_rate(W, step, mu, "d2") == pytest.approx(r, abs=1e-10)


def test_d2_diverges_when_lambda_min_below_minus_third():
    W = ring(8, w=0.4)  # eigenvalues 0.2 + 0.8 cos(2 pi k / 8): min -0.6
    assert np.linalg.eigvalsh(W).min() == pytest.approx(-0.6)
    step = 0.1  # c = 0.1 < (3 + 1/lambda_min)/2 = 2/3: unstable
    with pytest.warns(RuntimeWarning, match="-1/3"):
        r = th.d2_rate(W, step, 1.0)
    assert r > 1.0
    # Jury: P(-1) = 1 + lambda_min (3 - 2c) > 0 needs c > (3 + 1/lambda_min)/2 = 2/3 here
    with pytest.warns(RuntimeWarning):
        assert th.d2_rate(W, 2 / 3 - 0.01, 1.0) > 1.0
    with pytest.warns(RuntimeWarning):
        assert th.d2_rate(W, 2 / 3 + 0.01, 1.0) < 1.0
    # the MH ring with even n sits exactly at lambda_min = -1/3: stable, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert th.d2_rate(ring(8), 0.1, 1.0) < 1.0
    B = np.random.default_rng(11).normal(size=(8, 2))
    _, errs = run_ed(W, B, step, 1.0, 400, np.zeros_like(B), W)
    assert errs[-1] > 1e3 * errs[0]
    # exact diffusion on the same W is fine (Wbar has eigenvalues >= 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert th.exact_diffusion_rate(W, step, 1.0) < 1.0
    _, errs = run_ed(W, B, step, 1.0, 1000, np.zeros_like(B), 0.5 * (np.eye(8) + W))
    assert errs[-1] < 1e-10


@pytest.mark.parametrize(
    "method,order,step",
    [("diging", "cta", 0.15), ("diging", "atc", 0.3), ("exact_diffusion", "cta", 0.5), ("d2", "cta", 0.5)],
)
def test_linear_rate_heterogeneous_curvature(method, order, step):
    W = GRAPHS["er12"]  # no repeated eigenvalues: unequal curvatures would split the ring's
    # pairs into close modes and slow the tail fit down
    n = len(W)
    rng = np.random.default_rng(12)
    B, mu = rng.normal(size=(n, 2)), rng.uniform(0.5, 1.5, size=n)
    X0 = rng.normal(size=B.shape)
    if method == "diging":
        X, errs = run_diging(W, B, step, mu[:, None], order, 3000, X0)
    else:
        comb = 0.5 * (np.eye(n) + W) if method == "exact_diffusion" else W
        X, errs = run_ed(W, B, step, mu[:, None], 3000, X0, comb)
    xs = (mu[:, None] * B).sum(0) / mu.sum()
    np.testing.assert_allclose(X, np.broadcast_to(xs, X.shape), rtol=0, atol=1e-10)
    r = th.linear_rate(W, step, mu, method, order)
    assert r < 1
    assert tail_rate(errs) == pytest.approx(r, rel=1e-3)


def test_per_mode_forms_equal_full_iteration_matrix():
    for W in GRAPHS.values():
        for step, mu in ((0.05, 1.0), (0.3, 2.0), (0.9, 0.7)):
            for order in ("cta", "atc"):
                assert th.diging_rate(W, step, mu, order) == pytest.approx(
                    th.linear_rate(W, step, mu, "diging", order), abs=1e-9
                )
                assert th.dsgd_rate(W, step, mu, order) == pytest.approx(
                    th.linear_rate(W, step, mu, "dsgd", order), abs=1e-9
                )
            assert th.exact_diffusion_rate(W, step, mu) == pytest.approx(
                th.linear_rate(W, step, mu, "exact_diffusion"), abs=1e-9
            )
            assert th.d2_rate(W, step, mu) == pytest.approx(th.linear_rate(W, step, mu, "d2"), abs=1e-9)
    # left invariant vectors are exact: v^T A = v^T
    A, v = th.iteration_matrix(GRAPHS["er12"], 0.3, np.linspace(0.5, 2, 12), "diging", "atc")
    np.testing.assert_allclose(v @ A, v, atol=1e-12)
    A, v = th.iteration_matrix(GRAPHS["er12"], 0.3, np.linspace(0.5, 2, 12), "exact_diffusion")
    np.testing.assert_allclose(v @ A, v, atol=1e-12)
    with pytest.raises(ValueError, match="method"):
        th.iteration_matrix(GRAPHS["ring8"], 0.1, 1.0, "extra")
    with pytest.raises(ValueError, match="order"):
        th.diging_rate(GRAPHS["ring8"], 0.1, 1.0, "both")


def test_complete_graph():
    # W = 11^T/n: lambda = 0 off consensus. ATC-DIGing's and D^2's mode matrices vanish there,
    # so they are gradient descent; CTA-DIGing is not ([[0, -a], [-mu, -a mu]]: rate 1 at a = 0.5).
    W = complete(6)
    for step in (0.1, 0.5, 1.5):
        assert th.diging_rate(W, step, 1.0, "atc") == pytest.approx(abs(1 - step))
        assert th.d2_rate(W, step, 1.0) == pytest.approx(abs(1 - step))
        assert th.dsgd_rate(W, step, 1.0, "atc") == pytest.approx(abs(1 - step))
    c = 0.5
    assert th.diging_rate(W, c, 1.0, "cta") == pytest.approx((c + np.sqrt(c * c + 4 * c)) / 2)


# --------------------------------------------------------------------------- #
# Choco
# --------------------------------------------------------------------------- #
def test_choco_constants_ring_and_complete():
    c = th.choco_constants(ring(8), 1.0)
    assert c["delta"] == pytest.approx(1 - th.rho_ring(8), abs=1e-12)  # 0.195262
    assert c["beta"] == pytest.approx(4 / 3, abs=1e-12)  # 1 - lambda_min
    lam = np.linalg.eigvalsh(ring(8))
    assert c["beta"] == pytest.approx(np.max(np.abs(1 - lam)), abs=1e-12)
    c = th.choco_constants(complete(5), 1.0)
    assert c["delta"] == pytest.approx(1.0) and c["beta"] == pytest.approx(1.0)
    for W in (ring(8), ring(32), complete(5), GRAPHS["er12"]):
        for omega in (1.0, 0.5, 0.01):
            c = th.choco_constants(W, omega)
            d, b = c["delta"], c["beta"]
            assert 0 < c["gamma"] <= 1
            assert c["gamma"] == pytest.approx(
                d * d * omega / (16 * d + d * d + 4 * b * b + 2 * d * b * b - 8 * d * omega)
            )
            assert c["rate"] == pytest.approx(1 - d * d * omega / 82)
    with pytest.raises(ValueError, match="omega"):
        th.choco_constants(ring(8), 0.0)


@pytest.mark.parametrize("gamma", [0.3, 1.0, 1.4])
def test_choco_identity_rate_matches_simulation(gamma):
    W = ring(12)
    n = len(W)
    rng = np.random.default_rng(13)
    X = rng.normal(size=(n, 2))
    Xh = np.zeros_like(X)  # Algorithm 1 with Q = identity, Xhat_0 = 0
    mean0 = X.mean(0)
    errs = []
    for _ in range(300):
        X = X + gamma * (W - np.eye(n)) @ Xh
        Xh = Xh + (X - Xh)
        errs.append(np.linalg.norm(X - X.mean(0)))
        np.testing.assert_allclose(X.mean(0), mean0, atol=1e-12)  # mean kept exactly
    r = th.choco_identity_rate(W, gamma)
    lam = np.linalg.eigvalsh(W)[:-1]
    assert r == pytest.approx(np.max(np.abs(1 + gamma * (lam - 1))))
    assert tail_rate(np.array(errs), lo=1e-12, hi=1e-2) == pytest.approx(r, rel=1e-3)
    assert th.choco_identity_rate(W, 1.0) == pytest.approx(th.rho_ring(12))


def test_choco_theorem_rate_against_identity_compressor():
    # The identity compressor (omega = 1) is a valid compressor, so the paper's guarantee on
    # e_t would have to cover its exact contraction (1 - gamma*(1 - lambda_2))^2 at gamma*.
    # It does on fast graphs and fails on slow ones (documented in `choco_constants`).
    for W in (ring(8), ring(16), complete(5)):
        c = th.choco_constants(W, 1.0)
        assert th.choco_identity_rate(W, c["gamma"]) ** 2 <= c["rate"]
    for n in (20, 32, 64):
        c = th.choco_constants(ring(n), 1.0)
        assert th.choco_identity_rate(ring(n), c["gamma"]) ** 2 > c["rate"]

"""Robust aggregators: NumPy references from the papers, invariances, masks, non-finite inputs,
vmap over nodes, preconditions and (f, kappa)-robustness."""

import functools
import itertools
import math
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redeem_jax import aggregators as A

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
D = 4
# name -> (n, f, options) used throughout; small so every compile is cheap.
CASES = {
    "mean": (9, 2, {}),
    "median": (9, 2, {}),
    "trimmed_mean": (9, 2, {}),
    "geometric_median": (9, 2, {}),
    "krum": (9, 2, {}),
    "multi_krum": (9, 2, {}),
    "bulyan": (11, 2, {}),
    "centered_clipping": (9, 2, {"tau": 1.0, "iterations": 3}),
    "mda": (9, 2, {}),
    "meamed": (9, 2, {}),
    "monna": (9, 2, {}),
    "caf": (9, 2, {}),
    "smea": (9, 2, {}),
}
PRE_CASES = {"nnm": (9, 2, {}), "bucketing": (9, 2, {"s": 2}), "clip": (9, 2, {"tau": 1.0}), "arc": (9, 2, {})}
# Rules whose output is not scaling equivariant (absolute radius tau).
NOT_SCALING = {"centered_clipping"}
TOL = {"geometric_median": 2e-4}


@functools.cache
def jitted(name, f, opts=()):
    fn = A.get(name)
    return jax.jit(lambda x, m: fn(x, f, m, **dict(opts)))


@functools.cache
def jitted_pre(name, f, opts=()):
    fn = A.get(name)
    return jax.jit(lambda x, m: fn(x, f, m, return_mask=True, **dict(opts)))


def run(name, x, mask=None, f=None, opts=None):
    n0, f0, o0 = CASES[name]
    f = f0 if f is None else f
    o = o0 if opts is None else opts
    x = jnp.asarray(x, jnp.float32)
    mask = jnp.ones(x.shape[0], bool) if mask is None else jnp.asarray(mask)
    return np.asarray(jitted(name, f, tuple(sorted(o.items())))(x, mask))


def data(seed, n, d=D, loc=0.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) + loc).astype(np.float32)


# ----------------------------------------------------------------------------- NumPy references


def np_krum_scores(x, f, idx):
    n = len(idx)
    k = n - f - 2
    s = []
    for i in idx:
        dd = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in idx if j != i)
        s.append(sum(dd[: max(k, 0)]))
    return np.asarray(s)


def ref_mean(x, f):
    return x.mean(0)


def ref_median(x, f):
    return np.median(x, axis=0)


def ref_trimmed_mean(x, f):
    return np.sort(x, axis=0)[f : len(x) - f].mean(0)


def ref_geometric_median(x, f):
    # argmin_z sum |z - x_i|: plain Weiszfeld in float64 from the mean, run to convergence.
    z = x.mean(0)
    for _ in range(20000):
        w = 1.0 / np.maximum(np.linalg.norm(x - z, axis=1), 1e-12)
        z = (w[:, None] * x).sum(0) / w.sum()
    return z


def tie_key(x):
    # documented tie-break: squared distance to the coordinate-wise median
    return np.sum((x - np.median(x, axis=0)) ** 2, axis=1)


def ref_krum(x, f):
    s = np_krum_scores(x, f, range(len(x)))
    return x[np.lexsort((tie_key(x), s))[0]]


def ref_multi_krum(x, f):
    s = np_krum_scores(x, f, range(len(x)))
    return x[np.lexsort((tie_key(x), s))[: len(x) - f]].mean(0)


def ref_bulyan(x, f):
    n = len(x)
    rem, sel, key = list(range(n)), [], tie_key(x)
    for _ in range(n - 2 * f):
        s = np_krum_scores(x, f, rem)
        sel.append(rem.pop(int(np.lexsort((key[rem], s))[0])))
    v = x[sel]
    beta = len(sel) - 2 * f
    med = np.median(v, axis=0)
    out = []
    for c in range(x.shape[1]):
        order = np.argsort(np.abs(v[:, c] - med[c]), kind="stable")
        out.append(v[order[:beta], c].mean())
    return np.asarray(out)


def ref_centered_clipping(x, f, tau=1.0, iterations=3):
    v = np.median(x, axis=0)
    for _ in range(iterations):
        u = x - v
        nr = np.linalg.norm(u, axis=1)
        v = v + (u * np.minimum(1.0, tau / np.maximum(nr, 1e-30))[:, None]).mean(0)
    return v


def ref_mda(x, f):
    n = len(x)
    best, bd = None, (np.inf, np.inf)
    for c in itertools.combinations(range(n), n - f):
        dd = [np.sum((x[i] - x[j]) ** 2) for i in c for j in c]
        if (max(dd), sum(dd)) < bd:  # smallest diameter, ties by the smaller total spread
            best, bd = c, (max(dd), sum(dd))
    return x[list(best)].mean(0)


def ref_meamed(x, f):
    med = np.median(x, axis=0)
    out = []
    for c in range(x.shape[1]):
        order = np.argsort(np.abs(x[:, c] - med[c]), kind="stable")
        out.append(x[order[: len(x) - f], c].mean())
    return np.asarray(out)


def ref_monna(x, f, reference=0):
    dd = np.sum((x - x[reference]) ** 2, axis=1)
    return x[np.argsort(dd, kind="stable")[: len(x) - f]].mean(0)


def ref_caf(x, f):
    n = len(x)
    c = np.ones(n)
    best_mu, best_lam = x.mean(0), np.inf
    while c.sum() > n - 2 * f:
        mu = (c[:, None] * x).sum(0) / c.sum()
        z = x - mu
        cov = (c[:, None, None] * np.einsum("ni,nj->nij", z, z)).sum(0) / c.sum()
        lam, vec = np.linalg.eigh(cov)
        if lam[-1] < best_lam:
            best_mu, best_lam = mu, lam[-1]
        tau = (z @ vec[:, -1]) ** 2
        tau = np.where(c > 0, tau, 0.0)
        if tau.max() <= 0:
            break
        c = c * (1 - tau / tau.max())
    return best_mu


def ref_smea(x, f):
    n = len(x)
    best, bl = None, np.inf
    for c in itertools.combinations(range(n), n - f):
        lam = np.linalg.eigvalsh(np.cov(x[list(c)].T, bias=True))[-1]
        if lam < bl:
            best, bl = c, lam
    return x[list(best)].mean(0)


def ref_nnm(x, f):
    return np.stack([x[np.argsort(np.sum((x - xi) ** 2, 1), kind="stable")[: len(x) - f]].mean(0) for xi in x])


def ref_bucketing(x, f, s=2):
    return np.stack([x[i : i + s].mean(0) for i in range(0, len(x), s)])


def ref_clip(x, f, tau=1.0):
    nr = np.linalg.norm(x, axis=1)
    return x * np.minimum(1, tau / nr)[:, None]


def ref_arc(x, f):
    n = len(x)
    k = int(math.floor(2 * (f / n) * (n - f)))
    nr = np.linalg.norm(x, axis=1)
    tau = np.sort(nr)[::-1][k]
    return x * np.minimum(1, tau / nr)[:, None]


REFS = {k: globals()[f"ref_{k}"] for k in list(CASES) + list(PRE_CASES)}


@pytest.mark.parametrize("name", list(CASES))
def test_rule_matches_numpy_reference(name):
    n, f, opts = CASES[name]
    x = data(0, n)
    got = run(name, x)
    want = REFS[name](x.astype(np.float64), f, **opts)
    np.testing.assert_allclose(got, want, atol=TOL.get(name, 1e-5), rtol=TOL.get(name, 1e-5))


@pytest.mark.parametrize("name", list(PRE_CASES))
def test_pre_aggregator_matches_numpy_reference(name):
    n, f, opts = PRE_CASES[name]
    x = data(1, n)
    y, m = jitted_pre(name, f, tuple(sorted(opts.items())))(jnp.asarray(x), jnp.ones(n, bool))
    want = REFS[name](x.astype(np.float64), f, **opts)
    assert y.shape == want.shape and bool(np.all(m))
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5, rtol=1e-5)


def test_reference_conventions_even_n_and_krum_neighbours():
    # Even n: the median averages the two middle values (numpy), not the lower one (torch).
    x = np.array([[0.0], [1.0], [2.0], [10.0]], np.float32)
    assert A.get("median")(x, 1)[0] == 1.5
    # Krum uses n - f - 2 neighbours (n=5, f=1: 2 nearest) and picks 1.0; with ByzFL's n - f - 1
    # (3 nearest) the scores would be 8.46 for 1.0 and 7.58 for 2.1, picking 2.1.
    x = np.array([[0.0], [1.0], [2.1], [3.5], [100.0]], np.float32)
    assert float(A.get("krum")(x, 1)[0]) == 1.0
    # Multi-Krum's default m = n - f (scores 5.41, 2.21, 3.17, 8.21, inf-ish): rows 0-3.
    assert np.isclose(float(A.get("multi_krum")(x, 1)[0]), (0 + 1 + 2.1 + 3.5) / 4)
    assert np.isclose(float(A.get("multi_krum")(x, 1, m=2)[0]), (1 + 2.1) / 2)


# ----------------------------------------------------------------------------- invariances


def permute_ok(name, perm):
    return name != "monna" or perm[0] == 0


@pytest.mark.parametrize("name", list(CASES))
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1))
def test_permutation_invariance(name, seed):
    n, f, _ = CASES[name]
    rng = np.random.default_rng(seed)
    x = data(seed, n)
    perm = rng.permutation(n)
    if name == "monna":  # invariant only to permutations that keep the reference row first
        perm = np.concatenate([[0], 1 + rng.permutation(n - 1)])
    np.testing.assert_allclose(run(name, x[perm]), run(name, x), atol=1e-5, rtol=1e-4)


def test_monna_depends_on_reference_row():
    x = data(3, 9)
    x[1] += 5.0
    a, b = A.get("monna")(x, 2), A.get("monna")(x, 2, reference=1)
    assert not np.allclose(a, b)
    np.testing.assert_allclose(b, ref_monna(x.astype(np.float64), 2, reference=1), atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), shift=st.floats(-20, 20), scale=st.floats(0.2, 5.0))
def test_translation_and_scaling_equivariance(name, seed, shift, scale):
    n, f, _ = CASES[name]
    x = data(seed, n)
    c = np.random.default_rng(seed + 1).normal(size=D).astype(np.float32) * shift
    base = run(name, x)
    np.testing.assert_allclose(run(name, x + c), base + c, atol=2e-4 * (1 + abs(shift)), rtol=1e-4)
    if name not in NOT_SCALING:
        np.testing.assert_allclose(run(name, scale * x), scale * base, atol=2e-4 * scale, rtol=2e-4)


def test_centered_clipping_is_not_scaling_equivariant():
    x = data(4, 9) * 10
    assert not np.allclose(run("centered_clipping", 2 * x), 2 * run("centered_clipping", x), atol=1e-3)


@pytest.mark.parametrize("name", ["nnm", "clip", "arc"])
def test_pre_aggregators_are_permutation_equivariant(name):
    n, f, opts = PRE_CASES[name]
    x, perm = data(5, n) * 2, np.random.default_rng(5).permutation(n)
    fn = jitted_pre(name, f, tuple(sorted(opts.items())))
    ones = jnp.ones(n, bool)
    np.testing.assert_allclose(fn(x[perm], ones)[0], np.asarray(fn(x, ones)[0])[perm], atol=1e-5)


def test_nnm_translation_and_arc_scaling_equivariance():
    x, c = data(6, 9), np.float32(7.0)
    nnm = jitted_pre("nnm", 2)
    ones = jnp.ones(9, bool)
    np.testing.assert_allclose(nnm(x + c, ones)[0], np.asarray(nnm(x, ones)[0]) + c, atol=1e-4)
    arc = jitted_pre("arc", 2)
    np.testing.assert_allclose(arc(3 * x, ones)[0], 3 * np.asarray(arc(x, ones)[0]), atol=1e-4)


def test_bucketing_with_key_partitions_rows():
    # With a key, bucketing is a random partition: each output row is the mean of s distinct input
    # rows, every input row is used once, and a different key gives a different partition.
    n, s = 8, 2
    x = data(7, n)
    pre = A.get("bucketing")
    y = np.asarray(pre(x, 1, s=s, key=jax.random.PRNGKey(3)))
    means = {c: x[list(c)].mean(0) for c in itertools.combinations(range(n), s)}
    used = []
    for row in y:
        match = [c for c, m in means.items() if np.allclose(m, row, atol=1e-5)]
        assert len(match) == 1
        used += list(match[0])
    assert sorted(used) == list(range(n))
    y2 = np.asarray(pre(x, 1, s=s, key=jax.random.PRNGKey(4)))
    assert not np.allclose(np.sort(y, 0), np.sort(y2, 0))
    assert pre(data(8, 9), 1, s=2).shape == (5, D)  # ceil(n / s) rows


# ----------------------------------------------------------------------------- Byzantine inputs

BAD = [np.nan, np.inf, -np.inf, 1e38, -1e38, 3e30]


def attacked(seed, n, f, kinds):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=D).astype(np.float32) * 3
    x = np.broadcast_to(p, (n, D)).copy()
    for j, k in enumerate(kinds):
        row = n - f + j
        if k == "mixed":
            x[row] = rng.choice(np.asarray(BAD, np.float32), size=D)
        elif k == "gauss":
            x[row] = rng.normal(size=D) * 100
        else:
            x[row] = np.float32(k)
            if rng.random() < 0.5:  # one bad entry only
                x[row] = p
                x[row, rng.integers(D)] = np.float32(k)
    pos = rng.permutation(n)
    return x[pos], p


@pytest.mark.parametrize("name", [k for k in CASES if k != "mean"])
@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1), kinds=st.lists(st.sampled_from(BAD + ["mixed", "gauss"]), min_size=2, max_size=2)
)
def test_equal_honest_inputs_win_against_anything(name, seed, kinds):
    n, f, opts = CASES[name]
    x, p = attacked(seed, n, f, kinds)
    if name == "monna":  # MoNNA's reference row is the node's own, honest, vector
        j = int(np.flatnonzero(np.all(x == p, axis=1))[0])
        x[[0, j]] = x[[j, 0]]
    xin = x.copy()
    out = run(name, x)
    np.testing.assert_array_equal(x, xin)  # inputs never mutated
    assert np.all(np.isfinite(out))
    if name == "centered_clipping":
        # Fixed radius: each finite attacker pulls by at most tau per iteration.
        bound = opts["iterations"] * f * opts["tau"] / n + 1e-5
        assert np.linalg.norm(out - p) <= bound * (1 + 1e-5)
    else:
        np.testing.assert_allclose(out, p, atol=2e-5 * (1 + np.abs(p).max()), rtol=1e-5)


def test_centered_clipping_ignores_nonfinite_rows_exactly():
    x, p = attacked(0, 9, 2, [np.nan, np.inf])
    x[np.any(~np.isfinite(x), 1)] = np.nan
    np.testing.assert_allclose(run("centered_clipping", x), p, atol=1e-6)


def test_mean_is_poisoned_as_documented():
    x, _ = attacked(0, 9, 2, [np.nan, 1.0])
    assert np.all(np.isnan(run("mean", x)))


@pytest.mark.parametrize(
    "name", ["nnm+krum", "arc+nnm+geometric_median", "clip+trimmed_mean", "bucketing+median", "nnm+mda"]
)
def test_compositions_resist_nonfinite_inputs(name):
    f = 1 if name.startswith("bucketing") else 2
    x, p = attacked(3, 9, f, [np.nan, 1e38][:f])
    out = np.asarray(jax.jit(lambda x: A.get(name)(x, f))(x))
    assert np.all(np.isfinite(out))
    if not name.startswith(("arc", "clip", "bucketing")):
        np.testing.assert_allclose(out, p, atol=1e-4)


def test_huge_values_do_not_overflow_distances():
    x = data(9, 9)
    x[7] = 1e38
    x[8] = -3e38
    for name in ["krum", "geometric_median", "caf", "smea", "mda", "multi_krum"]:
        out = run(name, x)
        assert np.all(np.isfinite(out)) and np.abs(out).max() < 10, name


# ----------------------------------------------------------------------------- masks and vmap


def masked_case(name, seed):
    n, f, opts = CASES[name]
    n_pad = n + 3
    rng = np.random.default_rng(seed)
    x = data(seed, n_pad)
    mask = np.zeros(n_pad, bool)
    mask[rng.choice(n_pad, n, replace=False)] = True
    if name == "monna" and not mask[0]:  # the reference (own) row is always valid
        mask[np.flatnonzero(mask)[-1]] = False
        mask[0] = True
    x[~mask] = rng.choice([np.nan, 1e38, 5.0], size=(int((~mask).sum()), 1))  # garbage in pads
    return x, mask, f, opts


@pytest.mark.parametrize("name", list(CASES))
def test_mask_equivalence(name):
    for seed in range(2):
        x, mask, f, opts = masked_case(name, seed)
        got = run(name, x, mask)
        want = run(name, x[mask])
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(PRE_CASES))
def test_pre_aggregator_mask_equivalence(name):
    n, f, opts = PRE_CASES[name]
    o = tuple(sorted(opts.items()))
    rng = np.random.default_rng(11)
    x = data(11, n + 3)
    mask = np.ones(n + 3, bool)
    mask[rng.choice(n + 3, 3, replace=False)] = False
    y, m = jitted_pre(name, f, o)(x, mask)
    y2, m2 = jitted_pre(name, f, o)(x[mask], jnp.ones(n, bool))
    if name == "bucketing":
        k = int(np.sum(m2))
        assert int(np.sum(m)) == k
        np.testing.assert_allclose(np.asarray(y)[:k], np.asarray(y2)[:k], atol=1e-5)
    else:
        np.testing.assert_array_equal(np.asarray(m), mask)
        np.testing.assert_allclose(np.asarray(y)[mask], y2, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES) + ["nnm+trimmed_mean"])
def test_vmap_over_nodes_equals_per_node_loop(name):
    n, f, opts = CASES.get(name, (9, 2, {}))
    nodes = 3
    xs = np.stack([masked_case(name if name in CASES else "median", s)[0] for s in range(nodes)])
    ms = np.stack([masked_case(name if name in CASES else "median", s)[1] for s in range(nodes)])
    fn = A.get(name)
    batched = jax.jit(jax.vmap(lambda x, m: fn(x, f, m, **opts)))(xs, ms)
    single = jitted(name, f, tuple(sorted(opts.items())))
    for i in range(nodes):  # the per-node evaluation, one node at a time
        np.testing.assert_allclose(batched[i], single(xs[i], ms[i]), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- API and preconditions


def test_registry_and_composition():
    assert set(CASES) == set(A.RULES) and set(PRE_CASES) == set(A.PRE_AGGREGATORS)
    assert A.is_pre_aggregator("nnm") and A.is_pre_aggregator("arc+nnm")
    assert not A.is_pre_aggregator("krum") and not A.is_pre_aggregator("nnm+krum")
    x = data(12, 9)
    comp = A.get("arc+nnm+geometric_median")(x, 2)
    manual = A.get("geometric_median")(A.get("nnm")(A.get("arc")(x, 2), 2), 2)
    np.testing.assert_allclose(comp, manual, atol=1e-6)
    assert A.get("arc+nnm")(x, 2).shape == (9, D)
    # options routed to the stages that accept them, or to one stage by name
    a = A.get("clip+centered_clipping")(x, 2, tau=0.5)
    b = A.get("centered_clipping")(A.get("clip")(x, 2, tau=0.5), 2, tau=0.5)
    np.testing.assert_allclose(a, b, atol=1e-6)
    c = A.get("clip+centered_clipping")(x, 2, clip={"tau": 0.5})
    np.testing.assert_allclose(c, A.get("centered_clipping")(A.get("clip")(x, 2, tau=0.5), 2), atol=1e-6)
    with pytest.raises(ValueError, match="only the last stage"):
        A.get("krum+nnm")
    with pytest.raises(ValueError, match="unknown aggregator"):
        A.get("kurm")
    with pytest.raises(TypeError, match="static"):
        jax.jit(lambda x, f: A.get("krum")(x, f))(x, 2)


@pytest.mark.parametrize(
    "name,n,f,msg",
    [
        ("krum", 6, 2, r"n >= 2f \+ 3"),
        ("multi_krum", 6, 2, r"n >= 2f \+ 3"),
        ("bulyan", 10, 2, r"n >= 4f \+ 3"),
        ("trimmed_mean", 4, 2, "n > 2f"),
        ("median", 6, 3, "n > 2f"),
        ("geometric_median", 2, 1, "n > 2f"),
        ("nnm+krum", 6, 2, r"2f \+ 3"),
        ("bucketing+krum", 10, 2, r"n >= 2f \+ 3"),
        ("krum", 5, -1, "f >= 0"),
    ],
)
def test_preconditions_raise(name, n, f, msg):
    with pytest.raises(ValueError, match=msg):
        A.check_preconditions(name, n, f)
    if f >= 0:
        with pytest.raises(ValueError, match=msg):
            A.get(name)(np.zeros((n, 2), np.float32), f)


def test_preconditions_pass_at_the_limit():
    for name, n, f in [("krum", 7, 2), ("bulyan", 11, 2), ("trimmed_mean", 5, 2), ("mda", 20, 4)]:
        A.check_preconditions(name, n, f)
    A.check_preconditions("multi_krum", 7, 2, m=3)
    with pytest.raises(ValueError, match="m <= n"):
        A.check_preconditions("multi_krum", 7, 2, m=8)


def test_caf_with_f_zero_returns_the_mean():
    x = data(13, 6)
    np.testing.assert_allclose(A.get("caf")(x, 0), x.mean(0), atol=1e-5)


# ----------------------------------------------------------------------------- (f, kappa)-robustness

BOUNDED = [
    "trimmed_mean",
    "median",
    "geometric_median",
    "krum",
    "nnm+trimmed_mean",
    "nnm+median",
    "nnm+krum",
    "nnm+geometric_median",
]


def test_kappa_bounds_formulae():
    assert A.kappa_bound("trimmed_mean", 10, 2) == pytest.approx(6 * 2 * 8 / 36)
    assert A.kappa_bound("krum", 10, 2) == pytest.approx(6 * 8 / 6)
    assert A.kappa_bound("median", 10, 2) == pytest.approx(4 * (8 / 6) ** 2)
    assert A.kappa_bound("nnm+krum", 10, 2) == pytest.approx(8 * 2 / 8 * (8 + 1))
    assert A.kappa_bound("mean", 10, 0) == 0 and A.kappa_bound("mean", 10, 1) == math.inf
    assert A.kappa_bound("caf", 10, 2) is None
    for name in BOUNDED:
        assert A.kappa_bound(name, 10, 2) >= A.kappa_lower_bound(10, 2)


@pytest.mark.parametrize("name", BOUNDED)
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), attack=st.sampled_from(["none", "far", "alie", "flip"]), z=st.floats(0.1, 5.0))
def test_measured_kappa_below_bound(name, seed, attack, z):
    n, f = 9, 2
    rng = np.random.default_rng(seed)
    honest = rng.normal(size=(n - f, D)).astype(np.float32) + rng.normal(size=D).astype(np.float32)
    mu, sd = honest.mean(0), honest.std(0, ddof=1)
    byz = {
        "none": rng.normal(size=(f, D)) + mu,
        "far": np.broadcast_to(mu + 100 * z, (f, D)),
        "alie": np.broadcast_to(mu - z * sd, (f, D)),
        "flip": np.broadcast_to(-z * mu, (f, D)),
    }[attack]
    x = np.concatenate([honest, byz.astype(np.float32)])
    out = np.asarray(jitted(name, f)(x, jnp.ones(n, bool)))
    ratio = float(A.kappa_ratio(jnp.asarray(out), jnp.asarray(honest)))
    assert ratio <= A.kappa_bound(name, n, f) * (1 + 1e-4) + 1e-6


@pytest.mark.parametrize("name", ["krum", "trimmed_mean"])
def test_empirical_kappa_between_lower_and_upper_bound(name):
    n, f = 7, 2
    k = A.empirical_kappa(name, n, f, d=3, trials=3, steps=40, key=jax.random.PRNGKey(0))
    assert k >= A.kappa_lower_bound(n, f) - 1e-3
    assert k <= A.kappa_bound(name, n, f)
    # mean is unbounded: the search must find a huge ratio
    assert A.empirical_kappa("mean", n, f, d=3, trials=1, steps=5) > 100


@pytest.mark.parametrize("name", ["smea", "caf", "mda", "krum"])
def test_wide_inputs_use_gram_paths_and_match_reference(name):
    # d > n: SMEA and CAF take eigenvalues from Gram matrices instead of d x d covariances.
    x = data(14, 9, d=12)
    got = np.asarray(A.get(name)(x, 2))
    np.testing.assert_allclose(got, REFS[name](x.astype(np.float64), 2), atol=1e-5, rtol=1e-5)
    x[3] = np.nan
    x[5] = 1e38
    assert np.all(np.isfinite(np.asarray(A.get(name)(x, 2))))


@pytest.mark.parametrize("rule", ["nnm+krum", "nnm+trimmed_mean", "median", "krum"])
def test_empirical_kappa_never_below_the_universal_lower_bound(rule):
    # The lower-bound input (n−2f at 0, f at ±u) with both labellings must be in the search.
    n, f = 9, 2
    k = A.empirical_kappa(rule, n, f, d=3, trials=1, steps=2)
    assert k >= A.kappa_lower_bound(n, f) * (1 - 1e-5)


def _diameter(rows):
    return max(float(np.sum((a - b) ** 2)) for a in rows for b in rows)


@pytest.mark.parametrize("seed", range(4))
def test_subset_rules_beyond_the_enumeration_limit_keep_their_bounds(seed, monkeypatch):
    # Above MAX_SUBSETS, MDA and SMEA average the best of the n "row and its n - f - 1 nearest"
    # balls. Forced here on inputs small enough to enumerate: the approximate MDA subset has at
    # most twice the optimal diameter (squared distances: 4x), the approximate SMEA subset a top
    # eigenvalue at most 2(n - f) times the optimum.
    n, f = 11, 3
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    x[:f] += rng.normal(size=(f, 5)).astype(np.float32) * 3
    exact = {name: np.asarray(A.get(name)(x, f)) for name in ("mda", "smea")}
    monkeypatch.setattr(A, "MAX_SUBSETS", 1)
    approx = {name: np.asarray(A.get(name)(x, f)) for name in ("mda", "smea")}

    def subset_of(out):  # the averaged subset, recovered by search (means of distinct subsets differ)
        return min(itertools.combinations(range(n), n - f), key=lambda c: np.abs(x[list(c)].mean(0) - out).max())

    s_exact, s_approx = subset_of(exact["mda"]), subset_of(approx["mda"])
    assert _diameter(x[list(s_approx)]) <= 4 * _diameter(x[list(s_exact)]) * (1 + 1e-5)
    lam = lambda c: np.linalg.eigvalsh(np.cov(x[list(c)].T, bias=True))[-1]  # noqa: E731
    assert lam(subset_of(approx["smea"])) <= 2 * (n - f) * lam(subset_of(exact["smea"])) * (1 + 1e-5)


def test_subset_rules_beyond_the_enumeration_limit_run_and_resist_attacks():
    n, f = 40, 10  # C(40, 10) = 847,660,528 subsets: not enumerable
    x, p = attacked(5, n, f, [np.nan, 1e38])
    x[n - f + 2 :] = 1e3  # the other Byzantine rows: far
    for name in ("mda", "smea"):
        out = np.asarray(jax.jit(lambda v: A.get(name)(v, f))(x))
        np.testing.assert_allclose(out, p, atol=1e-4)


# ----------------------------------------------------------------------------- below the precondition, dtypes (issue 12)

# Smallest live count each rule is defined for, from the papers (an independent table, not
# A.min_inputs): 2f + 1 for a honest majority, Krum 2f + 3 (Blanchard et al. 2017: n > 2f + 2),
# Bulyan 4f + 3 (El Mhamdi et al. 2018), mean 1.
PAPER_MIN = {
    "mean": lambda f: 1,
    "krum": lambda f: 2 * f + 3,
    "multi_krum": lambda f: 2 * f + 3,
    "bulyan": lambda f: 4 * f + 3,
}


def paper_min(name, f):
    return PAPER_MIN.get(name, lambda f: 2 * f + 1)(f)


def test_min_inputs_is_the_precondition_table():
    for name in list(CASES) + list(PRE_CASES):
        for f in (0, 1, 2, 3):
            want = {"clip": 1, "bucketing": 1}.get(name, paper_min(name, f))
            assert A.min_inputs(name, f) == want, (name, f)
            assert A.min_inputs(A.get(name), f) == want
            if want > 1:  # the unmasked refusal uses the same number
                A.check_preconditions(name, want, f)
                with pytest.raises(ValueError, match=name):
                    A.check_preconditions(name, want - 1, f)
    assert A.min_inputs("nnm+krum", 2) == 7 and A.min_inputs("arc+nnm+bulyan", 1) == 7
    # ceil(n / s) buckets must reach the next rule's count: n >= s (k - 1) + 1.
    assert A.min_inputs("bucketing+krum", 2) == 2 * 6 + 1
    assert A.min_inputs("bucketing+krum", 2, s=3) == 3 * 6 + 1
    assert A.min_inputs(A.get("bucketing+trimmed_mean", s=3), 1) == 3 * 2 + 1
    for n in (12, 13):
        ok = n >= 13
        try:
            A.check_preconditions("bucketing+krum", n, 2)
            assert ok
        except ValueError:
            assert not ok
    with pytest.raises(TypeError, match="not an aggregator"):
        A.min_inputs(lambda x, f: x, 1)


def _below_case(name, f, live_count, seed=0):
    n = max(paper_min(name, f) + 2, CASES.get(name, (9,))[0])
    rng = np.random.default_rng(seed)
    x = data(seed, n) * 3 + 1
    live = np.zeros(n, bool)
    live[rng.choice(np.arange(1, n), live_count, replace=False)] = True  # row 0 absent: not the default
    x[~live] = rng.choice([np.nan, 1e38, -47.5], size=(n - live_count, 1))  # garbage in pads
    return x, live


@pytest.mark.parametrize("name", list(CASES) + ["nnm+trimmed_mean", "arc+nnm+krum"])
def test_masked_call_below_the_precondition_keeps_the_first_live_row(name):
    # Issue 12: a mask leaving n_eff below the precondition gave arbitrary values (the trimmed
    # mean 0, the median -47.5, ...); now the first live row, unchanged, with a warning naming the
    # rule, the live count and the precondition; zeros when no row is live.
    f = 2
    fn = A.get(name)
    opts = CASES.get(name, (0, 0, {}))[2]
    need = paper_min(name.split("+")[-1], f)
    traced = jax.jit(lambda v, m: fn(v, f, m, **opts))  # one compilation for every mask below
    for live_count in (need - 1, 1, 0):
        if name == "mean" and live_count:
            continue
        x, live = _below_case(name, f, live_count)
        want = x[np.argmax(live)] if live_count else np.zeros(D, np.float32)
        np.testing.assert_array_equal(np.asarray(traced(x, live)), want)  # jittable, silent
    x, live = _below_case(name, f, need - 1)
    with warnings.catch_warnings(record=True) as caught:  # a concrete mask: the call says so
        warnings.simplefilter("always")
        got = np.asarray(fn(x, f, live, **opts))
    np.testing.assert_array_equal(got, x[np.argmax(live)] if need > 1 else np.zeros(D, np.float32))
    said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any(re.search(rf"{re.escape(name)}.*\b{need - 1} live rows.*min_inputs = {need}", m) for m in said), said


@pytest.mark.parametrize(
    "name", ["trimmed_mean", "median", "geometric_median", "meamed", "nnm+trimmed_mean", "centered_clipping"]
)
def test_degree_one_nodes_of_a_path_keep_their_own_value(name):
    # Issue 12: on a path, an end node aggregates 2 rows with f = 1 (below 2f + 1 = 3); with the
    # trimmed mean its parameters became exactly 0 every round. Every path (fast or vmapped) now
    # leaves it its own row; the inner nodes (3 rows) aggregate as before.
    n, d = 6, 3
    nbr = np.array([[1, 0]] + [[i - 1, i + 1] for i in range(1, n - 1)] + [[n - 2, 0]], np.int32)
    mask = np.ones((n, 2), bool)
    mask[0, 1] = mask[n - 1, 1] = False
    x = data(5, n, d) + 10.0
    with pytest.warns(UserWarning, match=r"2 of 6 nodes .* min_inputs = 3"):  # concrete mask
        got = np.asarray(jax.jit(lambda v: A.neighbourhood(name, v, nbr, 1, mask))(x))
    if name == "trimmed_mean":  # the case, with the mask traced as in the gossip round
        traced = np.asarray(jax.jit(lambda v, m: A.neighbourhood(name, v, nbr, 1, m))(x, mask))
        np.testing.assert_array_equal(traced, got)
    np.testing.assert_array_equal(got[[0, n - 1]], x[[0, n - 1]])
    agg = A.get(name)
    inner = np.stack([x[[i, i - 1, i + 1]] for i in range(1, n - 1)])
    want = np.asarray(jax.vmap(lambda r: agg(r, 1))(inner))
    np.testing.assert_allclose(got[1:-1], want, rtol=1e-5, atol=1e-5)


HALF = [jnp.float16, jnp.bfloat16]


@pytest.mark.parametrize("dtype", HALF, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", list(CASES))
def test_half_precision_rows_keep_honest_values(name, dtype):
    # Issue 12: the finite-value cap came from float16's range (2.7 at n = 9, d = 16), the
    # geometric median returned NaN and caf / smea raised NotImplementedError (no half eigh). Now
    # every rule computes in float32 and returns the input dtype: honest values near 5 survive.
    n, f, opts = CASES[name]
    x32 = data(7, n, 16) * 0.2 + 5.0  # d = 16: float16's range gave a cap of 2.7 here
    xh = jnp.asarray(x32, dtype)
    got = A.get(name)(xh, f, **opts)
    assert got.dtype == dtype
    ref = np.asarray(A.get(name)(np.asarray(xh, np.float32), f, **opts))
    eps = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(np.asarray(got, np.float32), ref, rtol=2 * eps, atol=0)
    assert np.all(np.abs(np.asarray(got, np.float32) - 5.0) < 1.0)


@pytest.mark.parametrize("name", ["trimmed_mean", "geometric_median", "caf"])  # sort, Gram, vmap paths
def test_half_precision_neighbourhoods_and_poison(name):
    n, k, d, f = 12, 4, 3, 1
    rng = np.random.default_rng(2)
    nbr = np.stack([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])
    # Multiples of 1/16 near 5: exact in float16 and bfloat16, so one float32 reference serves both.
    x = np.round((rng.normal(size=(n, d)) * 0.1 + 5.0) * 16).astype(np.float32) / 16
    x[3] = np.inf
    x[7, 0] = np.nan
    want = A.neighbourhood(name, x, nbr, f)
    for dtype in HALF:
        got = A.neighbourhood(name, jnp.asarray(x, dtype), nbr, f)
        assert got.dtype == dtype
        # Honest nodes whose neighbourhood holds at most f = 1 poisoned row: the float32 result,
        # rounded to the dtype, near the honest 5 (with two poisoned rows the rule owes nothing).
        ok = np.isin(np.arange(n), [3, 7], invert=True) & (np.isin(nbr, [3, 7]).sum(1) <= 1)
        assert ok.sum() >= 4
        np.testing.assert_allclose(
            np.asarray(got, np.float32)[ok], np.asarray(want)[ok], rtol=2 * float(jnp.finfo(dtype).eps)
        )
        assert np.all(np.abs(np.asarray(got, np.float32)[ok] - 5.0) < 1.0)


@pytest.mark.parametrize("name", ["median", "krum", "nnm+trimmed_mean", "nnm"])
def test_integer_and_bool_rows_are_refused(name):
    for bad in (np.arange(18).reshape(9, 2), np.ones((9, 2), bool)):
        kind = "bool" if bad.dtype == bool else "int"  # int64 arrives as int32 without x64
        with pytest.raises(TypeError, match=rf"{re.escape(name)}: rows must be floating point, got dtype {kind}"):
            A.get(name)(bad, 2)
    with pytest.raises(TypeError, match="floating point"):
        A.neighbourhood("median", np.arange(6).reshape(3, 2), np.array([[1], [2], [0]]), 0)


def test_meamed_can_leave_the_honest_range():
    # Why the fuzz tests bound MeaMed by the honest range widened by its width, not by the range:
    # honest {-10, 1, 1}, Byzantine {1.4, 1.5} (f = 2): the median is 1, the n - f = 3 values
    # closest to it are 1, 1, 1.4, whose mean 1.133 exceeds every honest value.
    x = np.array([[-10.0], [1.0], [1.0], [1.4], [1.5]], np.float32)
    out = float(A.get("meamed")(x, 2)[0])
    assert out == pytest.approx(3.4 / 3, rel=1e-6) and out > 1.0
    assert out <= 1.0 + (1.0 - -10.0)


def ref_weiszfeld_from_origin(x, nu, steps):
    # ByzFL's GeometricMedian (v0.1): z = 0, rows with an inf entry dropped, exactly `steps` smoothed
    # Weiszfeld steps z <- sum b_i x_i / sum b_i, b_i = 1 / max(nu, |x_i - z|).
    v = x[~np.any(np.isinf(x), axis=1)]
    z = np.zeros(x.shape[1])
    for _ in range(steps):
        b = 1.0 / np.maximum(nu, np.linalg.norm(v - z, axis=1))
        z = (b[:, None] * v).sum(0) / b.sum()
    return z


@pytest.mark.parametrize("steps", [0, 1, 3, 12])
def test_geometric_median_from_the_origin_is_weiszfelds_iteration(steps):
    rng = np.random.default_rng(steps)
    x = (rng.normal(size=(11, 40)) + 3.0).astype(np.float32)
    x[-2:] *= 25.0
    x[4, 7] = np.inf  # dropped (zero weight), as ByzFL drops it
    rule = jax.jit(lambda v, m: A.get("geometric_median")(v, 2, m, nu=0.1, max_iter=steps, tol=0.0, start="zero"))
    want = ref_weiszfeld_from_origin(x.astype(np.float64), 0.1, steps)
    got = np.asarray(rule(x, np.ones(11, bool)))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())
    mask = np.ones(11, bool)
    mask[[1, 9]] = False  # masked rows are absent: the rule on the remaining rows
    want_m = ref_weiszfeld_from_origin(x[mask].astype(np.float64), 0.1, steps)
    np.testing.assert_allclose(np.asarray(rule(x, mask)), want_m, rtol=2e-6, atol=2e-6 * np.abs(want_m).max())


def test_geometric_median_start_is_checked_and_converges_to_the_same_point():
    x = data(3, 9) + 5.0
    a = np.asarray(A.get("geometric_median")(x, 2))
    b = np.asarray(A.get("geometric_median")(x, 2, start="zero", tol=1e-9, max_iter=500))
    np.testing.assert_allclose(b, ref_geometric_median(x.astype(np.float64), 2), atol=2e-4, rtol=2e-4)
    np.testing.assert_allclose(a, b, atol=2e-4, rtol=2e-4)
    with pytest.raises(ValueError, match="start must be"):
        A.get("geometric_median")(x, 2, start="mean")

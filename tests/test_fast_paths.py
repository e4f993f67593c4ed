"""The performance paths of issue 11 change no result: same random bits, the same minibatch
indices, every node's aggregation equal to the one-node rule, wide rules equal to NumPy
references, the host-memory and Threefry settings switchable off."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax import _fusion, _memory, _threefry
from redeem_jax import aggregators as A
from redeem_jax.data import sampling

# ----------------------------------------------------------------------------- Threefry


def test_threefry_matches_the_papers_known_answers():
    # Threefry-2x32, 20 rounds: the known-answer vectors of Salmon et al. (2011), Random123's kat_vectors.
    cases = [
        ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ]
    for (k1, k2), (x1, x2), want in cases:
        got = _threefry.threefry2x32(*(np.full((1,), v, np.uint32) for v in (k1, k2, x1, x2)))
        assert tuple(int(v[0]) for v in got) == want


def test_installed_lowering_draws_jax_random_bits():
    assert _threefry.installed  # importing the library's random-drawing modules installs it
    key = jax.random.PRNGKey(1234)
    shape = (37, 11)
    kd = np.asarray(jax.random.key_data(key), np.uint32)
    count = np.arange(np.prod(shape), dtype=np.uint32).reshape(shape)  # the partitionable counters
    y1, y2 = _threefry.threefry2x32(kd[0], kd[1], np.zeros_like(count), count)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda k: jax.random.bits(k, shape))(key)), y1 ^ y2)


def test_draws_equal_those_of_jaxs_own_lowering():
    # The same programs compiled in a process that keeps JAX's rolled-loop lowering.
    code = textwrap.dedent("""
        import sys, numpy as np, jax
        import redeem_jax.data.sampling  # installs the lowering unless REDEEM_JAX_THREEFRY=jax
        from redeem_jax import _threefry
        k = jax.random.PRNGKey(7)
        out = dict(u=jax.random.uniform(k, (300, 50)), n=jax.random.normal(k, (5000,)),
                   s=jax.random.split(jax.random.fold_in(k, 3), 5000),
                   v=jax.vmap(lambda kk: jax.random.uniform(kk, (8,)))(jax.random.split(k, 700)))
        np.savez(sys.argv[1], installed=_threefry.installed, **{a: np.asarray(b) for a, b in out.items()})
    """)
    out = {}
    for mode in ("jax", "default"):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"rj_threefry_{mode}_{os.getpid()}.npz")
        env = dict(os.environ, REDEEM_JAX_THREEFRY=mode, JAX_PLATFORMS="cpu")
        subprocess.run([sys.executable, "-c", code, path], check=True, env=env, timeout=600)
        out[mode] = dict(np.load(path))
        os.remove(path)
    assert not out["jax"]["installed"] and out["default"]["installed"]
    for name in ("u", "n", "s", "v"):
        np.testing.assert_array_equal(out["jax"][name], out["default"][name])


# ----------------------------------------------------------------------------- minibatch selection


@pytest.mark.parametrize("m, k", [(8, 4), (5, 5), (32, 7), (1, 1)])
def test_network_selection_is_top_k_with_ties_to_the_lower_index(m, k):
    s = jax.random.uniform(jax.random.PRNGKey(m), (400, m))
    if m > 2:
        s = s.at[:, m - 1].set(s[:, 0]).at[:, 1].set(jnp.inf)  # exact ties and padded rows
    want = np.asarray(jax.lax.top_k(-s, k)[1])
    np.testing.assert_array_equal(np.asarray(jax.vmap(lambda r: sampling._smallest(r, k))(s)), want)
    np.testing.assert_array_equal(np.asarray(sampling._smallest(s[3], k)), want[3])
    twice = jax.vmap(jax.vmap(lambda r: sampling._smallest(r, k)))(s.reshape(20, 20, m))
    np.testing.assert_array_equal(np.asarray(twice).reshape(400, k), want)


# ----------------------------------------------------------------------------- fusion control


def test_materialize_is_the_identity_for_values_gradients_and_vmap():
    x = jnp.asarray([1.0, -0.0, np.nan, np.inf, 3.0])
    np.testing.assert_array_equal(np.asarray(jax.jit(_fusion.materialize)(x)), np.asarray(x))
    nan_first = jnp.asarray([np.nan, 2.0])  # the predicate's other branch
    np.testing.assert_array_equal(np.asarray(jax.jit(_fusion.materialize)(nan_first)), np.asarray(nan_first))
    ints = (jnp.arange(6, dtype=jnp.int32), jnp.arange(3, dtype=jnp.uint32))
    for a, b in zip(jax.jit(_fusion.materialize)(ints), ints):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    g = jax.grad(lambda v: jnp.sum(_fusion.materialize(v) ** 2))(jnp.arange(4.0))
    np.testing.assert_allclose(np.asarray(g), 2 * np.arange(4.0))
    batch = jnp.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(np.asarray(jax.vmap(_fusion.materialize)(batch)), np.asarray(batch))


# ----------------------------------------------------------------------------- every node at once

HOOD_RULES = [
    "mean",
    "median",
    "trimmed_mean",
    "meamed",
    "krum",
    "multi_krum",
    "nnm+trimmed_mean",
    "nnm+mean",
    "nnm+median",
    "geometric_median",
    "centered_clipping",
    "caf",
]


def _hood_inputs():
    n, k, d = 20, 6, 29
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, d)).astype(np.float32) + 4.0
    x[3] = np.nan
    x[7, 2] = 1e38
    x[11] *= 40.0
    nbr = np.stack([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])
    mask = rng.random((n, k)) > 0.2
    return x, nbr, mask


@pytest.mark.parametrize("name", HOOD_RULES)
def test_neighbourhood_equals_the_rule_at_every_node(name):
    x, nbr, mask = _hood_inputs()
    f = 2
    for m in (None, mask):
        got = np.asarray(jax.jit(lambda v: A.neighbourhood(name, v, nbr, f, m))(x))
        stack = np.concatenate([x[:, None], x[nbr]], axis=1)
        valid = np.ones(stack.shape[:2], bool) if m is None else np.concatenate([np.ones((len(x), 1), bool), m], 1)
        agg = A.get(name)
        want = np.asarray(jax.jit(jax.vmap(lambda r, v: agg(r, f, v)))(stack, valid))
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=2e-5, atol=2e-5 * (1 + np.abs(want[ok]).max()))


def test_neighbourhood_takes_messages_and_callables():
    x, nbr, mask = _hood_inputs()
    msgs = x[nbr] + 0.5  # per-edge vectors as received (e.g. tampered)
    for rule in ("trimmed_mean", A.get("median"), "krum"):
        got = np.asarray(A.neighbourhood(rule, x, nbr, 2, mask, messages=msgs))
        stack = np.concatenate([x[:, None], msgs], axis=1)
        valid = np.concatenate([np.ones((len(x), 1), bool), mask], 1)
        agg = A.get(rule) if isinstance(rule, str) else rule
        want = np.asarray(jax.vmap(lambda r, v: agg(r, 2, v))(stack, valid))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="n > 2f"):
        A.neighbourhood("median", x, nbr[:, :2], 2)


# ----------------------------------------------------------------------------- wide rules


@pytest.mark.parametrize(
    "name",
    [
        "median",
        "trimmed_mean",
        "meamed",
        "krum",
        "multi_krum",
        "geometric_median",
        "caf",
        "nnm",
        "clip",
        "arc",
        "monna",
        "centered_clipping",
    ],
)
def test_rules_on_many_wide_rows_match_numpy_references(name):
    # n = 40 rows of d = 4200: sorting networks with materialized order statistics, the chunked
    # Gram product, Gram-space CAF and Weiszfeld. References in float64 (tests/test_aggregators.py;
    # CAF's takes d x d covariances, so it gets d = 300, still d > n: the Gram path).
    from tests.test_aggregators import REFS

    n, f, d = 40, 9, 300 if name == "caf" else 4200
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(n, d)) + 2.0).astype(np.float32)
    x[-f:] += rng.normal(size=(f, d)).astype(np.float32) * 8
    opts = {"tau": 1.0} if name == "clip" else {}
    got = np.asarray(jax.jit(lambda v: A.get(name)(v, f, **opts))(x))
    ref = REFS[name](x.astype(np.float64), f, **opts)
    tol = {"geometric_median": 2e-3, "caf": 1e-3}.get(name, 2e-5)
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * (1 + np.abs(ref).max()))


# ----------------------------------------------------------------------------- host memory


def test_host_memory_settings_apply_and_switch_off():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc mallopt only")
    assert set(_memory.applied) == set(_memory.SETTINGS)
    code = "import redeem_jax, redeem_jax._memory as m; print(len(m.applied))"
    env = dict(os.environ, REDEEM_JAX_MALLOC="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=600)
    assert out.stdout.strip() == "0"


def test_import_loads_neither_jax_nor_numpy():
    code = "import sys, redeem_jax; print('jax' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
    assert out.stdout.split() == ["False", "False"]
    assert rj.__version__


def test_help_does_not_start_jax():
    # --help lists the shipped configs and the config's sections: none of it needs JAX (2 s to
    # import), and a module-level __getattr__ must not be tricked into importing the registries.
    code = (
        "import sys, runpy; sys.argv = ['redeem_jax', '--help']\n"
        "try:\n    runpy.run_module('redeem_jax', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('JAX', 'jax' in sys.modules, 'flax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
    assert "shipped configs" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "JAX False False"


def test_neighbourhood_geometric_median_from_the_origin_equals_a_per_node_loop():
    # ByzFL's setting (3 steps from the origin, nu = 0.1): every node's result from the one N x N
    # Gram equals the one-node rule and a NumPy loop over nodes; N = 64, d = 9000 runs the final
    # weighted sum in column blocks (2048 columns and a remainder).
    from tests.test_aggregators import ref_weiszfeld_from_origin

    n, k, d = 64, 6, 9000
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, d)).astype(np.float32) + 2.0
    x[9] *= 50.0
    nbr = np.stack([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])
    opts = dict(nu=0.1, max_iter=3, start="zero")
    got = np.asarray(jax.jit(lambda v: A.neighbourhood("geometric_median", v, nbr, 2, **opts))(x))
    stack = np.concatenate([x[:, None], x[nbr]], axis=1)
    agg = A.get("geometric_median", **opts)
    one = np.asarray(jax.jit(jax.vmap(lambda r: agg(r, 2)))(stack))
    loop = np.stack([ref_weiszfeld_from_origin(s.astype(np.float64), 0.1, 3) for s in stack])
    scale = np.abs(loop).max()
    np.testing.assert_allclose(got, loop, rtol=2e-5, atol=2e-5 * scale)
    np.testing.assert_allclose(got, one, rtol=2e-5, atol=2e-5 * scale)


def test_neighbourhood_mean_in_column_blocks_is_bitwise_the_unblocked_sum(monkeypatch):
    # N = 64, d = 9000: four blocks of 2048 columns and a remainder of 808, against the unblocked
    # fused sum (block size forced above d) and a NumPy loop over nodes.
    n, k, d = 64, 8, 9000
    rng = np.random.default_rng(6)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[3, 5] = np.nan  # a poisoned row poisons exactly the nodes that read it
    nbr = np.stack([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])
    mask = rng.random((n, k)) > 0.3
    for m in (None, mask):
        with monkeypatch.context() as mp:
            mp.setattr(A, "_cpu_threads", lambda: 1)  # the blocked loop is the one-core path
            blocked = np.asarray(jax.jit(lambda v: A.neighbourhood("mean", v, nbr, 0, m))(x))
        with monkeypatch.context() as mp:
            mp.setattr(A, "_BLOCK_BYTES", 1 << 40)
            whole = np.asarray(jax.jit(lambda v: A.neighbourhood("mean", v, nbr, 0, m))(x))
        np.testing.assert_array_equal(blocked, whole)
        live = np.ones((n, k), bool) if m is None else m
        loop = np.stack([np.mean(np.concatenate([x[i : i + 1], x[nbr[i][live[i]]]]), axis=0) for i in range(n)])
        np.testing.assert_array_equal(np.isnan(blocked), np.isnan(loop))
        ok = ~np.isnan(loop)
        np.testing.assert_allclose(blocked[ok], loop[ok], rtol=1e-6, atol=1e-6)


def test_neighbourhood_geometric_median_from_the_origin_with_masks_and_poison():
    x, nbr, mask = _hood_inputs()  # a NaN row, a 1e38 entry, a row 40x the others, padded slots
    opts = dict(nu=0.1, max_iter=5, start="zero")
    agg = A.get("geometric_median", **opts)
    for m in (None, mask):
        got = np.asarray(jax.jit(lambda v: A.neighbourhood("geometric_median", v, nbr, 2, m, **opts))(x))
        stack = np.concatenate([x[:, None], x[nbr]], axis=1)
        valid = np.ones(stack.shape[:2], bool) if m is None else np.concatenate([np.ones((len(x), 1), bool), m], 1)
        want = np.asarray(jax.jit(jax.vmap(lambda r, v: agg(r, 2, v)))(stack, valid))
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=2e-5, atol=2e-5 * (1 + np.abs(want[ok]).max()))


def test_arc_alone_rewrites_only_its_clipped_rows_and_equals_the_fused_form():
    # Called on its own, ARC rescales its (at most k_max) clipped rows in place; in a composition
    # the scaled rows are fused into the next stage. Both must be the same rows, bit for bit, and
    # the unclipped rows must be the input's own bits: with a mask, non-finite rows and ties.
    rng = np.random.default_rng(7)
    n, d, f = 20, 3000, 4
    x = (rng.normal(size=(n, d)) * rng.uniform(0.5, 4.0, size=(n, 1))).astype(np.float32)
    x[3] = np.inf
    x[5, 7] = np.nan
    x[9] = x[10]  # a tie in the norms
    mask = np.ones(n, bool)
    mask[[2, 11]] = False
    alone = jax.jit(lambda a, m: A.get("arc")(a, f, m))
    stage = jax.jit(lambda a, m: A._IMPL["arc"](a, f, m)[0])
    for m in (np.ones(n, bool), mask):
        got, want = np.asarray(alone(x, m)), np.asarray(stage(x, m))
        assert np.array_equal(got, want, equal_nan=True)
        # NumPy's ARC (Allouah et al. 2024, Alg. 1) on the live finite rows; the rest unchanged
        nr = np.linalg.norm(x.astype(np.float64), axis=1)
        live = np.where(m)[0]
        k = (2 * f * (len(live) - f)) // len(live)
        tau = np.sort(np.where(np.isfinite(nr[live]), nr[live], np.inf))[::-1][k]
        changed = m & np.isfinite(nr) & (nr > tau)
        assert changed.sum() <= k
        np.testing.assert_array_equal(got[~changed], x[~changed])
        np.testing.assert_allclose(got[changed], x[changed] * (tau / nr[changed])[:, None], rtol=2e-6)
    # donated: the same result
    donated = jax.jit(lambda a: A.get("arc")(a, f), donate_argnums=0)
    assert np.array_equal(np.asarray(donated(jnp.array(x))), np.asarray(alone(x, np.ones(n, bool))), equal_nan=True)


def test_wide_row_sums_of_squares_equal_numpy_and_keep_non_finite_rows():
    # Above 2**22 entries the row sums of squares go through windowed partial sums (a threaded
    # loop) instead of one row reduction: same values up to float rounding, a remainder window
    # padded with zeros, batched leading axes, inf and NaN rows still non-finite.
    from redeem_jax.byzantine import aggregators as agg

    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 70_001)).astype(np.float32)  # 4.5 million entries, d not a multiple of 1000
    x[5, 123] = np.inf
    x[9, 70_000] = np.nan
    assert x.size >= agg._WIDE_SSQ and x.shape[1] % agg._SSQ_WINDOW
    got = np.asarray(jax.jit(agg._row_ssq)(x))
    want = np.sum(x.astype(np.float64) ** 2, axis=1)
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=2e-6)
    assert np.isinf(got[5]) and np.isnan(got[9])
    batched = np.asarray(jax.jit(agg._row_ssq)(x[None, :32].repeat(2, axis=0)))
    np.testing.assert_array_equal(batched[0], batched[1])
    np.testing.assert_allclose(batched[0][fin[:32]], want[:32][fin[:32]], rtol=2e-6)
    # static clipping through it: NumPy's clipped rows, the non-finite rows passed through
    out = np.asarray(jax.jit(lambda a: A.get("clip")(a, 0, tau=1.0))(x))
    nr = np.sqrt(want)
    np.testing.assert_allclose(out[fin], x[fin] * np.minimum(1.0, 1.0 / nr[fin])[:, None], rtol=3e-6, atol=1e-9)
    np.testing.assert_array_equal(out[~fin], x[~fin])

"""Inputs checked at the door (issue 12): data files and arrays, seeds, config fields and the
combinations of them that cannot apply, and Byzantine placements that cut the honest nodes apart.

Every refusal is one line naming the file or the config field. The fuzz tests draw invalid
values for every field family of the schema and damaged copies of valid data files; none of
them runs an experiment (validation and loading are host-side and fast).
"""

import gzip
import math
import tempfile
import warnings
from collections import deque
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import redeem_jax as rj
from redeem_jax import data
from redeem_jax.byzantine import attacks, placement
from redeem_jax.data import datasets, loaders
from redeem_jax.experiment import config as cfg
from redeem_jax.experiment.build import build
from redeem_jax.network import topology as topo_mod

from _configs import small_config

ConfigError = cfg.ConfigError


def _one_line(msg: str) -> bool:
    return "\n" not in msg and "\r" not in msg


def _raw(rng=None, m_train=12, m_test=5):
    rng = np.random.default_rng(0) if rng is None else rng
    return {
        "x_train": rng.integers(0, 256, (m_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, m_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (m_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, m_test, dtype=np.uint8),
    }


def _npz(path: Path, **over) -> Path:
    np.savez(path, **{**_raw(), **over})
    return path


def _idx_bytes(arr) -> bytes:
    arr = np.asarray(arr, np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes() + arr.tobytes()


_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _idx_dir(d: Path, gz: bool = False, **replace: bytes) -> Path:
    """A directory of the four MNIST IDX files; ``replace`` gives raw bytes for some of them."""
    raw = _raw()
    for k, stem in _STEMS.items():
        payload = replace.get(k, _idx_bytes(raw[k]))
        if gz and k not in replace:
            payload = gzip.compress(payload)
        (d / (stem + (".gz" if gz else ""))).write_bytes(payload)
    return d


def _refused(fn, *names):
    """Call ``fn``, expect a one-line ValueError mentioning every name; return the message."""
    with pytest.raises(ValueError) as err:
        fn()
    msg = str(err.value)
    assert _one_line(msg), msg
    for n in names:
        assert str(n) in msg, (n, msg)
    assert "allow_pickle" not in msg
    return msg


# ----------------------------------------------------------------------- data at the door


@pytest.mark.parametrize(
    "key, labels, bad",
    [
        ("y_test", np.array([12, 0, 1, 2, 3]), 12),  # was: NaN test loss and exit 0
        ("y_train", np.full(12, 10, np.uint8), 10),  # was: an error blaming the partition
        ("y_train", np.full(12, 255, np.uint8), 255),
        ("y_test", np.array([0, -1, 2, 3, 4]), -1),
    ],
)
def test_labels_outside_the_classes_are_refused_naming_the_file(tmp_path, key, labels, bad):
    path = _npz(tmp_path / "m.npz", **{key: labels})
    msg = _refused(lambda: data.load("mnist", path=path), path, key, bad, "[0, 10)")
    assert isinstance(_exc(lambda: data.load("mnist", path=path)), loaders.DataError), msg


def _exc(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the caller checks the type
        return e
    return None


def test_float_labels_are_cast_when_whole_and_refused_otherwise(tmp_path):
    raw = _raw()
    whole = _npz(tmp_path / "whole.npz", y_train=raw["y_train"].astype(np.float64))
    ds = data.load("mnist", path=whole)
    assert ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.y_train, raw["y_train"])
    frac = raw["y_train"].astype(np.float64)
    frac[3] = 2.5  # was: silently truncated to 2
    path = _npz(tmp_path / "frac.npz", y_train=frac)
    _refused(lambda: data.load("mnist", path=path), path, "y_train", "2.5", "index 3")
    nan = raw["y_test"].astype(np.float32)
    nan[1] = np.nan
    path = _npz(tmp_path / "nan.npz", y_test=nan)
    _refused(lambda: data.load("mnist", path=path), path, "y_test", "nan")


def test_non_finite_pixels_are_refused(tmp_path):
    x = _raw()["x_train"].astype(np.float32) / 255
    x[4, 3, 3] = np.nan
    x[7, 0, 0] = np.inf
    path = _npz(tmp_path / "nan.npz", x_train=x)
    _refused(lambda: data.load("mnist", path=path), path, "x_train", "2 non-finite", "index 4")


def test_train_and_test_images_of_different_shapes_are_refused(tmp_path):
    path = _npz(tmp_path / "shapes.npz", x_test=np.zeros((5, 14, 14), np.uint8))
    _refused(lambda: data.load("mnist", path=path), path, "(28, 28, 1)", "(14, 14, 1)")


def test_damaged_npz_files_name_the_file(tmp_path):
    good = _npz(tmp_path / "good.npz").read_bytes()
    (tmp_path / "garbage.npz").write_bytes(b"not a zip at all")
    _refused(lambda: data.load("mnist", path=tmp_path / "garbage.npz"), "garbage.npz", "not an .npz")
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    _refused(lambda: data.load("mnist", path=tmp_path / "cut.npz"), "cut.npz", "truncated")
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npz").write_bytes((tmp_path / "one.npy").read_bytes())
    _refused(lambda: data.load("mnist", path=tmp_path / "one.npz"), "one.npz", ".npy")
    objects = np.empty(12, object)
    objects[:] = [str(i) for i in range(12)]
    np.savez(tmp_path / "obj.npz", **{**_raw(), "y_train": objects})
    _refused(lambda: data.load("mnist", path=tmp_path / "obj.npz"), "obj.npz", "y_train", "Python objects")
    np.savez(tmp_path / "missing.npz", x_train=np.zeros((2, 28, 28)))
    _refused(lambda: data.load("mnist", path=tmp_path / "missing.npz"), "missing.npz", "y_train")


@pytest.mark.parametrize("damage", ["truncated_idx", "bad_magic", "truncated_gz", "corrupt_gz"])
def test_damaged_idx_and_gz_files_name_the_file(tmp_path, damage):
    labels = _idx_bytes(_raw()["y_train"])
    if damage == "truncated_idx":
        payload = labels[:-3]
    elif damage == "bad_magic":
        payload = b"\x01\x02" + labels[2:]
    elif damage == "truncated_gz":
        payload = gzip.compress(labels)[:-5]
    else:
        z = bytearray(gzip.compress(labels))
        z[12] ^= 0xFF
        payload = bytes(z)
    d = _idx_dir(tmp_path, gz=damage.endswith("gz"), y_train=payload)
    msg = _refused(lambda: data.load("mnist", path=d), _STEMS["y_train"])
    assert ("gzip" in msg) if damage.endswith("gz") else ("IDX" in msg)


def test_a_bad_file_in_a_config_is_a_config_error_naming_data_path(tmp_path):
    path = _npz(tmp_path / "m.npz", y_test=np.array([12, 0, 1, 2, 3]))
    c = small_config(**{"data.name": "mnist", "data.path": str(path), "model.name": "mlp"})
    with pytest.raises(ConfigError) as err:
        build(c)
    msg = str(err.value)
    assert msg.startswith("config.data.path: ") and str(path) in msg and _one_line(msg)


def test_a_registered_dataset_is_checked_too():
    def bad(seed=0):
        x = np.zeros((6, 3), np.float32)
        return datasets.Dataset(
            "bad_labels", x, np.array([0, 1, 2, 0, 1, 2]), x[:2], np.array([0, 7]), "classification", 3, (3,)
        )

    data.register_dataset("bad_labels", bad)
    try:
        _refused(lambda: data.load("bad_labels"), "dataset 'bad_labels'", "y_test", 7)
    finally:
        datasets._REGISTRY.pop("bad_labels")


@pytest.mark.parametrize(
    "over, names",
    [
        ({"data.num_examples": 10}, ("data.num_examples", "num_nodes=16", "10", ">= 20")),
        ({"data.num_examples": 10, "data.heterogeneity": 1.0}, ("data.num_examples", "num_nodes=16", ">= 16")),
        ({"data.num_examples": 100, "data.whiten": True, "data.dim": 10}, ("data.num_examples", "data.dim", ">= 160")),
    ],
)
def test_synthetic_data_with_more_nodes_than_examples_is_a_config_error(over, names):
    c = small_config(**{"num_nodes": 16, "data.name": "linear", "model.name": "linear", **over})
    with pytest.raises(ConfigError) as err:
        cfg.validate(c)
    msg = str(err.value)
    assert msg.startswith("config.data.num_examples: ") and _one_line(msg)
    for n in names:
        assert n in msg, (n, msg)
    # The bound it names is exact: the smallest size it asks for is accepted.
    need = int(msg.rsplit(">= ", 1)[1].split()[0])
    rj.config.set_field(c, "data.num_examples", need)
    cfg.validate(c)


# ------------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("field", ["seed", "topology.seed", "data.seed"])
def test_seeds_beyond_the_prng_range_are_refused(field):
    # PRNGKey and the sweep's uint32 seed axis see seed mod 2**32: 2**32 would rerun seed 0.
    with pytest.raises(ConfigError, match=rf"^config\.{field}: must be <= 4294967295"):
        cfg.validate(small_config(**{field: 2**32}))
    cfg.validate(small_config(**{field: 2**32 - 1}))


def test_a_sweep_refuses_seeds_beyond_the_prng_range():
    with pytest.raises(ConfigError, match=r"^sweep\.seed: must be <= 4294967295"):
        rj.sweep(small_config(num_rounds=2), {"seed": [0, 2**32]})


# ------------------------------------------------------------- settings that cannot apply


@pytest.mark.parametrize(
    "over, field, why",
    [
        ({"privacy.target_epsilon": 2.0}, "privacy.target_epsilon", "privacy.mode is 'none'"),
        ({"privacy.mode": "dp_sgd", "privacy.sample_rate": 0.2}, "privacy.sample_rate", "privacy.sampling is 'fixed'"),
        (
            {"privacy.mode": "none", "privacy.sampling": "poisson", "privacy.sample_rate": 0.2},
            "privacy.sample_rate",
            "privacy.mode is 'none'",
        ),
        (
            {"byzantine.num": 1, "byzantine.attack": "mimic", "byzantine.strength": 2.0},
            "byzantine.strength",
            "'mimic' takes no strength",
        ),
        (
            {"byzantine.num": 1, "byzantine.attack": "label_flip", "byzantine.strength": 2.0},
            "byzantine.strength",
            "'label_flip' takes no strength",
        ),
    ],
)
def test_settings_that_cannot_apply_are_refused(over, field, why):
    c = small_config(**over)
    with pytest.raises(ConfigError) as err:
        cfg.validate(c)
    msg = str(err.value)
    assert msg.startswith(f"config.{field}: ") and why in msg and _one_line(msg)
    # The refusal is the very check the sweep uses (one function, one reason).
    assert cfg.inapplicable(c, field) in msg


@pytest.mark.parametrize(
    "over",
    [
        {"privacy.mode": "dp_sgd", "privacy.target_epsilon": 2.0},
        {"privacy.mode": "dp_sgd", "privacy.sampling": "poisson", "privacy.sample_rate": 0.2},
        # The default config's reference run: no attackers, the attack's factor kept.
        {"byzantine.num": 0, "byzantine.attack": "alie", "byzantine.strength": 5.0},
        {"byzantine.num": 1, "byzantine.attack": "ipm", "byzantine.strength": 0.5},
    ],
)
def test_settings_that_apply_are_accepted(over):
    cfg.validate(small_config(**over))


def test_configs_of_the_repository_still_validate():
    import importlib.util

    for path in sorted(Path(__file__).resolve().parents[1].glob("configs/*.py")):
        spec = importlib.util.spec_from_file_location(f"_cfg_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        c = mod.get_config()
        if c.compare.key:  # each compared run is validated as rj.run builds it
            for v in c.compare.choices:
                sub = ml_collections.ConfigDict(c.to_dict())
                rj.config.set_field(sub, c.compare.key, v)
                sub.compare.key, sub.compare.choices, sub.compare.reference = "", (), ""
                cfg.validate(sub)
        cfg.validate(c)


def test_the_sweep_refuses_an_inapplicable_axis_with_the_same_reason():
    c = small_config(num_rounds=2)
    with pytest.raises(ConfigError) as err:
        rj.sweep(c, {"privacy.target_epsilon": [1.0, 2.0]})
    msg = str(err.value)
    assert msg.startswith("sweep.privacy.target_epsilon: has no effect because ")
    assert cfg.inapplicable(c, "privacy.target_epsilon") in msg


# ------------------------------------------------------------------- Byzantine placement


def _mask(n, ids):
    b = np.zeros(n, bool)
    b[list(ids)] = True
    return b


def _bfs_components(adjacency: np.ndarray, honest: np.ndarray) -> list[list[int]]:
    """Independent reference: BFS on the dense union adjacency, either direction, honest only."""
    und = adjacency | adjacency.T
    seen, out = set(), []
    for s in np.flatnonzero(honest):
        if s in seen:
            continue
        comp, queue = [], deque([int(s)])
        seen.add(int(s))
        while queue:
            u = queue.popleft()
            comp.append(u)
            for v in np.flatnonzero(und[u] & honest):
                if int(v) not in seen:
                    seen.add(int(v))
                    queue.append(int(v))
        out.append(sorted(comp))
    return sorted(out)


@pytest.mark.parametrize(
    "topo, ids, groups, lonely",
    [
        (topo_mod.ring(16), (0, 8), [list(range(1, 8)), list(range(9, 16))], []),
        (topo_mod.path(5), (2,), [[0, 1], [3, 4]], []),  # a cut vertex of a path
        (topo_mod.ring(8), (0, 2), [[1], [3, 4, 5, 6, 7]], [1]),  # node 1 hears only attackers
        (topo_mod.star(6), (0,), [[1], [2], [3], [4], [5]], [1, 2, 3, 4, 5]),
        (topo_mod.ring(16), (0,), [list(range(1, 16))], []),
        (topo_mod.complete(6), (0, 1, 2), [[3, 4, 5]], []),
    ],
)
def test_honest_components_and_byzantine_only_listeners(topo, ids, groups, lonely):
    b = _mask(topo.n, ids)
    assert [c.tolist() for c in placement.honest_components(topo, b)] == groups
    assert placement.byzantine_only_listeners(topo, b).tolist() == lonely
    msg = placement.check_honest_connectivity(topo, b)
    assert (msg is None) == (len(groups) == 1 and not lonely)
    if msg:
        assert _one_line(msg) and all(str(i) in msg for i in ids)


def test_a_placement_that_cuts_the_honest_nodes_warns_before_the_run():
    c = small_config(
        **{
            "num_nodes": 16,
            "byzantine.num": 2,
            "byzantine.placement": "given",
            "byzantine.ids": (0, 8),
            "byzantine.attack": "alie",
        }
    )
    with pytest.warns(placement.PlacementWarning, match=r"Byzantine nodes \[0, 8\] on ring.*\[1, 2, 3"):
        build(c)
    # A placement that leaves the honest ring connected builds without a warning.
    rj.config.set_field(c, "byzantine.num", 1)
    rj.config.set_field(c, "byzantine.ids", (3,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", placement.PlacementWarning)
        build(c)


_FAMILIES = st.sampled_from(
    [
        lambda n, s: topo_mod.ring(n),
        lambda n, s: topo_mod.path(n),
        lambda n, s: topo_mod.star(n),
        lambda n, s: topo_mod.complete(n),
        lambda n, s: topo_mod.erdos_renyi(n, 0.3, seed=s),
        lambda n, s: topo_mod.random_geometric(n, 0.45, seed=s),
        lambda n, s: topo_mod.one_peer_exponential(n),
    ]
)


@pytest.mark.fuzz
@given(family=_FAMILIES, n=st.sampled_from([4, 8, 12]), seed=st.integers(0, 50), data_=st.data())
def test_fuzz_honest_components_equal_a_bfs(family, n, seed, data_):
    try:
        topo = family(n, seed)
    except ValueError:  # a random family can fail to draw a connected graph
        assume(False)
    b = np.array(data_.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    assume(not b.all())
    comps = [c.tolist() for c in placement.honest_components(topo, b)]
    assert comps == _bfs_components(np.asarray(topo.adjacency), ~b)
    lonely = set(placement.byzantine_only_listeners(topo, b).tolist())
    adj = np.asarray(topo.adjacency)
    expect = {i for i in range(n) if not b[i] and adj[i].any() and not (adj[i] & ~b).any()}
    assert lonely == expect


# --------------------------------------------------------------- fuzz: invalid config values

_FIELDS = sorted(cfg.SCHEMA)
_JUNK = st.one_of(
    st.text(max_size=4),
    st.none(),
    st.lists(st.integers(-3, 3), max_size=2),
    st.floats(allow_nan=True, allow_infinity=True),
    st.just({}),
    st.just({"a": 1}),
)


def _invalid(check):
    """A strategy of values ``check`` must refuse, from its kind and bounds (see config._tagged)."""
    kind, b = check.kind, getattr(check, "bounds", {})
    return st.one_of(st.just({}), st.just({"x": 1}), _invalid_of_kind(kind, b))


def _invalid_of_kind(kind, b):
    if kind == "bool":
        return st.one_of(st.integers(), st.text(max_size=4), st.none(), st.floats(), st.lists(st.booleans()))
    if kind == "str":
        return st.one_of(st.integers(), st.floats(), st.none(), st.booleans(), st.lists(st.text(max_size=3)))
    if kind == "tuple":
        return st.one_of(st.integers(), st.floats(), st.none(), st.text(max_size=4), st.booleans())
    if kind == "choice":
        names = cfg._registry_names()[b["allowed"]] if isinstance(b["allowed"], str) else b["allowed"]
        return st.one_of(
            st.text(max_size=12).filter(lambda v: v not in names),
            st.integers(),
            st.none(),
            st.floats(),
            st.booleans(),
            st.lists(st.sampled_from(names), min_size=1, max_size=2),
        )
    if kind == "int":
        out = [
            st.text(max_size=4),
            st.none(),
            st.booleans(),
            st.floats(allow_nan=True),
            st.lists(st.integers(), max_size=2),
        ]
        if b["lo"] is not None:
            out.append(st.integers(max_value=b["lo"] - 1))
        if b["hi"] is not None:
            out.append(st.integers(min_value=b["hi"] + 1))
        return st.one_of(*out)
    if kind == "float":
        out = [
            st.text(max_size=4),
            st.none(),
            st.booleans(),
            st.lists(st.floats(), max_size=2),
            st.sampled_from([math.nan, math.inf, -math.inf]),
        ]
        if b["lo"] is not None:
            lo = st.floats(max_value=b["lo"], exclude_max=not b["lo_open"], allow_nan=False, allow_infinity=False)
            out.append(lo)
        if b["hi"] is not None:
            out.append(
                st.floats(min_value=b["hi"], exclude_min=not b["hi_open"], allow_nan=False, allow_infinity=False)
            )
        return st.one_of(*out)
    if kind == "positive_or_inf":
        return st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.text(max_size=3), st.none(), st.booleans())
    if kind == "int_tuple":
        bad_entry = st.one_of(st.integers(max_value=0), st.floats(), st.text(max_size=2), st.booleans())
        out = [
            st.integers(),
            st.none(),
            st.text(max_size=3),
            st.lists(st.integers(1, 8), max_size=2).flatmap(lambda ok: bad_entry.map(lambda e: tuple(ok) + (e,))),
        ]
        if b["min_len"]:
            out.append(st.just(()))
        return st.one_of(*out)
    if kind == "mesh":
        return st.one_of(
            st.integers(),
            st.none(),
            st.text(max_size=3),
            st.lists(st.integers(1, 4), min_size=3, max_size=4).map(tuple),
            st.tuples(st.one_of(st.integers(max_value=-2), st.just(0), st.floats(), st.booleans())),
        )
    raise AssertionError(f"a schema check of unknown kind {kind!r}: teach this test its invalid values")


def _nested(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def test_every_schema_check_has_a_kind_the_fuzz_knows():
    for check in cfg.SCHEMA.values():
        _invalid(check)  # raises for an untagged or unknown kind


@pytest.mark.fuzz
@given(field=st.sampled_from(_FIELDS), data_=st.data(), as_configdict=st.booleans())
def test_fuzz_an_invalid_value_in_any_field_is_a_one_line_error_naming_it(field, data_, as_configdict):
    value = data_.draw(_invalid(cfg.SCHEMA[field]), label=field)
    c = _nested({field: value})
    if as_configdict:
        try:
            c = ml_collections.ConfigDict(c)
        except Exception:  # noqa: BLE001 - ConfigDict itself refuses some values: the dict path covers them
            c = _nested({field: value})
    with pytest.raises(ConfigError) as err:
        cfg.validate(c)
    msg = str(err.value)
    assert _one_line(msg), msg
    assert msg.startswith(f"config.{field}"), msg


_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=16)


@pytest.mark.fuzz
@given(name=_NAME, value=st.one_of(st.integers(), st.text(max_size=3), st.just({})))
def test_fuzz_an_unknown_field_is_refused_naming_it(name, value):
    base = cfg._flatten(cfg.base_config().to_dict())
    assume(name not in base and not any(k.startswith(name + ".") for k in base))
    assume(not any(name.startswith(k + ".") for k in base))  # below a known leaf: "config.<leaf>.x" names it
    assume(all(name.split(".")))
    with pytest.raises(ConfigError) as err:
        cfg.validate(_nested({name: value}))
    msg = str(err.value)
    assert _one_line(msg) and msg.startswith("config.") and "unknown field" in msg
    assert msg.split(":", 1)[0].removeprefix("config.") in (name, name + ".")


_MIXED = {
    "seed": st.one_of(st.integers(-2, 2**33), _JUNK),
    "num_nodes": st.one_of(st.integers(-1, 40), _JUNK),
    "topology.name": st.sampled_from(["ring", "path", "star", "complete", "torus", "rign", ""]),
    "data.name": st.sampled_from(["digits", "linear", "logistic", "text", "mnist", "nope"]),
    "data.num_examples": st.integers(-1, 60),
    "data.dim": st.integers(0, 12),
    "data.whiten": st.booleans(),
    "data.heterogeneity": st.sampled_from([0.0, 0.5, -1.0, math.nan]),
    "data.path": st.sampled_from(["", "/nowhere"]),
    "data.partition": st.sampled_from(["iid", "dirichlet", "shards", "contiguous", "bad"]),
    "model.name": st.sampled_from(["mlp", "linear", "logistic", "transformer", "cnn", "nope"]),
    "byzantine.num": st.integers(-1, 20),
    "byzantine.placement": st.sampled_from(["random", "given", "highest_degree", "x"]),
    "byzantine.ids": st.one_of(
        st.lists(st.one_of(st.integers(-2, 20), st.booleans(), st.text(max_size=1)), max_size=4).map(tuple), _JUNK
    ),
    "byzantine.attack": st.sampled_from(["none", "alie", "mimic", "label_flip", "dissensus", "ipm_opt", "bad"]),
    "byzantine.strength": st.one_of(st.sampled_from([-1.0, 0.0, 2.0]), _JUNK),
    "aggregation.rule": st.one_of(
        st.sampled_from(["mean", "krum", "nnm+trimmed_mean", "clipped_gossip", "krum+nnm", "+", "median"]),
        st.text(max_size=6),
    ),
    "aggregation.tolerance": st.integers(-2, 20),
    "algorithm.name": st.one_of(
        st.sampled_from(["dsgd", "fedavg", "diging", "choco_sgd", "nope"]), st.lists(st.text(max_size=2), max_size=2)
    ),
    "algorithm.local_steps": st.one_of(st.integers(-1, 3), _JUNK),
    "privacy.mode": st.sampled_from(["none", "dp_sgd", "central", "x"]),
    "privacy.sampling": st.sampled_from(["fixed", "poisson", "x"]),
    "privacy.sample_rate": st.one_of(st.sampled_from([-1.0, 0.2, 1.5, 0.0]), _JUNK),
    "privacy.target_epsilon": st.one_of(st.sampled_from([-1.0, 0.0, 2.0]), _JUNK),
    "privacy.accountant": st.sampled_from(["rdp", "pld"]),
    "privacy.clip_norm": st.one_of(st.sampled_from([1.0, math.inf, 0.0]), _JUNK),
    "compare.key": st.sampled_from(["", "topology.name", "compare.key", "nope", "seed"]),
    "compare.choices": st.one_of(
        st.lists(st.one_of(st.integers(-1, 3), st.text(max_size=4)), max_size=3).map(tuple), _JUNK
    ),
    "compare.reference": st.one_of(
        st.sampled_from(["", "byzantine.num=0", "seed=-1", "a=b=c", "nope=1", ",,"]), st.text(max_size=12)
    ),
    "checkpoint_every": st.integers(0, 30),
    "eval_every": st.integers(1, 12),
}


@pytest.mark.fuzz
@given(choice=st.dictionaries(st.sampled_from(sorted(_MIXED)), st.just(None), min_size=1, max_size=8), data_=st.data())
def test_fuzz_random_configs_validate_or_refuse_in_one_line(choice, data_):
    flat = {k: data_.draw(_MIXED[k], label=k) for k in choice}
    try:
        out = cfg.validate(_nested(flat))
    except ConfigError as e:
        msg = str(e)
        assert _one_line(msg), msg
        field = msg.split(":", 1)[0]
        assert field == "config" or field.startswith("config."), msg
        return
    # Accepted: nothing that cannot apply slipped through, and validation is idempotent.
    c = cfg._flatten(out.to_dict())
    for key in cfg._REFUSED_WHEN_INAPPLICABLE:
        assert c[key] == cfg.base_value(key) or cfg.inapplicable(c, key) is None, key
    assert 0 <= c["seed"] < 2**32
    if c["data.name"] in ("linear", "logistic"):
        assert c["data.num_examples"] // c["num_nodes"] >= 1
    assert cfg.validate(out).to_dict() == out.to_dict()


# ------------------------------------------------------------------- fuzz: data files


def _load_or_refuse(load, name: str):
    """Either a dataset that meets the checks, or a one-line DataError naming the file."""
    try:
        ds = load()
    except loaders.DataError as e:
        msg = str(e)
        assert _one_line(msg) and name in msg and "allow_pickle" not in msg, msg
        return None
    assert ds.y_train.dtype == np.int32 and 0 <= ds.y_train.min() and ds.y_train.max() < 10
    assert 0 <= ds.y_test.min() and ds.y_test.max() < 10
    assert np.isfinite(ds.x_train).all() and ds.x_train.shape[1:] == ds.x_test.shape[1:]
    return ds


def _good_npz_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        return _npz(Path(d) / "g.npz").read_bytes()


_GOOD_NPZ = _good_npz_bytes()
_GOOD_IDX = _idx_bytes(_raw()["y_train"])


def _flipped(data_, good: bytes, most: int) -> bytes:
    """``good`` with 1..``most`` bytes XOR-ed by a non-zero value at drawn offsets."""
    payload = bytearray(good)
    for _ in range(data_.draw(st.integers(1, most))):
        payload[data_.draw(st.integers(0, len(payload) - 1))] ^= data_.draw(st.integers(1, 255))
    return bytes(payload)


@pytest.mark.fuzz
@given(how=st.sampled_from(["random", "zip_prefixed", "truncate", "flip"]), data_=st.data())
def test_fuzz_damaged_npz_is_refused_naming_the_file(how, data_):
    if how == "random":
        payload = data_.draw(st.binary(max_size=200))
    elif how == "zip_prefixed":
        payload = b"PK\x03\x04" + data_.draw(st.binary(max_size=200))
    elif how == "truncate":
        payload = _GOOD_NPZ[: data_.draw(st.integers(0, len(_GOOD_NPZ) - 1))]
    else:
        payload = _flipped(data_, _GOOD_NPZ, 4)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzzed.npz"
        path.write_bytes(payload)
        ds = _load_or_refuse(lambda: data.load("mnist", path=path), str(path))
    if how in ("random", "zip_prefixed", "truncate"):
        assert ds is None  # never a dataset from noise or half a file


@pytest.mark.fuzz
@given(how=st.sampled_from(["random", "truncate", "flip", "truncate_gz", "flip_gz"]), data_=st.data())
def test_fuzz_damaged_idx_is_refused_naming_the_file(how, data_):
    gz = how.endswith("_gz")
    good = gzip.compress(_GOOD_IDX) if gz else _GOOD_IDX
    if how == "random":
        payload = data_.draw(st.binary(max_size=64))
    elif how.startswith("truncate"):
        payload = good[: data_.draw(st.integers(0, len(good) - 1))]
    else:
        payload = _flipped(data_, good, 3)
    with tempfile.TemporaryDirectory() as d:
        _idx_dir(Path(d), gz=gz, y_train=payload)
        name = _STEMS["y_train"] + (".gz" if gz else "")
        ds = _load_or_refuse(lambda: data.load("mnist", path=d), name)
    if how.startswith("truncate"):
        assert ds is None  # a short IDX file or gzip stream is always refused


@pytest.mark.fuzz
@given(
    values=st.one_of(
        st.lists(st.integers(-3, 14), min_size=1, max_size=8).map(np.array),
        st.lists(st.one_of(st.floats(-2, 12), st.just(math.nan)), min_size=1, max_size=8).map(np.array),
        st.lists(st.integers(0, 9), min_size=1, max_size=8).map(lambda v: np.array(v, np.float32)),
        st.lists(st.booleans(), min_size=1, max_size=8).map(np.array),
    )
)
def test_fuzz_check_labels_returns_the_same_class_ids_or_refuses(values):
    try:
        y = loaders.check_labels(values, 10, "y_train", "here.npz")
    except loaders.DataError as e:
        assert _one_line(str(e)) and str(e).startswith("here.npz: y_train")
        assert not (
            np.isfinite(values.astype(float)).all()
            and (values == np.round(values)).all()
            and values.min() >= 0
            and values.max() < 10
        )
        return
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, values)
    assert y.min() >= 0 and y.max() < 10


def test_every_strength_attack_is_a_known_attack():
    # inapplicable() reads attacks.STRENGTH: a renamed attack would make a valid strength refused.
    names = cfg._registry_names()["ATTACK_NAMES"]
    assert set(attacks.STRENGTH) <= set(names)

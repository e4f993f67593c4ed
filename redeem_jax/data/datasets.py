"""Datasets as plain host arrays: synthetic problems with exact optima, bundled
datasets (digits, MNIST-1D, a byte-level stdlib text corpus) and local-file
image datasets (MNIST, Fashion-MNIST, CIFAR-10).

Everything here is numpy on the host and happens once per experiment; the
per-round work lives in :mod:`redeem_jax.data.sampling`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import os
import random as _py_random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from redeem_jax.data import loaders
from redeem_jax.data.loaders import DataError

__all__ = [
    "Dataset",
    "DataError",
    "check_dataset",
    "load",
    "register_dataset",
    "list_datasets",
    "TEXT_MODULES",
    "text_documents",
]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test split with its task description.

    Attributes:
      name: registry name the dataset was loaded under.
      x_train, x_test: float32 features (images ``[m, H, W, C]`` in [0, 1] or
        standardized; synthetic ``[m, d]``; MNIST-1D ``[m, 40]``) or, for
        ``task == "language"``, int32 byte ids ``[m, L]``.
      y_train, y_test: int32 class labels ``[m]`` (classification), int32 next
        bytes ``[m, L]`` (language) or float32 targets ``[m]`` (regression).
      task: ``"classification"``, ``"regression"`` or ``"language"``.
      num_classes: number of classes; 1 for regression, 256 for text.
      input_shape: shape of one example, ``x_train.shape[1:]``.
      optimum: for synthetic problems, the exact minimiser of the train loss
        (see the docstrings of the ``linear`` / ``logistic`` builders for the
        objective); ``None`` otherwise.
      info: free-form metadata (true weights, noise level, sources, ...).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    num_classes: int
    input_shape: tuple
    optimum: np.ndarray | None = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:  # arrays would flood a notebook cell
        return (
            f"Dataset(name={self.name!r}, task={self.task!r}, "
            f"x_train={self.x_train.shape}/{self.x_train.dtype}, "
            f"y_train={self.y_train.shape}/{self.y_train.dtype}, "
            f"x_test={self.x_test.shape}, num_classes={self.num_classes}, "
            f"optimum={'yes' if self.optimum is not None else 'no'})"
        )


_REGISTRY: dict[str, Callable[..., Dataset]] = {}


def register_dataset(name: str, builder: Callable[..., Dataset]) -> None:
    """Registers ``builder(seed=..., **options) -> Dataset`` under ``name``."""
    _REGISTRY[name] = builder


def list_datasets() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_REGISTRY)


def load(name: str, seed: int = 0, **options: Any) -> Dataset:
    """Loads dataset ``name`` (see :func:`list_datasets`) with builder options.

    ``seed`` drives everything random in synthetic problems. Benchmarks with a
    canonical split (MNIST, CIFAR-10, MNIST-1D, text) do not depend on it, so
    a sweep over seeds varies initialisation, partition and sampling but
    always evaluates on the same test set.

    Every dataset, registered ones included, is checked before it is returned
    (:func:`check_dataset`): a label outside the classes would otherwise give a
    NaN test loss and a run that exits normally.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available: {list_datasets()}")
    builder = _REGISTRY[name]
    params = inspect.signature(builder).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        valid = [p for p in params if p != "seed"]
        raise TypeError(f"dataset {name!r} got unknown option(s) {unknown}; valid options: {valid}")
    return check_dataset(builder(seed=seed, **options))


def check_dataset(ds: Dataset) -> Dataset:
    """``ds`` if it can be learned from as described, with whole-number float class labels cast to
    int32; else :class:`~redeem_jax.data.loaders.DataError`, one line naming its source.

    Classification and language labels must be integers in ``[0, num_classes)`` (language
    inputs too: they index an embedding), float features and regression targets finite,
    every split non-empty for training, images and labels equal in count, and train and test
    examples of one shape (``input_shape``).
    """
    where = ds.info.get("source") or f"dataset {ds.name!r}"
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if np.shape(x)[:1] != np.shape(y)[:1]:
            raise loaders.DataError(
                f"{where}: x_{split} has {np.shape(x)[:1]} examples but y_{split} has {np.shape(y)[:1]}"
            )
    if ds.num_train == 0:
        raise loaders.DataError(f"{where}: no training examples")
    if tuple(ds.x_train.shape[1:]) != tuple(ds.x_test.shape[1:]) or tuple(ds.input_shape) != tuple(
        ds.x_train.shape[1:]
    ):
        raise loaders.DataError(
            f"{where}: train examples have shape {tuple(ds.x_train.shape[1:])}, test examples "
            f"{tuple(ds.x_test.shape[1:])}, input_shape is {tuple(ds.input_shape)}; all three "
            "must be equal"
        )
    changes = {}
    if ds.task in ("classification", "language"):
        one_dim = ds.task == "classification"
        for k in ("y_train", "y_test"):
            y = loaders.check_labels(getattr(ds, k), ds.num_classes, k, where, one_dim=one_dim)
            if y.dtype != getattr(ds, k).dtype or y.shape != getattr(ds, k).shape:
                changes[k] = y
    if ds.task == "language":
        for k in ("x_train", "x_test"):
            loaders.check_labels(getattr(ds, k), ds.num_classes, k, where, one_dim=False)
    else:
        for k in ("x_train", "x_test"):
            loaders.check_features(getattr(ds, k), k, where)
    if ds.task == "regression":
        for k in ("y_train", "y_test"):
            loaders.check_features(getattr(ds, k), k, where)
    return dataclasses.replace(ds, **changes) if changes else ds


def _split_counts(num_examples: int, test_fraction: float) -> tuple[int, int]:
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    num_test = int(round(num_examples * test_fraction))
    return num_examples - num_test, num_test


def _check_positive_int(name: str, value: Any) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------- synthetic


def _whitened_block(rng: np.random.Generator, m: int, d: int) -> np.ndarray:
    """Rows ``A = sqrt(m) Q`` with orthonormal columns Q, so ``AᵀA / m = I``."""
    q, r = np.linalg.qr(rng.standard_normal((m, d)))
    # Fixing the signs of diag(R) makes Q Haar-distributed rather than biased
    # by the QR convention.
    q = q * np.sign(np.diag(r))[None, :]
    return np.sqrt(m) * q


def linear(
    seed: int = 0,
    num_examples: int = 1000,
    dim: int = 10,
    noise: float = 0.1,
    test_fraction: float = 0.2,
    whiten: bool = False,
    num_nodes: int | None = None,
    examples_per_node: int | None = None,
    heterogeneity: float = 0.0,
) -> Dataset:
    """Synthetic linear regression ``y = aᵀw* + noise·ε`` with no bias term.

    Train loss: ``f(x) = ½ · mean_j (a_jᵀx − y_j)²``; ``optimum`` is its exact
    least-squares minimiser (computed in float64 from the stored float32 data).

    With ``whiten=True`` the train set is ``num_nodes`` contiguous blocks of
    ``examples_per_node = m >= dim`` rows (either option may be derived from
    the other and from ``num_examples``); each block satisfies
    ``A_iᵀA_i / m = I`` (``A_i = sqrt(m)·Q_i``), so node i's loss is exactly
    ``½‖x − b_i‖² + const`` with ``b_i = A_iᵀy_i / m`` (``info["node_targets"]``)
    and the global optimum is ``mean_i b_i``. This gives closed-form rates for
    decentralized SGD (e.g. Koloskova et al. 2020, "A unified theory of
    decentralized SGD"). Use ``partition(..., method="contiguous")`` so that
    nodes receive exactly these blocks.

    ``heterogeneity`` is the std of a per-node Gaussian shift of the true
    weights (``w_i = w* + heterogeneity·ξ_i``, ``info["node_weights"]``); it
    needs ``num_nodes`` (blocks are contiguous, as above). Whenever
    ``num_nodes``/``examples_per_node`` is given the train set has exactly
    ``num_nodes · examples_per_node`` rows; the test set (``num_examples ·
    test_fraction`` rows) uses the mean node weights.
    ``noise`` is the std of the additive Gaussian label noise.
    """
    rng = np.random.default_rng(seed)
    dim = _check_positive_int("dim", dim)
    num_train, num_test = _split_counts(_check_positive_int("num_examples", num_examples), test_fraction)
    if num_nodes is not None:
        num_nodes = _check_positive_int("num_nodes", num_nodes)
    if examples_per_node is not None:
        examples_per_node = _check_positive_int("examples_per_node", examples_per_node)
    if heterogeneity < 0:
        raise ValueError(f"heterogeneity must be >= 0, got {heterogeneity}")
    if heterogeneity > 0 and num_nodes is None and examples_per_node is None:
        raise ValueError("heterogeneity > 0 needs num_nodes (or examples_per_node) to define the node blocks")

    blocked = whiten or num_nodes is not None or examples_per_node is not None
    if blocked:
        if num_nodes is None and examples_per_node is None:
            raise ValueError("whiten=True needs num_nodes and/or examples_per_node")
        if examples_per_node is None:
            examples_per_node = num_train // num_nodes
        if num_nodes is None:
            num_nodes = num_train // examples_per_node
        if num_nodes < 1 or examples_per_node < 1:
            raise ValueError(f"cannot split {num_train} train examples into {num_nodes} nodes of {examples_per_node}")
        if whiten and examples_per_node < dim:
            raise ValueError(
                f"whiten=True needs examples_per_node >= dim so that A_iᵀA_i/m = I is possible; "
                f"got examples_per_node={examples_per_node}, dim={dim}"
            )
        # The block structure fixes the train size; the test size keeps its
        # requested value.
        num_train = num_nodes * examples_per_node

    w_star = rng.standard_normal(dim)
    if blocked:
        node_w = w_star[None, :] + heterogeneity * rng.standard_normal((num_nodes, dim))
        if whiten:
            blocks = [_whitened_block(rng, examples_per_node, dim) for _ in range(num_nodes)]
            a_train = np.concatenate(blocks, axis=0)
        else:
            a_train = rng.standard_normal((num_train, dim))
        w_rows = np.repeat(node_w, examples_per_node, axis=0)
    else:
        node_w = None
        a_train = rng.standard_normal((num_train, dim))
        w_rows = np.broadcast_to(w_star, (num_train, dim))
    y_train = np.einsum("md,md->m", a_train, w_rows) + noise * rng.standard_normal(num_train)
    a_test = rng.standard_normal((num_test, dim))
    w_test = node_w.mean(0) if node_w is not None else w_star
    info_test_weights = w_test
    y_test = a_test @ w_test + noise * rng.standard_normal(num_test)

    x_tr = a_train.astype(np.float32)
    y_tr = y_train.astype(np.float32)
    # The optimum is the minimiser of the data as stored (float32), computed in
    # float64 so that tests against it are limited by float32, not by us.
    a64, y64 = x_tr.astype(np.float64), y_tr.astype(np.float64)
    info: dict[str, Any] = {
        "true_weights": w_star,
        "noise": float(noise),
        "objective": "0.5 * mean_j (a_j^T x - y_j)^2",
        "whiten": bool(whiten),
        "test_weights": info_test_weights,
    }
    if blocked:
        info.update(
            num_nodes=num_nodes,
            examples_per_node=examples_per_node,
            node_weights=node_w,
            heterogeneity=float(heterogeneity),
        )
    if whiten:
        m = examples_per_node
        node_targets = np.einsum("nmd,nm->nd", a64.reshape(num_nodes, m, dim), y64.reshape(num_nodes, m)) / m
        info["node_targets"] = node_targets
        optimum = node_targets.mean(0)
    else:
        optimum = np.linalg.lstsq(a64, y64, rcond=None)[0]

    return Dataset(
        name="linear",
        x_train=x_tr,
        y_train=y_tr,
        x_test=a_test.astype(np.float32),
        y_test=y_test.astype(np.float32),
        task="regression",
        num_classes=1,
        input_shape=(dim,),
        optimum=optimum,
        info=info,
    )


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(_log_sigmoid(z))


def logistic_objective(w: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Value, gradient and Hessian of ``mean_j log(1 + exp(−s_j a_jᵀw)) + (l2/2)‖w‖²``.

    ``s_j = 2 y_j − 1`` for labels ``y_j ∈ {0, 1}``; equivalently the mean
    binary cross-entropy of ``sigmoid(a_jᵀw)`` plus the L2 term. No bias.
    """
    x = np.asarray(x, np.float64)
    s = 2.0 * np.asarray(y, np.float64) - 1.0
    z = s * (x @ w)
    m = x.shape[0]
    value = -_log_sigmoid(z).mean() + 0.5 * l2 * w @ w
    p = _sigmoid(-z)  # = 1 - sigmoid(z), stable for large |z|
    grad = -(x.T @ (s * p)) / m + l2 * w
    curv = p * (1.0 - p)
    hess = (x.T * curv) @ x / m + l2 * np.eye(x.shape[1])
    return float(value), grad, hess


def _newton_logistic(x: np.ndarray, y: np.ndarray, l2: float, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """Damped Newton (backtracking on the objective) until ``‖∇f‖ < tol``."""
    w = np.zeros(x.shape[1])
    value, grad, hess = logistic_objective(w, x, y, l2)
    for _ in range(max_iter):
        if np.linalg.norm(grad) < tol:
            return w
        step = np.linalg.solve(hess, grad)
        t = 1.0
        # Backtracking makes Newton globally convergent; near the optimum the
        # full step is always accepted and convergence is quadratic.
        while t > 1e-12:
            new = w - t * step
            new_value, new_grad, new_hess = logistic_objective(new, x, y, l2)
            if new_value <= value - 1e-4 * t * grad @ step or new_value <= value:
                break
            t *= 0.5
        w, value, grad, hess = new, new_value, new_grad, new_hess
    if np.linalg.norm(grad) >= tol:
        raise RuntimeError(f"Newton did not reach ‖∇f‖ < {tol} (got {np.linalg.norm(grad):.2e}); increase l2")
    return w


def logistic(
    seed: int = 0,
    num_examples: int = 1000,
    dim: int = 10,
    noise: float = 0.0,
    test_fraction: float = 0.2,
    l2: float = 1e-3,
) -> Dataset:
    """Synthetic binary logistic regression (labels in {0, 1}, no bias).

    Features ``a ~ N(0, I)``, true weights ``w* ~ N(0, I)``, labels
    ``y ~ Bernoulli(sigmoid(aᵀw*))``, then each label flipped with probability
    ``noise``. ``optimum`` is the exact minimiser (Newton's method to
    ``‖∇f‖ < 1e-10``, float64 on the stored float32 features) of

        f(w) = mean_j log(1 + exp(−s_j a_jᵀw)) + (l2/2)‖w‖²,   s_j = 2y_j − 1,

    i.e. the mean binary cross-entropy of the logit ``aᵀw`` plus an L2 term
    that makes the problem strongly convex (and the optimum finite even if
    the sample happens to be separable).
    """
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0 so that the optimum exists, got {l2}")
    if not 0.0 <= noise <= 0.5:
        raise ValueError(f"noise is a label-flip probability in [0, 0.5], got {noise}")
    rng = np.random.default_rng(seed)
    dim = _check_positive_int("dim", dim)
    num_train, num_test = _split_counts(_check_positive_int("num_examples", num_examples), test_fraction)
    w_star = rng.standard_normal(dim)

    def sample(m: int) -> tuple[np.ndarray, np.ndarray]:
        a = rng.standard_normal((m, dim))
        y = (rng.random(m) < _sigmoid(a @ w_star)).astype(np.int32)
        flip = rng.random(m) < noise
        return a.astype(np.float32), np.where(flip, 1 - y, y).astype(np.int32)

    x_tr, y_tr = sample(num_train)
    x_te, y_te = sample(num_test)
    optimum = _newton_logistic(x_tr, y_tr, l2)
    info = {
        "true_weights": w_star,
        "noise": float(noise),
        "l2": float(l2),
        "objective": "mean_j log(1 + exp(-s_j a_j^T w)) + (l2/2)||w||^2, s_j = 2 y_j - 1, no bias",
    }
    return Dataset(
        name="logistic",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        task="classification",
        num_classes=2,
        input_shape=(dim,),
        optimum=optimum,
        info=info,
    )


# ------------------------------------------------------------------ bundled


def digits(seed: int = 0, test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """UCI optical digits, 1797 images of 8×8 (bundled with scikit-learn;
    Alpaydin & Kaynak 1998). Images ``[m, 8, 8, 1]`` in [0, 1].

    There is no canonical split; ``split_seed`` (not ``seed``) fixes it so
    every run of a seed sweep is evaluated on the same test set.
    """
    del seed
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = (raw.images / 16.0).astype(np.float32)[..., None]
    labels = raw.target.astype(np.int32)
    num_train, _ = _split_counts(len(labels), test_fraction)
    perm = np.random.default_rng(split_seed).permutation(len(labels))
    tr, te = perm[:num_train], perm[num_train:]
    return Dataset(
        name="digits",
        x_train=images[tr],
        y_train=labels[tr],
        x_test=images[te],
        y_test=labels[te],
        task="classification",
        num_classes=10,
        input_shape=(8, 8, 1),
        info={"split_seed": split_seed},
    )


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(num_examples: int, train_split: float, generation_seed: int):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_examples
    args.train_split = train_split
    args.seed = generation_seed
    # make_dataset reseeds numpy's and Python's global RNGs; restore them so
    # that loading data never changes the randomness of user code.
    np_state, py_state = np.random.get_state(), _py_random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        _py_random.setstate(py_state)
    out = (
        raw["x"].astype(np.float32),
        raw["y"].astype(np.int32),
        raw["x_test"].astype(np.float32),
        raw["y_test"].astype(np.int32),
        np.asarray(raw["t"], np.float32),
    )
    for a in out:
        a.setflags(write=False)
    return out


def mnist1d(seed: int = 0, num_examples: int = 5000, test_fraction: float = 0.2, generation_seed: int = 42) -> Dataset:
    """MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated
    offline with ``mnist1d.data.make_dataset``; ``x`` is ``[m, 40]``,
    standardized. The defaults (5000 examples, 4000/1000 split, generation
    seed 42) reproduce the published dataset. Never downloads.
    """
    del seed
    xs = _mnist1d_arrays(
        _check_positive_int("num_examples", num_examples), 1.0 - float(test_fraction), int(generation_seed)
    )
    x_tr, y_tr, x_te, y_te, t = (np.array(a) for a in xs)
    return Dataset(
        name="mnist1d",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        task="classification",
        num_classes=10,
        input_shape=tuple(x_tr.shape[1:]),
        info={"t": t, "generation_seed": int(generation_seed)},
    )


# Pure-Python and C stdlib modules with long docstrings. The list is fixed so
# the corpus is deterministic for a given Python version; the order is the
# order of sources in the train set, so a "contiguous" partition gives nodes
# different texts (natural heterogeneity).
TEXT_MODULES: tuple[str, ...] = (
    "argparse",
    "collections",
    "json",
    "pickle",
    "re",
    "string",
    "textwrap",
    "typing",
    "functools",
    "dataclasses",
    "inspect",
    "random",
    "statistics",
    "fractions",
    "decimal",
    "heapq",
    "difflib",
    "csv",
    "logging",
    "pathlib",
    "datetime",
    "calendar",
    "shutil",
    "zipfile",
    "tarfile",
    "threading",
    "subprocess",
    "unittest.case",
    "doctest",
    "pprint",
    "enum",
    "abc",
    "contextlib",
    "itertools",
    "operator",
    "math",
    "os",
    "copy",
    "queue",
)


def module_text(module_name: str) -> str:
    """Docstring of a module followed by those of its public members defined
    in it (sorted by name), as ``inspect.getdoc`` cleans them."""
    mod = importlib.import_module(module_name)
    parts = [inspect.getdoc(mod) or ""]
    for name in sorted(vars(mod)):
        if name.startswith("_"):
            continue
        obj = getattr(mod, name)
        if getattr(obj, "__module__", None) != mod.__name__:
            continue
        doc = inspect.getdoc(obj)
        if doc:
            parts.append(f"{name}\n{doc}")
    return "\n\n".join(p for p in parts if p)


def _windows(buf: np.ndarray, seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    n = (len(buf) - seq_len - 1) // stride + 1 if len(buf) > seq_len else 0
    if n <= 0:
        return np.zeros((0, seq_len), np.int32), np.zeros((0, seq_len), np.int32)
    starts = np.arange(n) * stride
    idx = starts[:, None] + np.arange(seq_len)[None, :]
    return buf[idx].astype(np.int32), buf[idx + 1].astype(np.int32)


def text(
    seed: int = 0,
    seq_len: int = 64,
    stride: int | None = None,
    test_fraction: float = 0.1,
    modules: tuple[str, ...] | list[str] | None = None,
) -> Dataset:
    """Byte-level language modelling on the docstrings of a fixed list of
    standard-library modules (:data:`TEXT_MODULES`), in the spirit of
    char-level corpora (Karpathy's char-rnn; Shakespeare in LEAF, Caldas et
    al. 2018) but shipped with Python, so nothing is downloaded.

    Each module's UTF-8 text is split into a head (train) and a tail
    (test, the last ``test_fraction`` of its bytes); windows of ``seq_len``
    bytes with ``stride`` (default ``seq_len``) give ``x = b[t:t+L]`` and
    ``y = b[t+1:t+L+1]``. Train windows are ordered by module, and
    ``info["train_source"]`` gives each window's module index.
    """
    del seed
    seq_len = _check_positive_int("seq_len", seq_len)
    stride = seq_len if stride is None else _check_positive_int("stride", stride)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    modules = tuple(TEXT_MODULES if modules is None else modules)
    xs_tr, ys_tr, xs_te, ys_te, src = [], [], [], [], []
    for i, name in enumerate(modules):
        buf = np.frombuffer(module_text(name).encode("utf-8"), dtype=np.uint8)
        cut = int(round(len(buf) * (1.0 - test_fraction)))
        x, y = _windows(buf[:cut], seq_len, stride)
        xs_tr.append(x)
        ys_tr.append(y)
        src.append(np.full(len(x), i, np.int32))
        x, y = _windows(buf[cut:], seq_len, stride)
        xs_te.append(x)
        ys_te.append(y)
    x_tr, y_tr = np.concatenate(xs_tr), np.concatenate(ys_tr)
    if len(x_tr) == 0:
        raise ValueError(f"seq_len={seq_len} is longer than every source text")
    return Dataset(
        name="text",
        x_train=x_tr,
        y_train=y_tr,
        x_test=np.concatenate(xs_te),
        y_test=np.concatenate(ys_te),
        task="language",
        num_classes=256,
        input_shape=(seq_len,),
        info={"sources": modules, "train_source": np.concatenate(src), "seq_len": seq_len, "stride": stride},
    )


def text_documents(path: str | os.PathLike) -> tuple[list[str], list[bytes]]:
    """The documents of a local text corpus, ``(names, UTF-8 bytes)``: every regular file of a
    folder (sorted by relative path, hidden files skipped) is one document; a single file is
    split at blank lines (paragraphs), each paragraph one document."""
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder (a text file, or a folder of text files)")
    if root.is_dir():
        files = sorted(
            f for f in root.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts)
        )
        names = [str(f.relative_to(root)) for f in files]
        docs = [f.read_bytes() for f in files]
    else:
        parts = re.split(rb"\r?\n[ \t]*\r?\n", root.read_bytes())
        docs = [d.strip(b"\r\n") for d in parts if d.strip()]
        names = [f"{root.name}#{i}" for i in range(len(docs))]
    if not docs:
        raise loaders.DataError(f"{root}: no text in it")
    return names, docs


def text_file(
    seed: int = 0, path: str = "", seq_len: int = 64, stride: int | None = None, test_fraction: float = 0.1
) -> Dataset:
    """Byte-level language modelling on a local text file or folder (:func:`text_documents`).

    As :func:`text`, every document's head gives train windows of ``seq_len`` bytes (its
    index in ``info["train_source"]``, for the ``by_source`` partition), and the last
    ``test_fraction`` of its bytes goes to the held-out set. Documents (paragraphs) are often
    shorter than a window, so the tails are joined, separated by a blank line, into one held-out
    text before it is cut into windows; a document too short for a train window trains nothing.
    """
    del seed
    if not path:
        raise FileNotFoundError("data.name 'text_file' reads a local file: set data.path to a text file or folder")
    seq_len = _check_positive_int("seq_len", seq_len)
    stride = seq_len if stride is None else _check_positive_int("stride", stride)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    names, docs = text_documents(path)
    xs, ys, src, tails = [], [], [], []
    for i, doc in enumerate(docs):
        buf = np.frombuffer(doc, dtype=np.uint8)
        cut = int(round(len(buf) * (1.0 - test_fraction)))
        x, y = _windows(buf[:cut], seq_len, stride)
        xs.append(x)
        ys.append(y)
        src.append(np.full(len(x), i, np.int32))
        tails.append(doc[cut:])
    x_te, y_te = _windows(np.frombuffer(b"\n\n".join(tails), dtype=np.uint8), seq_len, stride)
    x_tr = np.concatenate(xs)
    if len(x_tr) == 0 or len(x_te) == 0:
        raise loaders.DataError(
            f"{path}: {sum(map(len, docs))} bytes in {len(docs)} documents give no "
            f"{'train' if len(x_tr) == 0 else 'held-out'} window of seq_len={seq_len}; use a shorter data.seq_len"
        )
    return Dataset(
        name="text_file",
        x_train=x_tr,
        y_train=np.concatenate(ys),
        x_test=x_te,
        y_test=y_te,
        task="language",
        num_classes=256,
        input_shape=(seq_len,),
        info={"source": str(path), "sources": tuple(names), "train_source": np.concatenate(src), "seq_len": seq_len},
    )


# ------------------------------------------------------------- local files


def _image_builder(name: str):
    def build(
        seed: int = 0,
        path: str | None = None,
        standardize: bool = False,
        max_train: int | None = None,
        max_test: int | None = None,
    ) -> Dataset:
        del seed
        x_tr, y_tr, x_te, y_te, source = loaders.load_images(name, path)
        if max_train is not None:
            x_tr, y_tr = x_tr[:max_train], y_tr[:max_train]
        if max_test is not None:
            x_te, y_te = x_te[:max_test], y_te[:max_test]
        info: dict[str, Any] = {"source": source, "standardized": bool(standardize)}
        if standardize:
            # Train-set statistics only, per channel, so the test set never
            # leaks into preprocessing.
            mean = x_tr.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
            std = x_tr.std(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
            std = np.where(std > 0, std, np.float32(1))  # a constant channel is centred, not divided by 0
            x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
            info.update(mean=mean, std=std)
        return Dataset(
            name=name,
            x_train=x_tr,
            y_train=y_tr,
            x_test=x_te,
            y_test=y_te,
            task="classification",
            num_classes=10,
            input_shape=tuple(x_tr.shape[1:]),
            info=info,
        )

    build.__name__ = name
    build.__doc__ = (
        f"{name} from local files only (see :func:`redeem_jax.data.loaders.load_images`): "
        "images ``[m, H, W, C]`` scaled to [0, 1] (per-channel standardized with "
        "``standardize=True``); ``max_train``/``max_test`` keep the first examples."
    )
    return build


register_dataset("linear", linear)
register_dataset("logistic", logistic)
register_dataset("digits", digits)
register_dataset("mnist1d", mnist1d)
register_dataset("text", text)
register_dataset("text_file", text_file)
for _name in loaders.IMAGE_DATASETS:
    register_dataset(_name, _image_builder(_name))

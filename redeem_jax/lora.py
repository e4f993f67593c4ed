"""LoRA adapters over a frozen, shared base (Hu et al. 2021) and how to aggregate them.

Every targeted dense kernel ``K₀ ∈ R^{k×d}`` of the model (flax's ``y = x K``, so ``K = Wᵀ`` in
the paper's ``h = W x``) becomes ``K = K₀ + (α/r)·a·b`` with ``a ∈ R^{k×r}`` (the paper's ``Aᵀ``,
random at init) and ``b ∈ R^{r×d}`` (the paper's ``Bᵀ``, zero at init: the adapted model starts
as the base; Hu et al. 2021, Sec. 4.1, Eq. 3).

The network's rows ``[N, d]`` hold **only the adapter coordinates**: :func:`lora_model` returns
an ``rj.models.Model`` whose flat row is the adapters and whose ``apply`` closes over the frozen
base, so the base is one array of the jitted round (JAX passes a captured array to the compiled
program as one argument; it is not in the ``RoundState`` and never has a node axis). The
forward pass is the base forward with a flax method interceptor (``nn.intercept_methods``) on
every targeted ``Dense`` / ``DenseGeneral``: ``y = x K₀ + (α/r)·(x a) b``, so no node ever
materialises a ``K₀``-sized effective kernel (vmapped over nodes, the base matmul is one
unbatched weight against a batch of activations).

Aggregation (``model.lora.aggregation``):

* ``naive``: the row is ``[a, b]`` and the channel averages each factor: the aggregate is
  ``mean(a)·mean(b) ≠ mean(a·b)`` in general (the error FFA-LoRA and FedEx-LoRA point at).
* ``ffa``: FFA-LoRA (Sun et al. 2024, Sec. 3): ``a`` is frozen at a random draw shared by all
  nodes (closed over like the base) and the row is ``b`` alone, so averaging rows averages the
  products exactly, ``a·mean(b) = mean(a·b)``, and half the adapter is never sent.
* ``product``: the channel averages the products ``a_i b_i`` (so a robust rule or an attack acts
  on the products) and each node re-factorises its aggregate at rank r by a truncated SVD
  (:func:`product_channel`). The mean of products has rank up to N·r, so this is exact only
  when that rank is at most r; otherwise it is the best rank-r approximation (Eckart–Young), whose
  Frobenius error (the tail singular values) the channel reports as ``lora_truncation_error``
  and which is never larger than naive's. It materialises ``[N, k, d]`` products inside the
  channel: meant for measurement and small adapters, not for the largest models.

``model.init_from``: :func:`load_base` reads the base from an ``.npz`` (one flat vector in the
model's ``ravel_pytree`` order, or one array per parameter named by its path, e.g.
``params/_Block_0/Dense_0/kernel``) or an orbax checkpoint directory of the parameter pytree.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from redeem_jax.core import Channel
from redeem_jax.models import Model

__all__ = [
    "AGGREGATIONS",
    "TARGETS",
    "Target",
    "LoraSpec",
    "find_targets",
    "lora_model",
    "merge",
    "factors",
    "product_channel",
    "aggregation_gap",
    "load_base",
    "with_base",
    "param_names",
]

AGGREGATIONS = ("naive", "ffa", "product")
TARGETS = ("attention", "mlp", "head")


class Target(NamedTuple):
    """One adapted kernel: its module ``path``, the kernel's parameter path in the params tree,
    its shape, and the matrix it is seen as (``k`` inputs × ``d`` outputs)."""

    path: str  # "/"-joined module path, e.g. "_Block_0/MultiHeadDotProductAttention_0/query"
    kind: str  # "attention" | "mlp" | "head"
    kernel_shape: tuple
    k: int
    d: int


class LoraSpec(NamedTuple):
    """Everything static about a LoRA model: the targets, rank, scale α/r, aggregation, the
    frozen base row (``f32[d_base]``, stored once) and, for FFA, the frozen ``a`` factors."""

    base_model: Model
    targets: tuple
    rank: int
    scale: float
    aggregation: str
    base: jax.Array  # f32[d_base]
    frozen_a: dict | None  # {path: f32[k, r]} for "ffa"
    unravel: Any  # adapter row -> {path: {"a": [k, r]?, "b": [r, d]}}
    num_params: int

    def tree(self, row) -> dict:
        """``{path: (a [k, r], b [r, d])}`` of one adapter row (FFA's ``a`` is the frozen one)."""
        t = self.unravel(row)
        return {p: (self.frozen_a[p] if self.frozen_a is not None else t[p]["a"], t[p]["b"]) for p in t}


def _key_path(path) -> str:
    return "/".join(str(getattr(p, "key", p)) for p in path)


def _kernel_matrix(mod, x):
    """``(k, n_in)``: the contracted size of a Dense/DenseGeneral call on ``x`` and how many
    trailing axes it contracts (only trailing contractions without batch dims are adapted)."""
    if isinstance(mod, nn.Dense):
        return int(x.shape[-1]), 1
    axis = mod.axis if isinstance(mod.axis, Sequence) else (mod.axis,)
    axis = tuple(sorted(a % x.ndim for a in axis))
    if axis != tuple(range(x.ndim - len(axis), x.ndim)) or getattr(mod, "batch_dims", ()):
        raise ValueError(
            f"model.lora.targets: {'/'.join(mod.path)} contracts axes {mod.axis}; only trailing axes are supported"
        )
    return int(np.prod([x.shape[a] for a in axis])), len(axis)


def _is_dense_call(context) -> bool:
    return context.method_name == "__call__" and isinstance(context.module, (nn.Dense, nn.DenseGeneral))


def find_targets(model: Model, example, targets: Sequence[str] = ("attention", "mlp")) -> tuple[Target, ...]:
    """The dense kernels of ``model`` LoRA adapts: every ``Dense`` / ``DenseGeneral`` called on
    ``example``, classified as ``attention`` (inside a module whose name contains "Attention"),
    ``head`` (the top-level Dense with the highest index, as ``rj.models.head_mask``) or ``mlp``
    (every other dense layer), kept when its kind is in ``targets``."""
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise ValueError(f"model.lora.targets: {','.join(targets)!r}: each must be one of {', '.join(TARGETS)}")
    seen: dict[str, tuple] = {}

    def record(next_fun, args, kwargs, context):
        if _is_dense_call(context):
            mod, x = context.module, args[0]
            k, n_in = _kernel_matrix(mod, x)
            feats = mod.features if isinstance(mod.features, Sequence) else (mod.features,)
            seen.setdefault("/".join(mod.path), (k, int(np.prod(feats)), (*x.shape[x.ndim - n_in :], *feats)))
        return next_fun(*args, **kwargs)

    def run(flat):
        with nn.intercept_methods(record):
            return (model.flax_apply or model.apply)(flat, example)  # flax's Dense calls, intercepted

    jax.eval_shape(run, jax.ShapeDtypeStruct((model.num_params,), jnp.float32))
    top = [p for p in seen if "/" not in p and p.startswith("Dense_") and p[6:].isdigit()]
    head = max(top, key=lambda p: int(p[6:])) if top else None
    out = []
    for p, (k, d, shape) in seen.items():
        kind = "head" if p == head else ("attention" if "attention" in p.lower() else "mlp")
        if kind in targets:
            out.append(Target(p, kind, tuple(shape), k, d))
    if not out:
        raise ValueError(f"model.lora.targets: {model.name!r} has no dense layer of kind {', '.join(targets)}")
    return tuple(out)


def _a_init(key, t: Target, rank: int):
    # Hu et al. 2021, Sec. 4.1: "random Gaussian initialization for A"; variance 1/k keeps x·a at
    # the scale of x (loralib draws a Kaiming-uniform of the same variance order).
    return jax.random.normal(key, (t.k, rank), jnp.float32) / math.sqrt(t.k)


def _a_keys(key, targets):
    return {t.path: jax.random.fold_in(key, i) for i, t in enumerate(targets)}


def lora_model(
    model: Model,
    example,
    *,
    rank: int,
    alpha: float | None = None,
    targets: Sequence[str] = ("attention", "mlp"),
    aggregation: str = "naive",
    base=None,
    key=None,
) -> tuple[Model, LoraSpec]:
    """LoRA (Hu et al. 2021, Eq. 3: ``h = W₀x + (α/r)·BAx``) on ``model``'s dense kernels of kind
    ``targets``: a ``Model`` whose row is the adapter coordinates only, and its :class:`LoraSpec`.

    ``base`` (``f32[model.num_params]``, default ``model.init(key)``) is the frozen ``W₀``, closed
    over once; ``key`` also draws FFA's shared frozen ``a``. ``init(key)`` gives a row with a
    fresh random ``a`` (naive, product) and ``b = 0``, so every node starts at the base model.
    """
    if rank < 1:
        raise ValueError(f"model.lora.rank: must be >= 1 for an adapter, got {rank}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"model.lora.aggregation: {aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
    key = jax.random.PRNGKey(0) if key is None else key
    base_key, a_key = jax.random.split(key)
    base = jax.jit(model.init)(base_key) if base is None else jnp.asarray(base, jnp.float32)
    if base.shape != (model.num_params,):
        raise ValueError(f"model.init_from: the base has {base.shape[0]} parameters, the model {model.num_params}")
    tgts = find_targets(model, example, tuple(targets))
    scale = float(rank if alpha is None else alpha) / rank
    ffa = aggregation == "ffa"
    # One compiled draw each (op-by-op dispatch of a dozen small draws costs seconds on a busy CPU).
    frozen = (
        jax.jit(lambda k: {t.path: _a_init(kk, t, rank) for t, kk in zip(tgts, _a_keys(k, tgts).values())})(a_key)
        if ffa
        else None
    )

    def adapters(key):
        keys = _a_keys(key, tgts)
        out = {}
        for t in tgts:
            leaf = {"b": jnp.zeros((rank, t.d), jnp.float32)}
            if not ffa:
                leaf["a"] = _a_init(keys[t.path], t, rank)
            out[t.path] = leaf
        return out

    shapes = jax.eval_shape(adapters, jax.random.PRNGKey(0))
    row0, unravel = ravel_pytree(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes))
    spec = LoraSpec(model, tgts, int(rank), scale, aggregation, base, frozen, unravel, int(row0.size))
    by_path = {t.path: t for t in tgts}

    @jax.jit
    def init(key):
        return ravel_pytree(adapters(key))[0]

    def apply(row, x):
        ab = spec.tree(row)

        def intercept(next_fun, args, kwargs, context):
            y = next_fun(*args, **kwargs)
            if not _is_dense_call(context):
                return y
            p = "/".join(context.module.path)
            if p not in by_path:
                return y
            a, b = ab[p]
            h = args[0]
            h2 = h.reshape((*h.shape[: h.ndim - _n_in(by_path[p], h)], by_path[p].k))
            # x·K₀ + (α/r)(x·a)·b: the low-rank path never forms a [k, d] matrix.
            delta = (h2 @ a.astype(h2.dtype)) @ b.astype(h2.dtype)
            return y + (scale * delta).reshape(y.shape).astype(y.dtype)

        with nn.intercept_methods(intercept):
            return (model.flax_apply or model.apply)(spec.base, x)

    wrapped = Model(f"{model.name}+lora", model.task, spec.num_params, init, apply, unravel, model.l2)
    return wrapped, spec


def _n_in(t: Target, h) -> int:
    """How many trailing axes of the input ``h`` the target contracts (k = their product)."""
    n, size = 0, 1
    while size < t.k:
        n += 1
        size *= int(h.shape[h.ndim - n])
    return n


def factors(spec: LoraSpec, rows) -> dict:
    """``{path: (a [N, k, r], b [N, r, d])}`` of adapter rows ``[N, d_adapter]`` (FFA's shared
    ``a`` broadcast over nodes)."""
    t = jax.vmap(spec.unravel)(rows)
    n = rows.shape[0]
    out = {}
    for p in t:
        a = t[p]["a"] if spec.frozen_a is None else jnp.broadcast_to(spec.frozen_a[p], (n, *spec.frozen_a[p].shape))
        out[p] = (a, t[p]["b"])
    return out


def merge(spec: LoraSpec, row) -> jax.Array:
    """The full parameter row ``W₀ + (α/r)·a·b`` (the base model's ``ravel_pytree`` order) of one
    adapter row: what the adapted model computes, for evaluation and tests (it materialises a
    base-sized row, which the training forward never does)."""
    ab = spec.tree(row)
    tree = spec.base_model.unravel(spec.base)
    targets = {t.path: t for t in spec.targets}

    def add(path, leaf):
        names = [str(getattr(q, "key", q)) for q in path]
        if names[-1] != "kernel":
            return leaf
        p = "/".join(names[1:-1] if names[0] == "params" else names[:-1])
        if p not in targets:
            return leaf
        a, b = ab[p]
        return leaf + (spec.scale * (a @ b)).reshape(leaf.shape).astype(leaf.dtype)

    return ravel_pytree(jax.tree_util.tree_map_with_path(add, tree))[0]


def aggregation_gap(spec: LoraSpec, rows) -> dict:
    """How far each aggregation of adapter rows ``[N, d_adapter]`` (a server's uniform mean) is
    from the exact mean of the full updates ``mean_i (α/r)·a_i b_i``, relative to its norm (all
    targets together, Frobenius): ``naive`` = ``mean(a)·mean(b)`` (Hu et al.'s factors averaged
    separately), ``product`` = the rank-r SVD truncation of the exact mean (Eckart–Young), and
    ``ffa`` = ``a·mean(b)`` for FFA rows (Sun et al. 2024: 0 up to rounding). Only the aggregations
    the rows allow are returned (FFA rows: ``ffa``; others: ``naive`` and ``product``)."""
    f = factors(spec, rows)
    err: dict = {}
    norm = jnp.zeros((), jnp.float32)
    for a, b in f.values():
        exact = jnp.einsum("nkr,nrd->kd", a, b) / a.shape[0]
        norm = norm + jnp.sum(exact**2)
        if spec.frozen_a is not None:
            err["ffa"] = err.get("ffa", 0.0) + jnp.sum((a[0] @ b.mean(0) - exact) ** 2)
            continue
        err["naive"] = err.get("naive", 0.0) + jnp.sum((a.mean(0) @ b.mean(0) - exact) ** 2)
        sv = jnp.linalg.svd(exact, compute_uv=False)
        err["product"] = err.get("product", 0.0) + jnp.sum(sv[spec.rank :] ** 2)
    return {k: jnp.sqrt(v / norm) for k, v in err.items()}


def product_channel(inner: Channel, spec: LoraSpec) -> Channel:
    """``product`` aggregation: ``inner`` (gossip, server, robust rule with its attack) exchanges
    the products ``P_i = a_i b_i`` of every target, and each node re-factorises what it receives
    at rank r by a truncated SVD (Eckart & Young 1936: the best rank-r approximation in Frobenius
    norm), ``a ← U_r Σ_r^{1/2}``, ``b ← Σ_r^{1/2} V_rᵀ``.

    The state carries ``lora_truncation_error``: ``(α/r)·‖P̄ − a b‖_F`` summed over targets and
    honest nodes (0 when every aggregate has rank ≤ r). The wire counts the factors' floats (what
    a node sends; the receiver forms the products)."""
    if spec.aggregation == "ffa" or spec.frozen_a is not None:
        raise ValueError("product_channel: FFA-LoRA rows hold b only; its plain channel is already exact")
    from redeem_jax.channels import RoundCounter

    targets = spec.targets
    sizes = [t.k * t.d for t in targets]

    def products(x):
        f = factors(spec, x)
        return jnp.concatenate([jnp.einsum("nkr,nrd->nkd", *f[t.path]).reshape(x.shape[0], -1) for t in targets], -1)

    def init(x):
        return {
            "inner": inner.init(products(jnp.asarray(x))),
            "lora_truncation_error": RoundCounter(jnp.full((), -1, jnp.int32), jnp.zeros((), jnp.float32)),
        }

    def update(x, s, ctx):
        n, r = x.shape[0], spec.rank
        y, si = inner.update(products(x), s["inner"], ctx)
        new, err, start = {}, jnp.zeros((n,), jnp.float32), 0
        for t, size in zip(targets, sizes):
            p = y[:, start : start + size].reshape(n, t.k, t.d).astype(jnp.float32)
            start += size
            u, sv, vt = jnp.linalg.svd(p, full_matrices=False)
            root = jnp.sqrt(sv[:, :r])
            new[t.path] = {"a": u[:, :, :r] * root[:, None, :], "b": root[:, :, None] * vt[:, :r, :]}
            err = err + jnp.sum(sv[:, r:] ** 2, axis=-1)
        rows = jax.vmap(lambda tree: ravel_pytree(tree)[0])(new)
        honest = ctx.honest.astype(jnp.float32)
        total = spec.scale * jnp.sum(jnp.sqrt(err) * honest)
        return rows.astype(x.dtype), {
            "inner": si,
            "lora_truncation_error": RoundCounter(jnp.asarray(ctx.round, jnp.int32), total),
        }

    def wire(d, ctx):
        return (None, None) if inner.wire is None else inner.wire(d, ctx)

    return Channel(init, update, wire, False, inner.hypers, f"lora_product({inner.name})")


# --------------------------------------------------------------------------- #
# a base model from a local checkpoint
# --------------------------------------------------------------------------- #
def param_names(model: Model) -> dict[str, tuple]:
    """``{name: shape}`` of the model's parameters, named by their ``/``-joined path in the
    params tree (``params/Dense_0/kernel``), in ``ravel_pytree`` order."""
    tree = model.unravel(jnp.zeros((model.num_params,), jnp.float32))
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_key_path(p): tuple(v.shape) for p, v in leaves}


def _from_named(model: Model, named: dict[str, np.ndarray], source: str) -> np.ndarray:
    want = param_names(model)
    # A flax variables dict saved without its "params" level names the same leaves.
    strip = {k[len("params/") :]: k for k in want if k.startswith("params/")}
    got = {}
    for k, v in named.items():
        k = k.replace(".", "/")
        got[k if k in want else strip.get(k, k)] = np.asarray(v)
    missing = [k for k in want if k not in got]
    if missing:
        raise ValueError(
            f"model.init_from: {source} has no parameter {missing[0]} (and {len(missing) - 1} more missing; "
            f"it has {', '.join(sorted(got)[:4])}{', ...' if len(got) > 4 else ''})"
        )
    extra = [k for k in got if k not in want]
    if extra:
        raise ValueError(f"model.init_from: {source} has parameter {extra[0]}, which the model does not have")
    rows = []
    for k, shape in want.items():
        if tuple(got[k].shape) != shape:
            raise ValueError(
                f"model.init_from: parameter {k} has shape {tuple(got[k].shape)} in {source}, the model needs {shape}"
            )
        rows.append(got[k].astype(np.float32).ravel())
    # The leaves of param_names are in ravel_pytree order, so their concatenation is the row
    # (then the model's dead padding, rj.models.Model.pad).
    return np.pad(np.concatenate(rows) if rows else np.zeros((0,), np.float32), (0, model.pad))


def load_base(model: Model, path: str) -> np.ndarray:
    """The model's flat parameter row (``ravel_pytree`` order) from a local checkpoint: an
    ``.npz`` holding one flat vector (any single key) or one array per parameter named by its path
    (``params/_Block_0/Dense_0/kernel``; dots or slashes), or an orbax checkpoint directory of the
    parameter pytree (``orbax.checkpoint.StandardCheckpointer``). Errors name the parameter."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"model.init_from: {path!r} does not exist")
    if os.path.isdir(path):
        import orbax.checkpoint as ocp

        try:
            tree = ocp.StandardCheckpointer().restore(os.path.abspath(path))
        except Exception as e:  # noqa: BLE001 - orbax raises many kinds; the message is what matters
            raise ValueError(f"model.init_from: {path!r} is not a readable orbax checkpoint ({e})") from e
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        named = {_key_path(p): np.asarray(v) for p, v in leaves}
        if len(named) == 1 and next(iter(named.values())).ndim == 1:
            return _flat(model, next(iter(named.values())), path)
        return _from_named(model, named, path)
    try:
        with np.load(path) as f:
            named = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"model.init_from: {path!r} is not a readable .npz file ({e})") from e
    if len(named) == 1 and next(iter(named.values())).ndim == 1 and next(iter(named)) not in param_names(model):
        return _flat(model, next(iter(named.values())), path)
    return _from_named(model, named, path)


def with_base(model: Model, base) -> Model:
    """``model`` whose ``init`` returns ``base`` (a checkpoint's row) for every key: every node
    starts from the given model (``model.init_from`` without adapters)."""
    base = jnp.asarray(base, jnp.float32)
    if base.shape != (model.num_params,):
        raise ValueError(f"model.init_from: {base.shape[0]} parameters, the model has {model.num_params}")

    def init(key):
        del key
        return base

    return model._replace(init=init)


def _flat(model: Model, v: np.ndarray, source: str) -> np.ndarray:
    if v.shape == (model.num_live,):  # flax's ravel_pytree row: add the model's dead padding
        v = np.pad(v, (0, model.pad))
    if v.shape != (model.num_params,):
        raise ValueError(
            f"model.init_from: the flat vector in {source} has {v.size} parameters, the model has {model.num_params}"
        )
    return v.astype(np.float32)

"""Models as flat parameter rows (DESIGN.md: parameters of all nodes are ``f32[N, d]``).

Every model is a flax module wrapped into a :class:`Model`: ``init(key) -> f32[d]`` and
``apply(flat, x) -> outputs``. The pytree is rebuilt from the flat row by ``unravel`` inside
``apply``, so gossip, robust aggregation and DP noise all act on plain vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

__all__ = [
    "Model",
    "get",
    "MODELS",
    "loss_and_metrics",
    "head_mask",
    "per_example_loss",
    "MLP",
    "CNN",
    "Linear",
    "TinyTransformerLM",
]


class Model(NamedTuple):
    """A model seen as a function of one flat parameter row."""

    name: str
    task: str  # "classification" | "binary" | "regression" | "language"
    num_params: int
    init: Callable[[jax.Array], jax.Array]  # key -> f32[d]
    apply: Callable[[jax.Array, jax.Array], jax.Array]  # (f32[d], x[B, ...]) -> out[B, ...]
    unravel: Callable[[jax.Array], Any]
    l2: float = 0.0  # (l2/2)·||θ||² added to the training loss
    # Dead coordinates at the end of the row (the MLP's GEMM layout, :func:`_mlp_gemm`): the
    # first ``num_params - pad`` coordinates are flax's ``ravel_pytree`` row, the rest are
    # always zero at init, get zero gradient and are never read by ``apply``.
    pad: int = 0
    # The flax module's own apply on the same row, where ``apply`` bypasses the module (the GEMM
    # layout): what calls the Dense layers through flax, e.g. LoRA's method interception.
    flax_apply: Callable[[jax.Array, jax.Array], jax.Array] | None = None

    @property
    def num_live(self) -> int:
        """How many coordinates are flax parameters (``num_params`` less the dead padding)."""
        return self.num_params - self.pad


class Linear(nn.Module):
    """Linear / logistic regression: one dense layer on the flattened input."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.features, use_bias=self.use_bias, kernel_init=nn.initializers.zeros)(x)


class MLP(nn.Module):
    """Multi-layer perceptron on the flattened input."""

    hidden: Sequence[int]
    features: int

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        for h in self.hidden:
            x = nn.relu(nn.Dense(h)(x))
        return nn.Dense(self.features)(x)


class CNN(nn.Module):
    """Small convolutional network (two conv + pool blocks, one dense head)."""

    channels: Sequence[int]
    features: int

    @nn.compact
    def __call__(self, x):
        if x.ndim == 3:  # [B, L, C] 1-D signals are fine as-is; [B, L] gets a channel axis
            pass
        elif x.ndim == 2:
            x = x[..., None]
        window = (2,) * (x.ndim - 2)
        for c in self.channels:
            x = nn.relu(nn.Conv(c, kernel_size=(3,) * (x.ndim - 2))(x))
            if all(s >= 2 for s in x.shape[1:-1]):
                x = nn.avg_pool(x, window, strides=window)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.features)(x)


class _Block(nn.Module):
    """One pre-norm decoder block: causal self-attention, then an MLP of width ``mlp_ratio·d_model``.

    The submodules keep flax's automatic names (``LayerNorm_0``, ``MultiHeadDotProductAttention_0``
    with its ``query``/``key``/``value``/``out`` Dense layers, ``Dense_0`` up, ``Dense_1`` down),
    so the flat row's order is the one of before and adapters can target the Dense layers by path.
    ``dtype`` is the compute dtype (None: from the inputs and the float32 parameters)."""

    d_model: int
    num_heads: int
    mlp_ratio: int = 4
    dtype: Any = None

    @nn.compact
    def __call__(self, h, mask):
        lowp = self.dtype is not None and self.dtype != jnp.float32
        a = nn.LayerNorm(dtype=self.dtype)(h)
        a = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            qkv_features=self.d_model,
            dtype=self.dtype,
            # bf16 logits of a softmax lose the small probabilities: normalise in float32.
            force_fp32_for_softmax=lowp,
        )(a, a, mask=mask)
        h = h + a
        m = nn.LayerNorm(dtype=self.dtype)(h)
        m = nn.Dense(self.d_model, dtype=self.dtype)(
            nn.gelu(nn.Dense(self.mlp_ratio * self.d_model, dtype=self.dtype)(m))
        )
        return h + m


class TinyTransformerLM(nn.Module):
    """Decoder-only byte-level language model (Vaswani et al. 2017; GPT-style pre-norm blocks).

    ``dtype = jnp.bfloat16`` computes in bfloat16 from float32 parameters (the master copy: the
    flat rows, gradients and optimizer states stay float32; mixed precision as in Micikevicius et
    al. 2018) with the logits cast back to float32 for the loss. ``remat = True`` recomputes each
    block's activations in the backward pass instead of storing them (``nn.remat``, Chen et al.
    2016, "Training deep nets with sublinear memory cost"): the same numbers, less memory."""

    vocab: int
    d_model: int
    num_heads: int
    num_layers: int
    max_len: int
    mlp_ratio: int = 4
    dtype: Any = None
    remat: bool = False

    @nn.compact
    def __call__(self, tokens):
        length = tokens.shape[-1]
        h = nn.Embed(self.vocab, self.d_model, dtype=self.dtype)(tokens)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.max_len, self.d_model))
        h = h + (pos[:length] if self.dtype is None else pos[:length].astype(self.dtype))
        mask = nn.make_causal_mask(tokens)
        block = nn.remat(_Block) if self.remat else _Block
        for i in range(self.num_layers):
            # The name flax gives _Block by itself, also for the remat-wrapped class: same params.
            h = block(self.d_model, self.num_heads, self.mlp_ratio, self.dtype, name=f"_Block_{i}")(h, mask)
        out = nn.Dense(self.vocab, dtype=self.dtype)(nn.LayerNorm(dtype=self.dtype)(h))
        return out if self.dtype is None else out.astype(jnp.float32)


MODELS = ("linear", "logistic", "mlp", "cnn", "transformer")


def _wrap(name: str, task: str, module: nn.Module, example: np.ndarray, l2: float) -> Model:
    # The pytree's structure from shapes only (no initialisation run): a 10^7-parameter model
    # is not drawn once more on the host just to learn its size and its unravel.
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), example))
    flat0, unravel = ravel_pytree(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes))

    def init(key):
        return ravel_pytree(module.init(key, example))[0]

    def apply(flat, x):
        return module.apply(unravel(flat), x)

    return Model(name, task, int(flat0.size), init, apply, unravel, float(l2))


# The GEMM layout pays for itself when the first layer's kernel is large (its per-round copies
# are what it removes) and the rows added to the first GEMM (the tail) are few.
_GEMM_MIN_FIRST = 2**15
_GEMM_MAX_TAIL_FRACTION = 0.25


def _mlp_gemm(name: str, task: str, module: MLP, example: np.ndarray, l2: float) -> Model | None:
    """The MLP with its flat row read as a matrix by the first layer (issue 11), or None when
    the layout does not pay (small first layer, or a tail more than a quarter of its rows).

    ``ravel_pytree`` orders flax's parameters ``Dense_0/bias (h)``, ``Dense_0/kernel (in×h)``,
    then the other layers, so the first ``(in+1)·h`` coordinates of a row are ``[b₁; K₁]``, an
    ``(in+1) × h`` row-major matrix. Padding the row with zeros to ``d_pad = ⌈d/h⌉·h`` makes
    ``row.reshape(d_pad/h, h) = R`` a free bitcast, and the first layer is ``x̃ @ R`` with
    ``x̃ = [1, x, 0, …, 0]``: the tail's and the padding's rows meet zeros. Its gradient
    ``x̃ᵀ δ`` is the row's gradient for ``b₁, K₁`` (exact zeros beyond), and the small tail
    (``b₂, K₂, …``, read by a short slice) adds its gradient in place. Vmapped over nodes, the
    flax path instead copies the ``[N, in·h]`` kernel out of ``[N, d]`` for the GEMM (no XLA
    dot operand can be a strided slice) and concatenates the gradient pieces back: two passes
    over the parameters per round, about a quarter of the D-SGD round at 784-128-10.

    Same function as the flax module (the bias is added inside the GEMM: float rounding only).
    ``unravel`` still returns flax's pytree (from the live prefix); ``apply`` and ``unravel`` also
    take a row of the flax length ``d`` (a state checkpointed before the padding resumes as it
    was, at the old speed). ``apply`` has a custom VJP: reverse mode only (no ``jax.jvp``).

    The dead coordinates (``Model.pad`` of them) are zero at init and get exactly zero gradient
    from the loss (they meet zero inputs; ``l2`` masks them), so plain and robust gossip keep
    them zero. DP-SGD's noise is drawn with shape ``[d_pad]`` (its prefix is the old ``[d]``
    draw: the live coordinates get the noise of before) and zeroed on the padding; a built run
    zeroes Byzantine vectors there too (``rj.channels.live_only``: the gaussian attack's live
    coordinates are a new stream of the same law, tested), so robust rules see the unpadded law.
    What still writes the padding: ``rj.oracles.with_gradient_noise`` (never read by ``apply``,
    but counted in norms). Rand-k draws its k of ``d_pad`` coordinates, and bytes sent count the
    padded row (``pad/d``: 0.1% at 784-128-10)."""
    if not module.hidden:
        return None
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), example))
    tree0 = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    flat0, unravel_live = ravel_pytree(tree0)
    d, n_in, h = int(flat0.size), int(np.prod(example.shape[1:])), int(module.hidden[0])
    first = (n_in + 1) * h
    rows = -(-d // h)
    if first < _GEMM_MIN_FIRST or rows - (n_in + 1) > _GEMM_MAX_TAIL_FRACTION * (n_in + 1):
        return None
    d_pad, layers = rows * h, []
    # The tail's layers in ravel order (string-sorted names: Dense_10 before Dense_2), each one
    # contiguous [bias; kernel]; they are applied in layer order.
    offset, params = first, tree0["params"]
    for key in sorted(params):
        if key != "Dense_0":
            k_in, k_out = params[key]["kernel"].shape
            layers.append((int(key[6:]), offset - first, int(k_in), int(k_out)))
            offset += (k_in + 1) * k_out
    assert offset == d and list(params) and sorted(params)[0] == "Dense_0"
    layers = [l[1:] for l in sorted(layers)]

    tail_rows = rows - (n_in + 1)

    @jax.custom_batching.custom_vmap
    def write_tail(g, t):
        return jax.lax.dynamic_update_slice(g, t, (0,) * (g.ndim - 2) + (n_in + 1, 0))

    @write_tail.def_vmap
    def _write_tail_vmap(axis_size, in_batched, g, t):
        # vmap's own rule turns the update into a scatter whose bounds check reads the old
        # values, which keeps XLA from updating the gradient in place (a full copy).
        g, t = (a if b else jnp.broadcast_to(a, (axis_size, *a.shape)) for a, b in zip((g, t), in_batched))
        return write_tail(g, t), True

    @jax.custom_vjp
    def split(flat):
        return flat.reshape(rows, h), flat[first:d]

    def split_fwd(flat):
        return split(flat), None

    def split_bwd(_, cts):
        # x̃ᵀδ has the whole row's shape, with exact zeros on the tail's rows (x̃ is zero there):
        # the tail's gradient (padded to whole rows) is written over them in place, in the GEMM
        # output's own shape (through a reshape XLA copied the [N, d_pad] buffer first; autodiff's
        # pad + add was one more pass over it too).
        d_r, d_tail = cts
        t = jnp.pad(d_tail, (0, tail_rows * h - (d - first))).reshape(tail_rows, h)
        return (write_tail(d_r, t).reshape(d_pad),)

    split.defvjp(split_fwd, split_bwd)

    def init(key):
        return jnp.pad(ravel_pytree(module.init(key, example))[0], (0, d_pad - d))

    def apply(flat, x):
        if flat.shape[-1] == d:  # a row of the flax layout (e.g. a checkpoint from before): pad it
            flat = jnp.pad(flat, (0, d_pad - d))
        r, tail = split(flat)
        x = x.reshape((x.shape[0], -1)).astype(jnp.result_type(x, flat))
        b = x.shape[0]
        x_aug = jnp.concatenate([jnp.ones((b, 1), x.dtype), x, jnp.zeros((b, rows - 1 - n_in), x.dtype)], 1)
        z = x_aug @ r
        for off, k_in, k_out in layers:
            w = tail[off : off + (k_in + 1) * k_out]
            z = nn.relu(z) @ w[k_out:].reshape(k_in, k_out) + w[:k_out]
        return z

    def unravel(flat):
        return unravel_live(flat if flat.shape[-1] == d else flat[:d])

    def flax_apply(flat, x):
        return module.apply(unravel(flat), x)

    return Model(name, task, d_pad, init, apply, unravel, float(l2), d_pad - d, flax_apply)


def get(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    task: str = "classification",
    *,
    hidden: Sequence[int] = (64,),
    channels: Sequence[int] = (16, 32),
    d_model: int = 64,
    num_heads: int = 4,
    num_layers: int = 2,
    use_bias: bool | None = None,
    l2: float = 0.0,
    mlp_ratio: int = 4,
    max_len: int = 0,
    dtype: str = "float32",
    remat: bool = False,
) -> Model:
    """Build a model by name for examples of ``input_shape``.

    ``linear`` is least-squares regression (task "regression") or a softmax classifier;
    ``logistic`` is binary logistic regression with one logit (Cox 1958) and no bias by
    default, so that it matches the synthetic problem's known optimum.

    ``transformer`` (:class:`TinyTransformerLM`) takes ``d_model``, ``num_heads``, ``num_layers``,
    ``mlp_ratio`` (MLP width / d_model), ``max_len`` (positions; 0: the sequence length),
    ``dtype`` (compute dtype, ``"float32"`` or ``"bfloat16"``; parameters stay float32) and
    ``remat`` (recompute block activations in the backward pass).
    """
    if name not in MODELS:
        raise ValueError(f"model.name: {name!r} is not one of {', '.join(MODELS)}")
    example = np.zeros((1, *input_shape), np.int32 if task == "language" else np.float32)
    if name == "linear":
        if task == "language":
            raise ValueError("model.name: 'linear' cannot model a language task; use 'transformer'")
        feats = 1 if task == "regression" else num_classes
        bias = (task != "regression") if use_bias is None else use_bias
        return _wrap(name, "regression" if task == "regression" else "classification", Linear(feats, bias), example, l2)
    if name == "logistic":
        if task != "classification" or num_classes != 2:
            raise ValueError("model.name: 'logistic' needs a binary classification dataset (num_classes == 2)")
        return _wrap(name, "binary", Linear(1, bool(use_bias)), example, l2)
    if task == "language" and name != "transformer":
        raise ValueError(f"model.name: {name!r} cannot model a language task; use 'transformer'")
    if name == "mlp":
        feats = 1 if task == "regression" else num_classes
        module = MLP(tuple(hidden), feats)
        return _mlp_gemm(name, task, module, example, l2) or _wrap(name, task, module, example, l2)
    if name == "cnn":
        if len(input_shape) not in (1, 2, 3):
            raise ValueError(f"model.name: 'cnn' needs 1-D or 2-D inputs, got input_shape {tuple(input_shape)}")
        return _wrap(name, task, CNN(tuple(channels), 1 if task == "regression" else num_classes), example, l2)
    # transformer
    if task != "language":
        raise ValueError("model.name: 'transformer' is a language model; use a 'text' dataset")
    if d_model % num_heads:
        raise ValueError(f"model.d_model ({d_model}) must be divisible by model.num_heads ({num_heads})")
    seq_len = int(input_shape[-1])
    if max_len and max_len < seq_len:
        raise ValueError(f"model.max_len ({max_len}) is below the sequence length ({seq_len})")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"model.dtype: {dtype!r} is not one of float32, bfloat16")
    compute = None if dtype == "float32" else jnp.bfloat16  # None: exactly the float32 model of before
    mod = TinyTransformerLM(
        num_classes, d_model, num_heads, num_layers, int(max_len or seq_len), int(mlp_ratio), compute, bool(remat)
    )
    return _wrap(name, task, mod, example, l2)


def head_mask(model: Model) -> np.ndarray:
    """``bool[d]``: the flat coordinates (``ravel_pytree`` order) of the model's head, its last
    layer — the personal part in FedPer (Arivazhagan et al. 2019) and FedRep (Collins et al.
    2021, Sec. 3: a shared representation, a per-client linear head).

    The head is the top-level ``Dense`` module with the highest index (the output layer of
    ``mlp``, ``cnn`` and ``transformer``; for ``linear`` / ``logistic`` the only layer, so the
    whole model is personal and nothing is shared)."""
    tree = model.unravel(jnp.zeros((model.num_params,), jnp.float32))
    params = tree["params"] if isinstance(tree, dict) and "params" in tree else tree
    dense = [k for k in params if k.startswith("Dense_") and k[6:].isdigit()]
    if not dense:
        raise ValueError(f"head_mask: model {model.name!r} has no top-level Dense layer to call its head")
    head = max(dense, key=lambda k: int(k[6:]))
    # Mark the head's leaves and ravel the same structure again: the same order as the flat row.
    marked = jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.full(leaf.shape, any(getattr(p, "key", None) == head for p in path[:2])), tree
    )
    # Dead padding coordinates (model.pad) are not the head: shared, always zero.
    return np.pad(np.asarray(ravel_pytree(marked)[0], bool), (0, model.pad))


def _masked_mean(v, mask):
    mask = mask.astype(v.dtype)
    return jnp.sum(v * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def per_example_loss(model: Model, out: jax.Array, y: jax.Array) -> jax.Array:
    """The loss of each example from the model's outputs, ``[B]`` (no regulariser): the terms
    whose masked mean :func:`loss_and_metrics` takes, for classification, binary and regression
    tasks."""
    if model.task == "regression":
        return 0.5 * (out.reshape(y.shape) - y) ** 2
    if model.task == "binary":
        logit = out.reshape(y.shape)
        return optax.sigmoid_binary_cross_entropy(logit, y.astype(logit.dtype))
    if model.task == "classification":
        return _cross_entropy_and_hits(out, y)[0]
    raise ValueError(f"per_example_loss: task {model.task!r} has no one-number-per-example loss")


_UNROLL_CLASSES = 32


def _cross_entropy_and_hits(logits, y):
    """Per-example softmax cross-entropy with integer labels, log Σ_c e^{z_c} − z_y, and whether
    the argmax (first maximum) is the label.

    Up to 32 classes the max and the sum over classes are unrolled elementwise operations: vmapped
    over nodes, the reductions over a class axis of 10 went to XLA's CPU reduction kernels, which
    took 10 ms of a 55 ms D-SGD round at N = 256 (benchmarks/round_throughput.py). Same formula
    as ``optax.softmax_cross_entropy_with_integer_labels`` (max-shifted log-sum-exp); only the
    order of the additions differs."""
    c = logits.shape[-1]
    if c > _UNROLL_CLASSES:
        per = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return per, (jnp.argmax(logits, -1) == y).astype(jnp.float32)
    cols = [logits[..., k] for k in range(c)]
    top = cols[0]
    for v in cols[1:]:
        top = jnp.maximum(top, v)
    top = jax.lax.stop_gradient(top)
    lse = jnp.log(sum(jnp.exp(v - top) for v in cols)) + top
    picked = sum(jnp.where(y == k, v, 0.0) for k, v in enumerate(cols))
    # argmax = y: the label's logit is the maximum and no earlier class reaches it.
    first_max = jnp.full(y.shape, c, jnp.int32)
    for k in reversed(range(c)):
        first_max = jnp.where(cols[k] == top, k, first_max)
    return lse - picked, (first_max == y).astype(jnp.float32)


def loss_and_metrics(model: Model, flat: jax.Array, x: jax.Array, y: jax.Array, mask: jax.Array):
    """Mean loss over the unmasked examples and a dict of metrics, for one parameter row.

    Cross-entropy for classification and language modelling, binary log-loss for
    ``logistic``, and ½(pred − y)² for regression (so the synthetic least-squares optimum
    is the minimiser). ``mask`` has the shape of the batch axis.
    """
    out = model.apply(flat, x)
    if model.task == "regression":
        per = 0.5 * (out.reshape(y.shape) - y) ** 2
        loss = _masked_mean(per, mask)
        metrics = {"loss": loss}
    elif model.task == "binary":
        logit = out.reshape(y.shape)
        per = optax.sigmoid_binary_cross_entropy(logit, y.astype(logit.dtype))
        loss = _masked_mean(per, mask)
        metrics = {"loss": loss, "accuracy": _masked_mean(((logit > 0) == (y > 0)).astype(jnp.float32), mask)}
    else:
        per, correct = _cross_entropy_and_hits(out, y)
        if model.task == "language":  # every position of a sequence counts
            m = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (per.ndim - mask.ndim)), per.shape)
        else:
            m = mask
        loss = _masked_mean(per, m)
        metrics = {"loss": loss, "accuracy": _masked_mean(correct, m)}
    if model.l2:
        # Over the live coordinates only: dead padding that DP noise or an attack made non-zero
        # is not a parameter (an elementwise mask, so the gradient still fuses with the update).
        live = flat if not model.pad else jnp.where(jnp.arange(flat.shape[-1]) < model.num_live, flat, 0.0)
        loss = loss + 0.5 * model.l2 * jnp.sum(live**2)
    return loss, metrics

"""Decentralized SGD as one pure, jitted round over the whole network.

One round (DESIGN.md, "One round"): every node samples a minibatch from its own shard,
takes ``local_steps`` optimizer steps (optax, vmapped over nodes), then communicates:
gossip with the topology's mixing matrix, or exact averaging through a server (FedAvg).

* Adapt-then-combine (ATC): x⁺ = W·(x − η∇F(x))   (Lian et al. 2017, D-PSGD as in
  Koloskova et al. 2020, Alg. 1 with the gossip after the update).
* Combine-then-adapt (CTA): x⁺ = W·x − η∇F(x)      (Nedić & Ozdaglar 2009; Lian et al. 2017).

With ``local_steps = H`` both become local SGD with periodic gossip (Koloskova et al. 2020,
"local updates"); FedAvg (McMahan et al. 2017) is ATC with ``communication="server"``,
which equals gossip on the complete graph with uniform weights.

Extension points for later pillars, all pure functions traced into the same round:
``gradient_fn`` (per-example clipping and noise for DP-SGD), ``communicate`` (robust
aggregation over per-edge messages, attacks), and the ``honest`` mask over which metrics
are computed.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from redeem_jax import gossip as _gossip
from redeem_jax.data import sampling as _sampling
from redeem_jax.models import Model, loss_and_metrics

__all__ = [
    "NetworkState",
    "init_state",
    "make_round",
    "make_gradient_fn",
    "gossip_communication",
    "server_communication",
    "honest_mean",
    "consensus_distance",
]


class NetworkState(NamedTuple):
    """The state of the whole network: every leaf has a leading node axis but ``round``/``key``."""

    params: jax.Array  # f32[N, d]
    opt_state: Any  # optax state vmapped over nodes
    round: jax.Array  # i32[]: rounds completed
    key: jax.Array  # u32[2]: the run's base key; round t uses fold_in(key, t)


GradientFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
# communicate(x_local, x_prev, round, key) -> x_new: x_local after the local steps, x_prev at
# the start of the round (server rules aggregate the updates x_local − x_prev).
CommunicateFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def init_state(model: Model, optimizer: optax.GradientTransformation, num_nodes: int, key: jax.Array,
               same_init: bool = True) -> NetworkState:
    """Initial network state: all nodes from one draw (``same_init``, the usual D-SGD start) or independent draws."""
    init_key, run_key = jax.random.split(key)
    if same_init:
        params = jnp.broadcast_to(model.init(init_key), (num_nodes, model.num_params))
    else:
        params = jax.vmap(model.init)(jax.random.split(init_key, num_nodes))
    params = jnp.asarray(params, jnp.float32)
    opt_state = jax.vmap(optimizer.init)(params)
    return NetworkState(params, opt_state, jnp.zeros((), jnp.int32), run_key)


def make_gradient_fn(model: Model) -> GradientFn:
    """Minibatch gradient of one node's loss: ``(flat, x, y, mask, key) -> (loss, grad)``.

    The key is unused here; private variants (DP-SGD) draw their noise from it.
    """

    def fn(flat, xb, yb, mask, key):
        del key
        (loss, _), grad = jax.value_and_grad(lambda p: loss_and_metrics(model, p, xb, yb, mask), has_aux=True)(flat)
        return loss, grad

    return fn


def gossip_communication(topology, method: str = "auto") -> CommunicateFn:
    """Communication by one gossip step x ← W(t)·x (dense or sparse, see :func:`rj.gossip.mix`)."""

    def communicate(x, x_prev, round, key):
        del x_prev, key
        return _gossip.mix(topology, x, round=round, method=method)

    return communicate


def server_communication(weights: np.ndarray | None = None) -> CommunicateFn:
    """Exact averaging through a server, broadcast to every node (FedAvg, McMahan et al. 2017).

    ``weights`` (e.g. node dataset sizes) gives a weighted average; uniform by default.
    """

    def communicate(x, x_prev, round, key):
        del x_prev, round, key
        if weights is None:
            mean = jnp.mean(x, axis=0)
        else:
            w = jnp.asarray(weights, x.dtype)
            mean = (w / jnp.sum(w)) @ x
        return jnp.broadcast_to(mean, x.shape)

    return communicate


def honest_mean(v: jax.Array, honest: jax.Array) -> jax.Array:
    """Mean over the honest nodes of a per-node array ``v[N, ...]``."""
    h = honest.astype(v.dtype).reshape((-1,) + (1,) * (v.ndim - 1))
    return jnp.sum(v * h, axis=0) / jnp.maximum(jnp.sum(honest), 1)


def consensus_distance(x: jax.Array, honest: jax.Array) -> jax.Array:
    """(1/|H|) Σ_{i∈H} ‖x_i − x̄_H‖² over honest nodes H (Koloskova et al. 2020, Ξ_t)."""
    xbar = honest_mean(x, honest)
    return honest_mean(jnp.sum((x - xbar) ** 2, axis=-1), honest)


def _rounded_messages(communicate: CommunicateFn, dtype, updates: bool) -> CommunicateFn:
    # Gossip nodes send their parameters; server rules receive updates x_local - x_prev, which
    # the server adds back to the x_prev it already holds.
    def rounded(x, x_prev, round, key):
        def cast(v):
            return v.astype(dtype).astype(v.dtype)

        sent = x_prev + cast(x - x_prev) if updates else cast(x)
        return communicate(sent, x_prev, round, key)

    return rounded


def make_round(
    *,
    model: Model,
    optimizer: optax.GradientTransformation,
    node_data,
    batch_size: int,
    communicate: CommunicateFn,
    local_steps: int = 1,
    order: str = "atc",
    gradient_fn: GradientFn | None = None,
    honest: np.ndarray | None = None,
    trace_counter: list | None = None,
    sample_fn: Callable | None = None,
    message_dtype: str | None = None,
    messages_are_updates: bool = False,
) -> Callable[[NetworkState], tuple[NetworkState, dict]]:
    """Build ``round(state) -> (state, metrics)``: one pure round of decentralized SGD.

    Nothing loops over nodes: sampling, gradients and optimizer updates are vmapped over the
    node axis and the local steps run in a ``lax.scan``. ``trace_counter`` (a list) is
    appended to each time the round is traced, so callers can assert it compiles once.
    ``round_fn.with_data(state, node_data)`` is the same round with the node data (a
    :class:`~redeem_jax.data.NodeData` of the same shapes) as an argument rather than a
    constant of the compiled program, the cheaper form to jit for large networks.
    ``sample_fn(key, node_x, node_y, size) -> (x, y, mask)`` replaces the default minibatch of
    ``batch_size`` rows without replacement (e.g. Poisson subsampling for DP-SGD).
    ``message_dtype`` (e.g. ``"bfloat16"``) rounds what nodes send to that dtype (their parameters,
    or their updates when ``messages_are_updates``, as in FedAvg); the receiver combines in
    float32, so the result differs from float32 messages only by that rounding.
    """
    if order not in ("atc", "cta"):
        raise ValueError(f"algorithm.order: {order!r} is not one of atc, cta")
    if local_steps < 1:
        raise ValueError(f"algorithm.local_steps: must be >= 1, got {local_steps}")
    gradient_fn = gradient_fn or make_gradient_fn(model)
    if message_dtype not in (None, "float32"):
        communicate = _rounded_messages(communicate, jnp.dtype(message_dtype), messages_are_updates)
    num_nodes = int(node_data.sizes.shape[0])
    honest_arr = jnp.ones((num_nodes,), bool) if honest is None else jnp.asarray(honest, bool)

    if sample_fn is None:
        def sample_fn(key, node_x, node_y, size):
            return _sampling.sample_batch(key, node_x, node_y, size, batch_size)

    def sample(keys, data):
        return jax.vmap(sample_fn)(keys, data.x, data.y, data.sizes)

    def local_steps_fn(x, opt_state, node_keys, data):
        def step(carry, h):
            x, opt_state = carry
            keys = jax.vmap(lambda k: jax.random.fold_in(k, h))(node_keys)
            batch_keys, grad_keys = jnp.split(jax.vmap(jax.random.split)(keys), 2, axis=1)
            xb, yb, mask = sample(batch_keys[:, 0], data)
            loss, grads = jax.vmap(gradient_fn)(x, xb, yb, mask, grad_keys[:, 0])
            updates, opt_state = jax.vmap(optimizer.update)(grads, opt_state, x)
            return (optax.apply_updates(x, updates), opt_state), loss

        (x, opt_state), losses = jax.lax.scan(step, (x, opt_state), jnp.arange(local_steps))
        return x, opt_state, losses[-1]

    def round_with_data(state: NetworkState, data):
        if trace_counter is not None:
            trace_counter.append(1)
        round_key, comm_key = jax.random.split(jax.random.fold_in(state.key, state.round))
        node_keys = jax.random.split(round_key, num_nodes)
        x = state.params
        x_local, opt_state, loss = local_steps_fn(x, state.opt_state, node_keys, data)
        if order == "atc":
            x_new = communicate(x_local, x, state.round, comm_key)
        else:
            x_new = communicate(x, x, state.round, comm_key) + (x_local - x)
        metrics = {
            "train_loss": honest_mean(loss, honest_arr),
            "consensus_distance": consensus_distance(x_new, honest_arr),
        }
        return NetworkState(x_new, opt_state, state.round + 1, state.key), metrics

    def round_fn(state: NetworkState):
        return round_with_data(state, node_data)

    # Closed-over arrays are embedded in the compiled program as constants: at
    # 10^6 nodes the node data (~350 MB) made compilation ~5x slower and was held
    # twice in memory. Jitting `round_fn.with_data(state, node_data)` with the
    # data as an argument avoids both (benchmarks/scale.py).
    round_fn.with_data = round_with_data
    return round_fn

"""The one jitted round: ``step(state, node_data, hp) -> (state, metrics)`` (DESIGN.md).

:func:`make_step` folds an :class:`~redeem_jax.core.Algorithm`, its
:class:`~redeem_jax.core.Oracle` and its named :class:`~redeem_jax.core.Channel` s into one pure
function of the whole :class:`RoundState` pytree, the node data and the hyper-parameters (both
arguments, never constants, so a sweep is a ``vmap`` of the same step). The algorithm sees
its oracle and channels as bound functions, ``oracle(x, ctx)`` and ``channels[name](x, ctx)``;
the step threads their states in and out of the round, so that nothing outside the
algorithm names a field of its state.

Keys: round t starts from ``fold_in(key, t)``, split into the oracle's key and the channels'.
The first exchange of the algorithm's first declared channel gets the channels' key itself,
every other call its own ``fold_in`` of it (by exchange name and call number). A mechanism
therefore never shares a key, and the random streams of a round do not depend on how the
run was chunked, resumed or vmapped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from redeem_jax import _threefry
from redeem_jax.core import Algorithm, Channel, Ctx, Edges, Oracle, tag

_threefry.install()  # same random bits, drawn ~10x faster on CPU (docs/performance.md)

__all__ = ["RoundState", "make_step", "init_state", "scan_rounds"]


class RoundState(NamedTuple):
    """The whole network between rounds: one pytree, checkpointed whole."""

    algorithm: Any  # the algorithm's own state (models, optimizer states, trackers, ...)
    oracle: Any  # the oracle's state
    channels: Mapping[str, Any]  # each exchange's channel state
    round: jax.Array  # i32[]: rounds completed
    key: jax.Array  # u32[2]: the run's key; round t uses fold_in(key, t)


class _BoundOracle:
    """``oracle(x, ctx) -> (loss, grad)`` for one round; keeps the oracle's state for the step.

    The state is threaded at trace time through this object and handed back to the step;
    :meth:`scan` threads it through a ``lax.scan`` of local steps, so that no tracer of the
    scan's body escapes it."""

    def __init__(self, oracle: Oracle, state, data, key):
        self._oracle, self.state, self._data, self._key = oracle, state, data, key

    def __call__(self, x, ctx: Ctx):
        loss, grad, self.state = self._oracle.update(x, self.state, ctx.with_key(self._key), self._data)
        return loss, grad

    def scan(self, body: Callable, carry, xs=None, length: int | None = None):
        """``lax.scan(body, carry, xs, length)`` where ``body`` may call this oracle."""

        def wrapped(c, x):
            inner, s = c
            outer, self.state = self.state, s
            inner, out = body(inner, x)
            s, self.state = self.state, outer
            return (inner, s), out

        (carry, self.state), outs = jax.lax.scan(wrapped, (carry, self.state), xs, length=length)
        return carry, outs


class _BoundChannels(Mapping):
    """``channels[name](x, ctx) -> y`` for one round, with state threading and wire costs."""

    def __init__(self, channels: Mapping[str, Channel], states: Mapping[str, Any], key, first: str):
        self._channels, self.states, self._key, self._first = channels, dict(states), key, first
        self._calls: dict[str, int] = {}
        self.bytes = jnp.zeros((), jnp.float32)

    def __getitem__(self, name):
        if name not in self._channels:
            raise KeyError(f"the algorithm calls exchange {name!r} but was given only {sorted(self._channels)}")
        channel = self._channels[name]

        def call(x, ctx: Ctx):
            k = self._calls.get(name, 0)
            self._calls[name] = k + 1
            key = (
                self._key
                if (name == self._first and k == 0)
                else jax.random.fold_in(jax.random.fold_in(self._key, tag(name)), k)
            )
            cctx = ctx.with_key(key)
            y, self.states[name] = channel.update(x, self.states[name], cctx)
            if channel.wire is not None:
                d = int(x.shape[-1]) if x.ndim > 1 else 1
                messages, bits = channel.wire(d, cctx)
                if messages is not None:
                    bits = 32.0 * d if bits is None else bits
                    self.bytes = self.bytes + jnp.asarray(messages, jnp.float32) * (float(bits) / 8.0)
            return y

        return call

    def __iter__(self):
        return iter(self._channels)

    def __len__(self):
        return len(self._channels)


def _round_context(state: RoundState, topology, honest, hp) -> tuple[Ctx, jax.Array, jax.Array]:
    round_key, comm_key = jax.random.split(jax.random.fold_in(state.key, state.round))
    # One graph key per round (a drawn topology's edges; every channel sees the same ones). A
    # fold_in of round_key, so no existing stream moves.
    graph_key = jax.random.fold_in(round_key, tag("topology"))
    edges = Edges.of(topology, state.round, graph_key, hp) if topology is not None else None
    algo_key = jax.random.fold_in(round_key, tag("algorithm"))
    ctx = Ctx(state.round, algo_key, edges, honest, hp)
    return ctx, round_key, comm_key


def make_step(
    algorithm: Algorithm,
    oracle: Oracle,
    channels: Mapping[str, Channel],
    *,
    topology=None,
    honest=None,
    trace_counter: list | None = None,
) -> Callable:
    """``step(state, node_data, hp) -> (state, metrics)``: one round of ``algorithm``.

    ``topology`` gives each round's edges (``ctx.edges``); ``honest`` (bool[N]) is the mask
    metrics are taken over. Metrics: the algorithm's own (``train_loss``, ...), plus
    ``bytes_sent`` (every row sent in the round's exchanges), and on a graph drawn every round
    ``live_nodes`` / ``live_edges`` (nodes that sent or received, directed links used), and
    ``active_nodes`` where the topology draws an active mask (stragglers). Nothing
    that needs a pass over the ``[N, d]`` models is computed per round (a consensus distance
    was 2/3 of a D-SGD round on CPU): the host loop measures ``metrics.consensus_distance`` of ``models`` when it evaluates.
    ``trace_counter`` (a list) grows by one per trace.
    """
    missing = [k for k in algorithm.exchanges if k not in channels]
    if missing:
        raise ValueError(
            f"{algorithm.name} exchanges {sorted(algorithm.exchanges)} but no channel was given for {missing}"
        )
    first = next(iter(algorithm.exchanges), None)
    drawn = bool(getattr(topology, "is_drawn", False))
    if drawn:
        from redeem_jax.network.unreliable import live_counts

    def step(state: RoundState, data, hp):
        if trace_counter is not None:
            trace_counter.append(1)
        h = jnp.ones((_num_nodes(state, data),), bool) if honest is None else jnp.asarray(honest, bool)
        ctx, round_key, comm_key = _round_context(state, topology, h, hp)
        bo = _BoundOracle(oracle, state.oracle, data, round_key)
        bc = _BoundChannels(channels, state.channels, comm_key, first)
        a, metrics = algorithm.update(state.algorithm, bo, bc, ctx)
        metrics = dict(metrics)
        metrics["bytes_sent"] = bc.bytes
        if drawn:  # what this round's random graph left live (DESIGN: metrics say it)
            metrics["live_nodes"], metrics["live_edges"] = live_counts(ctx.edges)
        if ctx.active is not None:  # stragglers: how many nodes took their local step
            metrics["active_nodes"] = jnp.sum(ctx.active).astype(jnp.int32)
        return RoundState(a, bo.state, bc.states, state.round + 1, state.key), metrics

    return step


def _num_nodes(state, data) -> int:
    return int(jax.tree.leaves(data)[-1].shape[0])


def init_state(
    algorithm: Algorithm,
    oracle: Oracle,
    channels: Mapping[str, Channel],
    x0,
    key,
    *,
    topology=None,
    honest=None,
    hp: Mapping | None = None,
) -> RoundState:
    """The network at round 0: each mechanism's ``init`` from the rows ``x0 [N, d]``; ``key`` is
    the run's key (round t draws from ``fold_in(key, t)``)."""
    h = jnp.ones((x0.shape[0],), bool) if honest is None else jnp.asarray(honest, bool)
    r0 = jnp.zeros((), jnp.int32)
    init_key = jax.random.fold_in(key, tag("init"))
    edges = (
        Edges.of(topology, 0, jax.random.fold_in(init_key, tag("topology")), dict(hp or {}))
        if topology is not None
        else None
    )
    ctx = Ctx(r0, init_key, edges, h, dict(hp or {}))
    state = RoundState(algorithm.init(x0, ctx), oracle.init(x0), {k: c.init(x0) for k, c in channels.items()}, r0, key)
    # Mechanisms may start two fields from the same array (ψ₀ = X₀, Y₀ = G₀ = 0): give each leaf
    # its own buffer, so that donating the state to the compiled rounds never donates one twice.
    return jax.tree.map(lambda a: jnp.array(a, copy=True), state)


def scan_rounds(step: Callable, state: RoundState, data, hp, limit, length: int):
    """``length`` rounds of ``step`` in one ``lax.scan``; rounds ≥ ``limit`` leave the state
    unchanged, so a last, shorter chunk reuses the same compiled program."""

    def body(s, _):
        new, metrics = step(s, data, hp)
        active = s.round < limit
        return jax.tree.map(lambda a, b: jnp.where(active, a, b), new, s), metrics

    return jax.lax.scan(body, state, None, length=length)

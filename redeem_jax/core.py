"""The round protocol: what every oracle, channel and algorithm is (DESIGN.md, "One round").

A round of the whole network is a fold over three kinds of optax-like ``(init, update)`` pairs,
each with its own state pytree (leading node axis where it is per node):

* :class:`Oracle` — per node: sample a batch, loss and gradient, privacy (clip, noise).
  ``init(x0) -> s``; ``update(x [N, d], s, ctx, data) -> (loss [N], grad [N, d], s)``.
* :class:`Channel` — one network-wide exchange of an ``[N, ...]`` array: send → tamper →
  aggregate. ``init(x) -> s``; ``update(x, s, ctx) -> (y, s)``. Channels compose with
  :func:`chain` like ``optax.chain``: message transforms (compression, rounding, clipping)
  first, the exchange (gossip, server, robust rule with its attack) last.
* :class:`Algorithm` — one round: calls the oracle and its named channels as often as it
  needs and owns its state. ``init(x0, ctx) -> a``; ``update(a, oracle, channels, ctx) ->
  (a, metrics)``; ``models(a) -> [N, d]`` is what is evaluated.

:class:`Ctx` is what one round shares: the round, this mechanism's key, the round's edges,
the honest mask and the hyper-parameters as traced scalars (``ctx.hp``). A float option of
any in-round mechanism may be a :class:`Hyper`: a named placeholder the mechanism resolves
with ``ctx.value(option)`` when it runs, so that a sweep passes the value as an argument of
the one compiled step instead of rebuilding anything inside the trace.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from redeem_jax import _threefry

_threefry.install()  # same random bits, drawn ~10x faster on CPU (docs/performance.md)

__all__ = [
    "Hyper",
    "hyper",
    "resolve",
    "hypers_of",
    "Edges",
    "Ctx",
    "Oracle",
    "Channel",
    "Algorithm",
    "Exchange",
    "chain",
    "stateless_channel",
    "tag",
    "materialize",
]


# --------------------------------------------------------------------------- #
# Hyper-parameters as arguments of the step
# --------------------------------------------------------------------------- #
class Hyper(NamedTuple):
    """A scalar hyper-parameter named by its config field (``"optimizer.learning_rate"``).

    Mechanisms keep it as an option and read its value from ``ctx.hp`` at run time
    (:meth:`Ctx.value`), falling back to ``default`` when the step was given no value for it.
    """

    name: str
    default: float


def hyper(name: str, default: float) -> Hyper:
    """A :class:`Hyper` for the config field ``name`` with value ``default``."""
    return Hyper(str(name), float(default))


def resolve(v, hp: Mapping[str, Any] | None):
    """The value of an option: ``hp[v.name]`` (or ``v.default``) for a :class:`Hyper`, else ``v``."""
    if isinstance(v, Hyper):
        if hp is not None and v.name in hp:
            return hp[v.name]
        return v.default
    return v


def hypers_of(*trees) -> dict[str, float]:
    """Every :class:`Hyper` reachable from ``trees`` (dicts, lists, tuples, objects with
    ``hypers``), as ``{name: default}``: what a step's ``hp`` argument must hold."""
    out: dict[str, float] = {}

    def visit(t, depth=0):
        if depth > 8:
            return
        if isinstance(t, Hyper):
            out.setdefault(t.name, t.default)
        elif isinstance(t, Mapping):
            for v in t.values():
                visit(v, depth + 1)
        elif isinstance(t, (list, tuple)) and not hasattr(t, "_fields"):
            for v in t:
                visit(v, depth + 1)
        elif hasattr(t, "hypers"):
            visit(t.hypers, depth + 1)

    for t in trees:
        visit(t)
    return out


# --------------------------------------------------------------------------- #
# The round's context
# --------------------------------------------------------------------------- #
class Edges:
    """This round's graph in the padded layout of DESIGN.md: ``neighbors i32[N, K]`` (whom node i
    receives from), ``weights f32[N, K]``, ``self_weight f32[N]``, ``mask bool[N, K]``.

    ``topology`` and ``round`` let a channel use the topology's fast paths (dense ``W``, rolls,
    ppermute, degree classes) for a static or periodic graph; they are host objects, not traced
    arrays. For such a graph the padded arrays are built on first access only: a hub graph
    (a star of 10^5 nodes) never materialises ``[N, N-1]`` unless a channel really needs
    per-neighbour slots (robust gossip), and then under the topology's size limit.

    ``active`` (optional ``bool[N]``): which nodes take their local step this round (DESIGN.md:
    "an active[N] mask covers asynchrony and stragglers"). ``None`` — every static graph and
    every drawn one without stragglers — means all nodes are active, and algorithms then trace
    exactly as without the mask (:meth:`Ctx.where_active`).
    """

    __slots__ = ("_arrays", "topology", "round", "active")

    def __init__(
        self, neighbors=None, weights=None, self_weight=None, mask=None, topology=None, round=None, active=None
    ):
        given = (neighbors, weights, self_weight, mask)
        if any(a is None for a in given) and topology is None:
            raise ValueError("Edges needs the four arrays, or a topology to take them from")
        self._arrays = None if any(a is None for a in given) else given
        self.topology = topology
        self.round = round
        self.active = active

    @classmethod
    def of(cls, topology, round, key=None, hp: Mapping[str, Any] | None = None) -> Edges:
        """The edges ``topology`` uses at ``round`` (may be traced). A drawn topology
        (:class:`rj.network.dynamic.DrawnTopology`) draws them from ``key``; the result then
        carries no host topology, and channels take the gathered path. ``hp`` (the round's
        hyper-parameters) reaches the draw of a topology whose options are :class:`Hyper` s
        (a swept link-up probability p, online probability q or fan-out s), so that a sweep
        over them is one compiled step."""
        if getattr(topology, "is_drawn", False):
            if key is None:
                raise ValueError(f"{topology.name} draws its edges every round: Edges.of needs the round's graph key")
            # Only a topology with hyper-parameters takes hp: other drawn topologies keep draw(round, key).
            drawn = topology.draw(round, key, hp=hp) if getattr(topology, "hypers", ()) else topology.draw(round, key)
            # The active mask (stragglers) is a separate draw, None by default, so that draw()'s
            # 4-tuple stays as it is.
            act = getattr(topology, "active", None)
            if act is not None:
                act = act(round, key, hp=hp) if getattr(topology, "hypers", ()) else act(round, key)
                act = materialize(act)
            return cls(*drawn, topology=None, round=round, active=act)
        return cls(topology=topology, round=round)

    def _get(self, i):
        if self._arrays is None:
            self._arrays = tuple(self.topology.edge_arrays(self.round))
        return self._arrays[i]

    neighbors = property(lambda self: self._get(0))
    weights = property(lambda self: self._get(1))
    self_weight = property(lambda self: self._get(2))
    mask = property(lambda self: self._get(3))


def materialize(v):
    """``v`` (node axis first) through an identity gather, so that XLA computes it once.

    XLA's fusion counts the integer ops of a random draw as cheap and fuses them into every
    consumer, also into an ``[N, d]`` select that reads each of the N values d times: a D-SGD
    round with a straggler mask recomputed the mask's random bits per element and was 150x the
    plain round on CPU. A gather is "expensive" to XLA and is not duplicated that way
    (``optimization_barrier`` does not help: XLA removes it before fusion)."""
    return v[jnp.arange(v.shape[0])]


def tag(name: str) -> int:
    """A stable 31-bit integer for ``name`` (crc32), to ``fold_in`` a mechanism's own key."""
    return zlib.crc32(str(name).encode()) & 0x7FFFFFFF


class Ctx(NamedTuple):
    """What one round shares (DESIGN.md): ``round``, this mechanism's ``key``, the round's
    ``edges``, the ``honest`` mask and the hyper-parameters ``hp`` (traced scalars by name).

    ``step`` is the local step within the round (oracles fold it into their keys). Each
    mechanism gets its own key: a caller hands a sub-mechanism ``ctx.fold(i)`` or
    ``ctx.with_key(k)``, never the key it used itself.
    """

    round: jax.Array
    key: jax.Array
    edges: Edges | None
    honest: jax.Array
    hp: Mapping[str, jax.Array]
    step: Any = 0

    def value(self, v):
        """Resolve an option that may be a :class:`Hyper` (see :func:`resolve`)."""
        return resolve(v, self.hp)

    def fold(self, data) -> Ctx:
        """This context with the key ``fold_in(key, data)`` (``data`` an int or a name)."""
        if isinstance(data, str):
            data = tag(data)
        return self._replace(key=jax.random.fold_in(self.key, data))

    def with_key(self, key) -> Ctx:
        return self._replace(key=key)

    def at_step(self, step) -> Ctx:
        return self._replace(step=step)

    @property
    def num_nodes(self) -> int:
        return int(self.honest.shape[0])

    @property
    def active(self):
        """``bool[N]``: the nodes that take their local step this round, or ``None`` (all)."""
        return None if self.edges is None else getattr(self.edges, "active", None)

    def where_active(self, new, old):
        """``new`` for the nodes active this round, ``old`` for the stragglers (row-wise over
        every leaf with the node axis first; a leaf without it keeps ``new``). ``old`` may be a
        callable, called only when there is a mask. Without a mask this returns ``new`` itself,
        so the trace of a synchronous round is unchanged."""
        active = self.active
        if active is None:
            return new
        if callable(old):
            old = old()
        n = active.shape[0]

        def pick(a, b):
            if jnp.ndim(a) == 0 or a.shape[0] != n:
                return a
            return jnp.where(active.reshape((n,) + (1,) * (a.ndim - 1)), a, b)

        return jax.tree.map(pick, new, old)

    def skip_step(self, step, opt, old_opt):
        """A local optimizer step masked by the active nodes: ``(step ⊙ active, opt where active
        else old_opt)`` — a straggler moves by zero and keeps its optimizer state (momentum, Adam
        moments, step count). Without a mask, ``(step, opt)`` unchanged."""
        return (self.where_active(step, lambda: jax.tree.map(jnp.zeros_like, step)), self.where_active(opt, old_opt))


# --------------------------------------------------------------------------- #
# The three kinds of mechanism
# --------------------------------------------------------------------------- #
def _no_state(x):
    del x
    return ()


class Oracle(NamedTuple):
    """Per-node gradients of the whole network: ``update(x, s, ctx, data) -> (loss, grad, s)``.

    ``x [N, d]`` are the rows the gradients are taken at, ``data`` the node data (an argument of
    the step); ``loss [N]`` and ``grad [N, d]`` are per node. ``init(x0) -> s``.
    """

    init: Callable
    update: Callable
    hypers: tuple = ()


class Channel(NamedTuple):
    """One exchange of an ``[N, ...]`` array over the network: ``update(x, s, ctx) -> (y, s)``.

    ``wire(d, ctx) -> (messages, bits)`` says what one exchange of rows of ``d`` floats costs:
    ``messages`` (rows sent, counted once per sender and receiver; ``None`` for a transform
    stage that sends nothing itself) and ``bits`` per row (``None`` for an exchange stage,
    which sends what the transforms before it made: 32·d bits by default). ``conserving``
    says whether the exchange preserves the network sum for every input (plain gossip with a
    doubly stochastic W does; a robust rule, a clip or an attack does not).
    """

    init: Callable
    update: Callable
    wire: Callable | None = None
    conserving: bool = False
    hypers: tuple = ()
    name: str = "channel"


def stateless_channel(
    fn: Callable, wire: Callable | None = None, conserving: bool = False, hypers: tuple = (), name: str = "channel"
) -> Channel:
    """A :class:`Channel` from ``fn(x, ctx) -> y`` with no state."""

    def update(x, s, ctx):
        return fn(x, ctx), s

    return Channel(_no_state, update, wire, conserving, tuple(hypers), name)


def chain(*channels: Channel) -> Channel:
    """``channels[-1] ∘ … ∘ channels[0]`` as one channel (cf. ``optax.chain``).

    Each stage keeps its own state (a tuple of the stages' states) and gets its own key:
    stage i runs with ``ctx.fold(i)``. The wire cost is the last exchange's message count
    times the bits per row of the last transform before it.
    """
    channels = tuple(channels)
    if not channels:
        raise ValueError("chain: give at least one channel")
    if len(channels) == 1:
        return channels[0]

    def init(x):
        return tuple(c.init(x) for c in channels)

    def update(x, s, ctx):
        out = []
        for i, (c, si) in enumerate(zip(channels, s)):
            x, si = c.update(x, si, ctx.fold(i))
            out.append(si)
        return x, tuple(out)

    def wire(d, ctx):
        bits, messages = None, None
        for c in channels:
            if c.wire is None:
                continue
            m, b = c.wire(d, ctx)
            if b is not None:
                bits = b
            if m is not None:
                messages = m
        return messages, bits

    hyp = tuple(h for c in channels for h in c.hypers)
    return Channel(
        init, update, wire, all(c.conserving for c in channels), hyp, " ∘ ".join(c.name for c in reversed(channels))
    )


class Exchange(NamedTuple):
    """What an algorithm declares about one of its exchanges (DESIGN.md: "An algorithm
    declares which channel each exchange uses").

    ``robust``: Byzantine attacks and robust rules apply here (exchanges of models). When
    False the exchange must preserve an invariant (a gradient tracker's sum, push-sum
    weights): the experiment layer gives it a conservation-preserving gossip channel.
    ``compression``: how compression enters, if at all ("choco" public copies, "error_feedback"
    as in DeepSqueeze, or ``None``: messages go as they are). ``over``: "graph" (gossip over the
    topology) or "server" (a federated server).
    """

    robust: bool = True
    compression: str | None = None
    over: str = "graph"
    doc: str = ""


class Algorithm(NamedTuple):
    """One round of a decentralized (or federated) method over the whole network.

    ``init(x0 [N, d], ctx) -> a``; ``update(a, oracle, channels, ctx) -> (a, metrics)`` where
    ``oracle(x, ctx) -> (loss, grad)`` and ``channels[name](x, ctx) -> y`` are the round's bound
    mechanisms (the step threads their states); ``models(a) -> [N, d]`` is what is evaluated.
    ``exchanges`` names the channels it calls and what each needs (:class:`Exchange`).
    """

    init: Callable
    update: Callable
    models: Callable
    exchanges: Mapping[str, Exchange]
    name: str = "algorithm"
    hypers: tuple = ()
    validate: Callable | None = None  # validate(topology) -> None, raises ValueError


def row_bits(dtype) -> int:
    """Bits of one float of ``dtype`` on the wire."""
    return int(np.dtype(jnp.dtype(dtype)).itemsize * 8)

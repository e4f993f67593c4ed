"""Channels: one network-wide exchange of an ``[N, ...]`` array, send → tamper → aggregate.

Every constructor returns a :class:`~redeem_jax.core.Channel` ``(init, update)`` pair; compose
message transforms before an exchange with :func:`~redeem_jax.core.chain`.

Exchanges (the last stage):

* :func:`gossip` — ``x ← W(t) x`` (Lian et al. 2017; dense, sparse, roll, or ppermute when the
  node axis is sharded). Preserves the network sum when W is doubly stochastic.
* :func:`robust_gossip` — per-edge messages ``[N, K, d]`` (honest senders send one row to all,
  Byzantine senders may send a different vector on every edge), an edge attack on the
  Byzantine senders' slots, then a rule at every node: any ``rj.aggregators`` rule over
  {xᵢ} ∪ neighbours (BRIDGE for the trimmed mean, Yang & Bajwa 2019), ClippedGossip (He,
  Karimireddy & Jaggi 2022), IOS (Wu et al. 2023) or CS+ (Gaucher et al. 2025).
* :func:`server` — a server holding the global model x̄: nodes send updates Δᵢ = xᵢ − x̄, the
  Byzantine rows are replaced by a vector attack that sees every honest update, the server
  aggregates (mean, a robust rule, or a securely aggregated noisy sum for central DP) and
  broadcasts x̄ + F(Δ) (McMahan et al. 2017; Karimireddy, He & Jaggi 2021; McMahan et al. 2018).

Message transforms and wrappers:

* :func:`round_messages` — what is sent is rounded to a narrower float (bf16 messages).
* :func:`choco` — Choco-Gossip public copies (Koloskova, Stich & Jaggi 2019): nodes send
  compressed differences q = Q(x − x̂), everyone updates x̂ ← x̂ + q, and the exchange acts on
  the copies: ``x ← x + γ(W x̂ − x̂)``. Preserves the network mean for any Q and γ.
* :func:`error_feedback` — DeepSqueeze (Tang et al. 2019): v = x + e, c = Q(v), e ← v − c,
  ``x ← x + γ(W c − c)``.

Attacks are the tamper stage of a robust exchange (:class:`Tamper`): stateless vector or edge
attacks from ``rj.attacks``, or stateful ones such as :func:`mimic_online`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from redeem_jax.core import Channel, Ctx, Hyper, resolve, row_bits
from redeem_jax.metrics import masked_mean
from redeem_jax.network import gossip as _gossip

__all__ = [
    "gossip",
    "robust_gossip",
    "server",
    "round_messages",
    "choco",
    "error_feedback",
    "shared_coordinates",
    "Tamper",
    "vector_tamper",
    "edge_tamper",
    "global_view",
    "mimic_online",
    "edge_count",
    "RoundCounter",
    "channel_metrics",
    "with_channel_metrics",
]


# --------------------------------------------------------------------------- #
# wire costs
# --------------------------------------------------------------------------- #
def edge_count(ctx: Ctx):
    """Rows one gossip exchange sends in this round: one per live (sender, receiver) edge."""
    e = ctx.edges
    if e.topology is not None:  # host counts: a hub graph's padded slots are never built for this
        counts = e.topology.live_edge_counts()
        if counts.size == 1 or isinstance(e.round, (int, np.integer)):
            return jnp.asarray(counts[0 if counts.size == 1 else int(e.round) % counts.size])
        return jnp.asarray(counts)[jnp.asarray(e.round) % counts.size]
    return jnp.sum(jnp.asarray(e.mask) & (jnp.asarray(e.weights) != 0))


def _gossip_wire(d, ctx):
    return edge_count(ctx), None


# --------------------------------------------------------------------------- #
# gossip
# --------------------------------------------------------------------------- #
def _mix(topology, x, ctx: Ctx, method: str, mesh):
    e = ctx.edges
    if e is not None and e.topology is None:  # a graph drawn in this round: the edges are all there is
        return _gossip.mix_edges(x, e.neighbors, e.weights, e.self_weight)
    if mesh is not None:
        from redeem_jax.network import sharding

        return sharding.sharded_mix(topology, x, mesh, round=ctx.round, method=method)
    return _gossip.mix(topology, x, round=ctx.round, method=method)


def gossip(topology, method: str = "auto", mesh=None) -> Channel:
    """One gossip step ``x ← W(t) x`` (Lian et al. 2017; Koloskova et al. 2020): the consensus step
    of D-SGD. ``method`` as :func:`rj.gossip.mix`; with ``mesh`` (node axis sharded over
    devices) circulant graphs use ppermute (``rj.sharding.ppermute_mix``)."""
    if getattr(topology, "is_drawn", False):
        if method not in ("auto", "sparse"):
            raise ValueError(
                f"gossip method {method!r}: {topology.name} draws its edges every round, so only the "
                "gathered ('sparse' or 'auto') mix applies"
            )
    elif mesh is not None:
        from redeem_jax.network import sharding

        sharding._check_nodes(topology.n, mesh)
        if method == "roll" and not topology.is_circulant:
            raise ValueError(f"method='roll' needs a circulant topology; {topology.name} is not")
    else:
        _gossip.resolve_method(topology, method)

    def update(x, s, ctx):
        return _mix(topology, x, ctx, method, mesh), s

    return Channel(lambda x: (), update, _gossip_wire, bool(topology.is_doubly_stochastic), (), "gossip")


# --------------------------------------------------------------------------- #
# tamper stages (Byzantine senders)
# --------------------------------------------------------------------------- #
class Tamper(NamedTuple):
    """A Byzantine attack as a stateful stage of a robust exchange.

    ``kind="vector"``: ``update(honest [h, d], f, s, ctx) -> ([f, d], s)``, the f Byzantine rows
    from every honest row (the omniscient attacker). ``kind="edge"``: ``update(messages [N, K,
    d], x [N, d], edges, byzantine bool[N], s, ctx) -> (messages, s)`` rewriting the Byzantine
    senders' slots (a different vector on every edge is allowed). ``init(d) -> s``.
    """

    init: Callable
    update: Callable
    kind: str
    hypers: tuple = ()
    name: str = "attack"


def _bind(fn: Callable, options: dict, ctx: Ctx, call: Callable):
    """Call ``call(partial(fn, **resolved options))``. An option given as a Hyper whose default is
    negative means "the attack's own default unless a value is swept in": the traced value
    picks the branch (``lax.cond``: one branch runs, both only under a sweep's vmap)."""
    plain = {k: v for k, v in options.items() if not isinstance(v, Hyper)}
    hyp = {k: v for k, v in options.items() if isinstance(v, Hyper)}
    if not hyp:
        return call(lambda *a, **kw: fn(*a, **plain, **kw))
    vals = {k: ctx.value(v) for k, v in hyp.items()}
    if all(v.default >= 0 for v in hyp.values()):
        return call(lambda *a, **kw: fn(*a, **plain, **vals, **kw))
    use = jnp.all(jnp.stack([jnp.asarray(vals[k]) >= 0 for k in hyp]))
    # cond, not where: a line-searched attack is costly, and only one branch runs (unvmapped).
    return jax.lax.cond(
        use,
        lambda: call(lambda *a, **kw: fn(*a, **plain, **vals, **kw)),
        lambda: call(lambda *a, **kw: fn(*a, **plain, **kw)),
    )


def vector_tamper(attack: Callable, name: str = "attack", **options) -> Tamper:
    """A stateless vector attack ``attack(honest, f, key, **options) -> [f, d]`` (``rj.attacks``)."""

    def update(honest, f, s, ctx):
        return _bind(attack, options, ctx, lambda a: a(honest, f, ctx.key)), s

    return Tamper(lambda d: (), update, "vector", tuple(v for v in options.values() if isinstance(v, Hyper)), name)


def edge_tamper(attack: Callable, name: str = "attack", **options) -> Tamper:
    """A stateless edge attack ``attack(messages, x, neighbors, weights, self_weight, edge_mask,
    byzantine, key, **options)`` (``rj.attacks.dissensus``, ``lift``, the spectral attack)."""

    def update(messages, x, edges, byz, s, ctx):
        return _bind(
            attack,
            options,
            ctx,
            lambda a: a(messages, x, edges.neighbors, edges.weights, edges.self_weight, edges.mask, byz, ctx.key),
        ), s

    return Tamper(lambda d: (), update, "edge", tuple(v for v in options.values() if isinstance(v, Hyper)), name)


def live_only(tamper: Tamper, live: int) -> Tamper:
    """``tamper`` with every forged vector's coordinates from ``live`` on set to zero.

    A model with dead padding (``rj.models.Model.pad``, the MLP's GEMM layout) keeps those
    coordinates exactly zero in every honest row; an attack that writes into every coordinate
    (``gaussian`` noise, ``huge``) would otherwise put values there, and the robust rules'
    distances and norms would see them. With this the Byzantine rows have the law they have on
    the unpadded layout."""

    def update(*args):
        out, s = tamper.update(*args)
        return jnp.where(jnp.arange(out.shape[-1]) < live, out, jnp.zeros((), out.dtype)), s

    return tamper._replace(update=update)


def global_view(vector: Tamper, byzantine: np.ndarray) -> Tamper:
    """An edge tamper from a vector tamper that sees every honest row (DESIGN's omniscient
    attacker): the f Byzantine vectors are computed once from all honest rows and Byzantine
    node k sends its vector to every neighbour."""
    byz = np.asarray(byzantine, bool)
    honest_idx = np.flatnonzero(~byz)
    rank = np.zeros(byz.size, np.int32)
    rank[np.flatnonzero(byz)] = np.arange(int(byz.sum()))
    f = int(byz.sum())

    def update(messages, x, edges, byz_mask, s, ctx):
        del byz_mask
        vectors, s = vector.update(x[honest_idx], f, s, ctx)  # [f, d]
        sender_byz = jnp.asarray(byz)[edges.neighbors] & edges.mask
        forged = vectors[jnp.asarray(rank)[edges.neighbors]]  # [N, K, d]
        return jnp.where(sender_byz[..., None], forged.astype(messages.dtype), messages), s

    return Tamper(vector.init, update, "edge", vector.hypers, vector.name)


def mimic_online(warmup: int = 1) -> Tamper:
    """Mimic (Karimireddy, He & Jaggi 2022, Sec. 5) with its direction tracked online.

    The attackers keep an estimate z of the top principal direction of the centred honest
    vectors, refined by one power-iteration step per round averaged over rounds,
    z ← normalise(t·z + C z) with C the honest covariance of this round, and all f copy the
    honest worker with the largest |⟨xᵢ − μ, z⟩|. Its index is frozen after ``warmup`` rounds,
    as in the paper (a consistent target biases every later aggregate the same way).
    """

    def init(d):
        return {
            "z": jnp.full((d,), 1.0 / np.sqrt(d), jnp.float32),
            "t": jnp.zeros((), jnp.float32),
            "target": jnp.zeros((), jnp.int32),
        }

    def update(honest, f, s, ctx):
        dt = honest.dtype
        honest = honest.astype(jnp.promote_types(dt, jnp.float32))  # a covariance in float16 overflows
        mu = masked_mean(honest)
        c = honest - mu
        cz = c.T @ (c @ s["z"]) / honest.shape[0]
        z = s["t"] * s["z"] + cz
        z = z / jnp.maximum(jnp.linalg.norm(z), 1e-30)
        z = jnp.where(jnp.all(jnp.isfinite(z)), z, s["z"])
        best = jnp.argmax(jnp.abs(c @ z)).astype(jnp.int32)
        target = jnp.where(s["t"] < warmup, best, s["target"])
        out = jnp.broadcast_to(honest[target], (f, honest.shape[1])).astype(dt)
        return out, {"z": z, "t": s["t"] + 1, "target": target}

    return Tamper(init, update, "vector", (), "mimic")


# --------------------------------------------------------------------------- #
# robust gossip
# --------------------------------------------------------------------------- #
DECENTRALIZED_RULES = ("gossip", "clipped_gossip", "ios", "cs_plus")


class RoundCounter(NamedTuple):
    """A count a channel keeps in its state for the round's metrics (:func:`channel_metrics`):
    ``value`` belongs to ``round`` (-1 before the first exchange), summed over the exchange's
    calls within that round."""

    round: jax.Array
    value: jax.Array


def _counter(name: str) -> dict:
    return {name: RoundCounter(jnp.full((), -1, jnp.int32), jnp.zeros((), jnp.int32))}


def _count(counter: RoundCounter, round, n) -> RoundCounter:
    r = jnp.asarray(round, jnp.int32)
    return RoundCounter(r, jnp.where(counter.round == r, counter.value, 0) + jnp.asarray(n, jnp.int32))


def channel_metrics(channel_states, round) -> dict:
    """The per-round counts channels keep in their states (e.g. ``robust_fallback_nodes``), each
    summed over every exchange that counted it in ``round``; {} when no channel counts anything."""
    out: dict = {}
    leaves = jax.tree_util.tree_flatten_with_path(channel_states, is_leaf=lambda v: isinstance(v, RoundCounter))[0]
    r = jnp.asarray(round, jnp.int32)
    for path, leaf in leaves:
        if isinstance(leaf, RoundCounter) and path and isinstance(path[-1], jax.tree_util.DictKey):
            name = str(path[-1].key)
            out[name] = out.get(name, 0) + jnp.where(leaf.round == r, leaf.value, 0)
    return out


def with_channel_metrics(step: Callable) -> Callable:
    """``step(state, data, hp) -> (state, metrics)`` whose metrics also hold :func:`channel_metrics`
    of this round (so that a run logs them in ``metrics.jsonl``)."""

    def wrapped(state, data, hp):
        new, metrics = step(state, data, hp)
        return new, {**channel_metrics(new.channels, state.round), **metrics}

    return wrapped


def _warn_certain_fallbacks(topology, byz: np.ndarray, need: int, label: str, b: int) -> None:
    """Warn, on the host, when some honest node has fewer than ``need`` live inputs in some round
    of the topology's period: it will keep its own value then."""
    mask = getattr(topology, "edge_mask", None)
    if mask is None or need <= 1:
        return
    mask = np.asarray(mask, bool).reshape(int(topology.period), int(topology.n), -1)
    fewest = 1 + mask.sum(-1).min(0)  # own row + live in-neighbours, worst round of the period
    short = (fewest < need) & ~byz
    if short.any():
        ids = np.flatnonzero(short)
        i = int(ids[np.argmin(fewest[ids])])
        warnings.warn(
            f"{label}: {ids.size} honest node(s) have fewer than the {need} inputs (own row + "
            f"neighbours) the rule needs with b={b}, e.g. node {i} with degree {int(fewest[i]) - 1}; "
            "they keep their own value in those rounds (metric robust_fallback_nodes). Lower "
            "aggregation.tolerance, use a denser topology or a decentralized rule (clipped_gossip, "
            "cs_plus, ios)",
            stacklevel=3,
        )


def robust_gossip(
    topology, rule, b: int, byzantine, attack: Tamper | None = None, step: float | None = None
) -> Channel:
    """Robust gossip: gather → tamper the Byzantine senders' slots → a rule at every node.

    ``rule``: "gossip" (the plain weighted mean, not robust), "clipped_gossip", "ios",
    "cs_plus", or an aggregator ``agg(x [m, d], f, mask=...) -> [d]`` applied to {xᵢ} ∪
    neighbours (own row first); an aggregator with state (``agg.stateful``, e.g. centered
    clipping started from each node's previous output) keeps it per node. ``b``: how many
    Byzantine neighbours the rule tolerates. ``step``: CS+'s 1/λ_max(I − W) (computed from the
    topology when None). Non-finite messages count as infinitely far: clipped or cut, never
    averaged in.

    A node whose live inputs (own row + live in-neighbours this round) are fewer than the rule
    needs (:func:`rj.byzantine.rules.min_inputs`: 2b + 1 for the trimmed mean or the median,
    2b + 3 for Krum, ...; 1 for the decentralized rules, defined at any degree) keeps its own
    value that round: a degree-1 node of a path with b = 1 would otherwise be "trimmed" to 0.
    The channel counts such honest nodes per round (``robust_fallback_nodes`` in the round's
    metrics, through :func:`channel_metrics`) and warns at construction when the topology
    makes it certain. Computes in ``promote(dtype, float32)``; integer rows raise TypeError.
    """
    from redeem_jax.byzantine import rules as _rules

    byz_host = np.asarray(byzantine, bool)
    byz = jnp.asarray(byz_host)
    if rule == "cs_plus" and step is None:
        step = _rules.laplacian_step(topology)
    stateful = callable(rule) and getattr(rule, "stateful", False)
    if isinstance(rule, str) and rule not in DECENTRALIZED_RULES:
        raise ValueError(
            f"aggregation.rule: {rule!r} is not a decentralized rule ({', '.join(DECENTRALIZED_RULES)}) "
            "or an aggregator"
        )
    name = rule if isinstance(rule, str) else getattr(rule, "__name__", "rule")
    need = _rules.min_inputs(rule, b)
    K = getattr(topology, "K", None)
    if K is not None and K + 1 < need:
        raise ValueError(
            f"aggregation.rule: {name} with b={b} needs {need} inputs (own row + neighbours) but no node "
            f"of {topology.name} has more than {K + 1}; lower aggregation.tolerance or use a denser topology"
        )
    _warn_certain_fallbacks(topology, byz_host, need, f"robust_gossip[{name}]", b)

    def node_rule(xi, m, wi, si, mi, prev):
        if rule == "clipped_gossip":
            return _rules.clipped_gossip(xi, m, wi, si, mi, b), prev
        if rule == "ios":
            return _rules.ios(xi, m, wi, si, mi, b), prev
        if rule == "cs_plus":
            return _rules.cs_plus(xi, m, wi, si, mi, b, step), prev
        stack = jnp.concatenate([xi[None], m], axis=0)
        valid = jnp.concatenate([jnp.ones((1,), bool), mi])
        if stateful:
            out = rule(stack, b, mask=valid, start=prev)
            return out, out
        return rule(stack, b, mask=valid), prev

    def init(x):
        d = x.shape[-1]
        return {
            "attack": attack.init(d) if attack is not None else (),
            "rule": jnp.asarray(x) if stateful else (),
            **_counter("robust_fallback_nodes"),
        }

    def exchange(x, s, ctx):
        e = ctx.edges
        messages = x.at[e.neighbors].get(mode="promise_in_bounds")  # honest senders: one row to all
        atk_state = s["attack"]
        if attack is not None:
            messages, atk_state = attack.update(messages, x, e, byz, atk_state, ctx)
        if rule == "gossip":
            return _gossip.combine(x, messages, e.weights, e.self_weight), atk_state, s["rule"]
        if callable(rule) and not stateful:
            from redeem_jax.byzantine import aggregators

            with warnings.catch_warnings():
                # This channel warned once at construction and counts every fallback in the
                # metrics; the trace-time warning of neighbourhood() would repeat it per compile.
                warnings.filterwarnings("ignore", message=r"neighbourhood\(.*min_inputs", category=UserWarning)
                y = aggregators.neighbourhood(rule, x, e.neighbors, b, e.mask, messages=messages)
            return y, atk_state, s["rule"]
        prev = s["rule"] if stateful else jnp.zeros((x.shape[0], 0), x.dtype)
        ct = jnp.promote_types(x.dtype, jnp.float32)  # weights never rounded to a narrow dtype
        y, prev = jax.vmap(node_rule)(x, messages, e.weights.astype(ct), e.self_weight.astype(ct), e.mask, prev)
        return y, atk_state, prev if stateful else s["rule"]

    def update(x, s, ctx):
        _gossip.check_float(jnp.asarray(x).dtype, f"robust_gossip[{name}]")
        y, atk_state, rule_state = exchange(x, s, ctx)
        y = y.astype(x.dtype)
        short = jnp.zeros((x.shape[0],), bool)
        if need > 1:
            # Too few rows for the rule's precondition this round: keep the own value (the rule
            # would return garbage: the trimmed mean of 2 rows with b = 1 is 0).
            short = 1 + jnp.sum(jnp.asarray(ctx.edges.mask, jnp.int32), axis=1) < need
            y = jnp.where(short[:, None], x, y)
            if stateful:
                rule_state = jnp.where(short[:, None], y, rule_state)
        count = jnp.sum(short & jnp.asarray(ctx.honest, bool))
        return y, {
            "attack": atk_state,
            "rule": rule_state,
            "robust_fallback_nodes": _count(s["robust_fallback_nodes"], ctx.round, count),
        }

    hyp = attack.hypers if attack is not None else ()
    return Channel(init, update, _gossip_wire, False, hyp, f"robust_gossip[{name}]")


# --------------------------------------------------------------------------- #
# server
# --------------------------------------------------------------------------- #
def server(
    *,
    rule: Callable | None = None,
    f: int = 0,
    byzantine=None,
    attack: Tamper | None = None,
    message_dtype=None,
    central_dp: dict | None = None,
    weights=None,
) -> Channel:
    """A server holding the global model x̄ (FedAvg, McMahan et al. 2017; robust aggregation of
    worker updates, Karimireddy, He & Jaggi 2021, Farhadkhani et al. 2022; DP-FedAvg, McMahan
    et al. 2018).

    Nodes send Δᵢ = xᵢ − x̄ (rounded to ``message_dtype`` if given); the Byzantine rows are
    replaced by ``attack`` (a vector :class:`Tamper` that sees every honest Δ); the server forms
    F(Δ) (the mean, or ``rule(Δ, f)``) and broadcasts x̄ + F(Δ). Without a rule, an attack or
    rounding, the broadcast is the plain mean of the rows (the same number, summed directly).
    ``central_dp={"clip_norm": C, "noise_multiplier": σ, "secure": True, "scale_bits": 20}``:
    every Δᵢ is clipped to C, summed through secure aggregation (exact uint32 masks, Bonawitz
    et al. 2017) and N(0, σ²C²) is added once: x̄ + (ΣΔ + noise)/N. ``weights`` (e.g. shard
    sizes) weight the plain mean.
    """
    byz = None if byzantine is None else np.asarray(byzantine, bool)
    honest_idx = None if byz is None else np.flatnonzero(~byz)
    byz_idx = None if byz is None else np.flatnonzero(byz)
    dtype = None if message_dtype in (None, "float32") else jnp.dtype(message_dtype)
    plain = rule is None and attack is None and dtype is None and central_dp is None
    stateful = rule is not None and getattr(rule, "stateful", False)
    if central_dp is not None:
        from redeem_jax.privacy import secure_agg

        c = central_dp.get("clip_norm")
        if not isinstance(c, Hyper) and (not np.isfinite(c) or c <= 0):
            raise ValueError(f"privacy.clip_norm: central DP needs a finite clip norm > 0, got {c}")
        if central_dp.get("secure", True):
            num_nodes = central_dp["num_nodes"]
            secure_agg.check_overflow(num_nodes, resolve(c, None), central_dp.get("scale_bits", 20))

    def init(x):
        d = x.shape[-1]
        return {
            "model": masked_mean(jnp.asarray(x)) if honest_idx is None else masked_mean(jnp.asarray(x)[honest_idx]),
            "attack": attack.init(d) if attack is not None else (),
            # a stateful rule (centered clipping) starts from its previous output; 0 at first
            "rule": jnp.zeros((d,), jnp.asarray(x).dtype) if stateful else (),
        }

    def update(x, s, ctx):
        n = x.shape[0]
        if plain:
            if weights is None:
                mean = masked_mean(x)  # a GEMV: XLA's CPU column reductions are ~50x slower
            else:
                w = jnp.asarray(weights, x.dtype)
                mean = (w / jnp.sum(w)) @ x
            return jnp.broadcast_to(mean, x.shape), {"model": mean, "attack": s["attack"], "rule": s["rule"]}
        base = s["model"]
        delta = x - base
        if dtype is not None:
            delta = delta.astype(dtype).astype(x.dtype)
        atk_state = s["attack"]
        if attack is not None and byz_idx is not None and byz_idx.size:
            forged, atk_state = attack.update(delta[honest_idx], int(byz_idx.size), atk_state, ctx)
            delta = delta.at[byz_idx].set(forged.astype(delta.dtype))
        if central_dp is not None:
            agg = _central_dp_sum(delta, central_dp, ctx) / n
        elif rule is None:
            agg = masked_mean(delta)
        elif stateful:
            agg = rule(delta, f, start=s["rule"])
        else:
            agg = rule(delta, f)
        new = base + agg
        return jnp.broadcast_to(new, x.shape), {
            "model": new,
            "attack": atk_state,
            "rule": agg if stateful else s["rule"],
        }

    def wire(d, ctx):
        bits = 32 * d if dtype is None else row_bits(dtype) * d
        return 2 * ctx.num_nodes, bits  # every node uploads one row, the server broadcasts one to each

    hyp = (attack.hypers if attack is not None else ()) + tuple(
        v for v in (central_dp or {}).values() if isinstance(v, Hyper)
    )
    name = "server" if plain else ("server[central_dp]" if central_dp else "server[robust]")
    return Channel(init, update, wire, plain, hyp, name)


def _central_dp_sum(delta, cfg, ctx):
    from redeem_jax.privacy import central

    return central.noisy_secure_sum(
        delta,
        ctx.key,
        ctx.value(cfg["clip_norm"]),
        ctx.value(cfg["noise_multiplier"]),
        cfg.get("secure", True),
        cfg.get("scale_bits", 20),
    )


# --------------------------------------------------------------------------- #
# message transforms and compression
# --------------------------------------------------------------------------- #
def round_messages(dtype) -> Channel:
    """What nodes send rounded to ``dtype`` (e.g. bfloat16); receivers combine in float32, so the
    result differs from float32 messages only by that rounding."""
    dt = jnp.dtype(dtype)

    def update(x, s, ctx):
        return x.astype(dt).astype(x.dtype), s

    return Channel(lambda x: (), update, lambda d, ctx: (None, row_bits(dt) * d), False, (), f"round[{dt.name}]")


def choco(exchange: Channel, compressor, gamma) -> Channel:
    """Choco-Gossip (Koloskova, Stich & Jaggi 2019, Alg. 1) around an exchange.

    State: the public copies x̂ (x̂₀ = 0), known to every neighbour because all receive the same
    compressed q. One exchange: q = Q(x − x̂), x̂ ← x̂ + q, x ← x + γ(E(x̂) − x̂) with E the inner
    exchange (gossip: W x̂). With E doubly stochastic gossip, 1ᵀ(W − I) = 0 keeps the network
    mean exactly for any Q and γ; with Q the identity and γ = 1 it is the plain gossip step.
    ``gamma`` may be a :class:`~redeem_jax.core.Hyper`; ``compressor`` is an
    ``rj.network.compress.Compressor``.
    """

    def init(x):
        return {"copies": jnp.zeros_like(jnp.asarray(x)), "inner": exchange.init(x)}

    def update(x, s, ctx):
        q = compressor.compress(x - s["copies"], jax.random.fold_in(ctx.key, 1))
        copies = s["copies"] + q
        mixed, inner = exchange.update(copies, s["inner"], ctx.fold(2))
        return x + ctx.value(gamma) * (mixed - copies), {"copies": copies, "inner": inner}

    def wire(d, ctx):
        messages, _ = exchange.wire(d, ctx)
        return messages, compressor.bits(d)

    hyp = exchange.hypers + ((gamma,) if isinstance(gamma, Hyper) else ())
    return Channel(init, update, wire, exchange.conserving, hyp, f"choco[{compressor.name}]({exchange.name})")


def error_feedback(exchange: Channel, compressor, gamma) -> Channel:
    """DeepSqueeze's compressed exchange with error feedback (Tang et al. 2019, Alg. 1).

    State: each node's compression error e (e₀ = 0). One exchange of v: v̂ = v + e, c = Q(v̂),
    e ← v̂ − c, and v ← v + γ(E(c) − c), E the inner exchange (gossip: W c).
    """

    def init(x):
        return {"error": jnp.zeros_like(jnp.asarray(x)), "inner": exchange.init(x)}

    def update(x, s, ctx):
        v = x + s["error"]
        c = compressor.compress(v, jax.random.fold_in(ctx.key, 1))
        mixed, inner = exchange.update(c, s["inner"], ctx.fold(2))
        return x + ctx.value(gamma) * (mixed - c), {"error": v - c, "inner": inner}

    def wire(d, ctx):
        messages, _ = exchange.wire(d, ctx)
        return messages, compressor.bits(d)

    hyp = exchange.hypers + ((gamma,) if isinstance(gamma, Hyper) else ())
    return Channel(init, update, wire, exchange.conserving, hyp, f"error_feedback[{compressor.name}]({exchange.name})")


# --------------------------------------------------------------------------- #
# shared coordinates (personalization: shared body, personal head)
# --------------------------------------------------------------------------- #
def shared_coordinates(inner: Channel, mask) -> Channel:
    """Only the coordinates where ``mask`` is True go through ``inner`` (FedPer, Arivazhagan et
    al. 2019; FedRep, Collins et al. 2021, Alg. 1: only the body is exchanged):
    ``X ← m⊙inner(X[:, m]) + (1−m)⊙X``.

    ``mask`` is a static ``bool[d]`` over the flat row. The shared columns are gathered into an
    ``[N, d_shared]`` array, run through ``inner`` (gossip, server, robust rule with its attack,
    compression) and scattered back, so a robust rule or an attack never sees nor touches a
    personal coordinate, ``inner``'s state (public copies, the server's model) holds only the
    shared columns, and the wire cost counts ``d_shared`` floats per row. An empty mask makes
    the channel the identity that sends nothing.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 1:
        raise ValueError(f"shared_coordinates: mask must be bool[d], got shape {mask.shape}")
    idx = np.flatnonzero(mask)
    d_shared, d = int(idx.size), int(mask.size)

    def _check(x):
        if x.shape[-1] != d:
            raise ValueError(f"shared_coordinates: rows have {x.shape[-1]} coordinates, the mask {d}")

    def init(x):
        x = jnp.asarray(x)
        _check(x)
        return inner.init(x[:, idx]) if d_shared else ()

    def update(x, s, ctx):
        _check(x)
        if not d_shared:
            return x, s
        y, s = inner.update(x[:, idx], s, ctx)
        # A scatter of the shared columns: the personal ones are the input's, bit for bit.
        return x.at[:, idx].set(y.astype(x.dtype)), s

    def wire(dd, ctx):
        del dd  # the rows' width; only the shared columns are sent
        if not d_shared or inner.wire is None:
            return (0 if not d_shared else None), None
        messages, bits = inner.wire(d_shared, ctx)
        if messages is not None and bits is None:
            bits = 32 * d_shared  # an exchange alone sends float32 rows of what it is given
        return messages, bits

    return Channel(init, update, wire, inner.conserving, inner.hypers, f"shared[{d_shared}/{d}]({inner.name})")

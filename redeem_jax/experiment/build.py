"""From a config to the mechanisms of one round: names resolved once, here and nowhere below.

``build(config) -> Experiment``: the topology, the data and its partition, the model, the
Byzantine set, and the round's three kinds of mechanism — the :class:`~redeem_jax.core.Oracle`
(minibatch or DP-SGD), one :class:`~redeem_jax.core.Channel` per exchange the algorithm
declares, and the :class:`~redeem_jax.core.Algorithm` — with every float option of an in-round
mechanism passed as a :class:`~redeem_jax.core.Hyper` named by its config field. The step
takes their values as its ``hp`` argument, so that any of them can be an axis of ``rj.sweep``
without a hand-kept list and without rebuilding anything inside the trace.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from redeem_jax import algorithms as _algorithms
from redeem_jax import channels as _channels
from redeem_jax import data as _data
from redeem_jax import models as _models
from redeem_jax import round as _round
from redeem_jax.core import Algorithm, Channel, Exchange, chain, hyper, hypers_of
from redeem_jax.experiment import config as _config
from redeem_jax.metrics import masked_mean
from redeem_jax.network import topology as _topology

__all__ = ["Experiment", "build", "evaluate_fn", "data_seed", "max_byzantine_neighbours"]

ConfigError = _config.ConfigError


class Experiment(NamedTuple):
    """Everything a run is made of, built once from a config (handy in notebooks and benchmarks).

    ``step(state, node_data, hp) -> (state, metrics)`` is the one round (pure; jit it);
    ``hp`` maps the names of the run's hyper-parameters to their values (``Experiment.hp``
    holds the config's); ``init_state(seed)`` is the network at round 0; ``models(state)`` the
    rows evaluated; ``evaluate(models, honest)`` the test metrics.
    """

    config: ml_collections.ConfigDict
    topology: Any
    dataset: Any
    node_data: Any
    partition_summary: Any
    model: _models.Model
    algorithm: Algorithm
    oracle: Any
    channels: dict
    step: Callable
    hp: dict
    evaluate: Callable
    honest: np.ndarray
    trace_counter: list
    privacy: dict | None = None  # DP: noise_multiplier, sample_rate, delta, accountant, sampling, steps_per_round
    lora: Any = None  # rj.lora.LoraSpec of a model.lora run: the frozen base, targets, merge(spec, row)

    def init_state(self, seed: int | jax.Array | None = None, hp: dict | None = None) -> _round.RoundState:
        """The network at round 0 for ``seed`` (default ``config.seed``; may be traced, e.g. vmapped)."""
        seed = self.config.seed if seed is None else seed
        init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
        n, model = self.config.num_nodes, self.model
        if self.config.init == "same":
            x0 = jnp.broadcast_to(model.init(init_key), (n, model.num_params))
        else:
            x0 = jax.vmap(model.init)(jax.random.split(init_key, n))
        x0 = jnp.asarray(x0, jnp.float32)
        return _round.init_state(
            self.algorithm,
            self.oracle,
            self.channels,
            x0,
            run_key,
            topology=self.topology,
            honest=self.honest,
            hp=self.hp_values() if hp is None else hp,
        )

    def models(self, state: _round.RoundState):
        return self.algorithm.models(state.algorithm)

    def hp_values(self, **overrides) -> dict:
        """The step's ``hp`` argument: every hyper-parameter as a float32 scalar (config values,
        or ``overrides`` by config field)."""
        out = {k: jnp.asarray(v, jnp.float32) for k, v in self.hp.items()}
        for k, v in overrides.items():
            if k not in out:
                raise KeyError(f"{k!r} is not a hyper-parameter of this run (it has {sorted(out)})")
            out[k] = jnp.asarray(v, jnp.float32)
        return out

    def round_fn(self, state, hp: dict | None = None):
        """One round with this experiment's node data: ``step(state, node_data, hp)``."""
        return self.step(state, self.node_data, self.hp_values() if hp is None else hp)


# --------------------------------------------------------------------------- #
# host-side pieces: graph, data, Byzantine set
# --------------------------------------------------------------------------- #
def _static_topology(c, name: str, field: str) -> Any:
    t = c.topology
    n = c.num_nodes
    seed = c.seed if t.seed < 0 else t.seed
    options = {"p": t.p, "k": t.k, "radius": t.radius, "seed": seed}
    accepted = inspect.signature(_topology.FAMILIES[name]).parameters
    options = {k: v for k, v in options.items() if k in accepted}
    try:
        return _topology.get(name, n, weights=t.weights, **options)
    except ValueError as e:
        raise ConfigError(f"config.{field}: {name!r} with num_nodes={n}: {e}") from e


def _topology_from_config(c) -> Any:
    """The round's graph (:func:`_graph_from_config`), with stragglers when ``topology.straggle``
    > 0: each node skips its local step with that probability every round (``ctx.active``)."""
    topo = _graph_from_config(c)
    r = c.topology.get("straggle", 0.0)
    if r <= 0.0:
        return topo  # no mask at all: the run is exactly the one without the option
    from redeem_jax.network import unreliable

    try:
        return unreliable.stragglers(topo, r)
    except ValueError as e:
        raise ConfigError(f"config.topology.straggle: {e}") from e


def _graph_from_config(c) -> Any:
    """The round's graph: a static family, a family drawn every round (``rj.network.dynamic``),
    or a static graph made unreliable (link failures, churn: ``rj.network.unreliable``)."""
    from redeem_jax.network import dynamic, unreliable

    t = c.topology
    n = c.num_nodes
    unreliable_wanted = t.link_up < 1.0 or t.online < 1.0
    if t.name in dynamic.FAMILIES:
        if unreliable_wanted:
            field = "link_up" if t.link_up < 1.0 else "online"
            raise ConfigError(
                f"config.topology.{field}: failures and churn apply to a static graph; "
                f"{t.name!r} is already drawn every round (use topology.name={t.base!r} instead)"
            )
        base = None if t.name.startswith("epidemic") else _static_topology(c, t.base, "topology.base")
        # topology.s_max > 0 (a sweep over topology.s sets it): s is a hyper-parameter of the
        # step, the draw padded to s_max, so one compile serves every s of the sweep.
        s_max = t.get("s_max", 0)
        s = hyper("topology.s", t.s) if s_max and t.name.startswith("epidemic") else t.s
        try:
            return dynamic.get(t.name, n, base=base, s=s, k=t.k, s_max=s_max or None)
        except ValueError as e:
            raise ConfigError(f"config.topology.name: {t.name!r} with num_nodes={n}: {e}") from e
    topo = _static_topology(c, t.name, "topology.name")
    if not unreliable_wanted:
        return topo
    # p and q are hyper-parameters of the step (the same float32 values as constants), so that
    # rj.sweep vmaps over them with one compile.
    p = hyper("topology.link_up", t.link_up) if t.link_up < 1.0 else 1.0
    try:
        if t.online < 1.0:
            return unreliable.churn(topo, q=hyper("topology.online", t.online), p=p, policy=t.policy)
        return unreliable.link_failures(topo, p, policy=t.policy)
    except ValueError as e:
        raise ConfigError(f"config.topology.link_up: {e}") from e


def data_seed(c) -> int:
    """The seed of the data draw and partition: ``data.seed``, or the run's seed when it is -1."""
    return c.seed if c.data.seed < 0 else c.data.seed


def _dataset_from_config(c):
    d = c.data
    options: dict[str, Any] = {}
    if d.name in ("linear", "logistic"):
        options = dict(num_examples=d.num_examples, dim=d.dim, noise=d.noise)
        if d.name == "linear":
            options.update(heterogeneity=d.heterogeneity, whiten=d.whiten)
            if d.whiten or d.heterogeneity > 0:  # both are defined per node block
                options.update(num_nodes=c.num_nodes, examples_per_node=d.num_examples // c.num_nodes)
    elif d.name == "text":
        options = dict(seq_len=d.seq_len)
    elif d.name == "text_file":
        options = dict(path=d.path, seq_len=d.seq_len)
    elif d.name in ("mnist", "fashion_mnist", "cifar10"):
        options = dict(path=d.path)
    try:
        return _data.load(d.name, seed=data_seed(c), **options)
    except FileNotFoundError as e:
        raise ConfigError(f"config.data.path: {e}") from e
    except _data.datasets.DataError as e:  # a damaged file, labels outside the classes, NaN pixels, ...
        raise ConfigError(f"config.data.{'path' if 'path' in options else 'name'}: {e}") from e


def _partition_method(c) -> str:
    # Whitened synthetic rows are generated node by node, so the split must keep the blocks.
    if c.data.name == "linear" and c.data.whiten:
        return "contiguous"
    return c.data.partition


def _byzantine_from_config(c, topo) -> np.ndarray:
    if c.byzantine.num == 0:
        return np.zeros((c.num_nodes,), bool)
    from redeem_jax.byzantine import placement

    seed = c.seed if c.topology.seed < 0 else c.topology.seed
    ids = tuple(c.byzantine.ids) if c.byzantine.placement == "given" else None
    if getattr(topo, "is_drawn", False):
        # An unreliable graph fails edges of its static base: place and check on the base (its
        # Byzantine in-degree bounds every round's). Other drawn graphs have no fixed neighbours.
        if getattr(topo, "base", None) is None:
            raise ConfigError(
                f"config.byzantine.num: Byzantine nodes on {topo.name}, a graph drawn every round, "
                "are not supported yet; use a static topology (with topology.link_up / online)"
            )
        topo = topo.base
    try:
        byz = placement.place(topo, c.byzantine.num, c.byzantine.placement, seed=seed, ids=ids)
    except ValueError as e:
        raise ConfigError(f"config.byzantine.placement: {e}") from e
    if not _config.is_federated(c.algorithm.name, c.algorithm.get("over")):  # a server hears everyone
        placement.warn_if_cut(topo, byz, stacklevel=3)
    return byz


def max_byzantine_neighbours(topo, byz: np.ndarray) -> int:
    """The largest number of Byzantine in-neighbours of an honest node over the topology's period."""
    byz = np.asarray(byz, bool)
    if not byz.any() or byz.all():
        return 0
    topo = getattr(topo, "base", topo) if getattr(topo, "is_drawn", False) else topo
    # From the padded neighbour lists, O(N·K): a dense [N, N] W per round is 8 TB at N = 10^6.
    nbr = topo.neighbors.reshape(topo.period, topo.n, -1)
    live = (topo.edge_mask & (topo.weights != 0)).reshape(nbr.shape)
    return int((byz[nbr] & live).sum(-1)[:, ~byz].max())


# --------------------------------------------------------------------------- #
# in-round mechanisms
# --------------------------------------------------------------------------- #
def _optimizer(c):
    from redeem_jax.local.optim import local_optimizer

    o, steps = c.optimizer, c.num_rounds * _steps_per_round(c)
    h = lambda k: hyper(f"optimizer.{k}", o[k])  # noqa: E731
    return local_optimizer(
        o.name,
        h("learning_rate"),
        momentum=h("momentum"),
        weight_decay=h("weight_decay"),
        schedule=o.schedule,
        total_steps=steps,
        warmup_steps=o.warmup_rounds * _steps_per_round(c),
        decay_rate=h("decay_rate"),
        decay_every=o.decay_every * _steps_per_round(c),
    )


def _steps_per_round(c) -> int:
    """Oracle calls per round per node (local steps), for schedules and privacy accounting."""
    opts = _algorithms.options(c.algorithm.name)
    steps = int(c.algorithm.get("local_steps", 1)) if "local_steps" in opts else 1
    # FedRep's head steps call the oracle too (DP-SGD accounts for every call).
    return steps + (int(c.algorithm.get("head_steps", 0)) if "head_steps" in opts else 0)


def _shared_mask(c, model) -> np.ndarray | None:
    """The shared (exchanged) coordinates of an algorithm with a ``personal`` option (FedPer,
    FedRep): ``~rj.models.head_mask(model)`` for ``personal = "head"``; None for the others."""
    if "personal" not in _algorithms.options(c.algorithm.name):
        return None
    personal = c.algorithm.personal
    if personal != "head":
        raise ConfigError(f"config.algorithm.personal: {personal!r} is not one of head")
    try:
        shared = ~_models.head_mask(model)
    except ValueError as e:
        raise ConfigError(f"config.model.name: {e}") from e
    if not shared.any():
        raise ConfigError(
            f"config.model.name: {model.name!r} is its head alone, so {c.algorithm.name} would share nothing; "
            "use an mlp or cnn, or algorithm.name = local_only"
        )
    return shared


def _algorithm(c, optimizer, shared=None) -> tuple[Algorithm, tuple]:
    factory = _algorithms.get(c.algorithm.name)
    opts, hyp = {}, []
    if shared is not None:
        opts["_shared"] = shared
    for k, default in _algorithms.options(c.algorithm.name).items():
        v = c.algorithm.get(k, default)
        if isinstance(v, float) and not isinstance(v, bool):
            v = hyper(f"algorithm.{k}", v)
            hyp.append(v)
        opts[k] = v
    try:
        return factory(optimizer, **opts), tuple(hyp)
    except ValueError as e:
        raise ConfigError(f"config.algorithm.name: {e}") from e


def _privacy(c, model, node_data):
    """The oracle (minibatch or DP-SGD) and what the accountant needs (or None)."""
    from redeem_jax.local import oracles

    p = c.privacy
    if p.mode != "dp_sgd":
        k = c.optimizer.grad_accum
        rows = min(c.data.batch_size, int(node_data.x.shape[1]))  # the sampled batch (full batch: the padded shard)
        if rows % k:
            raise ConfigError(
                f"config.optimizer.grad_accum: {k} microbatches must divide the batch of {rows} rows "
                "(data.batch_size, or the largest shard when the batch is the full shard)"
            )
        return oracles.minibatch(model, c.data.batch_size, grad_accum=k), None
    from redeem_jax.privacy import dp_sgd
    from redeem_jax.privacy.analysis import accounting

    sizes = np.asarray(node_data.sizes)
    m_max = int(node_data.x.shape[1])
    steps = c.num_rounds * _steps_per_round(c)
    if p.sampling == "poisson":
        q = p.sample_rate if p.sample_rate > 0 else min(1.0, c.data.batch_size / float(sizes.mean()))
        expected = q * float(sizes.mean())
    else:
        # Accounting is per node; the smallest shard has the largest sampling rate: the worst case.
        q = min(1.0, c.data.batch_size / float(sizes.min()))
        expected = float(min(c.data.batch_size, m_max))
    sigma = p.noise_multiplier
    if p.target_epsilon > 0:
        try:
            sigma = accounting.noise_multiplier_for(
                p.target_epsilon, q, steps, p.delta, accountant=p.accountant, sampling=p.sampling
            )
        except ValueError as e:
            raise ConfigError(f"config.privacy.target_epsilon: {e}") from e
    if p.clipping == "ghost" and not dp_sgd.supports_ghost_clipping(model):
        raise ConfigError(
            f"config.privacy.clipping: 'ghost' needs a dense model without l2 "
            f"(linear, logistic, mlp), got {model.name!r}; use 'vmap' or 'auto'"
        )
    oracle = oracles.dp_sgd(
        model,
        c.data.batch_size,
        clip_norm=hyper("privacy.clip_norm", p.clip_norm),
        noise_multiplier=hyper("privacy.noise_multiplier", float(sigma)),
        sampling=p.sampling,
        sample_rate=q,
        m_max=m_max,
        expected_batch_size=expected,
        microbatch=c.perf.microbatch,
        clipping=p.clipping,
    )
    info = {
        "noise_multiplier": float(sigma),
        "sample_rate": float(q),
        "delta": p.delta,
        "accountant": p.accountant,
        "sampling": p.sampling,
        "clip_norm": p.clip_norm,
        "steps_per_round": _steps_per_round(c),
    }
    return oracle, info


def _central_privacy(c):
    from redeem_jax.privacy.analysis import accounting

    p = c.privacy
    sigma = p.noise_multiplier
    if p.target_epsilon > 0:
        try:
            sigma = accounting.noise_multiplier_for(
                p.target_epsilon, 1.0, c.num_rounds, p.delta, accountant=p.accountant, sampling="poisson"
            )
        except ValueError as e:
            raise ConfigError(f"config.privacy.target_epsilon: {e}") from e
    cfg = {
        "clip_norm": float(p.clip_norm),
        "noise_multiplier": hyper("privacy.noise_multiplier", float(sigma)),
        "secure": True,
        "num_nodes": c.num_nodes,
    }
    info = {
        "noise_multiplier": float(sigma),
        "sample_rate": 1.0,
        "delta": p.delta,
        "accountant": p.accountant,
        "sampling": "poisson",
        "clip_norm": p.clip_norm,
        "steps_per_round": 1,
    }
    return cfg, info


def _attack_options(c, name: str) -> dict:
    from redeem_jax.byzantine import attacks

    opt = attacks.STRENGTH.get(name)
    return {opt: hyper("byzantine.strength", float(c.byzantine.strength))} if opt else {}


def _aggregator(name: str, n: int, f: int):
    from redeem_jax.byzantine import aggregators

    try:
        rule = aggregators.get(name)
        aggregators.check_preconditions(name, n, f)
    except ValueError as e:
        raise ConfigError(f"config.aggregation.rule: {e}") from e
    if name.split("+")[-1] == "centered_clipping":  # stateful: starts from its previous output (the paper's)
        rule = _stateful(rule)
    return rule


def _stateful(rule):
    def stateful_rule(x, f, mask=None, start=None):
        return rule(x, f, mask=mask, start=start)

    stateful_rule.stateful = True
    stateful_rule.__name__ = getattr(rule, "__name__", "rule")
    return stateful_rule


def _vector_tamper(c, attack: str, aggregator=None, agg_f=None):
    from redeem_jax.byzantine import attacks

    if attack == "mimic":
        return _channels.mimic_online()
    opts = _attack_options(c, attack)
    if attack.endswith("_opt"):
        opts["aggregator"] = aggregator
        opts["agg_f"] = agg_f
    return _channels.vector_tamper(attacks.get(attack), attack, **opts)


def _live(tamper, live: int):
    """The attack with the model's dead padding kept at zero (``live`` > 0: the live count)."""
    return _channels.live_only(tamper, live) if tamper is not None and live else tamper


def _server_channel(c, byz: np.ndarray, live: int = 0) -> Channel:
    f = int(byz.sum())
    attack = c.byzantine.attack if f else "none"
    names = _config._registry_names()
    tol = f if c.aggregation.tolerance < 0 else c.aggregation.tolerance
    rule = None if c.aggregation.rule == "mean" else _aggregator(c.aggregation.rule, c.num_nodes, tol)
    tamper = None
    if attack in names["VECTOR_ATTACKS"]:
        # A line-searched attack scores its factor against the rule as a stateless call (centered
        # clipping then starts from the median): the attacker cannot see the server's state.
        agg = (lambda x, g, mask=None: masked_mean(x, mask)) if rule is None else rule
        tamper = _live(_vector_tamper(c, attack, agg, tol), live)
    central = _central_privacy(c)[0] if c.privacy.mode == "central" else None
    try:
        return _channels.server(
            rule=rule, f=tol, byzantine=byz, attack=tamper, message_dtype=c.perf.message_dtype, central_dp=central
        )
    except ValueError as e:
        raise ConfigError(f"config.privacy.clip_norm: {e}") from e


def _mesh(c):
    if not c.perf.mesh:
        return None
    from redeem_jax.network import sharding

    try:
        return sharding.make_mesh(c.perf.mesh, num_nodes=c.num_nodes)
    except ValueError as e:
        raise ConfigError(f"config.perf.mesh: {e}") from e


def _graph_channel(c, topo, byz: np.ndarray, exchange: Exchange, live: int = 0) -> Channel:
    from redeem_jax.byzantine import attacks, rules

    f = int(byz.sum())
    attack = c.byzantine.attack if f else "none"
    names = _config._registry_names()
    mesh = _mesh(c)
    plain = _channels.gossip(topo, c.perf.gossip, mesh)
    if not exchange.robust:
        channel = plain  # a conservation-preserving exchange: no robust rule, no tampering
    else:
        b = max_byzantine_neighbours(topo, byz) if c.aggregation.tolerance < 0 else c.aggregation.tolerance
        tamper = None
        if attack in names["VECTOR_ATTACKS"] or attack in names["EDGE_ATTACKS"]:
            opts = _attack_options(c, attack)
            if attack == "spectral":
                tamper = _channels.edge_tamper(attacks.make_spectral_attack(topo, byz), attack, **opts)
            elif attack == "dissensus":
                tamper = _channels.edge_tamper(attacks.dissensus, attack, **opts)
            elif attack.endswith("_opt"):
                raise ConfigError(
                    f"config.byzantine.attack: {attack!r} line-searches against a server's rule; "
                    "in gossip use alie, ipm, sign_flip, ... or dissensus/spectral"
                )
            elif c.byzantine.view == "global":
                tamper = _channels.global_view(_vector_tamper(c, attack), byz)
            else:
                tamper = _channels.edge_tamper(attacks.lift(attack), attack, **opts)
        rule_name = c.aggregation.rule
        if rule_name == "mean" and tamper is None:
            channel = plain
        else:
            if rule_name == "mean":
                rule = "gossip"
            elif rule_name in rules.DECENTRALIZED_RULES:
                rule = rule_name
            else:
                rule = _aggregator(rule_name, topo.K + 1, b)
            channel = _channels.robust_gossip(topo, rule, b, byz, _live(tamper, live))
    if c.perf.message_dtype not in ("float32",) and exchange.compression is None:
        channel = chain(_channels.round_messages(c.perf.message_dtype), channel)
    if exchange.compression is not None:
        channel = _compressed(c, channel, exchange.compression)
    return channel


def _compressed(c, inner: Channel, how: str) -> Channel:
    from redeem_jax.network import compress

    opts = {"ratio": c.compression.ratio} if c.compression.name in ("top_k", "random_k") else {}
    if c.compression.name == "qsgd":
        opts = {"levels": c.compression.levels}
    try:
        q = compress.get(c.compression.name, **opts)
    except ValueError as e:
        raise ConfigError(f"config.compression.name: {e}") from e
    gamma = hyper("compression.gamma", c.compression.gamma)
    if how == "choco":
        return _channels.choco(inner, q, gamma)
    if how == "error_feedback":
        return _channels.error_feedback(inner, q, gamma)
    raise ConfigError(f"config.algorithm.name: unknown compression scheme {how!r} declared by {c.algorithm.name}")


def _channels_for(c, algorithm: Algorithm, topo, byz, live: int = 0) -> dict[str, Channel]:
    compressed = any(e.compression for e in algorithm.exchanges.values())
    defaults = _config.base_config().compression
    if not compressed and any(c.compression[k] != defaults[k] for k in ("name",)):
        raise ConfigError(
            f"config.compression.name: {c.algorithm.name} sends its messages uncompressed; "
            "use algorithm.name = choco_sgd or deepsqueeze"
        )
    out = {}
    for name, ex in algorithm.exchanges.items():
        out[name] = _server_channel(c, byz, live) if ex.over == "server" else _graph_channel(c, topo, byz, ex, live)
    return out


def _base_and_adapters(c, model, ds):
    """``model.init_from`` (every node starts from a local checkpoint) and ``model.lora`` (the
    rows become LoRA adapters over that frozen base, stored once: ``rj.lora``). Returns the model
    the nodes train and the :class:`rj.lora.LoraSpec` (None without adapters)."""
    lo = c.model.lora
    if not c.model.init_from and not lo.rank:
        return model, None
    from redeem_jax import lora as _lora

    if lo.rank and "personal" in _algorithms.options(c.algorithm.name):
        raise ConfigError(f"config.model.lora.rank: {c.algorithm.name} splits the model's own row; use rank 0")
    if lo.rank and lo.aggregation == "product" and c.algorithm.name == "diloco":
        raise ConfigError(
            "config.model.lora.aggregation: diloco exchanges pseudo-gradients (differences of adapters), "
            "whose products mean nothing; use ffa (exact) or naive"
        )
    try:
        base = _lora.load_base(model, c.model.init_from) if c.model.init_from else None
        if not lo.rank:
            return _lora.with_base(model, base), None
        example = np.zeros((1, *ds.input_shape), np.int32 if ds.task == "language" else np.float32)
        return _lora.lora_model(
            model,
            example,
            rank=lo.rank,
            alpha=lo.alpha or None,
            targets=tuple(t.strip() for t in lo.targets.split(",")),
            aggregation=lo.aggregation,
            base=base,
            key=jax.random.fold_in(jax.random.PRNGKey(c.seed), 0x10A4),
        )
    except ValueError as e:  # the messages name the field: "model.init_from: ...", "model.lora...."
        raise ConfigError(f"config.{e}") from e


# --------------------------------------------------------------------------- #
# evaluation
# --------------------------------------------------------------------------- #
def evaluate_fn(model: _models.Model, x_test, y_test, max_nodes: int = 0, local_test=None) -> Callable:
    """``evaluate(params[N, d], honest[N]) -> dict`` of test metrics.

    The model averaged over honest nodes (what D-SGD theory bounds) and every node's own
    model, summarised over honest nodes as mean / std / min / max. ``max_nodes > 0`` takes
    the per-node statistics over that many evenly spaced nodes (scoring 10^6 models on the
    whole test set costs more than the rounds); the averaged model still uses every node.

    ``local_test = (x [N, T, ...], y [N, T, ...], sizes [N])`` (``NodeData.test_*``): also every
    node's model on its own local test set, the personalized accuracy of e.g. Ditto (Li et al.
    2021, Sec. 5), as ``local_test_{loss,accuracy}_{mean,std,min,max}`` over the honest nodes
    that have a local test example.

    Language models also get ``perplexity`` = exp(mean per-token cross-entropy) (Jelinek et al.
    1977) beside ``loss``: ``test_perplexity`` of the averaged model on the held-out text,
    ``node_test_perplexity_*`` and ``local_test_perplexity_*`` per node (each node's exp of its
    own mean loss; see :func:`redeem_jax.metrics.perplexity`).
    """
    x_test = jnp.asarray(x_test)
    y_test = jnp.asarray(y_test)
    ones = jnp.ones((x_test.shape[0],), bool)
    if local_test is not None:
        lx, ly, lsizes = (np.asarray(a) for a in local_test)
        lmask = np.arange(lx.shape[1])[None, :] < lsizes[:, None]  # [N, T]: real rows of each node

    def local_metrics(params, honest, idx):
        """Every node's own model on its own local test rows: one vmap over nodes, masks for padding."""
        x, y, m = (jnp.asarray(a if idx is None else a[idx]) for a in (lx, ly, lmask))
        per_node = jax.vmap(lambda p, xi, yi, mi: _models.loss_and_metrics(model, p, xi, yi, mi)[1])(params, x, y, m)
        if model.task == "language":
            per_node["perplexity"] = jnp.exp(per_node["loss"])
        return _node_stats("local_test", per_node, honest & jnp.any(m, axis=1))

    def node_metrics(p):
        out = _models.loss_and_metrics(model, p, x_test, y_test, ones)[1]
        if model.task == "language":  # exp of the mean per-token cross-entropy on the held-out text
            out["perplexity"] = jnp.exp(out["loss"])
        return out

    @jax.jit
    def evaluate(params, honest):
        xbar = masked_mean(params, honest)
        out = {f"test_{k}": v for k, v in node_metrics(xbar).items()}
        idx = None
        if 0 < max_nodes < params.shape[0]:
            idx = np.linspace(0, params.shape[0] - 1, max_nodes).round().astype(np.int64)
            params, honest = params[idx], honest[idx]
        per_node = jax.lax.map(node_metrics, params, batch_size=min(64, params.shape[0]))
        out.update(_node_stats("node_test", per_node, honest))
        if local_test is not None:
            out.update(local_metrics(params, honest, idx))
        return out

    return evaluate


def _node_stats(prefix: str, per_node: dict, keep) -> dict:
    """Mean / std / min (the worst node's accuracy) / max of per-node metrics over the ``keep`` nodes."""
    w = keep.astype(jnp.float32)
    out = {}
    for k, v in per_node.items():
        mean = jnp.sum(v * w) / jnp.sum(w)
        out[f"{prefix}_{k}_mean"] = mean
        out[f"{prefix}_{k}_std"] = jnp.sqrt(jnp.sum(w * (v - mean) ** 2) / jnp.sum(w))
        out[f"{prefix}_{k}_min"] = jnp.min(jnp.where(keep, v, jnp.inf))
        out[f"{prefix}_{k}_max"] = jnp.max(jnp.where(keep, v, -jnp.inf))
    return out


# --------------------------------------------------------------------------- #
# the whole experiment
# --------------------------------------------------------------------------- #
def build(config, topology=None) -> Experiment:
    """Validate ``config`` and build the network, data, model and the round's mechanisms.

    ``topology`` (an ``rj.topology.Topology`` with ``num_nodes`` nodes) replaces the config's
    ``topology`` section, for graphs no family describes (e.g. ``from_networkx``).
    """
    c = _config.validate(config)
    if c.compare.key:
        raise ConfigError("config.compare.key: build() makes one experiment; use rj.run for comparisons")
    if topology is not None and topology.n != c.num_nodes:
        raise ConfigError(f"config.num_nodes: {c.num_nodes} but the given topology has {topology.n} nodes")
    topo = _topology_from_config(c) if topology is None else topology
    ds = _dataset_from_config(c)
    try:
        node_data, summary = _data.distribute_with_summary(
            ds,
            c.num_nodes,
            method=_partition_method(c),
            seed=data_seed(c),
            alpha=c.data.alpha,
            shards_per_node=c.data.shards_per_node,
            quantity_alpha=c.data.quantity_alpha,
            local_test_fraction=c.data.get("local_test_fraction", 0.0),
            # by_source: whole documents to nodes (the text datasets' source of every window)
            **({"groups": ds.info["train_source"]} if c.data.partition == "by_source" else {}),
        )
    except ValueError as e:
        raise ConfigError(f"config.data.partition: {e}") from e
    model = _models.get(
        c.model.name,
        ds.input_shape,
        ds.num_classes,
        ds.task,
        hidden=tuple(c.model.hidden),
        channels=tuple(c.model.channels),
        d_model=c.model.d_model,
        num_heads=c.model.num_heads,
        num_layers=c.model.num_layers,
        l2=c.model.l2,
        mlp_ratio=c.model.mlp_ratio,
        max_len=c.model.max_len,
        dtype=c.model.dtype,
        remat=c.model.remat,
    )
    model, lora_spec = _base_and_adapters(c, model, ds)
    byz = _byzantine_from_config(c, topo)
    if c.byzantine.attack == "label_flip":
        from redeem_jax.byzantine import attacks

        node_data = attacks.poison_node_data(node_data, byz, ds.num_classes)
    honest = ~byz

    shared = _shared_mask(c, model)
    algorithm, algo_hypers = _algorithm(c, _optimizer(c), shared)
    if algorithm.validate is not None:
        try:
            algorithm.validate(topo)
        except ValueError as e:
            raise ConfigError(f"config.algorithm.name: {e}") from e
    channels = _channels_for(c, algorithm, topo, byz, model.num_live if model.pad else 0)
    if shared is not None:  # FedPer / FedRep: only the body goes through every exchange
        channels = {k: _channels.shared_coordinates(ch, shared) for k, ch in channels.items()}
    if lora_spec is not None and lora_spec.aggregation == "product":  # models' exchanges average BA
        from redeem_jax import lora as _lora

        channels = {
            k: _lora.product_channel(ch, lora_spec) if algorithm.exchanges[k].robust else ch
            for k, ch in channels.items()
        }
    oracle, privacy = _privacy(c, model, node_data)
    if c.oracle.grad_noise > 0:  # 0 leaves the oracle untouched (no extra key, no hyper-parameter)
        from redeem_jax.local import oracles

        oracle = oracles.with_gradient_noise(oracle, hyper("oracle.grad_noise", c.oracle.grad_noise))
    if c.privacy.mode == "central":
        privacy = _central_privacy(c)[1]
    hp = hypers_of(algorithm, oracle, *channels.values(), list(algo_hypers), topo)
    counter: list = []
    step = _round.make_step(algorithm, oracle, channels, topology=topo, honest=honest, trace_counter=counter)
    step = _channels.with_channel_metrics(step)  # e.g. robust_fallback_nodes into metrics.jsonl
    n_test = min(c.eval.max_test_examples, ds.x_test.shape[0])
    local_test = None
    if node_data.test_x is not None:  # data.local_test_fraction > 0: every node also scored on its own test set
        local_test = (node_data.test_x, node_data.test_y, node_data.test_sizes)
    evaluate = evaluate_fn(model, ds.x_test[:n_test], ds.y_test[:n_test], c.eval.max_nodes, local_test)
    return Experiment(
        c,
        topo,
        ds,
        node_data,
        summary,
        model,
        algorithm,
        oracle,
        channels,
        step,
        hp,
        evaluate,
        honest,
        counter,
        privacy,
        lora_spec,
    )

"""Experiment configuration: the full schema with defaults, and validation.

Configs are ``ml_collections.ConfigDict`` (big_vision style: ``configs/<name>.py`` holds a
``get_config()``). Every field is checked here, where the config is read, with a message
naming the field and its allowed values; library code below the runner never sees a config.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import ml_collections

__all__ = [
    "base_config",
    "validate",
    "ConfigError",
    "set_field",
    "parse_overrides",
    "SCHEMA",
    "check_field",
    "base_value",
    "algorithm_exchanges",
    "is_federated",
    "inapplicable",
    "MAX_SEED",
]


# Names come from the registries of the modules that own them; nothing here mirrors a list.
def _registry_names():
    from redeem_jax import algorithms, models
    from redeem_jax.byzantine import attacks, rules
    from redeem_jax.data import datasets
    from redeem_jax.local import optim
    from redeem_jax.network import compress, dynamic, gossip, topology

    vector = tuple(attacks.ATTACKS)
    edge = ("dissensus", "spectral")
    return {
        "TOPOLOGIES": tuple(topology.FAMILIES) + dynamic.FAMILIES,
        "STATIC_TOPOLOGIES": tuple(topology.FAMILIES),
        "MIXING": tuple(topology.WEIGHT_RULES),
        "DATASETS": tuple(datasets.list_datasets()),
        "MODEL_NAMES": tuple(models.MODELS),
        "OPTIMIZERS": tuple(optim.OPTIMIZERS),
        "ALGORITHMS": tuple(algorithms.REGISTRY),
        "GOSSIP_METHODS": tuple(gossip.METHODS),
        "VECTOR_ATTACKS": vector,
        "EDGE_ATTACKS": edge,
        "ATTACK_NAMES": ("none", "label_flip") + vector + edge,
        "DECENTRALIZED_RULES": tuple(r for r in rules.DECENTRALIZED_RULES if r != "gossip"),
        "COMPRESSORS": tuple(compress.COMPRESSORS),
    }


def __getattr__(name):  # TOPOLOGIES, ALGORITHMS, ...: always the registries' current names
    if name.startswith("__"):  # `from ... import` probes __path__: no reason to import every registry (and JAX)
        raise AttributeError(name)
    names = _registry_names()
    if name in names:
        return names[name]
    raise AttributeError(name)


PARTITIONS = ("iid", "dirichlet", "shards", "quantity", "contiguous", "by_source")
TEXT_DATASETS = ("text", "text_file")  # byte-level language modelling (the transformer)
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")
ORDERS = ("atc", "cta")
INITS = ("same", "independent")
PLACEMENTS = ("random", "highest_degree", "given")
# Seeds reach the device as uint32 (jax.random.PRNGKey, the sweep's seed axis): 2**32 and 0 would
# be the same run, so a seed must lie in [0, 2**32).
MAX_SEED = 2**32 - 1


class ConfigError(ValueError):
    """An invalid configuration field; the message names the field and what is allowed."""


def base_config() -> ml_collections.ConfigDict:
    """Every field the runner reads, with its default. Experiment configs override these."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_nodes = 16
    c.num_rounds = 200
    c.eval_every = 10
    c.checkpoint_every = 50  # rounds; 0 disables checkpoints; a multiple of eval_every
    c.resume = True  # continue from the latest checkpoint in workdir; False clears its checkpoints and metrics
    c.progress = True
    c.plots = True
    c.init = "same"  # all nodes start from one draw, or "independent"

    c.topology = ml_collections.ConfigDict()
    c.topology.name = "ring"
    c.topology.weights = "metropolis_hastings"
    c.topology.p = 0.3  # erdos_renyi edge probability; small_world rewiring probability
    c.topology.k = 4  # random_regular degree; small_world neighbours
    c.topology.radius = 0.4  # random_geometric
    c.topology.seed = -1  # -1: use the run's seed
    # Drawn every round (docs/dynamic_networks.md): epidemic_oracle / epidemic_local fan-out s;
    # random_matching, pairwise and k_out (k) sample the static graph `base` (built with p, k,
    # radius, weights). link_up < 1 or online < 1 make any static graph unreliable: each link up
    # with probability link_up, each node online with probability online, every round; missing
    # weight goes back to the node itself ("self": doubly stochastic, the mean is kept) or the
    # received weights are renormalized ("renormalize": the peer simulators' rule; the mean drifts).
    c.topology.base = "ring"
    c.topology.s = 1
    # Padded fan-out of epidemic_oracle / epidemic_local when > 0: s becomes a traced
    # hyper-parameter (slots >= s masked), so rj.sweep over topology.s compiles once; a sweep
    # sets it to its largest s. 0: the static draw of width s.
    c.topology.s_max = 0
    c.topology.link_up = 1.0
    c.topology.online = 1.0
    c.topology.policy = "self"
    # Stragglers: each node skips its local step with probability straggle every round (it still
    # gossips); 0 keeps every node active and the run exactly as without the option.
    c.topology.straggle = 0.0

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"
    c.data.partition = "iid"
    c.data.alpha = 0.5  # Dirichlet label skew
    c.data.shards_per_node = 2
    c.data.quantity_alpha = 1.0
    c.data.batch_size = 32  # per node and local step; >= node size means full batch
    c.data.path = ""  # local files for mnist / fashion_mnist / cifar10
    c.data.num_examples = 2000  # synthetic
    c.data.dim = 10  # synthetic
    c.data.noise = 0.1  # synthetic
    c.data.heterogeneity = 0.0  # synthetic linear: spread of the nodes' optima
    c.data.whiten = False  # synthetic linear: (1/m)AᵢᵀAᵢ = I on every node
    c.data.seq_len = 64  # text
    c.data.seed = -1  # the data draw and partition; -1: use the run's seed
    # Fraction of every node's examples held out, stratified by label, as its local test set
    # (local_test_* metrics, docs/personalization.md); 0: no local test set, the split of before.
    c.data.local_test_fraction = 0.0

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"
    c.model.hidden = (64,)
    c.model.channels = (16, 32)
    c.model.d_model = 64
    c.model.num_heads = 4
    c.model.num_layers = 2
    c.model.l2 = 0.0
    # A base model read from a local checkpoint (.npz: a flat vector or one array per parameter
    # name; or an orbax checkpoint directory): every node starts from it (rj.lora.load_base).
    c.model.init_from = ""
    # LoRA adapters (rj.lora, Hu et al. 2021): rank 0 is off. The nodes' rows hold only the
    # adapters; the frozen base (init_from, or a draw from the run's seed) is stored once.
    # alpha 0 means alpha = rank (scale alpha/rank = 1); targets: comma-separated attention,
    # mlp, head; aggregation: naive (average A and B), ffa (A frozen and shared, only B
    # exchanged: exact), product (average the products BA, refactorised at rank r by SVD).
    c.model.lora = ml_collections.ConfigDict()
    c.model.lora.rank = 0
    c.model.lora.alpha = 0.0
    c.model.lora.targets = "attention,mlp"
    c.model.lora.aggregation = "naive"
    # Transformer only (docs/large_models.md): MLP width = mlp_ratio·d_model; max_len positions
    # (0: data.seq_len); dtype the compute dtype (bfloat16: bf16 compute, float32 master rows);
    # remat recomputes each block's activations in the backward pass (less memory, same numbers).
    c.model.mlp_ratio = 4
    c.model.max_len = 0
    c.model.dtype = "float32"
    c.model.remat = False

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9  # for momentum / nesterov
    c.optimizer.weight_decay = 0.0
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_rounds = 0
    c.optimizer.decay_rate = 0.1  # step schedule
    c.optimizer.decay_every = 100  # step schedule, rounds
    c.optimizer.grad_accum = 1  # each local gradient as the mean of this many microbatches (less memory)

    # The gradient oracle: additive Gaussian gradient noise N(0, grad_noise² I) on every node's
    # stochastic gradient at every local step (Lian et al. 2017's σ; rj.local.oracles.with_gradient_noise).
    # 0: no noise, the oracle of before bit for bit; > 0: a hyper-parameter (rj.sweep vmaps it).
    c.oracle = ml_collections.ConfigDict()
    c.oracle.grad_noise = 0.0

    # The algorithm (rj.algorithms.REGISTRY) and its options: the keyword options of its factory,
    # e.g. dsgd(order, local_steps), diging(order), fedavg(local_steps). A field the chosen
    # algorithm does not take must keep its default.
    c.algorithm = ml_collections.ConfigDict()
    c.algorithm.name = "dsgd"  # dsgd | fedavg | diging | exact_diffusion | d2 | choco_sgd | deepsqueeze | ...
    c.algorithm.order = "atc"
    c.algorithm.local_steps = 1
    c.algorithm.clusters = 2  # ifca: the number k of shared cluster models (Ghosh et al. 2020)

    # Compressed messages (rj.network.compress) for algorithms whose model exchange is compressed
    # (choco_sgd: Choco-Gossip public copies; deepsqueeze: error feedback).
    c.compression = ml_collections.ConfigDict()
    c.compression.name = "identity"  # identity | top_k | random_k | qsgd | sign
    c.compression.ratio = 0.1  # top_k / random_k: k = ratio · d coordinates
    c.compression.levels = 16  # qsgd: s quantization levels
    c.compression.gamma = 1.0  # the consensus step γ of Choco-Gossip / DeepSqueeze

    # Byzantine nodes: how many, where, and what they send (rj.attacks).
    c.byzantine = ml_collections.ConfigDict()
    c.byzantine.num = 0
    c.byzantine.placement = "random"  # random | highest_degree | given
    c.byzantine.ids = ()  # for placement = "given"
    c.byzantine.attack = "none"
    c.byzantine.strength = -1.0  # the attack's main factor (ALIE z, IPM ε, dissensus ε, ...); -1: its default
    c.byzantine.view = (
        "global"  # vector attacks in gossip: computed from all honest rows, or per target ("neighbourhood")
    )

    # How each node (or the server) combines what it receives.
    c.aggregation = ml_collections.ConfigDict()
    c.aggregation.rule = "mean"  # mean (plain gossip / FedAvg), an rj.aggregators rule or composition
    #                              ("nnm+trimmed_mean"), or a decentralized rule: clipped_gossip, ios, cs_plus
    c.aggregation.tolerance = -1  # f the rule assumes; -1: the true count (server) or the largest number of
    #                               Byzantine neighbours of an honest node (gossip)

    # Differential privacy of every node's data (rj.privacy).
    c.privacy = ml_collections.ConfigDict()
    c.privacy.mode = "none"  # none | dp_sgd (example-level DP at every node) | central (node-level
    #                          DP-FedAvg: clipped updates, secure aggregation, noise once at the server)
    c.privacy.clip_norm = 1.0
    c.privacy.noise_multiplier = 1.0  # σ; ignored when target_epsilon > 0
    c.privacy.target_epsilon = -1.0  # > 0: calibrate σ so that the run spends this ε
    c.privacy.delta = 1e-5
    c.privacy.sampling = "fixed"  # fixed (batch_size rows without replacement; replace-one, sensitivity 2C) | poisson
    #                               (add/remove-one, sensitivity C: the tight accounting; see docs/privacy_accounting.md)
    c.privacy.sample_rate = -1.0  # poisson: q; -1 means batch_size / (mean shard size)
    c.privacy.accountant = "rdp"  # rdp | pld
    # Write each round's realised mixing matrix, W [rounds, N, N], to workdir/mixing_matrices.npz for
    # network-DP leakage from the graphs a run really drew (rj.privacy.network_dp.leakage_from_run).
    c.privacy.network_dp_record = False
    c.privacy.clipping = "auto"  # ghost (dense models, no per-example gradients) | vmap | auto

    # Performance knobs: how a run is computed, never what it computes (beyond dtype rounding).
    c.perf = ml_collections.ConfigDict()
    c.perf.gossip = "auto"  # auto | dense (W @ x) | sparse (gather) | roll (circulant graphs)
    c.perf.message_dtype = "float32"  # float32 | bfloat16 | float16: what nodes send to each other
    c.perf.donate = True  # donate the network state's buffers to each scanned chunk (halves peak memory)
    c.perf.microbatch = 0  # DP vmap clipping: per-example gradients this many at a time (0: all)
    c.perf.mesh = ()  # () one device; (k,) nodes over k devices; (k, m) nodes x model; -1 entries: all devices

    # Several hosts (jax.distributed.initialize); empty: read JAX's environment variables, or one process.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator = ""  # "host:port" of process 0
    c.distributed.num_processes = 1
    c.distributed.process_id = -1  # -1: from the environment

    c.eval = ml_collections.ConfigDict()
    c.eval.max_test_examples = 2000  # the test set is cut to this many examples
    c.eval.max_nodes = 0  # > 0: per-node test statistics over this many evenly spaced nodes (huge networks)

    # Run the same config for several values of one field (shapes may change, so this loops).
    c.compare = ml_collections.ConfigDict()
    c.compare.key = ""  # e.g. "topology.name"
    c.compare.choices = ()
    c.compare.reference = ""  # an extra run with these overrides, e.g. "byzantine.num=0" (no attackers)
    return c


# --- validation ----------------------------------------------------------------------------


def _tagged(check, kind, **bounds):
    """``check`` with its kind and bounds as attributes (read by the tests that fuzz the schema)."""
    check.kind = kind
    check.bounds = bounds
    return check


def _choice(allowed):
    """``allowed``: a tuple, or the name of a registry list (looked up when checked)."""

    def check(v):
        names = _registry_names()[allowed] if isinstance(allowed, str) else allowed
        # A list or a dict is unhashable: `in` on a tuple of strings compares, it never raises.
        if not isinstance(v, str) or v not in names:
            return f"{v!r} is not one of {', '.join(map(str, names))}"

    return _tagged(check, "choice", allowed=allowed)


def _int(lo=None, hi=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {v!r}"
        if lo is not None and v < lo:
            return f"must be >= {lo}, got {v}"
        if hi is not None and v > hi:
            return f"must be <= {hi}, got {v}"

    return _tagged(check, "int", lo=lo, hi=hi)


def _float(lo=None, hi=None, lo_open=False, hi_open=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"must be a finite number, got {v!r}"
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo}, got {v}"
        if hi is not None and (v >= hi if hi_open else v > hi):
            return f"must be {'<' if hi_open else '<='} {hi}, got {v}"

    return _tagged(check, "float", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)


def _bool(v):
    if not isinstance(v, bool):
        return f"must be True or False, got {v!r}"


def _str(v):
    if not isinstance(v, str):
        return f"must be a string, got {v!r}"


def _int_tuple(min_len=0):
    def check(v):
        if (
            not isinstance(v, (tuple, list))
            or len(v) < min_len
            or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in v)
        ):
            return f"must be a tuple of positive integers (at least {min_len}), got {v!r}"

    return _tagged(check, "int_tuple", min_len=min_len)


def _positive_or_inf(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or v <= 0:
        return f"must be a positive number (or inf), got {v!r}"


def _lora_targets(v):
    kinds = ("attention", "mlp", "head")
    if not isinstance(v, str) or not v or any(t.strip() not in kinds for t in v.split(",")):
        return f"must be a comma-separated list of {', '.join(kinds)}, got {v!r}"


_tagged(_lora_targets, "str")  # what the schema fuzz feeds it: non-strings, all refused


def _mesh_shape(v):
    if (
        not isinstance(v, (tuple, list))
        or len(v) > 2
        or not all(isinstance(h, int) and not isinstance(h, bool) and (h >= 1 or h == -1) for h in v)
    ):
        return f"must be (), (nodes,) or (nodes, model) with positive sizes or -1 (all devices), got {v!r}"


def _any_tuple(v):
    if not isinstance(v, (tuple, list)):
        return f"must be a tuple of values, got {v!r}"


for _check, _kind in (
    (_bool, "bool"),
    (_str, "str"),
    (_positive_or_inf, "positive_or_inf"),
    (_mesh_shape, "mesh"),
    (_any_tuple, "tuple"),
):
    _tagged(_check, _kind)


SCHEMA: dict[str, Callable[[Any], str | None]] = {
    "seed": _int(0, MAX_SEED),
    "num_nodes": _int(1),
    "num_rounds": _int(1),
    "eval_every": _int(1),
    "checkpoint_every": _int(0),
    "resume": _bool,
    "progress": _bool,
    "plots": _bool,
    "init": _choice(INITS),
    "topology.name": _choice("TOPOLOGIES"),
    "topology.weights": _choice("MIXING"),
    "topology.p": _float(0.0, 1.0, lo_open=True),
    "topology.k": _int(1),
    "topology.radius": _float(0.0, lo_open=True),
    "topology.seed": _int(-1, MAX_SEED),
    "topology.base": _choice("STATIC_TOPOLOGIES"),
    "topology.s": _int(1),
    "topology.s_max": _int(0),
    "topology.link_up": _float(0.0, 1.0, lo_open=True),
    "topology.online": _float(0.0, 1.0, lo_open=True),
    "topology.policy": _choice(("self", "renormalize")),
    "topology.straggle": _float(0.0, 1.0, hi_open=True),
    "data.name": _choice("DATASETS"),
    "data.partition": _choice(PARTITIONS),
    "data.alpha": _float(0.0, lo_open=True),
    "data.shards_per_node": _int(1),
    "data.quantity_alpha": _float(0.0, lo_open=True),
    "data.batch_size": _int(1),
    "data.path": _str,
    "data.num_examples": _int(2),
    "data.dim": _int(1),
    "data.noise": _float(0.0),
    "data.heterogeneity": _float(0.0),
    "data.whiten": _bool,
    "data.seq_len": _int(2),
    "data.seed": _int(-1, MAX_SEED),
    "data.local_test_fraction": _float(0.0, 1.0, hi_open=True),
    "model.name": _choice("MODEL_NAMES"),
    "model.hidden": _int_tuple(0),
    "model.channels": _int_tuple(1),
    "model.d_model": _int(1),
    "model.num_heads": _int(1),
    "model.num_layers": _int(1),
    "model.l2": _float(0.0),
    "model.init_from": _str,
    "model.lora.rank": _int(0),
    "model.lora.alpha": _float(0.0),
    "model.lora.targets": _lora_targets,
    "model.lora.aggregation": _choice(("naive", "ffa", "product")),
    "model.mlp_ratio": _int(1),
    "model.max_len": _int(0),
    "model.dtype": _choice(("float32", "bfloat16")),
    "model.remat": _bool,
    "optimizer.name": _choice("OPTIMIZERS"),
    "optimizer.learning_rate": _float(0.0, lo_open=True),
    "optimizer.momentum": _float(0.0, 1.0, hi_open=True),
    "optimizer.weight_decay": _float(0.0),
    "optimizer.schedule": _choice(SCHEDULES),
    "optimizer.warmup_rounds": _int(0),
    "optimizer.decay_rate": _float(0.0, 1.0, lo_open=True),
    "optimizer.decay_every": _int(1),
    "optimizer.grad_accum": _int(1),
    "algorithm.name": _choice("ALGORITHMS"),
    "compression.name": _choice("COMPRESSORS"),
    "compression.ratio": _float(0.0, 1.0, lo_open=True),
    "compression.levels": _int(1),
    "compression.gamma": _float(0.0, lo_open=True),
    "algorithm.order": _choice(ORDERS),
    "algorithm.local_steps": _int(1),
    "algorithm.clusters": _int(1),
    "byzantine.num": _int(0),
    "byzantine.placement": _choice(PLACEMENTS),
    "byzantine.ids": _any_tuple,
    "byzantine.attack": _choice("ATTACK_NAMES"),
    "byzantine.strength": _float(),
    "byzantine.view": _choice(("global", "neighbourhood")),
    "aggregation.rule": _str,
    "aggregation.tolerance": _int(-1),
    "privacy.mode": _choice(("none", "dp_sgd", "central")),
    "oracle.grad_noise": _float(0.0),
    "privacy.clip_norm": _positive_or_inf,
    "privacy.noise_multiplier": _float(0.0),
    "privacy.target_epsilon": _float(),
    "privacy.delta": _float(0.0, 1.0, lo_open=True, hi_open=True),
    "privacy.sampling": _choice(("fixed", "poisson")),
    "privacy.sample_rate": _float(),
    "privacy.accountant": _choice(("rdp", "pld")),
    "privacy.clipping": _choice(("auto", "ghost", "vmap")),
    "privacy.network_dp_record": _bool,
    "perf.gossip": _choice("GOSSIP_METHODS"),
    "perf.message_dtype": _choice(("float32", "bfloat16", "float16")),
    "perf.donate": _bool,
    "perf.microbatch": _int(0),
    "perf.mesh": _mesh_shape,
    "distributed.coordinator": _str,
    "distributed.num_processes": _int(1),
    "distributed.process_id": _int(-1),
    "eval.max_test_examples": _int(1),
    "eval.max_nodes": _int(0),
    "compare.key": _str,
    "compare.choices": _any_tuple,
    "compare.reference": _str,
}


def _flatten(d, prefix="", empty=None):
    """``{"a.b": v}`` from nested dicts; ``empty`` (a list) collects the keys of empty dicts."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, (ml_collections.ConfigDict, dict)):
            if empty is not None and not len(v):
                empty.append(key)
            out.update(_flatten(v, key + ".", empty))
        else:
            out[key] = v
    return out


def validate(config) -> ml_collections.ConfigDict:
    """Fill defaults, check every field, and return a resolved copy of ``config``.

    Raises :class:`ConfigError` naming the first bad field (``config.<field>``) and the
    values it allows; unknown fields are refused too (a typo must not be silently ignored).
    """
    if not isinstance(config, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f"config: must be an ml_collections.ConfigDict or a dict, got {type(config).__name__}")
    empty: list = []
    user = _flatten(config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config), empty=empty)
    base = base_config()
    flat_base = _flatten(base.to_dict())
    extra = _algorithm_extra_options(user.get("algorithm.name", flat_base["algorithm.name"]), flat_base)
    flat_base.update(extra)
    for key in empty:  # an empty section is harmless; an empty dict where a value belongs is not
        if key in flat_base:
            raise ConfigError(f"config.{key}: {(SCHEMA[key]({}) if key in SCHEMA else None) or 'must be a value'}")
        if not any(k.startswith(key + ".") for k in flat_base):
            user[key] = {}
    for key in user:
        if key not in flat_base:
            import difflib

            same = [k for k in flat_base if k.split(".")[-1] == key.split(".")[-1] or k.startswith(key + ".")]
            # A misspelled dotted field (topology.nmae, topolgy.name): the closest field by spelling;
            # a bare name: the fields of that name, or of that section, else the closest by spelling.
            spelt = difflib.get_close_matches(key, list(flat_base), n=1, cutoff=0.6)
            near = (spelt or same) if "." in key else (same or spelt)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ConfigError(f"config.{key}: unknown field{hint}")
    resolved = base.to_dict()
    resolved["algorithm"].update({k.split(".", 1)[1]: v for k, v in extra.items()})
    for key, value in user.items():
        node = resolved
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        if isinstance(value, list):
            value = tuple(value)
        node[leaf] = value
    flat = _flatten(resolved)
    for key, check in SCHEMA.items():
        msg = check(flat[key])
        if msg:
            raise ConfigError(f"config.{key}: {msg}")
    _algorithm_checks(flat, _flatten(base.to_dict()))
    _cross_checks(flat)
    return ml_collections.ConfigDict(resolved)


def _algorithm_extra_options(name, flat_base) -> dict:
    """``{"algorithm.<option>": default}`` for the options of algorithm ``name`` that the base
    config does not have (e.g. those of an algorithm registered by the user)."""
    from redeem_jax import algorithms

    if not isinstance(name, str) or name not in algorithms.REGISTRY:
        return {}
    return {f"algorithm.{k}": v for k, v in algorithms.options(name).items() if f"algorithm.{k}" not in flat_base}


def _type_check(v, default):
    if isinstance(default, bool):
        return _bool(v)
    if isinstance(default, int):
        return _int()(v)
    if isinstance(default, float):
        return _float()(v)
    if isinstance(default, str):
        return _str(v)
    if isinstance(default, tuple):
        return _any_tuple(v)
    return None


def _algorithm_checks(c: dict, base: dict) -> None:
    from redeem_jax import algorithms

    name = c["algorithm.name"]
    opts = algorithms.options(name)
    for key in [k for k in c if k.startswith("algorithm.") and k != "algorithm.name"]:
        field = key.split(".", 1)[1]
        if field not in opts:
            if key in base and c[key] != base[key]:
                raise ConfigError(
                    f"config.{key}: {name} has no option {field!r}"
                    + (f" (its options: {', '.join(opts)})" if opts else " (it has no options)")
                )
            continue
        msg = _type_check(c[key], opts[field])
        if msg:
            raise ConfigError(f"config.{key}: {msg}")


def algorithm_exchanges(name: str, over: str | None = None) -> dict:
    """The exchanges algorithm ``name`` declares (built with a stand-in optimizer: cheap), with
    its ``over`` option (``"graph"`` / ``"server"``) when given and the algorithm has one."""
    from redeem_jax import algorithms
    from redeem_jax.local.optim import LocalOptimizer

    dummy = LocalOptimizer(lambda x: (), lambda g, s, x, ctx: (g, s), (), "dummy")
    kw = {"over": over} if over is not None and "over" in algorithms.options(name) else {}
    return dict(algorithms.get(name)(dummy, **kw).exchanges)


def is_federated(name: str, over: str | None = None) -> bool:
    """Whether algorithm ``name`` (with its ``algorithm.over`` option, for the personalized
    methods that take one) exchanges its models through a server."""
    ex = algorithm_exchanges(name, over)
    return bool(ex) and all(e.over == "server" for e in ex.values())


def _cross_checks(c: dict) -> None:
    if c["checkpoint_every"] and c["checkpoint_every"] % c["eval_every"]:
        raise ConfigError(
            f"config.checkpoint_every: must be 0 or a multiple of eval_every ({c['eval_every']}), "
            f"got {c['checkpoint_every']}"
        )
    if c["data.name"] in ("mnist", "fashion_mnist", "cifar10") and not c["data.path"]:
        raise ConfigError(
            f"config.data.path: dataset {c['data.name']!r} is read from local files; "
            "set data.path to an .npz file or a directory of IDX files"
        )
    if c["model.name"] == "transformer" and c["data.name"] not in TEXT_DATASETS:
        raise ConfigError("config.model.name: 'transformer' needs data.name = 'text' or 'text_file'")
    if c["data.name"] in TEXT_DATASETS and c["model.name"] != "transformer":
        raise ConfigError(
            f"config.model.name: data {c['data.name']!r} needs model 'transformer', got {c['model.name']!r}"
        )
    if c["data.name"] == "text_file" and not c["data.path"]:
        raise ConfigError("config.data.path: data.name 'text_file' reads a local text file or folder; set data.path")
    _language_model_checks(c)
    if c["data.name"] in ("linear", *TEXT_DATASETS) and c["data.partition"] in ("dirichlet", "shards"):
        raise ConfigError(
            f"config.data.partition: {c['data.partition']!r} needs class labels; "
            f"dataset {c['data.name']!r} allows iid, quantity, contiguous"
        )
    if c["model.name"] == "logistic" and c["data.name"] != "logistic":
        raise ConfigError("config.model.name: 'logistic' (one logit) needs the binary data.name = 'logistic'")
    _synthetic_size_checks(c)
    _rule_check(c)
    for key in _REFUSED_WHEN_INAPPLICABLE:
        why = inapplicable(c, key) if c[key] != base_value(key) else None
        if why:
            raise ConfigError(
                f"config.{key}: is set to {c[key]!r} but has no effect because {why}; "
                f"remove it (its default is {base_value(key)!r})"
            )
    _byzantine_checks(c)
    _privacy_checks(c)
    if c["compare.key"]:
        if c["compare.key"] not in SCHEMA or c["compare.key"].startswith("compare."):
            raise ConfigError(f"config.compare.key: {c['compare.key']!r} is not a config field")
        if not c["compare.choices"]:
            raise ConfigError("config.compare.choices: give at least one value to compare")
        for v in c["compare.choices"]:
            msg = SCHEMA[c["compare.key"]](v)
            if msg:
                raise ConfigError(f"config.compare.choices: value for {c['compare.key']} {msg}")
        for key, value in parse_overrides(c["compare.reference"]).items():
            if key not in SCHEMA or key.startswith("compare."):
                raise ConfigError(f"config.compare.reference: {key!r} is not a config field")
            msg = SCHEMA[key](value)
            if msg:
                raise ConfigError(f"config.compare.reference: value for {key} {msg}")


def _language_model_checks(c: dict) -> None:
    """The transformer's knobs, the by-source split and gradient accumulation where they apply."""
    if c["data.partition"] == "by_source" and c["data.name"] not in TEXT_DATASETS:
        raise ConfigError(
            f"config.data.partition: 'by_source' splits a text corpus by document; dataset {c['data.name']!r} has none"
        )
    if c["model.name"] != "transformer":
        for key in ("model.mlp_ratio", "model.max_len", "model.dtype", "model.remat"):
            if c[key] != base_value(key):
                raise ConfigError(f"config.{key}: applies to model.name = 'transformer' only, got {c['model.name']!r}")
    if c["model.max_len"] and c["model.max_len"] < c["data.seq_len"]:
        raise ConfigError(
            f"config.model.max_len: must be 0 or >= data.seq_len ({c['data.seq_len']}), got {c['model.max_len']}"
        )
    if c["optimizer.grad_accum"] > 1 and c["privacy.mode"] == "dp_sgd":
        raise ConfigError(
            "config.optimizer.grad_accum: DP-SGD clips per example; bound its memory with perf.microbatch instead"
        )


# Fields that a config may not set where they cannot apply (see :func:`inapplicable`). Other fields
# of an unused mechanism are left alone on purpose: experiments keep e.g. privacy.delta set across
# privacy modes (experiments/privacy_utility.py) and compare over modes with one config.
_REFUSED_WHEN_INAPPLICABLE = ("privacy.target_epsilon", "privacy.sample_rate", "byzantine.strength")


def inapplicable(config, key: str) -> str | None:
    """Why field ``key`` can have no effect in ``config`` (a ConfigDict or flat dict), or None.

    The one check behind two refusals: :func:`validate` refuses a config that sets
    ``privacy.target_epsilon``, ``privacy.sample_rate`` or ``byzantine.strength`` (away from its
    default) where it cannot apply, and ``rj.sweep`` refuses an axis over any field this names.
    Refused rather than warned: each was a silent, wrong run (a "private" run that is not, a
    sampling rate that is not the one accounted, an attack factor nobody reads), and no
    configuration or experiment of the repository sets one of them where it does not apply.
    """
    c = _flatten(config.to_dict()) if isinstance(config, ml_collections.ConfigDict) else config
    if key.startswith("privacy.") and key != "privacy.mode" and c.get("privacy.mode") == "none":
        return "privacy.mode is 'none' (set privacy.mode = 'dp_sgd' or 'central')"
    if key == "privacy.sample_rate":
        if c.get("privacy.mode") == "central":
            return "privacy.mode 'central' takes every node's update every round (q = 1)"
        if c.get("privacy.sampling") != "poisson":
            return (
                f"privacy.sampling is {c.get('privacy.sampling')!r}: fixed-size batches sample "
                "batch_size / shard size (set privacy.sampling = 'poisson' to choose the rate)"
            )
    if key == "byzantine.strength":
        from redeem_jax.byzantine import attacks

        attack = c.get("byzantine.attack")
        if attack not in attacks.STRENGTH:
            return (
                f"byzantine.attack {attack!r} takes no strength factor (those that do: {', '.join(attacks.STRENGTH)})"
            )
    return None


def _synthetic_size_checks(c: dict) -> None:
    """Synthetic data is drawn to the config's size: too few examples for the nodes is a config error."""
    name, m, n = c["data.name"], c["data.num_examples"], c["num_nodes"]
    if name not in ("linear", "logistic"):
        return
    if name == "linear" and (c["data.whiten"] or c["data.heterogeneity"] > 0):
        # One block of data.num_examples // num_nodes rows per node (see build._dataset_from_config).
        need = n * (c["data.dim"] if c["data.whiten"] else 1)
        if m < need:
            what = (
                "data.whiten needs at least data.dim"
                if c["data.whiten"]
                else "data.heterogeneity > 0 needs at least one"
            )
            raise ConfigError(
                f"config.data.num_examples: {m} synthetic examples for num_nodes={n}: {what} "
                f"example(s) per node, so data.num_examples >= {need}"
            )
        return
    from redeem_jax.data import datasets

    frac = inspect.signature(getattr(datasets, name)).parameters["test_fraction"].default

    def train(k: int) -> int:  # the builders' own split (datasets._split_counts)
        return k - round(k * frac)

    if train(m) < n:
        need = max(n, int(n / (1 - frac)) - 2)
        while train(need) < n:
            need += 1
        raise ConfigError(
            f"config.data.num_examples: {m} synthetic examples leave {train(m)} for training "
            f"({frac:.0%} are the test set), fewer than num_nodes={n}; use data.num_examples >= {need} "
            "or fewer nodes"
        )


def _rule_check(c: dict) -> None:
    """An unknown rule name fails here, not after the data is loaded and the graph built."""
    from redeem_jax.byzantine import aggregators, rules

    rule = c["aggregation.rule"]
    if rule == "mean" or rule in rules.DECENTRALIZED_RULES:
        return
    try:
        aggregators.get(rule)
    except (ValueError, KeyError) as e:
        raise ConfigError(
            f"config.aggregation.rule: {' '.join(str(e).split())} (or mean, {', '.join(rules.DECENTRALIZED_RULES)})"
        ) from e


def _byzantine_checks(c: dict) -> None:
    n, f = c["num_nodes"], c["byzantine.num"]
    if f >= n:
        raise ConfigError(f"config.byzantine.num: must be < num_nodes ({n}) so that an honest node remains, got {f}")
    if f > 0 and c["byzantine.placement"] == "given":
        ids = c["byzantine.ids"]
        if (
            len(ids) != f
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in ids)
            or len(set(ids)) != len(ids)
        ):
            raise ConfigError(
                f"config.byzantine.ids: placement 'given' needs {f} distinct node ids in [0, {n}), got {tuple(ids)!r}"
            )
    names = _registry_names()
    attack = c["byzantine.attack"]
    if f > 0 and attack == "none":
        raise ConfigError(
            "config.byzantine.attack: byzantine.num > 0 needs an attack (e.g. alie, sign_flip, dissensus, label_flip)"
        )
    if c["algorithm.name"] in names["ALGORITHMS"] and is_federated(c["algorithm.name"], c.get("algorithm.over")):
        algo = c["algorithm.name"]
        if attack in names["EDGE_ATTACKS"]:
            raise ConfigError(
                f"config.byzantine.attack: {attack!r} sends a different vector on every edge of a "
                f"graph; the federated ({algo}) setting allows label_flip or " + ", ".join(names["VECTOR_ATTACKS"])
            )
        if c["aggregation.rule"] in names["DECENTRALIZED_RULES"]:
            raise ConfigError(
                f"config.aggregation.rule: {c['aggregation.rule']!r} is a decentralized rule; "
                f"with algorithm.name = {algo!r} use an rj.aggregators rule"
            )
    tol = c["aggregation.tolerance"]
    if tol >= n:
        raise ConfigError(f"config.aggregation.tolerance: must be < num_nodes ({n}), got {tol}")


def parse_overrides(spec: str) -> dict:
    """``"byzantine.num=0,aggregation.rule=mean"`` -> ``{"byzantine.num": 0, "aggregation.rule": "mean"}``."""
    import ast

    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise ConfigError(f"config.compare.reference: {part!r} is not of the form field=value")
        key, raw = (t.strip() for t in part.split("=", 1))
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out[key] = value
    return out


def set_field(config: ml_collections.ConfigDict, key: str, value) -> None:
    """Set a dotted field (``"topology.name"``) on a ConfigDict."""
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value


def _privacy_checks(c: dict) -> None:
    if c["privacy.mode"] == "none":
        return
    if c["privacy.mode"] == "central":
        if not is_federated(c["algorithm.name"], c.get("algorithm.over")):
            raise ConfigError(
                "config.privacy.mode: 'central' adds noise at a server; it needs a federated algorithm "
                "(algorithm.name = 'fedavg')"
            )
        if c["byzantine.num"] or c["aggregation.rule"] != "mean":
            raise ConfigError(
                "config.privacy.mode: 'central' sums updates through secure aggregation, so the server "
                "sees only the sum: use aggregation.rule = 'mean' and no Byzantine nodes"
            )
        if not math.isfinite(c["privacy.clip_norm"]):
            raise ConfigError("config.privacy.clip_norm: central DP needs a finite clip norm")
        return
    q = c["privacy.sample_rate"]
    if c["privacy.sampling"] == "poisson" and q != -1.0 and not 0 < q <= 1:
        raise ConfigError(f"config.privacy.sample_rate: must be in (0, 1] (or -1 for batch_size / shard size), got {q}")
    if c["privacy.accountant"] == "pld" and c["privacy.sampling"] == "fixed":
        raise ConfigError(
            "config.privacy.accountant: fixed-size sampling is accounted with rdp only "
            "(or use privacy.sampling = 'poisson')"
        )
    if c["privacy.target_epsilon"] != -1.0 and c["privacy.target_epsilon"] <= 0:
        raise ConfigError(
            f"config.privacy.target_epsilon: must be > 0 (or -1 to use noise_multiplier), "
            f"got {c['privacy.target_epsilon']}"
        )


def config_stem(argv: list[str]) -> str:
    """The config file's name without ``.py`` from a command line's ``--config`` (for default workdirs)."""
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif a == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        else:
            continue
        return path.rsplit("/", 1)[-1].removesuffix(".py")
    return "run"


def check_field(key: str, value, config=None) -> str | None:
    """The error message for ``value`` in field ``key`` (None if fine): the schema's check, or an
    algorithm option's type check for ``algorithm.<option>``."""
    if key in SCHEMA:
        return SCHEMA[key](value)
    if key.startswith("algorithm.") and config is not None:
        from redeem_jax import algorithms

        opts = algorithms.options(config.algorithm.name)
        field = key.split(".", 1)[1]
        if field in opts:
            return _type_check(value, opts[field])
    return None


def base_value(key: str):
    """The default of field ``key`` in :func:`base_config` (None if it has none)."""
    return _flatten(base_config().to_dict()).get(key)

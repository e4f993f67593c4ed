"""Sharding the node axis (and optionally the model axis) of a network over devices.

The network is arrays with a leading node axis (DESIGN.md, "Data layout"), so
spreading it over ``D`` devices is a ``NamedSharding`` with ``P("nodes")``: every
device holds a contiguous block of ``n / D`` node rows. One round stays one
jitted program; XLA's SPMD partitioner turns the vmapped per-node work into
purely local work, and only communication needs collectives:

* circulant graphs (ring, exponential, small complete graphs) and the one-peer
  exponential graph: :func:`ppermute_mix` writes ``W x = c_0 x + sum_s c_s
  roll(x, s)`` with ``jax.shard_map``; a shift by ``s`` rows needs at most two
  ``jax.lax.ppermute`` calls that move ``n / D`` rows per device in all (a
  one-row halo exchange per direction on a ring), instead of all-gathering ``x``;
* any other graph: the plain gather of :func:`redeem_jax.gossip.mix` under
  ``jit`` on the sharded rows; the partitioner inserts the collectives.

A 2-D mesh ``nodes x model`` also splits the flat parameter columns ``d`` over
the ``model`` axis (for models too large for ``n / D`` rows of one device).
No ``pmap`` anywhere: ``jit`` + ``NamedSharding`` + ``shard_map`` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from redeem_jax.network import gossip as _gossip
from redeem_jax.network.topology import Topology

__all__ = [
    "NODES",
    "MODEL",
    "SWEEP",
    "make_mesh",
    "node_spec",
    "shard_nodes",
    "shard_sweep",
    "replicate",
    "ppermute_mix",
    "sharded_mix",
    "sharded_gossip_communication",
    "uses_ppermute",
]

NODES = "nodes"
"""The mesh axis the node axis of the state and data is sharded over."""
MODEL = "model"
"""The second mesh axis of a 2-D mesh: the model dimension ``d`` of ``[N, d]`` split over it."""
SWEEP = "sweep"
"""The mesh axis a sweep's points are split over (``rj.sweep(..., sweep_devices=k)``)."""


# --------------------------------------------------------------------------- #
# Meshes
# --------------------------------------------------------------------------- #
def make_mesh(
    shape: Sequence[int] = (-1,), axis_names: Sequence[str] | None = None, devices=None, num_nodes: int | None = None
) -> Mesh:
    """A device mesh ``("nodes",)`` for ``shape=(k,)`` or ``("nodes", "model")`` for ``(k, m)``.

    ``-1`` in one entry means "all the devices the other entries leave"
    (``(-1,)``: every device on the node axis). Axis types are ``Auto``, so
    ordinary ``jit`` code (vmap, gathers) runs on the sharded arrays unchanged.
    ``axis_names`` overrides the names (e.g. ``("sweep", "nodes")``). With
    ``num_nodes``, also checks that the node axis divides it. Raises ValueError
    when the shape asks for more devices than exist or does not divide.
    """
    shape = tuple(int(s) for s in shape)
    if not 1 <= len(shape) <= 3:
        raise ValueError(f"mesh shape must be (nodes,) or (nodes, model), got {shape!r}")
    if axis_names is None:
        if len(shape) == 3:
            raise ValueError("a 3-D mesh needs axis_names, e.g. ('sweep', 'nodes', 'model')")
        axis_names = (NODES,) if len(shape) == 1 else (NODES, MODEL)
    axis_names = tuple(axis_names)
    if len(axis_names) != len(shape):
        raise ValueError(f"mesh shape {shape} and axis names {axis_names} differ in length")
    devices = list(jax.devices() if devices is None else devices)
    total = len(devices)
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one entry may be -1")
    if any(s < 1 and s != -1 for s in shape):
        raise ValueError(f"mesh shape {shape}: sizes must be positive or -1")
    fixed = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if total % fixed:
            raise ValueError(f"mesh shape {shape}: {total} devices are not divisible by {fixed}")
        shape = tuple(total // fixed if s == -1 else s for s in shape)
    need = math.prod(shape)
    if need > total:
        raise ValueError(
            f"mesh shape {shape} needs {need} devices but only {total} exist "
            f"({jax.default_backend()}; on CPU pass --cpu_devices {need} on the command line, or set "
            f"jax.config.update('jax_num_cpu_devices', {need}) before JAX starts)"
        )
    # Auto axes: sharding is a layout hint the partitioner propagates, not part
    # of the types (Explicit, the make_mesh default, would reject unannotated ops).
    mesh = jax.make_mesh(
        shape, axis_names, axis_types=(jax.sharding.AxisType.Auto,) * len(shape), devices=devices[:need]
    )
    if num_nodes is not None:
        _check_nodes(int(num_nodes), mesh)
    return mesh


def _axis_size(mesh: Mesh, name: str) -> int:
    return int(mesh.shape[name]) if name in mesh.axis_names else 1


def _check_nodes(n: int, mesh: Mesh) -> int:
    D = _axis_size(mesh, NODES)
    if n % D:
        raise ValueError(
            f"{n} nodes cannot be split evenly over the mesh's {D} 'nodes' devices; "
            f"choose num_nodes divisible by {D} or a smaller perf.mesh"
        )
    return D


# --------------------------------------------------------------------------- #
# Placement
# --------------------------------------------------------------------------- #
def node_spec(shape: Sequence[int], mesh: Mesh, num_nodes: int, lead: tuple = ()) -> P:
    """PartitionSpec of one leaf: ``P(*lead, "nodes", ["model"])`` on node-axis leaves, else replicated.

    ``lead`` is the spec of extra leading axes (``(None,)`` or ``("sweep",)``);
    a leaf counts as per-node when its axis ``len(lead)`` has ``num_nodes``
    entries. The ``model`` axis splits the last axis of ``[..., n, d]`` rows
    when it divides ``d``, else the leaf is replicated along it.
    """
    k = len(lead)
    shape = tuple(shape)
    if len(shape) <= k or shape[k] != num_nodes:
        return P()
    spec = [*lead, NODES if NODES in mesh.axis_names else None]  # a sweep-only mesh keeps nodes whole
    m = _axis_size(mesh, MODEL)
    if m > 1 and len(shape) == k + 2 and shape[-1] % m == 0:
        spec.append(MODEL)
    return P(*spec)


def _infer_num_nodes(tree, lead: int) -> int:
    params = getattr(tree, "params", None)
    if params is not None and np.ndim(params) > lead:
        return int(np.shape(params)[lead])
    for leaf in jax.tree.leaves(tree):
        if np.ndim(leaf) > lead:
            return int(np.shape(leaf)[lead])
    raise ValueError("cannot infer the number of nodes: no leaf has a node axis; pass num_nodes=")


def _put(leaf, sharding: NamedSharding):
    if jax.process_count() == 1:
        return jax.device_put(leaf, sharding)
    # Several processes: every process holds the same host value (same seed);
    # each one fills only the shards its devices own.
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _place(tree, mesh: Mesh, num_nodes: int | None, lead: tuple):
    n = _infer_num_nodes(tree, len(lead)) if num_nodes is None else int(num_nodes)
    _check_nodes(n, mesh)
    if SWEEP in lead and _axis_size(mesh, SWEEP) > 1:
        G = None
        for leaf in jax.tree.leaves(tree):
            if np.ndim(leaf) >= 1:
                G = np.shape(leaf)[0]
                break
        if G is not None and G % _axis_size(mesh, SWEEP):
            raise ValueError(
                f"{G} sweep points cannot be split over the mesh's {_axis_size(mesh, SWEEP)} 'sweep' devices"
            )

    def place(leaf):
        if not hasattr(leaf, "shape"):
            return leaf
        spec = node_spec(leaf.shape, mesh, n, lead)
        if spec == P() and lead and lead[0] == SWEEP and np.ndim(leaf) >= 1:
            spec = P(SWEEP)  # per-sweep-point scalars (round, key) follow their point
        return _put(leaf, NamedSharding(mesh, spec))

    return jax.tree.map(place, tree)


def shard_nodes(tree, mesh: Mesh, num_nodes: int | None = None):
    """Place every node-axis leaf of ``tree`` as ``P("nodes")`` (``P("nodes", "model")`` on ``[n, d]``
    rows of a 2-D mesh when the model axis divides ``d``); other leaves (round, key) replicated.

    ``num_nodes`` defaults to ``tree.params.shape[0]`` (a ``NetworkState``) or the
    first leaf's leading size. Raises ValueError when ``n`` is not divisible by
    the node-axis size. Works with several processes (each passes the same values).
    """
    return _place(tree, mesh, num_nodes, ())


def shard_sweep(tree, mesh: Mesh, num_nodes: int | None = None):
    """:func:`shard_nodes` for a vmapped sweep whose leaves carry a leading ``[G]`` axis.

    Node-axis leaves ``[G, n, ...]`` get ``P(None, "nodes")``, or ``P("sweep", "nodes")``
    when the mesh has a ``"sweep"`` axis (e.g. ``make_mesh((2, 4), ("sweep", "nodes"))``),
    which also splits the per-point scalars ``[G]`` over it. Vmap the round with
    ``jax.vmap(..., spmd_axis_name="sweep")`` then, so the ppermute gossip keeps
    each sweep point on its own devices instead of all-gathering the sweep axis.
    """
    lead = (SWEEP,) if SWEEP in mesh.axis_names else (None,)
    return _place(tree, mesh, num_nodes, lead)


def replicate(tree, mesh: Mesh):
    """Every leaf replicated on every device of ``mesh`` (e.g. the honest mask in several processes)."""
    return jax.tree.map(lambda a: _put(a, NamedSharding(mesh, P())), tree)


# --------------------------------------------------------------------------- #
# Gossip on sharded nodes
# --------------------------------------------------------------------------- #
def uses_ppermute(topology: Topology, method: str = "auto") -> bool:
    """Whether :func:`sharded_mix` takes the ppermute path (circulant graph, method auto or roll)."""
    return topology.is_circulant and method in ("auto", "roll")


def _block_roll(xb, s: int, n: int, D: int):
    """This device's block of ``roll(x, s)`` (``roll(x, s)[i] = x[i - s]``), x split in D row blocks.

    With ``B = n / D`` rows per block and ``s = q B + r``, output rows ``r..B-1``
    of block ``j`` are rows ``0..B-r-1`` of block ``j - q``, and output rows
    ``0..r-1`` are rows ``B-r..B-1`` of block ``j - q - 1``: at most two
    ppermutes that together move exactly ``B`` rows (a halo exchange of ``r``
    rows when ``q = 0``, e.g. the ring).
    """
    B = n // D
    q, r = divmod(int(s) % n, B)

    def send(part, k):  # ``part`` of every device's block goes k devices ahead
        k %= D
        if k == 0:
            return part
        return jax.lax.ppermute(part, NODES, [(j, (j + k) % D) for j in range(D)])

    a = send(xb[: B - r], q)
    if r == 0:
        return a
    b = send(xb[B - r :], q + 1)
    return jnp.concatenate([b, a], axis=0)


def _branch(shifts, weights, selfw, n: int, D: int, ct):
    # gossip's roll branch with the block roll: the same operation order as the unsharded one.
    return _gossip._roll_branch(shifts, weights, selfw, ct, roll=lambda xb, s: _block_roll(xb, s, n, D))


def ppermute_mix(topology: Topology, x, mesh: Mesh, round=None):
    """One gossip step ``W(round) x`` on a circulant topology with ``jax.shard_map`` + ``ppermute``.

    Implements ``W x = c_0 x + sum_s c_s roll(x, s)`` (the circulant form used by
    ``gossip.mix(method="roll")``) with the node axis split in contiguous
    blocks over the mesh's ``"nodes"`` axis; time-varying circulant graphs
    (one-peer exponential, Ying et al. 2021) pick the round's shifts with
    ``lax.switch``. ``round`` may be traced. Equals ``gossip.mix(..., method="roll")``
    bit for bit, and the sparse/dense methods up to float reassociation.
    """
    if not topology.is_circulant:
        raise ValueError(
            f"ppermute_mix needs a circulant topology; {topology.name} is not "
            "(use sharded_mix, which falls back to a gather)"
        )
    xf, shape = _gossip._flat(x)
    n = topology.n
    if xf.shape[0] != n:
        raise ValueError(f"x has {xf.shape[0]} rows but the topology has n={n} nodes")
    D = _check_nodes(n, mesh)
    ct = _gossip._compute_dtype(xf.dtype)
    shifts, weights, selfw = topology._circulant
    branches = [_branch(shifts[t], weights[t], selfw[t], n, D, ct) for t in range(topology.period)]
    m = _axis_size(mesh, MODEL)
    spec = P(NODES, MODEL) if m > 1 and xf.shape[1] % m == 0 else P(NODES)

    if topology.period == 1 or _gossip._is_static_round(round):
        t = 0 if topology.period == 1 or round is None else int(round) % topology.period
        y = jax.shard_map(branches[t], mesh=mesh, in_specs=spec, out_specs=spec)(xf)
    else:

        def body(xb, t):
            # Every device holds the same (replicated) t, so all take the same
            # branch and the ppermutes inside it pair up.
            return jax.lax.switch(t, branches, xb)

        t = jnp.asarray(round) % topology.period
        y = jax.shard_map(body, mesh=mesh, in_specs=(spec, P()), out_specs=spec)(xf, t)
    return y.astype(_gossip._out_dtype(xf.dtype)).reshape(shape)


def sharded_mix(topology: Topology, x, mesh: Mesh, round=None, method: str = "auto"):
    """Gossip on node rows sharded over ``mesh``: ppermute for circulant graphs, else ``gossip.mix``.

    ``method`` "auto"/"roll" on a circulant graph → :func:`ppermute_mix`;
    otherwise ``gossip.mix(topology, x, round, method)`` ("auto" → dense or
    sparse), whose gather XLA's SPMD partitioner distributes.
    """
    if uses_ppermute(topology, method):
        return ppermute_mix(topology, x, mesh, round=round)
    if method == "roll":
        raise ValueError(f"method='roll' needs a circulant topology; {topology.name} is not")
    _check_nodes(topology.n, mesh)
    return _gossip.mix(topology, x, round=round, method=method)


def sharded_gossip_communication(topology: Topology, mesh: Mesh, method: str = "auto"):
    """``communicate(x, x_prev, round, key)`` like ``dsgd.gossip_communication``, on a sharded node axis."""
    _check_nodes(topology.n, mesh)
    if method == "roll" and not topology.is_circulant:
        raise ValueError(f"method='roll' needs a circulant topology; {topology.name} is not")

    def communicate(x, x_prev, round, key):
        del x_prev, key
        return sharded_mix(topology, x, mesh, round=round, method=method)

    return communicate

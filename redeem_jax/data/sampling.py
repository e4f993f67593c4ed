"""Node data on device (``[N, m_max, ...]`` + sizes) and per-round sampling.

Partitioning happens once on the host. Sampling is a pure, jittable function: of
one node's arrays and key (:func:`sample_batch`, vmapped over nodes), or of every
node at once from one key (:func:`subset_indices`, what the minibatch oracle uses).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from redeem_jax import _threefry
from redeem_jax.data.datasets import Dataset
from redeem_jax.data.partition import (
    PartitionSummary,
    group_by_node,
    grouped_summary,
    local_test_split,
    node_assignment,
)

_threefry.install()  # same random bits, drawn ~10x faster on CPU (docs/performance.md)

__all__ = [
    "NodeData",
    "stack_parts",
    "stack_grouped",
    "distribute",
    "distribute_with_summary",
    "sample_indices",
    "sample_batch",
    "sample_node_batches",
    "subset_indices",
    "sample_network_batches",
]


class NodeData(NamedTuple):
    """Every node's local train set, padded to a common length (a pytree).

    x: ``[N, m_max, *input_shape]``, zero rows beyond ``sizes[i]``.
    y: ``[N, m_max, ...]``, zero beyond ``sizes[i]``.
    sizes: int32 ``[N]``, number of real rows of each node.
    test_x, test_y, test_sizes: each node's local test set (``data.local_test_fraction`` > 0),
        padded the same way; ``None`` (no pytree leaves) without one.
    """

    x: jax.Array
    y: jax.Array
    sizes: jax.Array
    test_x: jax.Array | None = None
    test_y: jax.Array | None = None
    test_sizes: jax.Array | None = None


def stack_parts(x: np.ndarray, y: np.ndarray, parts: list[np.ndarray], pad_to: int | None = None) -> NodeData:
    """Gathers ``x[parts[i]]`` into a zero-padded ``[N, m_max, ...]`` NodeData.

    ``pad_to`` fixes ``m_max`` (>= the largest part) so that partitions drawn
    with different seeds share one shape and hence one compilation.
    """
    sizes = np.fromiter(map(len, parts), np.int64, count=len(parts))
    order = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return stack_grouped(x, y, order, sizes, pad_to)


def stack_grouped(
    x: np.ndarray, y: np.ndarray, order: np.ndarray, sizes: np.ndarray, pad_to: int | None = None
) -> NodeData:
    """:func:`stack_parts` for a partition given as ``(order, sizes)`` (see ``partition.group_by_node``)."""
    sizes = np.asarray(sizes, np.int64)
    m_max = int(sizes.max()) if pad_to is None else int(pad_to)
    if m_max < sizes.max():
        raise ValueError(f"pad_to={pad_to} is smaller than the largest node ({int(sizes.max())} examples)")
    n = len(sizes)
    valid = np.arange(m_max)[None, :] < sizes[:, None]
    x = np.asarray(x)
    y = np.asarray(y)
    if n and (sizes == m_max).all():
        # Equal-size nodes (the usual IID split): one reshape of a gather, no padding mask.
        idx = order.reshape(n, m_max)
        return NodeData(x=jnp.asarray(x[idx]), y=jnp.asarray(y[idx]), sizes=jnp.asarray(sizes, jnp.int32))
    idx = np.zeros((n, m_max), np.int64)
    idx[valid] = order

    def gather(a: np.ndarray) -> jax.Array:
        g = a[idx]  # [n, m_max, ...]
        mask = valid.reshape(valid.shape + (1,) * (a.ndim - 1))
        return jnp.asarray(np.where(mask, g, np.zeros((), a.dtype)))

    return NodeData(x=gather(x), y=gather(y), sizes=jnp.asarray(sizes, jnp.int32))


def distribute_with_summary(
    ds: Dataset,
    num_nodes: int,
    method: str = "iid",
    seed: int = 0,
    *,
    pad_to: int | None = None,
    local_test_fraction: float = 0.0,
    **partition_options,
) -> tuple[NodeData, PartitionSummary]:
    """:func:`distribute` that also returns the :class:`PartitionSummary` (of the train split)."""
    # Grouped (order, sizes) arrays rather than a list of per-node arrays: at
    # 10^6 nodes the list alone took ~10 s of Python.
    node_of = node_assignment(ds.y_train, num_nodes, method=method, seed=seed, **partition_options)
    if local_test_fraction > 0.0:
        return _with_local_test(ds, node_of, int(num_nodes), local_test_fraction, seed, pad_to)
    order, sizes = group_by_node(node_of, int(num_nodes))
    nd = stack_grouped(ds.x_train, ds.y_train, order, sizes, pad_to=pad_to)
    num_classes = ds.num_classes if ds.task == "classification" else None
    return nd, grouped_summary(ds.y_train, order, sizes, num_classes)


def _with_local_test(ds: Dataset, node_of, n: int, fraction: float, seed: int, pad_to) -> tuple:
    """Train and local test sets of every node from one node assignment (``local_test_split``)."""
    is_test = local_test_split(ds.y_train, node_of, fraction, seed)
    ids = np.arange(node_of.shape[0])
    tr, te = ids[~is_test], ids[is_test]
    order, sizes = group_by_node(node_of[tr], n)
    t_order, t_sizes = group_by_node(node_of[te], n)
    nd = stack_grouped(ds.x_train, ds.y_train, tr[order], sizes, pad_to=pad_to)
    # At least one padded row, so that a node set without test examples still has a [N, 1] array.
    t_pad = max(int(t_sizes.max()) if n else 0, 1)
    test = stack_grouped(ds.x_train, ds.y_train, te[t_order], t_sizes, pad_to=t_pad)
    nd = nd._replace(test_x=test.x, test_y=test.y, test_sizes=test.sizes)
    num_classes = ds.num_classes if ds.task == "classification" else None
    return nd, grouped_summary(ds.y_train, tr[order], sizes, num_classes)


def distribute(
    ds: Dataset,
    num_nodes: int,
    method: str = "iid",
    seed: int = 0,
    *,
    pad_to: int | None = None,
    local_test_fraction: float = 0.0,
    **partition_options,
) -> NodeData:
    """Partitions ``ds``'s train set across nodes (see :func:`partition` for
    methods and options) and stacks it into a padded :class:`NodeData`.

    Memory is ``N · m_max``: strongly skewed partitions (small Dirichlet
    ``alpha``) pad every node to the largest one.

    ``local_test_fraction`` > 0 also holds out that fraction of every node's examples, stratified
    by label (:func:`~redeem_jax.data.partition.local_test_split`), as the node's local test set
    (``NodeData.test_x`` / ``test_y`` / ``test_sizes``); 0 gives exactly the split without one.
    """
    return distribute_with_summary(
        ds, num_nodes, method, seed, pad_to=pad_to, local_test_fraction=local_test_fraction, **partition_options
    )[0]


def sample_indices(key: jax.Array, size, m_max: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Indices of a minibatch drawn WITHOUT replacement from the first
    ``size`` of ``m_max`` rows of one node, and its validity mask.

    Random-score sampling: each real row gets a uniform score, padded rows
    ``+inf``, and the ``batch_size`` smallest are taken (``lax.top_k`` on the
    negated scores, or the same indices by a sorting network for small
    shards) — a uniformly random subset (Efraimidis & Spirakis 2006 with equal
    weights) with static shapes. ``size`` may be
    traced; ``m_max`` and ``batch_size`` are static Python ints. ``mask[b] = b < size`` (real rows come first), false only when
    ``batch_size > size``. If ``batch_size >= m_max`` it is full-batch and
    deterministic: ``idx = arange(m_max)``, ``mask = arange(m_max) < size``.
    """
    m_max, batch_size = int(m_max), int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size >= m_max:
        idx = jnp.arange(m_max, dtype=jnp.int32)
        return idx, idx < size
    rows = jnp.arange(m_max)
    scores = jnp.where(rows < size, jax.random.uniform(key, (m_max,)), jnp.inf)
    idx = _smallest(scores, batch_size)
    mask = jnp.arange(batch_size) < size
    return idx.astype(jnp.int32), mask


_NETWORK_MAX_M = 32  # up to this many rows per node, select with a sorting network instead of top_k


def _smallest(scores: jax.Array, k: int) -> jax.Array:
    """Indices of the ``k`` smallest ``scores``, ascending, ties to the lower index:
    exactly ``lax.top_k(-scores, k)[1]``.

    For small shards, a sorting network (Batcher 1968) of (score, index) pairs, compared
    lexicographically, pruned by XLA to the first k outputs: one fused elementwise pass over all
    nodes when vmapped. For [10⁶, 8] scores ``top_k`` took 126 ms, an O(m²) rank count 55 ms,
    this 3 ms (benchmarks/scale.py).
    """
    m = scores.shape[0]
    if m > _NETWORK_MAX_M:
        return jax.lax.top_k(-scores, k)[1]
    return _network_smallest(k)(scores)


def _select(columns, k: int):
    """The network on a list of m score arrays (any common shape): the k index arrays."""
    from redeem_jax._sortnet import sorting_network

    m = len(columns)
    vals = list(columns)
    ids = [jnp.full(vals[0].shape, i, jnp.int32) for i in range(m)]
    for i, j in sorting_network(m):
        swap = (vals[j] < vals[i]) | ((vals[j] == vals[i]) & (ids[j] < ids[i]))
        vals[i], vals[j] = jnp.where(swap, vals[j], vals[i]), jnp.where(swap, vals[i], vals[j])
        ids[i], ids[j] = jnp.where(swap, ids[j], ids[i]), jnp.where(swap, ids[i], ids[j])
    return ids[:k]


@functools.cache
def _network_smallest(k: int):
    @jax.custom_batching.custom_vmap
    def smallest(scores):
        return jnp.stack(_select([scores[i] for i in range(scores.shape[0])], k))

    @smallest.def_vmap
    def _batched(axis_size, in_batched, scores):
        # Every node at once: the network over the score columns, its k outputs written into
        # [N, k] by an elementwise select on the column index. Stacked instead (what plain vmap
        # gives), XLA fuses the network into a concatenation and runs it as scalar code: 28 ms
        # against 3 ms for 10⁶ nodes.
        if not in_batched[0]:
            return smallest(scores), False
        ids = _select([scores[:, i] for i in range(scores.shape[1])], k)
        col = jnp.arange(k, dtype=jnp.int32)
        return sum(jnp.where(col == b, ids[b][:, None], 0) for b in range(k)), True

    return smallest


def sample_batch(key: jax.Array, node_x: jax.Array, node_y: jax.Array, size, batch_size: int):
    """``(xb, yb, mask)``: a minibatch of one node (see :func:`sample_indices`)
    gathered from its padded ``[m_max, ...]`` arrays. Vmap over nodes."""
    idx, mask = sample_indices(key, size, node_x.shape[0], batch_size)
    # Indices are in [0, m_max) by construction: no out-of-bounds fill (a select per element).
    return (node_x.at[idx].get(mode="promise_in_bounds"), node_y.at[idx].get(mode="promise_in_bounds"), mask)


def sample_node_batches(key: jax.Array, nd: NodeData, batch_size: int):
    """Every node's minibatch, ``([N, B, ...], [N, B, ...], [N, B])``, with one
    key per node split from ``key``."""
    keys = jax.random.split(key, nd.sizes.shape[0])
    return jax.vmap(sample_batch, in_axes=(0, 0, 0, 0, None))(keys, nd.x, nd.y, nd.sizes, batch_size)


def _mulhi32(u: jax.Array, n: jax.Array) -> jax.Array:
    """``⌊u·n / 2³²⌋`` for uint32 ``u`` and ``n``, exactly, from 16-bit limbs (no 64-bit ints
    without ``jax_enable_x64``): with u uniform on [0, 2³²), a uniform integer in [0, n) up to a
    relative bias below n / 2³² (Lemire 2019, "Fast random integer generation in an interval")."""
    mask = jnp.uint32(0xFFFF)
    ul, uh, nl, nh = u & mask, u >> 16, n & mask, n >> 16
    lh, hl = ul * nh, uh * nl
    mid = ((ul * nl) >> 16) + (lh & mask) + (hl & mask)
    return uh * nh + (lh >> 16) + (hl >> 16) + (mid >> 16)


def _words(key: jax.Array, n: int, count: int) -> list[jax.Array]:
    """``count`` uint32 words per row of ``n`` rows, two per Threefry-2x32 hash of the counter
    (row, pair): ``ceil(count / 2)`` hashes a row (Salmon et al. 2011), written as elementwise code
    that fuses into its consumer."""
    key = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    k1, k2 = key[0].astype(jnp.uint32), key[1].astype(jnp.uint32)
    row = jnp.arange(n, dtype=jnp.uint32)
    out = []
    for p in range((count + 1) // 2):
        y1, y2 = _threefry.threefry2x32(k1, k2, row, jnp.full((n,), p, jnp.uint32))
        out += [y1, y2]
    return out[:count]


def subset_indices(key: jax.Array, sizes: jax.Array, m_max: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Every node's minibatch indices at once, ``(idx [N, B] int32, mask [N, B])``: a uniformly
    random ``B``-subset of the first ``sizes[i]`` rows of node ``i`` (without replacement, in no
    particular order), from one counter-based draw of ``B`` 32-bit words per node.

    Floyd's algorithm (Bentley & Floyd 1987, "Programming pearls: a sample of brilliance"): for
    ``j = s−B, …, s−1`` draw ``t`` uniform in ``[0, j]`` and take ``t``, or ``j`` if ``t`` was
    taken; every B-subset has probability ``1 / C(s, B)``. Its cost is ``B`` words and
    ``B(B−1)/2`` comparisons per node, independent of ``m_max``; the per-node keys and ``m_max``
    scores of :func:`sample_indices` were 3 + ``m_max`` hashes per node, most of a 10⁶-node
    round (docs/performance.md). A node with ``sizes[i] ≤ B`` takes all its rows: ``idx = b``,
    ``mask[b] = b < sizes[i]``, as :func:`sample_indices`; ``batch_size ≥ m_max`` is
    deterministic full batch.
    """
    m_max, batch_size = int(m_max), int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sizes = jnp.asarray(sizes, jnp.int32)
    n = sizes.shape[0]
    col = jnp.arange(min(batch_size, m_max), dtype=jnp.int32)
    if batch_size >= m_max:
        return jnp.broadcast_to(col, (n, m_max)), col[None, :] < sizes[:, None]
    full = sizes <= batch_size
    words = _words(key, n, batch_size)
    picks: list[jax.Array] = []
    for b, u in enumerate(words):
        j = jnp.maximum(sizes - batch_size + b, 0)  # Floyd's j (clamped where sizes < B)
        t = _mulhi32(u, (j + 1).astype(jnp.uint32)).astype(jnp.int32)
        taken = functools.reduce(jnp.logical_or, [t == q for q in picks], jnp.zeros_like(full))
        picks.append(jnp.where(full, b, jnp.where(taken, j, t)))
    idx = jnp.stack(picks, axis=1)
    return idx, col[None, :] < sizes[:, None]


def sample_network_batches(key: jax.Array, nd: NodeData, batch_size: int):
    """Every node's minibatch ``(xb [N, B, ...], yb [N, B, ...], mask [N, B])`` drawn by
    :func:`subset_indices` from one key (see there for the distribution)."""
    idx, mask = subset_indices(key, nd.sizes, nd.x.shape[1], batch_size)
    take = jax.vmap(lambda a, i: a.at[i].get(mode="promise_in_bounds"))
    return take(nd.x, idx), take(nd.y, idx), mask

"""Splitting a train set across nodes (host side, once per experiment).

Every method returns a list of ``num_nodes`` sorted int64 index arrays that
are pairwise disjoint and together cover the train set.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = [
    "partition",
    "node_assignment",
    "group_by_node",
    "partition_summary",
    "grouped_summary",
    "PartitionSummary",
    "METHODS",
    "is_classification_labels",
    "local_test_split",
]

METHODS = ("iid", "dirichlet", "shards", "quantity", "contiguous", "by_source")
_LABEL_FREE_METHODS = ("iid", "quantity", "contiguous", "by_source")


def is_classification_labels(labels: np.ndarray) -> bool:
    """Class labels are a 1-D integer array; regression targets (floats) and
    language targets (``[m, L]``) are not."""
    labels = np.asarray(labels)
    return labels.ndim == 1 and (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_)


def _array_split_sizes(m: int, n: int) -> np.ndarray:
    """Sizes of ``np.array_split(range(m), n)``: the first ``m % n`` parts get one more."""
    sizes = np.full(n, m // n, np.int64)
    sizes[: m % n] += 1
    return sizes


def _assign_in_order(order: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Node id of every example when node ``i`` takes the next ``sizes[i]`` entries of ``order``."""
    node_of = np.empty(order.shape[0], np.int64)
    node_of[order] = np.repeat(np.arange(sizes.shape[0]), sizes)
    return node_of


def group_by_node(node_of: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, sizes)``: example ids grouped by node, ascending within a node, and node sizes.

    One stable argsort instead of a Python loop over nodes: node ``i`` holds
    ``order[offsets[i]:offsets[i] + sizes[i]]``, ``offsets = cumsum(sizes) - sizes``.
    """
    order = np.argsort(node_of, kind="stable").astype(np.int64)
    return order, np.bincount(node_of, minlength=num_nodes).astype(np.int64)


def _split(order: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    # Plain slices: np.split swaps axes per part, seconds at 10^6 parts.
    ends = np.cumsum(sizes).tolist()
    starts = [0] + ends[:-1]
    return [order[a:b] for a, b in zip(starts, ends)]


def _largest_remainder(total: int, proportions: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total`` closest to ``total * proportions``."""
    raw = total * proportions
    counts = np.floor(raw).astype(np.int64)
    short = total - counts.sum()
    if short > 0:
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts


def _iid(m: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return _assign_in_order(rng.permutation(m), _array_split_sizes(m, n))


def _dirichlet(
    labels: np.ndarray, n: int, alpha: float, min_size: int, rng: np.random.Generator, max_tries: int
) -> np.ndarray:
    classes = np.unique(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    for _ in range(max_tries):
        node_of = np.empty(len(labels), np.int64)
        for idx in by_class:  # loop over classes, not examples
            counts = _largest_remainder(len(idx), rng.dirichlet(np.full(n, alpha)))
            node_of[idx] = np.repeat(np.arange(n), counts)
        sizes = np.bincount(node_of, minlength=n)
        if sizes.min() >= min_size:
            return node_of
    raise ValueError(
        f"dirichlet partition: no draw in {max_tries} tries gave every node >= min_size={min_size} "
        f"examples (alpha={alpha}, num_nodes={n}, {len(labels)} examples); increase alpha, lower "
        f"min_size or use fewer nodes"
    )


def _shards(labels: np.ndarray, n: int, shards_per_node: int, rng: np.random.Generator) -> np.ndarray:
    # Shuffle before the stable sort so that which examples of a class land in
    # which shard is random, as in McMahan et al. (2017).
    perm = rng.permutation(len(labels))
    order = perm[np.argsort(labels[perm], kind="stable")]
    num_shards = n * shards_per_node
    assignment = rng.permutation(num_shards).reshape(n, shards_per_node)
    node_of_shard = np.empty(num_shards, np.int64)
    node_of_shard[assignment.reshape(-1)] = np.repeat(np.arange(n), shards_per_node)
    shard_of_pos = np.repeat(np.arange(num_shards), _array_split_sizes(len(labels), num_shards))
    node_of = np.empty(len(labels), np.int64)
    node_of[order] = node_of_shard[shard_of_pos]
    return node_of


def _quantity(m: int, n: int, quantity_alpha: float, min_size: int, rng: np.random.Generator) -> np.ndarray:
    # min_size is granted up front and only the rest is Dirichlet-split, so the
    # constraint holds without rejection sampling (which can stall for small
    # quantity_alpha and many nodes).
    extra = _largest_remainder(m - n * min_size, rng.dirichlet(np.full(n, quantity_alpha)))
    return _assign_in_order(rng.permutation(m), min_size + extra)


def _contiguous(m: int, n: int) -> np.ndarray:
    return np.repeat(np.arange(n), _array_split_sizes(m, n))


def _by_source(groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Whole sources to nodes, largest first to the node with the fewest examples so far
    (Graham's LPT rule), ties among sources of equal size broken at random."""
    ids, sizes = np.unique(groups, return_counts=True)
    if len(ids) < n:
        raise ValueError(f"by_source: {len(ids)} sources (documents) for {n} nodes; every node needs one")
    order = np.lexsort((rng.permutation(len(ids)), -sizes))
    load = np.zeros(n, np.int64)
    node_of_source = np.empty(len(ids), np.int64)
    for s in order:  # one pass over the sources (tens to thousands), on the host, once
        i = int(np.argmin(load))
        node_of_source[s] = i
        load[i] += sizes[s]
    return node_of_source[np.searchsorted(ids, groups)]


def node_assignment(
    labels: Any,
    num_nodes: int,
    method: str = "iid",
    seed: int = 0,
    alpha: float = 0.5,
    shards_per_node: int = 2,
    min_size: int = 1,
    quantity_alpha: float = 1.0,
    max_tries: int = 1000,
    groups: Any = None,
) -> np.ndarray:
    """The node of every example, ``int64[m]``: the partition of :func:`partition`
    without a Python list of ``num_nodes`` arrays (what 10^6-node networks use).

    Methods:
      * ``"iid"``: uniformly random split into sizes differing by at most one.
      * ``"dirichlet"``: label skew of Hsu, Qi & Brown (2019), "Measuring the
        effects of non-identical data distribution for federated visual
        classification": for each class, node proportions ``~ Dir(alpha·1)``;
        the whole draw is repeated until every node has ``>= min_size``
        examples. Small ``alpha`` = strong skew.
      * ``"shards"``: pathological non-IID split of McMahan et al. (2017),
        "Communication-efficient learning of deep networks from decentralized
        data": sort by label, cut into ``num_nodes·shards_per_node`` shards,
        give each node ``shards_per_node`` random shards.
      * ``"quantity"``: quantity skew (Li et al. 2022, "Federated learning on
        non-IID data silos: an experimental study"): node sizes
        ``min_size + Dir(quantity_alpha)``-split of the rest, labels iid.
      * ``"contiguous"``: consecutive blocks (whitened linear regression's node
        blocks; text, so that nodes get different source documents).
      * ``"by_source"``: every source (``groups[j]``: the document or text of example j, e.g. a
        text dataset's ``info["train_source"]``) whole to one node, the largest sources first
        to the least-loaded node: natural heterogeneity, as LEAF's per-speaker Shakespeare split
        (Caldas et al. 2018). Needs at least ``num_nodes`` sources.

    Only ``iid``, ``quantity``, ``contiguous`` and ``by_source`` are allowed when ``labels``
    are not 1-D integer class labels (regression, language).
    """
    labels = np.asarray(labels)
    if labels.ndim == 0:
        raise ValueError("labels must be an array with one entry (or row) per example")
    m = labels.shape[0]
    if method not in METHODS:
        raise ValueError(f"unknown partition method {method!r}; allowed: {METHODS}")
    if isinstance(num_nodes, bool) or int(num_nodes) != num_nodes or num_nodes < 1:
        raise ValueError(f"num_nodes must be an integer >= 1, got {num_nodes!r}")
    num_nodes = int(num_nodes)
    if num_nodes > m:
        raise ValueError(f"cannot split {m} examples across {num_nodes} nodes (more nodes than examples)")
    if int(min_size) != min_size or min_size < 0:
        raise ValueError(f"min_size must be an integer >= 0, got {min_size!r}")
    min_size = int(min_size)
    classification = is_classification_labels(labels)
    if not classification and method not in _LABEL_FREE_METHODS:
        raise ValueError(
            f"partition method {method!r} needs 1-D integer class labels; for regression/language "
            f"data (labels of shape {labels.shape}, dtype {labels.dtype}) use one of {_LABEL_FREE_METHODS}"
        )
    rng = np.random.default_rng(seed)

    if method == "iid":
        return _iid(m, num_nodes, rng)
    if method == "contiguous":
        return _contiguous(m, num_nodes)
    if method == "by_source":
        if groups is None:
            raise ValueError("partition method 'by_source' needs groups (the source of every example)")
        groups = np.asarray(groups)
        if groups.shape != (m,):
            raise ValueError(f"groups must have one entry per example ({m}), got shape {groups.shape}")
        return _by_source(groups, num_nodes, rng)
    if method == "quantity":
        if quantity_alpha <= 0:
            raise ValueError(f"quantity_alpha must be > 0, got {quantity_alpha}")
        if num_nodes * min_size > m:
            raise ValueError(
                f"min_size={min_size} for {num_nodes} nodes needs {num_nodes * min_size} examples, have {m}"
            )
        return _quantity(m, num_nodes, quantity_alpha, min_size, rng)
    if method == "dirichlet":
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if num_nodes * min_size > m:
            raise ValueError(
                f"min_size={min_size} for {num_nodes} nodes needs {num_nodes * min_size} examples, have {m}"
            )
        return _dirichlet(labels, num_nodes, alpha, min_size, rng, max_tries)
    # shards
    if int(shards_per_node) != shards_per_node or shards_per_node < 1:
        raise ValueError(f"shards_per_node must be an integer >= 1, got {shards_per_node!r}")
    shards_per_node = int(shards_per_node)
    if num_nodes * shards_per_node > m:
        raise ValueError(f"{num_nodes} nodes x {shards_per_node} shards exceeds the {m} examples")
    return _shards(labels, num_nodes, shards_per_node, rng)


def partition(
    labels: Any,
    num_nodes: int,
    method: str = "iid",
    seed: int = 0,
    alpha: float = 0.5,
    shards_per_node: int = 2,
    min_size: int = 1,
    quantity_alpha: float = 1.0,
    max_tries: int = 1000,
    groups: Any = None,
) -> list[np.ndarray]:
    """Splits examples (given by their ``labels``, or any ``[m, ...]`` array
    for label-free methods) into ``num_nodes`` disjoint, covering index sets.

    Returns ``num_nodes`` sorted int64 index arrays; methods and options as in
    :func:`node_assignment` (which skips building this list).
    """
    node_of = node_assignment(
        labels,
        num_nodes,
        method,
        seed,
        alpha=alpha,
        shards_per_node=shards_per_node,
        min_size=min_size,
        quantity_alpha=quantity_alpha,
        max_tries=max_tries,
        groups=groups,
    )
    return _split(*group_by_node(node_of, int(num_nodes)))


def local_test_split(labels: Any, node_of: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """``is_test``, ``bool[m]``: which examples of a partition each node holds out as its local test set.

    Stratified by node and label, so a node's test set has the node's own label distribution (the
    per-client split of personalized FL benchmarks, e.g. Ditto, Li et al. 2021, Sec. 5): every
    (node, class) cell of ``g`` examples gives ``floor(fraction·g + ½)`` random ones to test, hence
    ``|test_hist[i, k] − fraction·hist[i, k]| ≤ ½``. Label-free data is stratified by node only.
    ``fraction = 0`` holds out nothing. The draw uses its own stream of ``seed``, so the node
    assignment itself is the one without a test split. Vectorized: one sort, no loop over nodes.
    """
    labels = np.asarray(labels)
    node_of = np.asarray(node_of, np.int64)
    m = node_of.shape[0]
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"local_test_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or m == 0:
        return np.zeros(m, bool)
    if is_classification_labels(labels):
        lab = labels.astype(np.int64) - int(labels.min())
        cell = node_of * (int(lab.max()) + 1) + lab
    else:
        cell = node_of
    rng = np.random.default_rng([int(seed), 0x7E57])  # a stream apart from node_assignment's
    perm = rng.permutation(m)
    order = perm[np.argsort(cell[perm], kind="stable")]  # cells contiguous, random order inside
    _, starts, counts = np.unique(cell[order], return_index=True, return_counts=True)
    rank = np.arange(m) - np.repeat(starts, counts)  # position of each example within its cell
    take = np.floor(fraction * counts + 0.5).astype(np.int64)
    is_test = np.empty(m, bool)
    is_test[order] = rank < np.repeat(take, counts)
    left = np.bincount(node_of[~is_test], minlength=int(node_of.max()) + 1)
    had = np.bincount(node_of, minlength=left.shape[0])
    if ((had > 0) & (left == 0)).any():
        i = int(np.argmax((had > 0) & (left == 0)))
        raise ValueError(
            f"local_test_fraction={fraction} leaves node {i} ({int(had[i])} examples) no train example; "
            "lower the fraction or give the nodes more data"
        )
    return is_test


@dataclasses.dataclass(frozen=True)
class PartitionSummary:
    """Per-node sizes and (for classification) label histograms of a partition."""

    sizes: np.ndarray  # int64 [N]
    histogram: np.ndarray | None  # int64 [N, C], None for regression/language
    num_classes: int | None = None

    @property
    def num_nodes(self) -> int:
        return int(len(self.sizes))

    @property
    def label_entropy(self) -> np.ndarray | None:
        """Entropy (nats) of each node's label distribution; ``log C`` is
        uniform, 0 is a single class. Empty nodes get 0."""
        if self.histogram is None:
            return None
        p = self.histogram / np.maximum(self.histogram.sum(1, keepdims=True), 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.where(p > 0, p * np.log(p), 0.0).sum(1)

    @property
    def labels_per_node(self) -> np.ndarray | None:
        """Number of distinct labels held by each node."""
        return None if self.histogram is None else (self.histogram > 0).sum(1)

    def to_dict(self) -> dict:
        """JSON-friendly dict (lists, not arrays)."""
        out: dict[str, Any] = {
            "num_nodes": self.num_nodes,
            "sizes": self.sizes.tolist(),
            "num_classes": self.num_classes,
        }
        if self.histogram is not None:
            out["histogram"] = self.histogram.tolist()
            out["label_entropy"] = [float(e) for e in self.label_entropy]
        return out

    def __str__(self, max_rows: int = 20, max_classes: int = 20) -> str:
        n = self.num_nodes
        sizes = self.sizes
        head = (
            f"PartitionSummary: {n} nodes, {int(sizes.sum())} examples, size min/mean/max = "
            f"{int(sizes.min())}/{sizes.mean():.1f}/{int(sizes.max())}"
        )
        rows_shown = list(range(n)) if n <= max_rows else list(range(max_rows // 2)) + list(range(n - max_rows // 2, n))
        lines = [head]
        if self.histogram is None:
            lines.append(f"{'node':>6} {'size':>8}")
            body = {i: f"{i:>6} {int(sizes[i]):>8}" for i in rows_shown}
        else:
            c = self.histogram.shape[1]
            cols = list(range(min(c, max_classes)))
            ent = self.label_entropy
            lines.append(
                f"{'node':>6} {'size':>8} {'H(y)':>6} | "
                + " ".join(f"{k:>5}" for k in cols)
                + (" ..." if c > max_classes else "")
            )
            body = {
                i: f"{i:>6} {int(sizes[i]):>8} {ent[i]:>6.2f} | "
                + " ".join(f"{int(self.histogram[i, k]):>5}" for k in cols)
                for i in rows_shown
            }
        for j, i in enumerate(rows_shown):
            if j > 0 and i != rows_shown[j - 1] + 1:
                lines.append(f"{'...':>6} ({n - len(rows_shown)} nodes not shown)")
            lines.append(body[i])
        return "\n".join(lines)

    def plot(self, ax=None, normalize: bool = False, max_bars: int = 512):
        """Stacked bars of each node's label counts (sizes only when there
        are no labels). Returns the matplotlib Axes; works with Agg.

        Above ``max_bars`` nodes, a histogram of the node sizes instead: a bar
        per node of a 10^6-node network would take minutes and show nothing.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(min(2 + 0.25 * self.num_nodes, 16), 3.5))
        if self.num_nodes > max_bars:
            lo, hi = int(self.sizes.min()), int(self.sizes.max())
            ax.hist(self.sizes, bins=np.arange(lo, hi + 2) - 0.5 if hi - lo < 100 else 100, color="tab:blue")
            ax.set_xlabel("examples per node")
            ax.set_ylabel("nodes")
            ax.set_title(f"data per node ({self.num_nodes:,} nodes)")
            return ax
        nodes = np.arange(self.num_nodes)
        if self.histogram is None:
            ax.bar(nodes, self.sizes, color="tab:blue")
            ax.set_ylabel("examples")
        else:
            h = self.histogram.astype(float)
            if normalize:
                h = h / np.maximum(h.sum(1, keepdims=True), 1)
            cmap = plt.get_cmap("tab10" if h.shape[1] <= 10 else "tab20")
            bottom = np.zeros(len(nodes))
            for k in range(h.shape[1]):  # loop over classes, for the legend
                ax.bar(nodes, h[:, k], bottom=bottom, color=cmap(k % cmap.N), label=str(k), width=0.9)
                bottom += h[:, k]
            ax.set_ylabel("fraction of node's data" if normalize else "examples")
            if h.shape[1] <= 20:
                ax.legend(title="label", fontsize="small", ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
        ax.set_xlabel("node")
        ax.set_title("data per node")
        return ax


def partition_summary(labels: Any, parts: list[np.ndarray], num_classes: int | None = None) -> PartitionSummary:
    """Sizes and label histograms (for 1-D integer labels) of a partition."""
    sizes = np.fromiter(map(len, parts), np.int64, count=len(parts))
    flat = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return grouped_summary(labels, flat, sizes, num_classes)


def grouped_summary(
    labels: Any, order: np.ndarray, sizes: np.ndarray, num_classes: int | None = None
) -> PartitionSummary:
    """:func:`partition_summary` of a partition given as :func:`group_by_node`'s ``(order, sizes)``."""
    labels = np.asarray(labels)
    sizes = np.asarray(sizes, np.int64)
    if not is_classification_labels(labels):
        return PartitionSummary(sizes=sizes, histogram=None, num_classes=num_classes)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        # bincount would fail on a negative label and reshape on a large one, both far from the cause.
        bad = (labels < 0) | (labels >= num_classes)
        raise ValueError(
            f"labels must be class ids in [0, {num_classes}); {int(bad.sum())} are not "
            f"(e.g. {labels[np.argmax(bad)].item()} at index {int(np.argmax(bad))})"
        )
    n = len(sizes)
    node_of = np.repeat(np.arange(n), sizes)
    hist = np.bincount(node_of * num_classes + labels[order].astype(np.int64), minlength=n * num_classes).reshape(
        n, num_classes
    )
    return PartitionSummary(sizes=sizes, histogram=hist, num_classes=int(num_classes))

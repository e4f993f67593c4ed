"""Batcher's odd-even merge sorting network (Batcher 1968), shared by the robust rules'
order statistics and the minibatch sampler: a fixed list of compare-exchanges that XLA runs as
one fused elementwise pass (and prunes to the outputs a caller uses)."""

from __future__ import annotations

import functools


@functools.cache
def _oddeven_merge_pairs(p: int) -> tuple:
    """The comparators (i, j), i < j, of Batcher's odd-even merge sort of p = 2^k inputs."""
    pairs = []

    def merge(lo, hi, r):
        step = 2 * r
        if step < hi - lo:
            merge(lo, hi, step)
            merge(lo + r, hi, step)
            pairs.extend((i, i + r) for i in range(lo + r, hi - r, step))
        else:
            pairs.append((lo, lo + r))

    def sort(lo, hi):
        if hi - lo >= 1:
            mid = lo + (hi - lo) // 2
            sort(lo, mid)
            sort(mid + 1, hi)
            merge(lo, hi, 1)

    sort(0, p - 1)
    return tuple(pairs)


@functools.cache
def sorting_network(n: int) -> tuple:
    """Comparators sorting n rows: the power-of-two network, pruned of the padding rows (they
    hold +inf and never move, so a comparator touching one is a no-op)."""
    p = 1 << max(n - 1, 0).bit_length()
    return tuple((i, j) for i, j in _oddeven_merge_pairs(p) if j < n)

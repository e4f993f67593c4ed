"""Ratings data for recommendation: a planted low-rank generator and the MovieLens file formats.

A ratings :class:`~redeem_jax.data.Dataset` has ``task == "ratings"``: ``x`` is ``int32[m, 2]``
(0-based user id, item id), ``y`` the ``float32[m]`` ratings, and ``info`` holds
``num_users`` / ``num_items`` (and, for the planted generator, the planted factors).

* :func:`planted` — ratings r_ab = u_a·v_b + σ ε_ab of a planted rank-r matrix, observed on a
  random fraction of the entries (the low-rank matrix-completion model of Candès & Recht 2009;
  Koren, Bell & Volinsky 2009 for matrix factorization in recommendation). The planted factors
  are the known optimum: their prediction error on held-out ratings is σ.
* :func:`read_movielens` — the MovieLens-100k ``u.data`` (``user\\titem\\trating\\ttimestamp``)
  and MovieLens-1M ``ratings.dat`` (``user::item::rating::timestamp``) formats (Harper &
  Konstan 2015) from a local file; a malformed line raises :class:`DataError` with its number.
"""

from __future__ import annotations

import os

import numpy as np

from redeem_jax.data.datasets import Dataset
from redeem_jax.data.loaders import DataError

__all__ = ["planted", "read_movielens", "movielens", "ratings_dataset"]


def ratings_dataset(name, users, items, ratings, *, test_fraction, seed, info) -> Dataset:
    """A ratings :class:`Dataset` from triples: a random ``test_fraction`` of them held out."""
    users, items = np.asarray(users, np.int32), np.asarray(items, np.int32)
    ratings = np.asarray(ratings, np.float32)
    m = users.shape[0]
    perm = np.random.default_rng(seed).permutation(m)
    n_test = int(round(test_fraction * m))
    test, train = perm[:n_test], perm[n_test:]
    x = np.stack([users, items], axis=1)
    return Dataset(
        name=name,
        x_train=x[train],
        y_train=ratings[train],
        x_test=x[test],
        y_test=ratings[test],
        task="ratings",
        num_classes=1,
        input_shape=(2,),
        info=info,
    )


def planted(
    seed: int = 0,
    num_users: int = 64,
    num_items: int = 40,
    rank: int = 3,
    observed: float = 0.5,
    sigma: float = 0.1,
    clusters: int = 0,
    spread: float = 0.3,
    test_fraction: float = 0.2,
) -> Dataset:
    """Planted low-rank ratings (Candès & Recht 2009's model): r_ab = u_a·v_b + σ ε_ab, ε ~ N(0, 1),
    each entry observed independently with probability ``observed``.

    Item and user factors ~ N(0, I_r/√r), so that E(u·v)² = r·(1/√r)² = 1: ratings of unit scale;
    with ``clusters = c > 0`` users are c groups, u_a = c_{g(a)} + ``spread``·ξ_a (heterogeneous
    users: ``info["user_cluster"]`` gives g). ``info["user_factors"]`` / ``["item_factors"]`` are
    the planted factors: their held-out RMSE is σ up to sampling error.
    """
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(rank)
    V = rng.normal(0.0, 1.0, (num_items, rank)) * np.sqrt(scale)
    if clusters > 0:
        centers = rng.normal(0.0, 1.0, (clusters, rank)) * np.sqrt(scale)
        group = rng.integers(0, clusters, num_users)
        U = centers[group] + spread * np.sqrt(scale) * rng.normal(0.0, 1.0, (num_users, rank))
    else:
        group = np.zeros(num_users, np.int64)
        U = rng.normal(0.0, 1.0, (num_users, rank)) * np.sqrt(scale)
    seen = rng.random((num_users, num_items)) < observed
    users, items = np.nonzero(seen)
    ratings = np.einsum("mr,mr->m", U[users], V[items]) + sigma * rng.normal(0.0, 1.0, users.shape[0])
    info = {
        "num_users": int(num_users),
        "num_items": int(num_items),
        "rank": int(rank),
        "sigma": float(sigma),
        "user_factors": U.astype(np.float32),
        "item_factors": V.astype(np.float32),
        "user_cluster": group.astype(np.int32),
        "source": "planted low-rank ratings",
    }
    return ratings_dataset("ratings", users, items, ratings, test_fraction=test_fraction, seed=seed + 1, info=info)


def read_movielens(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(users, items, ratings, timestamps)`` of a MovieLens ratings file, ids as in the file.

    The format follows from the first line: ``::``-separated (MovieLens-1M ``ratings.dat``) or
    tab-separated (MovieLens-100k ``u.data``), four fields ``user item rating timestamp``, ids
    and timestamps integers, the rating a finite number. Blank lines are skipped; any other
    line that does not parse raises :class:`DataError` ``"<path>:<line>: ..."``.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="latin-1") as fh:
            lines = fh.read().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read ratings file ({e.strerror or e})") from None
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        raise DataError(f"{path}: no ratings")
    sep, fmt = (
        ("::", "user::item::rating::timestamp") if "::" in first else ("\t", "user<TAB>item<TAB>rating<TAB>timestamp")
    )
    cols: list[list] = [[], [], [], []]
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.strip("\r\n").split(sep)
        try:
            if len(parts) != 4:
                raise ValueError
            u, i, t = int(parts[0]), int(parts[1]), int(parts[3])
            r = float(parts[2])
            if not np.isfinite(r):
                raise ValueError
        except ValueError:
            raise DataError(f"{path}:{no}: expected {fmt}, got {line[:60]!r}") from None
        for c, v in zip(cols, (u, i, r, t)):
            c.append(v)
    return (
        np.asarray(cols[0], np.int64),
        np.asarray(cols[1], np.int64),
        np.asarray(cols[2], np.float32),
        np.asarray(cols[3], np.int64),
    )


def movielens(seed: int = 0, path: str | None = None, test_fraction: float = 0.2) -> Dataset:
    """A MovieLens-100k ``u.data`` or MovieLens-1M ``ratings.dat`` file (``path``, a local file)
    as a ratings :class:`Dataset`: user and item ids renumbered 0.. in sorted order
    (``info["user_ids"]`` / ``["item_ids"]`` map back), a random ``test_fraction`` held out."""
    if path is None:
        raise DataError("dataset 'movielens': give data.path, the local u.data or ratings.dat file")
    users, items, ratings, _ = read_movielens(path)
    user_ids, u = np.unique(users, return_inverse=True)
    item_ids, i = np.unique(items, return_inverse=True)
    info = {
        "num_users": int(user_ids.size),
        "num_items": int(item_ids.size),
        "user_ids": user_ids,
        "item_ids": item_ids,
        "source": os.fspath(path),
    }
    return ratings_dataset("movielens", u, i, ratings, test_fraction=test_fraction, seed=seed, info=info)

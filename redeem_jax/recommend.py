"""Decentralized matrix factorization: each node holds a group of users, keeps their factors
private and exchanges only the item factors.

The network minimises the matrix-factorization objective of Koren, Bell & Volinsky (2009, eq. 2)

    F(U, V) = (1/|Ω|) Σ_{(a,b)∈Ω} (r_ab − u_a·v_b)² + λ (‖U‖² + ‖V‖²),

written as the mean of per-node losses F = (1/N) Σ_i f_i with

    f_i(V, U_i) = (N/|Ω|) Σ_{(a,b)∈Ω_i} (r_ab − u_a·v_b)² + λ ‖V‖² + N λ ‖U_i‖²,

Ω_i the ratings of node i's users (the decentralized MF of Hegedűs, Danner & Jelasity 2019 and
of the "private user factors, shared item factors" protocols such as Chen et al. 2018). Node i's
row of the ``[N, d]`` network array is ``[vec(V_i) (num_items·rank) | vec(U_i) (users_per_node·
rank)]``: every node keeps its own copy V_i of the item factors; the user block never leaves the
node. :func:`item_only` wraps any channel so that it exchanges only the first block (the
robust rule, the attack and the privacy noise see item factors only), so D-SGD
(``rj.algorithms.dsgd``) and gradient tracking (``rj.algorithms.diging``) run unchanged.

Because U_i appears only in f_i, ∇_{U_i} f_i = N ∇_{U_i} F: one round with exact averaging of
the item factors is block gradient descent on F with step η on V and Nη on U
(tests/test_recommend.py checks it against a dense NumPy reference).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from redeem_jax.core import Channel, Oracle

__all__ = [
    "Ratings",
    "MFProblem",
    "build_problem",
    "node_loss",
    "mf_oracle",
    "item_only",
    "gaussian_messages",
    "init_rows",
    "split_rows",
    "predict",
    "rmse",
    "ranking",
    "evaluate",
    "inject_shilling",
    "train",
]


class Ratings(NamedTuple):
    """Every node's ratings, padded to a common length L: ``user i32[N, L]`` (the user's slot in
    its node), ``item i32[N, L]``, ``rating f32[N, L]``, ``mask f32[N, L]`` (1 for a real rating)."""

    user: Any
    item: Any
    rating: Any
    mask: Any


class MFProblem(NamedTuple):
    """A matrix-factorization problem split over ``num_nodes`` nodes (host description).

    ``node_of_user[a]`` / ``slot_of_user[a]``: where user a's factors live; ``train`` / ``test``:
    :class:`Ratings`; ``scale = N/|Ω_train|``; ``rank_items i32[N, S, 1 + n_neg]``: per user
    slot the held-out positive item then ``n_neg`` items the user never rated, ``rank_valid
    bool[N, S]`` which slots have one (:func:`ranking`)."""

    num_nodes: int
    num_users: int
    num_items: int
    rank: int
    users_per_node: int
    l2: float
    scale: float
    node_of_user: np.ndarray
    slot_of_user: np.ndarray
    train: Ratings
    test: Ratings
    rank_items: Any
    rank_valid: Any

    @property
    def d_item(self) -> int:
        """Length of the shared (item-factor) block of a row."""
        return self.num_items * self.rank

    @property
    def dim(self) -> int:
        """Length of one node's row: item block then user block."""
        return self.d_item + self.users_per_node * self.rank


def _by_node(node, slot, items, ratings, n):
    """Ratings grouped by node into padded ``[N, L]`` arrays (a stable sort, no loop over nodes)."""
    order = np.argsort(node, kind="stable")
    node, slot, items, ratings = node[order], slot[order], items[order], ratings[order]
    counts = np.bincount(node, minlength=n)
    L = max(int(counts.max()) if counts.size else 0, 1)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(node.size) - start[node]
    out = [np.zeros((n, L), np.int32), np.zeros((n, L), np.int32), np.zeros((n, L), np.float32)]
    mask = np.zeros((n, L), np.float32)
    out[0][node, pos], out[1][node, pos], out[2][node, pos], mask[node, pos] = slot, items, ratings, 1.0
    return Ratings(*(jnp.asarray(a) for a in out), jnp.asarray(mask))


def build_problem(
    ds,
    num_nodes: int,
    *,
    rank: int | None = None,
    l2: float = 1e-3,
    assign: str = "random",
    num_negatives: int = 20,
    seed: int = 0,
) -> MFProblem:
    """Split a ratings dataset (``rj.data.ratings``) over ``num_nodes`` nodes by user.

    ``assign``: "random" (a random balanced split of the users), "contiguous" (users 0.. in
    order: balanced consecutive blocks) or "sorted" (consecutive blocks after sorting by
    ``info["user_cluster"]``: every node holds users of one taste group, the heterogeneous
    case). Ranking: for every user with a held-out rating, the highest-rated held-out item is
    ranked among ``num_negatives`` items the user never rated (He et al. 2017's protocol;
    fewer if some user has rated nearly everything)."""
    info = ds.info
    U, m = int(info["num_users"]), int(info["num_items"])
    r = int(rank if rank is not None else info.get("rank", 8))
    rng = np.random.default_rng(seed)
    if assign == "random":
        order = rng.permutation(U)
    elif assign == "contiguous":
        order = np.arange(U)
    elif assign == "sorted":
        order = np.argsort(np.asarray(info.get("user_cluster", np.zeros(U))), kind="stable")
    else:
        raise ValueError(f"build_problem: assign={assign!r} is not one of random, contiguous, sorted")
    if U < num_nodes:
        raise ValueError(f"build_problem: {U} users cannot fill {num_nodes} nodes")
    j = np.empty(U, np.int64)
    j[order] = np.arange(U)
    node_of_user = (j * num_nodes) // U
    first = np.searchsorted(node_of_user[order], np.arange(num_nodes))
    slot_of_user = j - first[node_of_user]
    S = int(np.bincount(node_of_user, minlength=num_nodes).max())

    def split(x, y):
        u, it = x[:, 0].astype(np.int64), x[:, 1].astype(np.int64)
        return _by_node(node_of_user[u], slot_of_user[u], it, np.asarray(y, np.float32), num_nodes)

    train, test = split(ds.x_train, ds.y_train), split(ds.x_test, ds.y_test)

    # Ranking candidates (host side, once): positive = best held-out item, negatives = unrated.
    rated = np.zeros((U, m), bool)
    for x in (ds.x_train, ds.x_test):
        rated[x[:, 0], x[:, 1]] = True
    best = np.full(U, -1)
    best_r = np.full(U, -np.inf)
    xt, yt = ds.x_test, np.asarray(ds.y_test)
    o = np.lexsort((-yt, xt[:, 0]))  # per user, highest rating first
    first_of_user = np.unique(xt[o, 0], return_index=True)
    best[first_of_user[0]] = xt[o[first_of_user[1]], 1]
    best_r[first_of_user[0]] = yt[o[first_of_user[1]]]
    valid_users = best >= 0
    unrated = (~rated).sum(1)
    n_neg = int(min(num_negatives, unrated[valid_users].min())) if valid_users.any() else 0
    keys = rng.random((U, m)) + rated * 2.0  # rated items sort last
    negs = np.argsort(keys, axis=1)[:, :n_neg]
    cand = np.concatenate([np.maximum(best, 0)[:, None], negs], axis=1)
    rank_items = np.zeros((num_nodes, S, 1 + n_neg), np.int32)
    rank_valid = np.zeros((num_nodes, S), bool)
    rank_items[node_of_user, slot_of_user] = cand
    rank_valid[node_of_user, slot_of_user] = valid_users & (n_neg > 0)
    n_train = float(np.asarray(train.mask).sum())
    return MFProblem(
        num_nodes,
        U,
        m,
        r,
        S,
        float(l2),
        num_nodes / n_train,
        node_of_user,
        slot_of_user,
        train,
        test,
        jnp.asarray(rank_items),
        jnp.asarray(rank_valid),
    )


def split_rows(x, p: MFProblem):
    """``(V [N, items, rank], U [N, users_per_node, rank])`` from the network rows ``x [N, d]``."""
    n = x.shape[0]
    return x[:, : p.d_item].reshape(n, p.num_items, p.rank), x[:, p.d_item :].reshape(n, p.users_per_node, p.rank)


def node_loss(row, data: Ratings, p: MFProblem):
    """f_i(V, U_i) = (N/|Ω|) Σ_{Ω_i}(r − u·v)² + λ‖V‖² + Nλ‖U_i‖² of one node (module docstring;
    Koren, Bell & Volinsky 2009, eq. 2 split by user)."""
    V = row[: p.d_item].reshape(p.num_items, p.rank)
    Uf = row[p.d_item :].reshape(p.users_per_node, p.rank)
    e = (data.rating - jnp.sum(Uf[data.user] * V[data.item], -1)) * data.mask
    return p.scale * jnp.sum(e * e) + p.l2 * (jnp.sum(V * V) + p.num_nodes * jnp.sum(Uf * Uf))


def mf_oracle(p: MFProblem) -> Oracle:
    """Every node's full-batch gradient of :func:`node_loss` on its own ratings (deterministic:
    a batch is the node's whole rating list, vmapped over nodes)."""
    vg = jax.vmap(jax.value_and_grad(functools.partial(node_loss, p=p)))

    def update(x, s, ctx, data):
        del ctx
        loss, g = vg(x, data)
        return loss, g, s

    return Oracle(lambda x0: (), update)


def item_only(inner: Channel, d_item: int) -> Channel:
    """``inner`` applied to the item block ``x[:, :d_item]`` only, through
    ``rj.channels.shared_coordinates`` (FedPer's body-only exchange, Arivazhagan et al. 2019):
    the user block never enters ``inner`` (no robust rule, attack or noise sees it) and passes
    through bit for bit; the wire cost counts ``d_item`` floats per row."""
    from redeem_jax.channels import shared_coordinates

    def init(x):
        return _shared(x.shape[1]).init(x)

    @functools.cache
    def _shared(d):
        return shared_coordinates(inner, np.arange(d) < int(d_item))

    def update(x, s, ctx):
        return _shared(x.shape[1]).update(x, s, ctx)

    def wire(d, ctx):
        return _shared(d).wire(d, ctx)

    return Channel(init, update, wire, inner.conserving, inner.hypers, f"items({inner.name})")


def gaussian_messages(sigma: float, clip: float) -> Channel:
    """A message transform: each row is clipped to norm ``clip`` and released with N(0, σ²C²I)
    noise (the Gaussian mechanism, Dwork & Roth 2014, Thm. A.1, per message; Cyffers et al.
    2022's noisy gossip). Chain it before an exchange, inside :func:`item_only`, to privatise
    the item factors a node sends."""

    def update(x, s, ctx):
        norm = jnp.linalg.norm(x, axis=1, keepdims=True)
        clipped = x * jnp.minimum(1.0, clip / jnp.maximum(norm, 1e-12))
        return clipped + sigma * clip * jax.random.normal(ctx.key, x.shape, x.dtype), s

    return Channel(lambda x: (), update, None, False, (), "gaussian_messages")


def init_rows(p: MFProblem, key, scale: float = 0.1):
    """Round-0 rows: the same item factors V₀ at every node (consensus), user factors U₀ of each
    node, both ``scale``·N(0, 1) (small and random: (0, 0) is a saddle of F)."""
    kv, ku = jax.random.split(key)
    V0 = scale * jax.random.normal(kv, (p.d_item,))
    U0 = scale * jax.random.normal(ku, (p.num_nodes, p.users_per_node * p.rank))
    return jnp.concatenate([jnp.broadcast_to(V0, (p.num_nodes, p.d_item)), U0], axis=1)


def predict(x, data: Ratings, p: MFProblem):
    """``f32[N, L]``: node i's prediction u_a·v_b (its own copy of V) for each of its ratings."""
    V, Uf = split_rows(x, p)
    return jnp.einsum("nlr,nlr->nl", jnp.take_along_axis(Uf, data.user[..., None], 1), _rows_of(V, data.item))


def _rows_of(V, idx):
    return jax.vmap(lambda v, i: v[i])(V, idx)


def rmse(x, data: Ratings, p: MFProblem, nodes=None) -> jax.Array:
    """Root mean squared error over the ratings of ``data`` (of the nodes in the bool[N] mask
    ``nodes``, default all), each predicted by its own node's factors."""
    w = data.mask if nodes is None else data.mask * jnp.asarray(nodes, data.mask.dtype)[:, None]
    e = (data.rating - predict(x, data, p)) * w
    return jnp.sqrt(jnp.sum(e * e) / jnp.sum(w))


def ranking(x, p: MFProblem, k: int = 10, nodes=None) -> tuple[jax.Array, jax.Array]:
    """``(hit_rate@k, ndcg@k)``: per user, the rank ρ of the held-out item among the sampled
    unrated ones by the score u_a·v_b of its node; HR = 1[ρ < k], NDCG = 1[ρ < k]/log₂(ρ + 2)
    (He et al. 2017, Sec. 4.1), averaged over users with a held-out item."""
    V, Uf = split_rows(x, p)
    scores = jnp.einsum("nsr,nscr->nsc", Uf, jax.vmap(lambda v, i: v[i])(V, p.rank_items))
    rho = jnp.sum(scores[..., 1:] > scores[..., :1], axis=-1)
    valid = p.rank_valid if nodes is None else p.rank_valid & jnp.asarray(nodes, bool)[:, None]
    w = valid.astype(jnp.float32)
    hit = (rho < k).astype(jnp.float32)
    ndcg = hit / jnp.log2(rho.astype(jnp.float32) + 2.0)
    n = jnp.maximum(jnp.sum(w), 1.0)
    return jnp.sum(hit * w) / n, jnp.sum(ndcg * w) / n


def evaluate(x, p: MFProblem, k: int = 10, nodes=None) -> dict:
    """``train_rmse``, ``test_rmse``, ``hit_rate@k``, ``ndcg@k`` of the rows ``x`` (floats)."""
    hr, nd = ranking(x, p, k, nodes)
    return {
        "train_rmse": float(rmse(x, p.train, p, nodes)),
        "test_rmse": float(rmse(x, p.test, p, nodes)),
        f"hit_rate@{k}": float(hr),
        f"ndcg@{k}": float(nd),
    }


def inject_shilling(ds, num_fake: int, target_item: int, *, filler: int = 10, high: float | None = None, seed: int = 0):
    """A push (shilling) attack at the data level (Lam & Riedl 2004's average attack): ``num_fake``
    fake users appended (ids ``num_users..``), each rating ``target_item`` ``high`` (default: the
    highest training rating) and ``filler`` random other items at their mean training rating.
    Returns the new dataset; ``info["fake_users"]`` lists the fake ids, ``info["user_cluster"]``
    puts them in a group of their own (last, so ``assign="sorted"`` places them on the last nodes)."""
    import dataclasses

    rng = np.random.default_rng(seed)
    info = dict(ds.info)
    U, m = int(info["num_users"]), int(info["num_items"])
    y = np.asarray(ds.y_train, np.float32)
    high = float(y.max()) if high is None else float(high)
    item_mean = np.bincount(ds.x_train[:, 1], weights=y, minlength=m) / np.maximum(
        np.bincount(ds.x_train[:, 1], minlength=m), 1
    )
    others = np.delete(np.arange(m), target_item)
    fills = np.stack([rng.choice(others, filler, replace=False) for _ in range(num_fake)])
    fake = U + np.arange(num_fake)
    users = np.concatenate([fake, np.repeat(fake, filler)])
    items = np.concatenate([np.full(num_fake, target_item), fills.reshape(-1)])
    ratings = np.concatenate([np.full(num_fake, high), item_mean[fills.reshape(-1)]]).astype(np.float32)
    cluster = np.asarray(info.get("user_cluster", np.zeros(U, np.int32)))
    info.update(
        num_users=U + num_fake,
        fake_users=fake,
        user_cluster=np.concatenate([cluster, np.full(num_fake, cluster.max() + 1)]).astype(np.int32),
    )
    x = np.concatenate([ds.x_train, np.stack([users, items], 1).astype(np.int32)])
    return dataclasses.replace(ds, x_train=x, y_train=np.concatenate([y, ratings]), info=info)


def train(algorithm, channels, p: MFProblem, x0, rounds: int, *, topology=None, honest=None, key=0):
    """``rounds`` rounds of ``algorithm`` (``rj.algorithms``) with ``channels`` on ``p``'s train
    ratings (one jitted ``lax.scan`` of ``rj.round``'s step); returns the final rows."""
    from redeem_jax.round import init_state, make_step

    oracle = mf_oracle(p)
    step = make_step(algorithm, oracle, channels, topology=topology, honest=honest)
    state = init_state(algorithm, oracle, channels, x0, jax.random.PRNGKey(key), topology=topology, honest=honest)

    @jax.jit
    def run(state, data):
        return jax.lax.scan(lambda s, _: (step(s, data, {})[0], None), state, None, length=rounds)[0]

    return algorithm.models(run(state, p.train).algorithm)

"""Decentralized recommendation: D-SGD against gradient tracking, DP on the item factors, shilling.

Matrix factorization over a network (``rj.recommend``; issue 14, point 3): every node holds a
group of users, keeps their factors private and exchanges only its copy of the item factors
(``recommend.item_only``). Three parts, one figure (``recommendation.png``, six panels):

1. **D-SGD vs gradient tracking** on a ring and on a denser 6-regular graph (16 nodes). The data
   are the planted generator's heterogeneous case: 96 users in 16 taste groups, one group per
   node (``assign="sorted"``), rank-4 ratings r = u·v + σε with σ = 0.05 on 60 % of 30 items,
   fitted by a rank-2 model (so no node's own fit is the global one), λ = 1e-4, step η = 0.5,
   2000 rounds. D-SGD (ATC, Lian et al. 2017) with a constant step stops at
   V_i − V̄ = O(ηζ/(1 − λ₂)) (Yuan, Ling & Yin 2016): on the ring (1 − λ₂ small) the consensus
   item factors V̄ keep a non-zero mean gradient; DIGing (Nedić, Olshevsky & Shi 2017) tracks the
   average gradient and reaches a consensual stationary point. Panel (a) shows the network's
   objective (train RMSE at the consensus factors V̄ with each user's own factors) with the
   complete graph as the centralized reference (D-SGD on the complete graph with uniform weights
   *is* centralized block gradient descent, tests/test_recommend.py); panels (b), (c) what users
   get: test RMSE, HR@3 and NDCG@3 with each node's own V_i, against bytes sent per node and
   rounds, with the planted noise level σ (the test RMSE of the planted rank-4 factors) as the
   floor no model can beat. Bytes: 4·d_item per directed edge per exchange (float32 item
   factors; DIGing sends the model and the tracker).
2. **DP on the item factors** (panel d): D-SGD on the ring where every message is clipped to
   norm C = 10 and released with N(0, σ²C²) per coordinate (``recommend.gaussian_messages``, the
   Gaussian mechanism per message), σ ∈ {0.002, 0.01}.
3. **Shilling** (panels e, f), 12 nodes of a 5-regular graph, planted rank-3 ratings (72 users,
   30 items, σ = 0.1), D-SGD η = 0.2, 2000 rounds. (e) *Poisoned item factors*: 2 Byzantine
   nodes send −3x the honest mean of the item factors (sign flipping, Allen-Zhu et al. 2020)
   against plain gossip and ClippedGossip (He, Karimireddy & Jaggi 2022). (f) *Shilling users*:
   12 fake users on the last two nodes (Lam & Riedl 2004's average attack: item 0 at 3, six
   filler items at their mean) against plain gossip and the coordinate-wise trimmed mean (b = 2,
   Yin et al. 2018). Honest nodes' test RMSE against rounds, and the prediction shift of the
   target item (honest users' mean predicted rating of item 0, shilled minus clean run).

Seeds: the library's jitted round (``rj.round.make_step`` inside ``lax.scan``) vmapped over 5
seeds (``jax.vmap`` over the initial factors' key and the run's key: DP noise, attack draws);
one compile per setting. The ratings themselves are one planted draw (seed 0): a new draw
changes the padded shapes. Recommendation runs do not go through the config runner, hence not
``rj.sweep``. ``--movielens PATH`` replaces part 1's data by a MovieLens ``u.data`` /
``ratings.dat`` file (users split at random over the nodes; no σ line).

    python experiments/recommendation.py --out docs/results/recommendation   # 375 s wall at load 20 (14 compiles)
    python experiments/recommendation.py --quick --out /tmp/rec              # the test's run: ring only, 600 rounds
    python experiments/recommendation.py --replot --out docs/results/recommendation  # redraw from the CSV

Writes in DIR: ``curves.csv`` (per part, setting and evaluated round: mean, min, max over seeds
of every metric, ``seeds``), ``final.csv`` (the last round of each setting, same columns plus
the paired rise of honest test RMSE over the attack-free run and the prediction shift),
``summary.json`` and ``recommendation.png``. ``TABLES`` renders the
tables of docs/results.md's "Recommendation" section.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _results  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402
from redeem_jax import recommend as R  # noqa: E402
from redeem_jax.algorithms.dsgd import dsgd  # noqa: E402
from redeem_jax.algorithms.gradient_tracking import diging  # noqa: E402
from redeem_jax.byzantine import aggregators, attacks  # noqa: E402
from redeem_jax.channels import global_view, gossip, robust_gossip, vector_tamper  # noqa: E402
from redeem_jax.core import chain  # noqa: E402
from redeem_jax.data import ratings as DR  # noqa: E402
from redeem_jax.local.optim import local_optimizer  # noqa: E402
from redeem_jax.round import init_state, make_step  # noqa: E402

ATTACK_SIGMA = 0.1  # planted noise of part 3's ratings: the floor of its test RMSE
K = 3  # ranking cut-off: each user's held-out item among 6 unrated ones (7 candidates)
METRICS = ["test_rmse", "train_rmse_consensus", "test_rmse_consensus", f"hr@{K}", f"ndcg@{K}"]


def _consensus(x, p, honest):
    """Rows with every node's item factors replaced by the honest nodes' mean V̄ (users kept)."""
    V, U = R.split_rows(x, p)
    w = honest.astype(V.dtype)
    Vb = jnp.einsum("n,nd->d", w, V.reshape(p.num_nodes, -1)) / jnp.sum(w)
    return jnp.concatenate([jnp.broadcast_to(Vb, (p.num_nodes, p.d_item)), U.reshape(p.num_nodes, -1)], 1)


def _metrics(x, p, honest, target_slots):
    """All metrics of the rows ``x`` over the honest nodes (traced)."""
    xb = _consensus(x, p, honest)
    hr, nd = R.ranking(x, p, K, nodes=honest)
    V, U = R.split_rows(x, p)
    pred = jnp.einsum("nsr,nr->ns", U, V[:, 0])  # every user's predicted rating of item 0
    w = target_slots.astype(pred.dtype)
    return jnp.stack(
        [
            R.rmse(x, p.test, p, honest),
            R.rmse(xb, p.train, p, honest),
            R.rmse(xb, p.test, p, honest),
            hr,
            nd,
            jnp.sum(pred * w) / jnp.maximum(jnp.sum(w), 1.0),
        ]
    )


def trajectories(algo, chans, p, topo, seeds, rounds, every, *, honest=None, real_users=None, init_scale=0.3):
    """Metrics ``[S, 1 + rounds/every, 6]`` (``METRICS`` then the target item's mean prediction)
    of ``algo`` with ``chans`` on ``p``: ``lax.scan`` over rounds of ``rj.round``'s step,
    ``jax.vmap`` over the seeds (initial factors and the run's key), one compile."""
    n = p.num_nodes
    honest_np = np.ones(n, bool) if honest is None else np.asarray(honest, bool)
    slots = np.zeros((n, p.users_per_node), bool)
    users = np.arange(p.num_users) if real_users is None else np.asarray(real_users)
    slots[p.node_of_user[users], p.slot_of_user[users]] = True
    slots &= honest_np[:, None]
    hon, slots = jnp.asarray(honest_np), jnp.asarray(slots)
    oracle = R.mf_oracle(p)
    step = make_step(algo, oracle, chans, topology=topo, honest=None if honest is None else hon)

    def one(seed):
        kx, kr = jax.random.split(jax.random.PRNGKey(seed))
        x0 = R.init_rows(p, kx, init_scale)
        s = init_state(algo, oracle, chans, x0, kr, topology=topo, honest=None if honest is None else hon)

        def chunk(s, _):
            s = jax.lax.scan(lambda s, _: (step(s, p.train, {})[0], None), s, None, length=every)[0]
            return s, _metrics(algo.models(s.algorithm), p, hon, slots)

        _, m = jax.lax.scan(chunk, s, None, length=rounds // every)
        return jnp.concatenate([_metrics(algo.models(s.algorithm), p, hon, slots)[None], m])

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(seeds)), np.float64)


def _rows(part, setting, m, every, bytes_per_round, seeds, **extra):
    """Long-format rows (one per seed and evaluated round) of a trajectory array."""
    out = []
    for si, seed in enumerate(seeds):
        for t in range(m.shape[1]):
            r = {"part": part, "setting": setting, "seed": int(seed), "round": t * every}
            r["bytes_per_node"] = t * every * bytes_per_round
            r.update({k: float(m[si, t, j]) for j, k in enumerate(METRICS)})
            r["target_pred"] = float(m[si, t, -1])
            r.update(extra)
            out.append(r)
    return out


def _wire(topo, p, exchanges):
    """Bytes one node sends per round: float32 item factors over each out-edge, per exchange."""
    return 4 * p.d_item * exchanges * float(np.asarray(topo.edge_mask).sum()) / np.asarray(topo.edge_mask).shape[0]


# --------------------------------------------------------------------------- parts
def part_convergence(a, seeds, log):
    """Part 1 (D-SGD and DIGing on each graph) and part 2 (message noise): long-format rows and
    the figure's data description."""
    if a.movielens:
        ds = DR.movielens(seed=0, path=a.movielens)
        p = R.build_problem(ds, a.nodes, rank=a.rank, assign="random", l2=a.l2, num_negatives=6)
        sigma = None
    else:
        ds = DR.planted(
            seed=0,
            num_users=a.users_per_node * a.nodes,
            num_items=a.items,
            rank=4,
            observed=0.6,
            sigma=0.05,
            clusters=a.nodes,
            spread=0.1,
        )
        p = R.build_problem(ds, a.nodes, rank=a.rank, assign="sorted", l2=a.l2, num_negatives=20)
        sigma = float(ds.info["sigma"])
    opt = local_optimizer("sgd", a.lr)
    graphs = {
        "ring": rj.topology.ring(a.nodes),
        f"{a.degree}-regular": rj.topology.random_regular(a.nodes, a.degree, 0),
    }
    if not a.quick:
        graphs["complete"] = rj.topology.complete(a.nodes)
    rows = []
    for gname, topo in graphs.items():
        ch = lambda: R.item_only(gossip(topo), p.d_item)  # noqa: E731
        algos = {
            "D-SGD": (dsgd(opt, "atc"), {"model": ch()}, 1),
            "DIGing": (diging(opt), {"model": ch(), "tracker": ch()}, 2),
        }
        if gname == "complete":
            algos = {"D-SGD": algos["D-SGD"]}  # = centralized block gradient descent
        if a.quick and gname != "ring":
            continue
        for aname, (algo, chans, ex) in algos.items():
            t0 = time.time()
            m = trajectories(algo, chans, p, topo, seeds, a.rounds, a.every)
            log(f"convergence {gname} {aname}: {time.time() - t0:.1f} s")
            rows += _rows(
                "convergence", f"{aname}, {gname}", m, a.every, _wire(topo, p, ex), seeds, graph=gname, method=aname
            )
    info = {
        "sigma": sigma,
        "n": a.nodes,
        "users": p.num_users,
        "items": p.num_items,
        "rank": p.rank,
        "rounds": a.rounds,
    }
    # DP on the exchanged item factors: D-SGD on the ring.
    topo = rj.topology.ring(a.nodes)
    for s in a.dp_sigmas:
        ch = R.item_only(chain(R.gaussian_messages(s, a.clip), gossip(topo)), p.d_item)
        t0 = time.time()
        m = trajectories(dsgd(opt, "atc"), {"model": ch}, p, topo, seeds, a.rounds, a.every)
        log(f"privacy sigma={s}: {time.time() - t0:.1f} s")
        rows += _rows(
            "privacy",
            f"D-SGD, ring, σ = {s:g}",
            m,
            a.every,
            _wire(topo, p, 1),
            seeds,
            graph="ring",
            method="D-SGD",
            dp_sigma=s,
        )
    return rows, info


def part_attacks(a, seeds, log):
    """Part 3: poisoned item factors (plain gossip, ClippedGossip) and shilling users (plain
    gossip, trimmed mean), each with its attack-free run: long-format rows."""
    n = 12
    topo = rj.topology.random_regular(n, 5, seed=0)
    algo = dsgd(local_optimizer("sgd", 0.2))
    ds0 = DR.planted(seed=0, num_users=72, num_items=30, rank=3, observed=0.5, sigma=ATTACK_SIGMA)
    rows, T, E = [], a.attack_rounds, a.every
    # Poisoned item factors: 2 Byzantine nodes of 12 send −3x the honest mean.
    p = R.build_problem(ds0, n, rank=3, l2=1e-3, num_negatives=20)
    byz = np.zeros(n, bool)
    byz[[0, 6]] = True
    att = global_view(vector_tamper(attacks.get("sign_flip"), scale=3.0), byz)
    chans = {
        "no attack, gossip": gossip(topo),
        "poisoned, gossip": robust_gossip(topo, "gossip", 0, byz, att),
        "poisoned, ClippedGossip": robust_gossip(topo, "clipped_gossip", 2, byz, att),
    }
    for name, c in chans.items():
        t0 = time.time()
        m = trajectories(algo, {"model": R.item_only(c, p.d_item)}, p, topo, seeds, T, E, honest=~byz)
        log(f"poisoned {name}: {time.time() - t0:.1f} s")
        rows += _rows("poisoned", name, m, E, _wire(topo, p, 1), seeds, channel=name.split(", ")[1])
    # Shilling users: 12 fake profiles on the last two nodes push item 0.
    ds = R.inject_shilling(ds0, 12, 0, filler=6, high=3.0)
    for data_name, d in (("no attack", ds0), ("shilling", ds)):
        p = R.build_problem(d, n, rank=3, l2=1e-3, assign="sorted", num_negatives=20)
        hon = np.ones(n, bool)
        hon[[10, 11]] = False  # the nodes hosting the fake users (compared on the same nodes in both runs)
        assert not hon[p.node_of_user[72:]].any()
        for cname, c in (
            ("gossip", gossip(topo)),
            ("trimmed mean", robust_gossip(topo, aggregators.get("trimmed_mean"), 2, ~hon, None)),
        ):
            t0 = time.time()
            m = trajectories(
                algo, {"model": R.item_only(c, p.d_item)}, p, topo, seeds, T, E, honest=hon, real_users=np.arange(72)
            )
            log(f"shilling {data_name} {cname}: {time.time() - t0:.1f} s")
            rows += _rows("shilling", f"{data_name}, {cname}", m, E, _wire(topo, p, 1), seeds, channel=cname)
    return rows


# --------------------------------------------------------------------------- tables
def _load(d: Path, name: str):
    import pandas as pd

    return pd.read_csv(Path(d) / name)


def _band(r, k, digits=3):
    return _results.fmt_band(r[f"{k}_mean"], r[f"{k}_min"], r[f"{k}_max"], digits)


def table_convergence(d: Path) -> str:
    """Final metrics of part 1 per method and graph (mean [min, max] over seeds)."""
    f = _load(d, "final.csv")
    f = f[f["part"] == "convergence"]
    rows = [
        [
            r["setting"],
            _band(r, "train_rmse_consensus"),
            _band(r, "test_rmse_consensus"),
            _band(r, "test_rmse"),
            _band(r, f"hr@{K}"),
            _band(r, f"ndcg@{K}"),
            _results.fmt(r["bytes_per_node"] / 1e6),
            int(r["seeds"]),
        ]
        for _, r in f.iterrows()
    ]
    head = [
        "method, graph",
        "train RMSE at V̄",
        "test RMSE at V̄",
        "test RMSE, own V_i",
        f"HR@{K}",
        f"NDCG@{K}",
        "MB sent per node",
        "seeds",
    ]
    return _results.markdown_table(head, rows)


def table_privacy(d: Path) -> str:
    """Final metrics of part 2 beside the noise-free D-SGD run on the ring."""
    f = _load(d, "final.csv")
    f = f[(f["part"] == "privacy") | ((f["part"] == "convergence") & (f["setting"] == "D-SGD, ring"))]
    rows = [
        [
            r["setting"] if r["part"] == "privacy" else "D-SGD, ring, no noise",
            _band(r, "test_rmse"),
            _band(r, "train_rmse_consensus"),
            _band(r, f"hr@{K}"),
            int(r["seeds"]),
        ]
        for _, r in f.iterrows()
    ]
    return _results.markdown_table(["setting", "test RMSE, own V_i", "train RMSE at V̄", f"HR@{K}", "seeds"], rows)


def table_attacks(d: Path) -> str:
    """Honest test RMSE of part 3, its paired rise over the attack-free run and the target's
    prediction shift."""
    f = _load(d, "final.csv")
    f = f[f["part"].isin(["poisoned", "shilling"])]
    rows = []
    for _, r in f.iterrows():
        attacked = not r["setting"].startswith("no attack")
        rise = _band(r, "rise") if attacked else "–"
        shift = _band(r, "shift") if attacked and r["part"] == "shilling" else "–"
        rows.append([r["part"], r["setting"], _band(r, "test_rmse"), rise, shift, int(r["seeds"])])
    head = [
        "attack",
        "data, channel",
        "honest test RMSE",
        "rise over the attack-free run",
        "prediction shift of item 0",
    ]
    return _results.markdown_table(head + ["seeds"], rows)


TABLES = {"convergence": table_convergence, "privacy": table_privacy, "attacks": table_attacks}


# --------------------------------------------------------------------------- figure
def _plot(ax, band, setting, x, y, **kw):
    b = band[band["setting"] == setting].sort_values("round")
    if b.empty:
        return
    (ln,) = ax.plot(b[x], b[f"{y}_mean"], label=kw.pop("label", setting), **kw)
    ax.fill_between(b[x], b[f"{y}_min"], b[f"{y}_max"], color=ln.get_color(), alpha=0.2, lw=0)


def figure(band, info, path, quick):
    """The six-panel figure from the per-round bands; returns every axis's (title, x, y) labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(2, 3, figsize=(17, 9.5))
    conv = band[band["part"] == "convergence"]
    styles = {"D-SGD": "-", "DIGing": "--"}
    settings = list(conv["setting"].unique())
    colors = {s.split(", ")[1]: {"ring": "C0", "complete": "k"}.get(s.split(", ")[1], "C1") for s in settings}
    ax = axs[0, 0]
    for s in settings:
        m, g = s.split(", ")
        lab = s + (" (= centralized GD)" if g == "complete" else "")
        _plot(ax, conv, s, "round", "train_rmse_consensus", ls=styles[m], color=colors[g], label=lab)
    ax.set(
        title="(a) objective: train RMSE at consensus item factors V̄",
        xlabel="round",
        ylabel="train RMSE (rating units)",
    )
    ax = axs[0, 1]
    for s in settings:
        m, g = s.split(", ")
        b = conv[(conv["setting"] == s) & (conv["round"] > 0)]
        _plot(ax, b, s, "bytes_per_node", "test_rmse", ls=styles[m], color=colors[g])
    if info.get("sigma"):
        ax.axhline(info["sigma"], color="gray", ls=":", label=f"planted noise σ = {info['sigma']:g} (floor)")
    ax.set_xscale("log")
    ax.set(
        title="(b) test RMSE, each node's own V_i, vs communication",
        xlabel="bytes sent per node",
        ylabel="test RMSE (rating units)",
    )
    ax = axs[0, 2]
    for s in settings:
        m, g = s.split(", ")
        _plot(ax, conv, s, "round", f"hr@{K}", ls=styles[m], color=colors[g], label=s)
        _plot(ax, conv, s, "round", f"ndcg@{K}", ls=styles[m], color=colors[g], alpha=0.5, label="_nolegend_")
    ax.axhline(K / 7, color="gray", ls=":", label=f"HR@{K} of a random ranking ({K}/7)")
    ax.set(
        title=f"(c) ranking, own V_i: HR@{K} (opaque), NDCG@{K} (faint)",
        xlabel="round",
        ylabel="hit rate / NDCG (fraction of users)",
    )
    ax = axs[1, 0]
    _plot(ax, conv, "D-SGD, ring", "round", "test_rmse", color="C0", label="D-SGD, ring, no noise")
    priv = band[band["part"] == "privacy"]
    for i, s in enumerate(priv["setting"].unique()):
        _plot(ax, priv, s, "round", "test_rmse", color=f"C{i + 3}")
    ax.set(
        title="(d) Gaussian noise on every item-factor message (C = 10)",
        xlabel="round",
        ylabel="test RMSE, own V_i (rating units)",
    )
    for ax, part, title in (
        (axs[1, 1], "poisoned", "(e) 2 of 12 nodes send −3x the mean item factors"),
        (axs[1, 2], "shilling", "(f) 12 shilling users on 2 of 12 nodes push item 0"),
    ):
        b = band[band["part"] == part]
        for i, s in enumerate(b["setting"].unique()):
            _plot(ax, b, s, "round", "test_rmse", color=f"C{i}", ls="--" if s.startswith("no attack") else "-")
        ax.set(title=title, xlabel="round", ylabel="honest nodes' test RMSE (rating units)")
        if not b.empty:
            ax.axhline(ATTACK_SIGMA, color="gray", ls=":", label=f"planted noise σ = {ATTACK_SIGMA:g} (floor)")
        else:
            ax.text(0.5, 0.5, "not run (--quick)", ha="center", transform=ax.transAxes)
    for ax in axs.flat:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"Decentralized matrix factorization: {info['n']} nodes, {info['users']} users, {info['items']} items, rank-{info['rank']} model"
        + (" (--quick)" if quick else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    axes = [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in axs.flat]
    plt.close(fig)
    return axes


# --------------------------------------------------------------------------- main
def main(argv=None):
    """Run (or with ``--replot`` redraw) and write DIR's files; returns the summary dict."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/recommendation", help="output directory")
    ap.add_argument("--quick", action="store_true", help="600 rounds, 2 seeds, ring only, no DP or attacks (the test)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--movielens", default=None, help="a local MovieLens u.data / ratings.dat file for part 1")
    ap.add_argument("--replot", action="store_true", help="redraw the figure from DIR's curves.csv, run nothing")
    a = ap.parse_args(argv)
    if a.replot:
        import pandas as pd

        summary = json.loads((Path(a.out) / "summary.json").read_text())
        band = pd.read_csv(Path(a.out) / "curves.csv")
        summary["axes"] = {
            "recommendation.png": figure(band, summary, Path(a.out) / "recommendation.png", summary["quick"])
        }
        (Path(a.out) / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
        return summary
    a.nodes, a.users_per_node, a.items, a.rank, a.l2, a.lr, a.degree = 16, 6, 30, 2, 1e-4, 0.5, 6
    a.rounds, a.every, a.attack_rounds, a.dp_sigmas, a.clip = 2000, 50, 2000, (0.002, 0.01), 10.0
    if a.quick:
        a.nodes, a.rounds, a.every, a.seeds, a.dp_sigmas = 16, 600, 100, 2, ()
    out = _results.out_dir(a.out)
    seeds = list(range(a.seeds))
    t0 = time.time()
    log = print
    rows, info = part_convergence(a, seeds, log)
    if not a.quick:
        rows += part_attacks(a, seeds, log)
    import pandas as pd

    df = pd.DataFrame(rows)
    vals = METRICS + ["target_pred"]
    keys = ["part", "setting", "round", "bytes_per_node"]
    band = _results.over_seeds(df, keys, vals)
    band.to_csv(out / "curves.csv", index=False)
    last = df[df["round"] == df.groupby("setting")["round"].transform("max")].copy()
    # Paired by seed: the rise of honest test RMSE over the attack-free run (poisoned: plain
    # gossip; shilling: the same channel) and the prediction shift of the target item.
    last["rise"], last["shift"] = np.nan, np.nan
    for part in ("poisoned", "shilling"):
        sub = last[(last["part"] == part) & ~last["setting"].str.startswith("no attack")]
        for i, r in sub.iterrows():
            ref = "no attack, gossip" if part == "poisoned" else f"no attack, {r['channel']}"
            clean = last[(last["setting"] == ref) & (last["seed"] == r["seed"]) & (last["part"] == part)].iloc[0]
            last.loc[i, "rise"] = r["test_rmse"] - clean["test_rmse"]
            if part == "shilling":
                last.loc[i, "shift"] = r["target_pred"] - clean["target_pred"]
    fin = _results.over_seeds(last, ["part", "setting", "round", "bytes_per_node"], vals + ["rise", "shift"])
    fin.to_csv(out / "final.csv", index=False)
    axes = figure(band, info, out / "recommendation.png", a.quick)
    summary = {
        "quick": a.quick,
        "seeds": len(seeds),
        "wall_s": round(time.time() - t0, 1),
        "axes": {"recommendation.png": axes},
        **info,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    log(f"wrote {out} in {summary['wall_s']} s")
    return summary


if __name__ == "__main__":
    main()

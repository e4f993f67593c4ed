"""Accuracy against ε for three privacy models: local DP, central DP with secure aggregation, network DP.

Digits, an MLP, n nodes, plain SGD (so that a node's message is exactly the linear model of
:mod:`redeem_jax.privacy.network_dp`). One line per privacy model × topology:

* **local DP** (``privacy.mode="dp_sgd"``): every node runs DP-SGD (Abadi et al. 2016; Poisson
  sampling, per-example clipping to C, N(0, σ²C²) on the sum), in gossip D-SGD on a ring, the
  exponential graph and the complete graph, and with a server (``algorithm.name="fedavg"``).
  **Example-level** ε of one node's data against anyone who sees its messages.
* **central DP** (``privacy.mode="central"``): DP-FedAvg (McMahan et al. 2018) — every node clips
  its round update, the server sees only the securely aggregated sum (Bonawitz et al. 2017) and
  adds N(0, σ²C²) once. **Node-level** ε (a whole node's data, a far stronger unit) against the
  server and everyone it broadcasts to.
* **network DP** (Cyffers & Bellet 2022): the *same* local-DP gossip runs, accounted against the
  other nodes only. Observer v sees its in-neighbours' messages m_t (ATC: m_{t+1} = W m_t − η(g_t +
  ξ_t), fresh noise every step). Node u's per-step contributions δ_t (‖δ_t‖ ≤ C, like its noise)
  enter v's view exactly like u's noise draws: y = A_u δ + N ξ, A_u = u's noise columns of N (the
  exact linear view of ``network_dp``, v's own noise conditioned away). With P = (N Nᵀ)^{-½} A_u and
  M = PᵀP (0 ⪯ M ⪯ I), any diagonal D ⪰ M makes v's view a post-processing of u running DP-SGD with
  per-step noise multipliers σ/√D_t (apply P D^{-½} and add independent Gaussian noise of covariance
  I − P D⁻¹ Pᵀ ⪰ 0), accounted like the local ε (same q, steps, RDP, δ). We take the smallest of:
  the local ε (post-processing, D = I), D = Gershgorin row sums of |M|, and D = Jacobi-scaled diag(M).
  This bounds every choice of per-step contributions, so it is larger than
  ``leakage_matrix(value="every_step")`` (which assumes the same contribution every step): a direct
  neighbour on the ring still sees each step at ~0.93 of local DP (``network.csv``, leakage_worst).
  **Example-level** ε against the other nodes, not against an outside observer of all messages. As in Cyffers & Bellet's linear
  view, a contribution's dependence on hidden states through the gradient (adaptivity) is not
  modelled. The per-message Muffliato formula is never used (it can underestimate;
  docs/network_dp.md).

Each line is one ``rj.sweep`` over target ε × seed (σ calibrated per ε by dp-accounting, RDP;
seeds redraw the initial model, the minibatches and the DP noise; the graph and the partition are
those of ``--seed``): one compile per line, plus one sweep over seeds per non-private reference.
The network ε depend on the graph, σ, q and T only, so they carry no seed spread. A separate part
runs the shipped ``configs/dp.py`` (16-node ring, ε = 4) over the same seeds, private and not.

    python experiments/privacy_utility.py --out docs/results/privacy_utility   # ~1400 s wall at load 9-19
    python experiments/privacy_utility.py --quick --out /tmp/privacy_utility   # the test's run

The accuracy-against-ε part (9 sweeps and the leakage bounds of 3 graphs) took 1309 s wall and
about 4 min of CPU on the shared 2-core machine at load 9-19 (partly beside this task's
byzantine_federated run); ``--parts dp_config`` reruns only the configs/dp.py part. Alone on 2
quiet cores the whole run is about 5-7 min; the configs/dp.py part took 114 s wall, 36 s CPU. Results (docs/results.md, means over 3 seeds):
accuracy rises with ε on every line (ring 0.362 → 0.801 from ε = 1 to 8); the network ε of the
worst pair (a direct neighbour) keeps 97% of the local ε on the ring and the exponential graph,
while the mean over pairs is 2.5-2.9× (ring) and 2.1-2.3× (exponential) smaller; on the complete
graph it equals the local ε. Node-level central DP with only n = 16 nodes is far worse (0.347 at
ε = 8): its noise on the average, σC√d/n, dwarfs an update of norm ≤ C.

Writes in DIR: ``runs.csv`` (one row per line, target ε and seed: final accuracy of the averaged
model and mean over nodes' own models, ε spent, σ), ``accuracy.csv`` (per line and ε: mean, min,
max over seeds, seed and diverged counts), ``network.csv`` (per topology and ε: local ε, network ε
of the worst pair and mean over pairs, per-step leakage), ``network_matrices.json`` (the n × n
network ε of each run; -1 on the diagonal), ``dp_config.csv`` (configs/dp.py per seed), ``meta.json``
and ``privacy_utility.png`` (accuracy against ε with min–max bands; network ε against local ε
with the local-DP bound ε_net ≤ ε_local as a line). A run with a non-finite test loss is
diverged: NaN accuracy, 'diverged' in the tables, a cross on the figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _results as R  # noqa: E402
import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402
from redeem_jax.experiment.sweep import final  # noqa: E402
from redeem_jax.privacy import accounting  # noqa: E402
from redeem_jax.privacy import network_dp as nd  # noqa: E402

EPS_LABEL = {
    "local_dp": "local DP (example-level, vs everyone)",
    "central_dp": "central DP + secure agg. (node-level)",
    "network_dp": "network DP (example-level, vs other nodes)",
    "none": "non-private",
}
LINE_TITLE = {
    ("local_dp", "gossip", "ring"): "local DP, gossip, ring",
    ("local_dp", "gossip", "exponential"): "local DP, gossip, exponential",
    ("local_dp", "gossip", "complete"): "local DP, gossip, complete",
    ("local_dp", "server", "star"): "local DP, server (FedAvg)",
    ("central_dp", "server", "star"): "central DP, server (FedAvg)",
}


def config(args, setting: str, topology: str, mode: str, eps: float):
    """setting: 'gossip' (D-SGD on ``topology``) or 'server' (FedAvg); mode: none | dp_sgd | central."""
    c = rj.config.base_config()
    c.seed = args.seed
    c.num_nodes = args.n
    c.data.name = "digits"
    c.data.batch_size = args.batch
    c.model.hidden = (args.hidden,)
    c.optimizer.name = "sgd"  # messages are then exactly the linear model used for network DP
    c.optimizer.learning_rate = args.lr
    c.num_rounds = args.rounds
    c.eval_every = args.rounds
    c.checkpoint_every = 0
    c.progress = False
    c.plots = False
    if setting == "server":
        c.algorithm.name = "fedavg"
    else:
        c.topology.name = topology
    c.privacy.mode = mode
    c.privacy.delta = args.delta
    if mode == "dp_sgd":
        c.privacy.sampling = "poisson"  # q = batch / mean shard size
        c.privacy.clip_norm = 1.0
        c.privacy.target_epsilon = float(eps)
    elif mode == "central":
        c.privacy.clip_norm = args.central_clip
        c.privacy.target_epsilon = float(eps)
    return c


# --------------------------------------------------------------------------- network DP


def _is_circulant(W: np.ndarray) -> bool:
    n = W.shape[-1]
    return all(np.allclose(W[t], np.stack([np.roll(W[t, 0], i) for i in range(n)])) for t in range(W.shape[0]))


def step_leakage_bounds(topology, T: int, rtol: float = 1e-9) -> dict:
    """Per-step leakage bounds ``{(u, v): [k, T]}`` for T rounds of fresh-noise gossip (module docstring).

    For observer v, N = its view's noise coefficients (``network_dp.observation_matrix``,
    noise="fresh") without v's own columns, A_u = the columns of u's T noise draws (u's per-step
    contribution enters exactly like its noise), M = A_uᵀ (N Nᵀ)⁺ A_u (T × T, 0 ⪯ M ⪯ I). Each
    returned row is a diagonal D with M ⪯ D: Gershgorin (row sums of |M|) and Jacobi
    (λ_max(diag(M)^-½ M diag(M)^-½) · diag(M)). Circulant graphs (ring, exponential, complete with
    MH weights) are computed from observer 0 and rotated.
    """
    W = nd.mixing_sequence(topology, T)
    n = W.shape[-1]
    circulant = _is_circulant(W)
    out = {}
    for v in [0] if circulant else range(n):
        _, Nv = nd.observation_matrix(W, v, noise="fresh")
        col_node = np.arange(Nv.shape[1]) % n
        U, s, _ = np.linalg.svd(Nv[:, col_node != v], full_matrices=False)
        keep = s > rtol * s[0]
        U, s = U[:, keep], s[keep]
        for u in range(n):
            if u == v:
                continue
            P = (U.T @ Nv[:, col_node == u]) / s[:, None]  # whitened view of u's per-step contributions
            M = P.T @ P
            dg = np.clip(np.diag(M), 0.0, None)
            nz = dg > 1e-12
            jac = np.zeros(T)
            if nz.any():
                r = 1.0 / np.sqrt(dg[nz])
                k = float(np.linalg.eigvalsh(M[np.ix_(nz, nz)] * r[:, None] * r[None, :])[-1])
                jac[nz] = k * dg[nz]
            out[(u, v)] = np.stack([np.abs(M).sum(1), jac])
    if circulant:
        for v in range(1, n):
            for u in range(n):
                if u != v:
                    out[(u, v)] = out[((u - v) % n, 0)]
    return out


_RDP_CACHE: dict = {}


def _rdp(q: float, sigma: float) -> np.ndarray:
    """RDP curve of one Poisson-subsampled Gaussian step (dp-accounting's, over its default orders; cached)."""
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    key = (q, sigma)
    if key not in _RDP_CACHE:
        _RDP_CACHE[key] = np.asarray(rdp._compute_rdp_poisson_subsampled_gaussian(q, sigma, rdp.DEFAULT_RDP_ORDERS))
    return _RDP_CACHE[key]


def _heterogeneous_epsilon(sigma: float, q: float, d: np.ndarray, delta: float, grid: float = 1.05) -> float:
    """RDP ε of DP-SGD steps with noise multipliers σ/√d_t, composed (RDP adds up; Mironov 2017).

    d_t is rounded *up* to a ×1.05 grid (a larger d_t is still a valid bound) so that curves are
    shared; d_t = 0 is no release. Same orders and conversion as dp-accounting's RdpAccountant.
    """
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    d = d[d > 1e-12]
    if d.size == 0:
        return 0.0
    exps, counts = np.unique(np.ceil(np.log(d) / math.log(grid) - 1e-9).astype(int), return_counts=True)
    total = sum(c * _rdp(q, sigma / math.sqrt(grid ** float(k))) for k, c in zip(exps, counts))
    return float(rdp.compute_epsilon(rdp.DEFAULT_RDP_ORDERS, total, delta)[0])


def network_epsilons(bounds: dict, n: int, sigma: float, q: float, steps: int, delta: float) -> np.ndarray:
    """(ε, δ) from u to observer v: the smallest of the local-DP ε (post-processing) and the
    heterogeneous DP-SGD ε of each diagonal bound D (v's view is a post-processing of u's DP-SGD with
    per-step noise multipliers σ/√D_t). All three are valid upper bounds; diagonal = inf."""
    local = accounting.epsilon(sigma, q, steps, delta, accountant="rdp", sampling="poisson")
    out = np.full((n, n), np.inf)
    cache = {}
    for (u, v), ds in bounds.items():
        key = ds.tobytes()
        if key not in cache:
            cache[key] = min([local] + [_heterogeneous_epsilon(sigma, q, d, delta) for d in ds])
        out[u, v] = cache[key]
    return out


# --------------------------------------------------------------------------- runs


def _sigma_q(c, eps: float) -> tuple[float, float]:
    """(σ, q) that ``rj.sweep`` uses for target ``eps`` on config ``c`` (same accountant and steps)."""
    p = rj.build(c).privacy
    steps = c.num_rounds * p["steps_per_round"]
    sigma = accounting.noise_multiplier_for(
        eps, p["sample_rate"], steps, p["delta"], accountant=p["accountant"], sampling=p["sampling"]
    )
    return float(sigma), float(p["sample_rate"])


def _sweep(c, axes: dict, **cols):
    """Final rows of ``rj.sweep(c, axes)`` with ``cols`` added, and its trace counts."""
    full = rj.sweep(c, axes, progress=False)
    df = final(full).rename(columns={"privacy.target_epsilon": "target_epsilon", "epsilon": "epsilon_spent"})
    for k, v in cols.items():
        df[k] = v
    if "target_epsilon" not in df:
        df["target_epsilon"] = math.inf
    if "epsilon_spent" not in df:  # a run without privacy accounts nothing
        df["epsilon_spent"] = math.inf
    return df, full.attrs["traces"]


def run(args):
    """Per-seed final rows of every line, the network-DP rows, the n × n network ε and the traces."""
    import pandas as pd

    eps_grid = [float(e) for e in args.eps.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    topologies = args.topologies.split(",")
    lines = [("local_dp", "gossip", t) for t in topologies]
    if not args.no_server_ldp:
        lines.append(("local_dp", "server", "star"))
    if not args.no_central:
        lines.append(("central_dp", "server", "star"))
    central_grid = [float(e) for e in args.central_eps.split(",")] if args.central_eps else eps_grid
    frames, traces, net_rows, matrices = [], {}, [], {}
    for setting, topo in dict.fromkeys((s, t) for _, s, t in lines):
        t0 = time.perf_counter()
        df, traces[f"none, {setting}, {topo}"] = _sweep(
            config(args, setting, topo, "none", math.inf), {"seed": seeds}, model="none", setting=setting, topology=topo
        )
        frames.append(df)
        print(f"non-private {setting} {topo}: {time.perf_counter() - t0:.0f} s", flush=True)
    for model, setting, topo in lines:
        t0 = time.perf_counter()
        grid = central_grid if model == "central_dp" else eps_grid
        mode = "dp_sgd" if model == "local_dp" else "central"
        c = config(args, setting, topo, mode, grid[0])
        df, traces[f"{model}, {setting}, {topo}"] = _sweep(
            c, {"privacy.target_epsilon": grid, "seed": seeds}, model=model, setting=setting, topology=topo
        )
        sq = {e: _sigma_q(config(args, setting, topo, mode, e), e) for e in grid}
        df["noise_multiplier"] = [sq[e][0] for e in df["target_epsilon"]]
        frames.append(df)
        print(f"{model} {setting} {topo}: {time.perf_counter() - t0:.0f} s", flush=True)
        if model == "local_dp" and setting == "gossip":
            t0 = time.perf_counter()
            B = step_leakage_bounds(rj.build(c).topology, args.rounds)
            off = ~np.eye(args.n, dtype=bool)
            lk = np.array([min(ds.mean(1)) for ds in B.values()])  # per-step leakage of the tighter D (1 = local)
            for e in grid:
                sigma, q = sq[e]
                E = network_epsilons(B, args.n, sigma, q, args.rounds, args.delta)
                net_rows.append(
                    dict(
                        topology=topo,
                        target_epsilon=e,
                        noise_multiplier=sigma,
                        sample_rate=q,
                        epsilon_local=accounting.epsilon(sigma, q, args.rounds, args.delta),
                        network_epsilon_worst=float(E[off].max()),
                        network_epsilon_mean=float(E[off].mean()),
                        leakage_worst=float(lk.max()),
                        leakage_mean=float(lk.mean()),
                    )
                )
                matrices[f"{topo}, ε={e:g}"] = np.where(np.isfinite(E), E, -1.0).round(6).tolist()  # -1: diagonal
            print(f"    network leakage on {topo}: {time.perf_counter() - t0:.0f} s", flush=True)
    runs = pd.concat(frames, ignore_index=True)
    runs["noise_multiplier"] = runs["noise_multiplier"].fillna(0.0)
    diverged = ~np.isfinite(runs["test_loss"].to_numpy(float))
    runs["diverged"] = diverged.astype(int)
    runs.loc[diverged, ["test_accuracy", "node_test_accuracy_mean"]] = np.nan  # no accuracy for a NaN model
    cols = ["model", "setting", "topology", "target_epsilon", "seed", "node_test_accuracy_mean", "test_accuracy"]
    cols += ["test_loss", "epsilon_spent", "noise_multiplier", "diverged"]
    return runs[cols], pd.DataFrame(net_rows), matrices, traces


def run_dp_config(seeds):
    """configs/dp.py (16-node ring, ε = 4, 300 rounds) over ``seeds``, private and with privacy off."""
    import pandas as pd

    from redeem_jax.configs.dp import get_config

    c = get_config()
    c.checkpoint_every, c.progress, c.plots = 0, False, False
    c.eval_every = c.num_rounds
    priv, tr1 = _sweep(c, {"seed": seeds}, mode="dp_sgd")
    priv["noise_multiplier"] = _sigma_q(c, c.privacy.target_epsilon)[0]
    priv["target_epsilon"] = c.privacy.target_epsilon
    c.privacy = rj.config.base_config().privacy  # privacy off: every privacy field at its default
    plain, tr2 = _sweep(c, {"seed": seeds}, mode="none")
    plain["noise_multiplier"] = 0.0
    df = pd.concat([priv, plain], ignore_index=True)
    cols = ["mode", "seed", "target_epsilon", "epsilon_spent", "noise_multiplier", "test_accuracy", "test_loss"]
    return df[cols], {"dp_config, dp_sgd": tr1, "dp_config, none": tr2}


# --------------------------------------------------------------------------- output


def summarize(runs):
    by = ["model", "setting", "topology", "target_epsilon"]
    s = R.over_seeds(runs, by, ["node_test_accuracy_mean", "test_accuracy"])
    g = runs.groupby(by, sort=False, dropna=False)
    s["diverged"] = g["diverged"].sum().to_numpy()
    s["noise_multiplier"] = g["noise_multiplier"].first().to_numpy()
    return s


def _band(r, col):
    return R.fmt_band(r[f"{col}_mean"], r[f"{col}_min"], r[f"{col}_max"])


def accuracy_table(folder: Path) -> str:
    """Mean test accuracy of the nodes' own models, per line × target ε, with the non-private reference."""
    import pandas as pd

    s = pd.read_csv(Path(folder) / "accuracy.csv")
    eps = sorted(e for e in s["target_epsilon"].unique() if math.isfinite(e))
    rows = []
    for key, title in LINE_TITLE.items():
        part = s[(s["model"] == key[0]) & (s["setting"] == key[1]) & (s["topology"] == key[2])]
        if part.empty:
            continue
        ref = s[(s["model"] == "none") & (s["setting"] == key[1]) & (s["topology"] == key[2])]
        unit = "node-level" if key[0] == "central_dp" else "example-level"
        cells = [
            next((_band(r, "node_test_accuracy_mean") for _, r in part[part["target_epsilon"] == e].iterrows()), "—")
            for e in eps
        ]
        rows.append([f"{title} ({unit})", *cells, _band(ref.iloc[0], "node_test_accuracy_mean") if len(ref) else "—"])
    k = int(s["seeds"].min())
    return (
        f"Mean test accuracy of the nodes' own models, mean [min, max] over {k} seeds\n\n"
        + R.markdown_table(["line (ε unit)", *(f"ε = {e:g}" for e in eps), "non-private"], rows)
    )  # fmt: skip


def network_table(folder: Path) -> str:
    """Network ε (worst pair, mean over pairs) of the local-DP gossip runs, per topology × local ε."""
    import pandas as pd

    s = pd.read_csv(Path(folder) / "network.csv")
    eps = sorted(s["target_epsilon"].unique())
    rows = []
    for topo in dict.fromkeys(s["topology"]):
        part = s[s["topology"] == topo].set_index("target_epsilon")
        for label, col in (
            ("network ε, worst pair", "network_epsilon_worst"),
            ("network ε, mean over pairs", "network_epsilon_mean"),
        ):
            rows.append([topo, label, *(R.fmt(part.loc[e, col]) if e in part.index else "—" for e in eps)])
        rows.append(
            [
                topo,
                "per-step leakage, worst / mean pair",
                *(
                    f"{R.fmt(part.loc[e, 'leakage_worst'])} / {R.fmt(part.loc[e, 'leakage_mean'])}"
                    if e in part.index
                    else "—"
                    for e in eps
                ),
            ]
        )
    return (
        "Network ε of the same local-DP runs (all ordered pairs; depends on the graph, σ, q and T only, so "
        "it is the same for every seed)\n\n"
        + R.markdown_table(["topology", "quantity", *(f"local ε = {e:g}" for e in eps)], rows)
    )  # fmt: skip


def dp_config_table(folder: Path) -> str:
    """configs/dp.py over seeds: ε spent, σ and test accuracy, private against privacy off."""
    import pandas as pd

    d = pd.read_csv(Path(folder) / "dp_config.csv")
    rows = []
    for mode, part in d.groupby("mode", sort=False):
        acc = part["test_accuracy"]
        rows.append(
            [
                "DP-SGD (privacy.mode = dp_sgd)" if mode == "dp_sgd" else "no DP (privacy.mode = none)",
                R.fmt(part["epsilon_spent"].iloc[0]) if mode == "dp_sgd" else "∞",
                R.fmt(part["noise_multiplier"].iloc[0]),
                R.fmt_band(acc.mean(), acc.min(), acc.max()) if acc.notna().all() else "diverged",
            ]
        )
    k = d["seed"].nunique()
    return f"configs/dp.py, test accuracy of the averaged model, mean [min, max] over {k} seeds\n\n" + R.markdown_table(
        ["run", "ε spent (δ = 1e-5)", "σ", "test accuracy"], rows
    )


TABLES = {"accuracy": accuracy_table, "network": network_table, "dp_sgd": dp_config_table}


def plot(s, net, path, title=""):
    """(a) accuracy against ε per line with min–max bands; (b) network ε against local ε, with the bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.5, 1]})
    colors = dict(zip(["ring", "exponential", "complete", "star"], plt.cm.tab10.colors))
    col = "node_test_accuracy_mean"
    for (model, setting, topo), title_ in LINE_TITLE.items():
        r = s[(s["model"] == model) & (s["setting"] == setting) & (s["topology"] == topo)].sort_values("target_epsilon")
        if r.empty:
            continue
        c = "k" if model == "central_dp" else colors[topo]
        style = {"local_dp": "o-", "central_dp": "D-."}[model]
        server_ldp = model == "local_dp" and setting == "server"
        lab = title_ + (" (= complete graph: exact averaging)" if server_ldp else "")
        lab += " [node-level ε]" if model == "central_dp" else ""
        ok = (r["diverged"] == 0).to_numpy()
        x = r["target_epsilon"].to_numpy()
        ax.plot(x[ok], r[f"{col}_mean"][ok], "^:" if server_ldp else style, color=c, label=lab,
                ms=10 if server_ldp else 5, mfc="none" if server_ldp else None, zorder=3 if server_ldp else 2)  # fmt: skip
        ax.fill_between(x[ok], r[f"{col}_min"][ok], r[f"{col}_max"][ok], color=c, alpha=0.15)
        if (~ok).any():
            ax.plot(x[~ok], np.full((~ok).sum(), 0.02), "x", color=c, ms=8, mew=2, label=f"{title_}: diverged")
        if model == "local_dp" and setting == "gossip" and not net.empty:
            n_ = net[net["topology"] == topo].set_index("target_epsilon").reindex(x)
            for q, mk, ls in (("network_epsilon_worst", "s", "--"), ("network_epsilon_mean", "x", ":")):
                which = "worst pair" if q.endswith("worst") else "mean over pairs"
                ax.plot(n_[q].to_numpy()[ok], r[f"{col}_mean"][ok], ls, marker=mk, color=c, ms=5, alpha=0.7,
                        label=f"network DP ({which}), {topo}")  # fmt: skip
    for _, r in s[s["model"] == "none"].iterrows():
        name = "server" if r["setting"] == "server" else r["topology"]
        ax.axhline(
            r[f"{col}_mean"], color=colors[r["topology"]], lw=0.8, ls=":", alpha=0.7, label=f"non-private, {name}"
        )
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    ticks = [t for t in (0.1, 0.25, 0.5, 1, 2, 4, 8, 16) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("ε accounted at δ = 1e-5 (local / network: example-level; central: node-level)")
    ax.set_ylabel("test accuracy, mean over nodes (fraction correct)")
    ax.set_ylim(0, 1)
    ax.set_title("(a) accuracy against ε (bands: min–max over seeds; dotted horizontals: non-private)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, loc="lower right")
    if not net.empty:
        lim = [net["epsilon_local"].min() * 0.8, net["epsilon_local"].max() * 1.25]
        bx.plot(lim, lim, "k-", lw=1, label="ε_net = ε_local (post-processing bound; complete graph)")
        for topo in dict.fromkeys(net["topology"]):
            r = net[net["topology"] == topo].sort_values("epsilon_local")
            bx.plot(
                r["epsilon_local"],
                r["network_epsilon_worst"],
                "s--",
                color=colors[topo],
                ms=5,
                label=f"{topo}: worst pair",
            )
            bx.plot(r["epsilon_local"], r["network_epsilon_mean"], "x:", color=colors[topo], ms=6, label=f"{topo}: mean over pairs")  # fmt: skip
        bx.set_xscale("log")
        bx.set_yscale("log")
        bx.set_xlabel("local ε accounted (example-level, δ = 1e-5)")
        bx.set_ylabel("network ε against another node (example-level, δ = 1e-5)")
        bx.set_title("(b) network DP of the same runs (no seed spread: σ, q, T and the graph fix it)", fontsize=9)
        bx.grid(alpha=0.3, which="both")
        bx.legend(fontsize=6, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _title(n, rounds, delta, seeds):
    return f"digits, n = {n}, {rounds} rounds, plain SGD, δ = {delta:g}; mean and min–max over {seeds} seeds"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/privacy_utility")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--eps", default="0.5,1,2,4,8")
    ap.add_argument("--topologies", default="ring,exponential,complete")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--central-clip", type=float, default=0.1, help="clip norm of a node's round update (central DP)")
    ap.add_argument("--no-central", action="store_true")
    ap.add_argument("--central-eps", default="", help="ε grid of central DP (default: --eps)")
    ap.add_argument("--no-server-ldp", action="store_true", help="skip local DP with a server")
    ap.add_argument("--no-dp-config", action="store_true", help="skip the configs/dp.py part")
    ap.add_argument(
        "--parts",
        default="lines,dp_config",
        help="lines (accuracy against ε), dp_config; a part left out is read from DIR",
    )
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0, help="the graph and the partition")
    ap.add_argument("--seeds", default="0,1,2", help="the seed axis of every sweep")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="8 nodes, 60 rounds, 2 seeds: local/network DP on a ring at ε ∈ {1, 8}, no central DP, no configs/dp.py",
    )
    ap.add_argument("--replot", action="store_true", help="redraw DIR/privacy_utility.png from its CSVs")
    args = ap.parse_args(argv)
    import pandas as pd
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # dp-accounting's RDP warnings on low orders
    out = R.out_dir(args.out)
    if args.replot:
        s, net = pd.read_csv(out / "accuracy.csv"), pd.read_csv(out / "network.csv")
        meta = json.loads((out / "meta.json").read_text())
        plot(s, net, out / "privacy_utility.png", _title(meta["n"], meta["rounds"], meta["delta"], len(meta["seeds"])))
        return s
    if args.quick:
        args.n, args.rounds, args.eps, args.topologies, args.seeds = 8, 60, "1,8", "ring", "0,1"
        args.no_server_ldp = args.no_central = args.no_dp_config = True
    parts = args.parts.split(",")
    old = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}
    traces, wall = dict(old.get("traces", {})), dict(old.get("wall_seconds", {}))
    t0 = time.perf_counter()
    if "lines" in parts:
        runs, net, matrices, tr = run(args)
        traces.update(tr)
        s = summarize(runs)
        runs.to_csv(out / "runs.csv", index=False, float_format="%.6g")
        s.to_csv(out / "accuracy.csv", index=False, float_format="%.6g")
        net.to_csv(out / "network.csv", index=False, float_format="%.6g")
        (out / "network_matrices.json").write_text(json.dumps(matrices))
        wall["lines"] = round(time.perf_counter() - t0, 1)
    else:
        s, net = pd.read_csv(out / "accuracy.csv"), pd.read_csv(out / "network.csv")
    seeds = [int(x) for x in args.seeds.split(",")]
    if not args.no_dp_config and "dp_config" in parts:
        t = time.perf_counter()
        dpc, tr = run_dp_config(seeds)
        traces.update(tr)
        dpc.to_csv(out / "dp_config.csv", index=False, float_format="%.6g")
        wall["dp_config"] = round(time.perf_counter() - t, 1)
        print(f"configs/dp.py: {time.perf_counter() - t:.0f} s", flush=True)
    wall_total = time.perf_counter() - t0
    meta = dict(
        n=args.n, rounds=args.rounds, batch=args.batch, hidden=args.hidden, lr=args.lr, delta=args.delta,
        seeds=seeds, wall_seconds=wall, traces=traces,
        d=int(rj.build(config(args, "gossip", "ring", "none", math.inf)).model.num_params),
    )  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    plot(s, net, out / "privacy_utility.png", title=_title(args.n, args.rounds, args.delta, len(seeds)))
    for name, fn in TABLES.items():
        if name != "dp_sgd" or not args.no_dp_config:
            print(fn(out), "\n")
    print(
        f"wrote {out}: runs.csv, accuracy.csv, network.csv, network_matrices.json, meta.json, png ({wall_total:.0f} s)"
    )
    return s


if __name__ == "__main__":
    main()

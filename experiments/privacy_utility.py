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
  neighbour on the ring still sees each step at ~0.86 of local DP. **Example-level** ε against the
  other nodes, not against an outside observer of all messages. As in Cyffers & Bellet's linear
  view, a contribution's dependence on hidden states through the gradient (adaptivity) is not
  modelled. The per-message Muffliato formula is never used (it can underestimate;
  docs/network_dp.md).

Each point is one run at ``privacy.target_epsilon``; σ is calibrated by dp-accounting (RDP).

    python experiments/privacy_utility.py --out runs/privacy_utility          # ~13 min on 2 shared cores
    python experiments/privacy_utility.py --quick --out /tmp/privacy_utility  # ~30 s of CPU

Writes DIR/privacy_utility.{csv,json,md,png}. Expected (docs/results.md): accuracy rises with ε
on every line (ring 0.37 → 0.81 from ε = 1 to 8); the network ε of the worst pair (a direct
neighbour) keeps ~97% of the local ε on the ring and the exponential graph, while the mean over
pairs is 2.5-2.9× (ring) and 2.1-2.3× (exponential) smaller; on the complete graph it equals the
local ε (an observer sees every message and recovers each node's noisy contribution). Node-level
central DP with only n = 16 nodes is far worse (0.26 at ε = 8): its noise on the average, σC√d/n,
dwarfs an update of norm ≤ C; DP-FedAvg needs many more nodes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402
from redeem_jax.privacy import accounting  # noqa: E402
from redeem_jax.privacy import network_dp as nd  # noqa: E402

EPS_LABEL = {
    "local_dp": "local DP (example-level, vs everyone)",
    "central_dp": "central DP + secure agg. (node-level)",
    "network_dp": "network DP (example-level, vs other nodes)",
    "none": "non-private",
}
COLUMNS = (
    "model",
    "setting",
    "topology",
    "eps_unit",
    "target_epsilon",
    "epsilon",
    "epsilon_local",
    "network_epsilon_worst",
    "network_epsilon_mean",
    "leakage_worst",
    "leakage_mean",
    "noise_multiplier",
    "sample_rate",
    "rounds",
    "n",
    "test_accuracy",
    "node_accuracy_mean",
    "seconds",
)


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


def run(args) -> list[dict]:
    eps_grid = [float(e) for e in args.eps.split(",")]
    topologies = args.topologies.split(",")
    lines = [("local_dp", "gossip", t) for t in topologies]
    if not args.no_server_ldp:
        lines.append(("local_dp", "server", "star"))
    if not args.no_central:
        lines.append(("central_dp", "server", "star"))
    rows, leak_cache = [], {}
    total = (
        len(lines) * len(eps_grid)
        + len(topologies)
        + 1
        - (len(eps_grid) - len(args.central_eps.split(",")) if args.central_eps and not args.no_central else 0)
    )
    done = 0

    def one(model, setting, topo, mode, eps):
        nonlocal done
        t = time.perf_counter()
        res = rj.run(config(args, setting, topo, mode, eps))
        fin = res.final
        priv = res.experiment.privacy or {}
        row = dict(
            model=model,
            setting=setting,
            topology=topo,
            eps_unit=EPS_LABEL[model],
            target_epsilon=eps if mode != "none" else math.inf,
            epsilon=fin.get("epsilon", math.inf),
            epsilon_local=fin.get("epsilon", math.inf),
            network_epsilon_worst=None,
            network_epsilon_mean=None,
            leakage_worst=None,
            leakage_mean=None,
            noise_multiplier=priv.get("noise_multiplier", 0.0),
            sample_rate=priv.get("sample_rate"),
            rounds=args.rounds,
            n=args.n,
            test_accuracy=fin["test_accuracy"],
            node_accuracy_mean=fin["node_test_accuracy_mean"],
            seconds=time.perf_counter() - t,
        )
        done += 1
        print(
            f"[{done}/{total}] {model:10s} {setting:6s} {topo:12s} ε={row['target_epsilon']:<5g} "
            f"σ={row['noise_multiplier']:.3f} acc={row['test_accuracy']:.3f} "
            f"node acc={row['node_accuracy_mean']:.3f} ({row['seconds']:.1f}s)",
            flush=True,
        )
        return res, row

    for setting, topo in [("gossip", t) for t in topologies] + [("server", "star")]:
        _, row = one("none", setting, topo, "none", math.inf)
        rows.append(row)
    central_grid = [float(e) for e in args.central_eps.split(",")] if args.central_eps else eps_grid
    for model, setting, topo in lines:
        for eps in central_grid if model == "central_dp" else eps_grid:
            res, row = one(model, setting, topo, "dp_sgd" if model == "local_dp" else "central", eps)
            rows.append(row)
            if model == "local_dp" and setting == "gossip":
                if topo not in leak_cache:
                    t = time.perf_counter()
                    leak_cache[topo] = step_leakage_bounds(res.experiment.topology, args.rounds)
                    print(f"    network leakage on {topo}: {time.perf_counter() - t:.1f}s", flush=True)
                B = leak_cache[topo]
                off = ~np.eye(args.n, dtype=bool)
                E = network_epsilons(B, args.n, row["noise_multiplier"], row["sample_rate"], args.rounds, args.delta)
                # per-step leakage of the tighter diagonal bound, averaged over steps (1 = local DP)
                lk = np.array([min(ds.mean(1)) for ds in B.values()])
                net = dict(
                    row,
                    model="network_dp",
                    eps_unit=EPS_LABEL["network_dp"],
                    epsilon=float(E[off].max()),
                    network_epsilon_worst=float(E[off].max()),
                    network_epsilon_mean=float(E[off].mean()),
                    leakage_worst=float(lk.max()),
                    leakage_mean=float(lk.mean()),
                )
                row.update(
                    network_epsilon_worst=net["network_epsilon_worst"],
                    network_epsilon_mean=net["network_epsilon_mean"],
                    leakage_worst=net["leakage_worst"],
                    leakage_mean=net["leakage_mean"],
                )
                net["network_epsilon_matrix"] = np.where(np.isfinite(E), E, -1.0).tolist()  # -1: diagonal
                rows.append(net)
    return rows


# --------------------------------------------------------------------------- output


def _fmt(v, spec=".3f"):
    if v is None:
        return "—"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return format(v, spec) if isinstance(v, float) else str(v)


def table(rows) -> str:
    out = [
        "| model | setting | topology | target ε | ε spent | network ε worst / mean | leakage worst / mean "
        "| σ | acc (avg model) | acc (node mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        net = (
            "—"
            if r["network_epsilon_worst"] is None
            else f"{r['network_epsilon_worst']:.3f} / {r['network_epsilon_mean']:.3f}"
        )
        lk = "—" if r["leakage_worst"] is None else f"{r['leakage_worst']:.3f} / {r['leakage_mean']:.3f}"
        out.append(
            f"| {r['model']} | {r['setting']} | {r['topology']} | {_fmt(r['target_epsilon'], 'g')} | "
            f"{_fmt(r['epsilon'], '.3f')} | {net} | {lk} | {r['noise_multiplier']:.3f} | "
            f"{r['test_accuracy']:.3f} | {r['node_accuracy_mean']:.3f} |"
        )
    return "\n".join(out) + "\n"


def summary(rows) -> str:
    """Two pivot tables: node-mean accuracy per line × target ε, and local vs network ε per topology."""
    eps = sorted({r["target_epsilon"] for r in rows if r["model"] != "none"})
    out = [
        "| line (ε unit) | " + " | ".join(f"ε = {e:g}" for e in eps) + " | non-private |",
        "|---|" + "---|" * (len(eps) + 1),
    ]
    ref = {(r["setting"], r["topology"]): r["node_accuracy_mean"] for r in rows if r["model"] == "none"}
    for model in ("local_dp", "central_dp"):
        for key in dict.fromkeys((r["setting"], r["topology"]) for r in rows if r["model"] == model):
            cells = [
                next(
                    (
                        f"{r['node_accuracy_mean']:.3f}"
                        for r in rows
                        if r["model"] == model and (r["setting"], r["topology"]) == key and r["target_epsilon"] == e
                    ),
                    "—",
                )
                for e in eps
            ]
            name = "server (FedAvg)" if key[0] == "server" else f"gossip, {key[1]}"
            unit = "node-level" if model == "central_dp" else "example-level"
            out.append(
                f"| {model.replace('_', ' ')}, {name} ({unit}) | "
                + " | ".join(cells)
                + f" | {ref.get(key, float('nan')):.3f} |"
            )
    out += [
        "",
        "| topology | quantity | " + " | ".join(f"local ε = {e:g}" for e in eps) + " |",
        "|---|---|" + "---|" * len(eps),
    ]
    for topo in dict.fromkeys(r["topology"] for r in rows if r["model"] == "network_dp"):
        net = {r["target_epsilon"]: r for r in rows if r["model"] == "network_dp" and r["topology"] == topo}
        for label, key in (
            ("network ε, worst pair", "network_epsilon_worst"),
            ("network ε, mean over pairs", "network_epsilon_mean"),
        ):
            out.append(
                f"| {topo} | {label} | " + " | ".join(f"{net[e][key]:.3f}" if e in net else "—" for e in eps) + " |"
            )
    return "\n".join(out) + "\n"


def plot(rows, path, title=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    keys = list(dict.fromkeys((r["setting"], r["topology"]) for r in rows))
    colors = dict(zip(keys, plt.cm.tab10.colors))
    for model, style in (("local_dp", "o-"), ("network_dp", "s--"), ("central_dp", "D-.")):
        for key in keys:
            rs = sorted(
                (r for r in rows if r["model"] == model and (r["setting"], r["topology"]) == key),
                key=lambda r: r["epsilon"],
            )
            if not rs:
                continue
            name = "server" if key[0] == "server" else key[1]
            lab = {
                "local_dp": f"local DP, {name}",
                "network_dp": f"network DP (worst pair), {name}",
                "central_dp": "central DP + sec. agg., server (node-level ε)",
            }[model]
            server_ldp = model == "local_dp" and key[0] == "server"  # = complete graph: drawn hollow, on top
            if server_ldp:
                lab += " (= complete graph: exact averaging)"
            ax.plot(
                [max(r["epsilon"], 1e-3) for r in rs],
                [r["node_accuracy_mean"] for r in rs],
                "^:" if server_ldp else style,
                color="k" if model == "central_dp" else colors[key],
                label=lab,
                ms=10 if server_ldp else 5,
                mfc="none" if server_ldp else None,
                zorder=3 if server_ldp else 2,
            )
            if model == "network_dp":
                ax.plot(
                    [max(r["network_epsilon_mean"], 1e-3) for r in rs],
                    [r["node_accuracy_mean"] for r in rs],
                    ":",
                    marker="x",
                    color=colors[key],
                    ms=5,
                    alpha=0.6,
                    label=f"network DP (mean over pairs), {name}",
                )
    for r in rows:
        if r["model"] == "none":
            ax.axhline(r["node_accuracy_mean"], color=colors[(r["setting"], r["topology"])], lw=0.8, ls=":", alpha=0.7)
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    ticks = [t for t in (0.1, 0.25, 0.5, 1, 2, 4, 8, 16) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("ε at δ = 1e-5  (local / network: example-level; central: node-level)")
    ax.set_ylabel("test accuracy (mean over nodes)")
    ax.set_title(title or "Accuracy against ε (dotted horizontals: non-private)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _title(n, rounds, delta):
    return f"digits, n = {n}, {rounds} rounds, δ = {delta:g}; dotted horizontals: non-private"


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
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="8 nodes, 60 rounds: local/network DP on a ring at ε ∈ {1, 8}, central DP at ε = 8",
    )
    ap.add_argument("--replot", action="store_true", help="redraw DIR/privacy_utility.png from its JSON")
    args = ap.parse_args(argv)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # dp-accounting's RDP warnings on low orders
    if args.replot:
        rows = json.load(open(os.path.join(args.out, "privacy_utility.json")))
        plot(
            rows,
            os.path.join(args.out, "privacy_utility.png"),
            title=_title(rows[0]["n"], rows[0]["rounds"], args.delta),
        )
        print(summary(rows))
        with open(os.path.join(args.out, "privacy_utility.md"), "w") as fh:
            fh.write(summary(rows))
        return rows
    if args.quick:
        args.n, args.rounds, args.eps, args.topologies = 8, 60, "1,8", "ring"
        args.no_server_ldp, args.central_eps = True, "8"
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    rows = run(args)
    with open(os.path.join(args.out, "privacy_utility.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    with open(os.path.join(args.out, "privacy_utility.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({k: r[k] for k in COLUMNS} for r in rows)
    plot(rows, os.path.join(args.out, "privacy_utility.png"), title=_title(args.n, args.rounds, args.delta))
    print(table(rows))
    print(summary(rows))
    with open(os.path.join(args.out, "privacy_utility.md"), "w") as fh:
        fh.write(summary(rows))
    print(f"wrote {args.out}/privacy_utility.{{csv,json,md,png}} ({time.perf_counter() - t0:.0f} s)")
    return rows


if __name__ == "__main__":
    main()

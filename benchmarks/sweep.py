"""A sweep as one program against its runs one after another.

Grid: 8 seeds × 4 learning rates of ``configs/sweep.py`` (D-SGD, digits MLP, 16 nodes on an
exponential graph). Three ways to run the same 32 runs, measured in the same process:

* ``rj.sweep``: one compile, the 32 runs vmapped into one scanned program;
* baseline ``rj.run × 32``: what one does without sweeps, one ``rj.run`` per point (each
  compiles, since the learning rate is baked into its program);
* ``one compile, 32 calls``: a single compiled chunk with the hyper-parameters as arguments,
  run point after point with the runner's evaluation schedule. It separates what compiling
  once gains from what vmapping the points gains.

Target: ``rj.sweep`` at least 4× faster than ``rj.run × 32``.

Run:  python benchmarks/sweep.py [--rounds 100 --seeds 8 --lrs 0.01,0.03,0.1,0.3]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import redeem_jax as rj
from redeem_jax.sweep import final, grid


def _config(rounds: int):
    spec = importlib.util.spec_from_file_location("sweep_config", Path(__file__).parents[1] / "configs/sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    c.num_rounds = rounds
    c.checkpoint_every = 0
    c.progress = False
    c.plots = False
    return c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--lrs", default="0.01,0.03,0.1,0.3")
    args = ap.parse_args(argv)
    lrs = [float(v) for v in args.lrs.split(",")]
    seeds = list(range(args.seeds))
    c = _config(args.rounds)
    c.topology.seed = c.data.seed = c.seed  # what the sweep pins, so all three compute the same runs
    points = grid({"seed": seeds, "optimizer.learning_rate": lrs})
    n = len(points)

    t = time.perf_counter()
    df = rj.sweep(c, {"seed": seeds, "optimizer.learning_rate": lrs}, progress=False)
    t_sweep = time.perf_counter() - t
    assert df.attrs["traces"] == [1]

    t = time.perf_counter()
    alone = []
    for p in points:
        sub = ml_collections.ConfigDict(c.to_dict())
        sub.seed, sub.optimizer.learning_rate = p["seed"], p["optimizer.learning_rate"]
        alone.append(rj.run(sub).final["test_loss"])
    t_runs = time.perf_counter() - t

    # One compiled run, hyper-parameters as arguments, called once per point (no vmap).
    t = time.perf_counter()
    exp = rj.build(c)  # timed: rj.sweep and rj.run build too

    @jax.jit
    def chunk(lr, state):
        hp = {**exp.hp_values(), "optimizer.learning_rate": lr}
        return rj.round.scan_rounds(exp.step, state, exp.node_data, hp, c.num_rounds, c.eval_every)[0]

    honest = jnp.asarray(exp.honest)

    def whole_run(lr, seed):  # the runner's schedule: evaluate at round 0 and after every chunk
        state = exp.init_state(seed)
        ev = exp.evaluate(exp.models(state), honest)
        for _ in range(-(-c.num_rounds // c.eval_every)):
            state = chunk(lr, state)
            ev = exp.evaluate(exp.models(state), honest)
        return ev["test_loss"]

    looped = [float(whole_run(jnp.float32(p["optimizer.learning_rate"]), jnp.uint32(p["seed"]))) for p in points]
    t_loop = time.perf_counter() - t

    last = final(df)
    swept = last.sort_values(["seed", "optimizer.learning_rate"])["test_loss"].to_numpy()
    order = np.lexsort(([p["optimizer.learning_rate"] for p in points], [p["seed"] for p in points]))
    gap = float(np.max(np.abs(swept - np.asarray(alone)[order]) / np.abs(np.asarray(alone)[order])))

    print(
        f"# {platform.processor() or platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s), "
        f"jax {jax.__version__}"
    )
    print(
        f"# {n} runs = {args.seeds} seeds x {len(lrs)} learning rates, {c.num_nodes} nodes, {c.num_rounds} rounds, "
        f"evaluation every {c.eval_every}"
    )
    print(f"{'method':<28}{'seconds':>10}{'runs/s':>10}{'speed-up':>10}")
    for name, sec in (
        (f"rj.run x {n} (baseline)", t_runs),
        (f"one compile, {n} calls", t_loop),
        ("rj.sweep (one program)", t_sweep),
    ):
        print(f"{name:<28}{sec:>10.2f}{n / sec:>10.2f}{t_runs / sec:>9.2f}x")
    ref = np.asarray(alone)
    loop_gap = float(np.max(np.abs(np.asarray(looped) - ref) / np.abs(ref)))
    print(
        f"largest relative gap in final test loss against the runs alone: sweep {gap:.1e}, one compile {loop_gap:.1e}"
    )
    print(
        f"target: rj.sweep >= 4x faster than rj.run x {n}: {'met' if t_runs / t_sweep >= 4 else 'NOT met'} "
        f"({t_runs / t_sweep:.1f}x)"
    )


if __name__ == "__main__":
    main()

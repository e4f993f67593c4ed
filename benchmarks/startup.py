"""Start-up: ``import redeem_jax`` and ``python -m redeem_jax --help`` in fresh processes.

Each command runs ``--repeats`` times in a new interpreter (nothing cached in the process);
the figures are wall-clock seconds (min / median / max) with the machine's load average, next
to the two floors any command pays: starting Python, and importing JAX (which the CLI's
``--help`` and ``import redeem_jax`` avoid; a run pays it once). Targets (issue 11): ``--help``
under 3 s and ``import redeem_jax`` under 2 s on a quiet machine.

Run:  python benchmarks/startup.py [--repeats 7] [--md out.md]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name  # noqa: E402

COMMANDS = {
    "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
    "import redeem_jax": [sys.executable, "-c", "import redeem_jax"],
    "python -m redeem_jax --help": [sys.executable, "-m", "redeem_jax", "--help"],
    "import jax (what a run adds)": [sys.executable, "-c", "import jax"],
}


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--md", default="")
    args = ap.parse_args(argv)
    load = load_average()
    rows = []
    for label, cmd in COMMANDS.items():
        ts = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # --help exits 1 (absl)
            ts.append(time.perf_counter() - t)
        rows.append((label, min(ts), statistics.median(ts), max(ts)))
        print(f"{label:40s} min {rows[-1][1]:.3f} s  median {rows[-1][2]:.3f} s  max {rows[-1][3]:.3f} s", flush=True)
    print(f"# {cpu_name()}, load average {load} (before), {load_average()} (after)")
    if args.md:
        lines = [
            f"Command: `python benchmarks/startup.py --repeats {args.repeats}`  ",
            f"Machine: {cpu_name()}, load average {load} before, {load_average()} after",
            "",
            "| command | min (s) | median (s) | max (s) |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| `{label}` | {a:.3f} | {b:.3f} | {c:.3f} |" for label, a, b, c in rows]
        Path(args.md).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.md}")


if __name__ == "__main__":
    main()

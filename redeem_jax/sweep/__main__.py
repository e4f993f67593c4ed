"""Command line: ``python -m redeem_jax.sweep --config configs/<name>.py --sweep.<key>=v1,v2,...``.

Every ``--sweep.<field>=v1,v2`` adds an axis (values as Python literals, comma-separated);
``--config.<field>=v`` overrides the config as in ``python -m redeem_jax``. Writes
``sweep.csv``, ``final.csv`` and one ``sweep_<metric>.png`` per metric into ``--workdir``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from redeem_jax.experiment import config as _config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file with get_config().",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default runs/sweep_<config name>).")
_SWEEP_DEVICES = flags.DEFINE_integer("sweep_devices", 0, "Split the grid's points over this many devices "
                                      "(-1: all); the node axis is sharded by --config.perf.mesh instead.")
_AXES: dict[str, list] = {}


def parse_values(raw: str) -> list:
    """``"0.01,0.1"`` -> ``[0.01, 0.1]``; ``"ring,torus"`` -> ``["ring", "torus"]``."""
    out = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            out.append(ast.literal_eval(part))
        except (ValueError, SyntaxError):
            out.append(part)
    return out


def _split_argv(argv: list[str]) -> list[str]:
    """Take the ``--sweep.*`` arguments out of ``argv`` (absl does not know them) into ``_AXES``."""
    rest = []
    it = iter(range(len(argv)))
    for i in it:
        a = argv[i]
        if a.startswith("--sweep."):
            key, sep, raw = a[len("--sweep."):].partition("=")
            if not sep:
                if i + 1 >= len(argv):
                    raise app.UsageError(f"{a}: give values, e.g. {a}=0.01,0.1")
                raw = argv[i + 1]
                next(it)
            _AXES[key] = parse_values(raw)
        else:
            rest.append(a)
    return rest


def _main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if _CONFIG.value is not None:  # several hosts: must precede any JAX computation (docs/scale.md)
        from redeem_jax import distributed

        distributed.initialize(_CONFIG.value)
    from redeem_jax.experiment.config import ConfigError
    from redeem_jax.experiment.sweep import final, sweep

    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config configs/sweep.py")
    if not _AXES:
        raise app.UsageError("give at least one axis, e.g. --sweep.seed=0,1,2 --sweep.optimizer.learning_rate=0.03,0.1")
    workdir = _WORKDIR.value or "runs/sweep_" + _config.config_stem(sys.argv)
    try:
        df = sweep(_CONFIG.value, _AXES, workdir, sweep_devices=_SWEEP_DEVICES.value)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a permission: the path and the reason, not a traceback
        print(f"error: {_os_error_line(e)}", file=sys.stderr)
        return 1
    last = final(df)
    cols = [k for k in _AXES] + [m for m in ("round", "test_accuracy", "test_loss", "epsilon") if m in last.columns]
    print(last[cols].to_string(index=False))
    n = len(last)
    wd = Path(workdir)
    outputs = [n for n in ("sweep.csv", "final.csv", "sweep.json") if (wd / n).exists()]
    outputs += sorted(p.name for p in wd.glob("sweep_*.png"))
    print(f"{n} runs, {len(df.attrs['traces'])} compiled program(s); outputs in {workdir}/: {', '.join(outputs)}")
    return 0


def _os_error_line(e: OSError) -> str:
    """``<path>: <reason>`` of a filesystem error, on one line."""
    path = e.filename if e.filename is not None else "?"
    reason = e.strerror or (str(e).splitlines()[0] if str(e) else type(e).__name__)
    return f"{path}: {reason}"


def main():
    app.run(_main, flags_parser=lambda argv: flags.FLAGS(_split_argv(argv)))


if __name__ == "__main__":
    main()

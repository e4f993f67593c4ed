"""Command line: ``python -m redeem_jax.sweep --config NAME_OR_FILE --sweep.<key>=v1,v2,...``.

``--config sweep`` runs a config shipped with the package, ``--config configs/sweep.py`` a file.

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

from redeem_jax import _cli
from redeem_jax.experiment import config as _config

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "A shipped config's name (sweep, default, ...: see --help) or a path to a config file with get_config().",
    lock_config=False,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default runs/sweep_<config name>).")
_SWEEP_DEVICES = flags.DEFINE_integer(
    "sweep_devices",
    0,
    "Split the grid's points over this many devices (-1: all); the node axis is sharded by --config.perf.mesh instead.",
)
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices",
    0,
    "CPU devices for JAX to create (fake devices on one host, set before JAX starts); "
    "0: as many as --config.perf.mesh or --sweep_devices needs.",
)
_AXES: dict[str, list] = {}
_FLAGS_HELP = [
    ("--config NAME_OR_FILE", "a shipped config (above) or a path to a .py file with get_config()"),
    ("--sweep.<field>=V1,V2,...", "one axis of the grid (values as Python literals)"),
    ("--config.<field>=VALUE", "override one field, e.g. --config.num_rounds=50"),
    ("--workdir DIR", "outputs: sweep.csv, final.csv, sweep_<metric>.png (default runs/sweep_<config name>)"),
    ("--sweep_devices K", "split the grid's points over K devices (-1: all)"),
    ("--cpu_devices N", "CPU devices for JAX (0: as many as --config.perf.mesh or --sweep_devices needs)"),
]


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
            key, sep, raw = a[len("--sweep.") :].partition("=")
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
    if _CONFIG.value is None:
        _cli.fail(
            f"config: --config is required: a shipped config ({', '.join(_cli._shipped().names())}) "
            "or a path to a .py file"
        )
    if not _AXES:
        _cli.fail("sweep: give at least one axis, e.g. --sweep.seed=0,1,2 --sweep.optimizer.learning_rate=0.03,0.1")
    from redeem_jax.experiment.config import ConfigError

    try:  # the CPU device count, then several hosts: both must precede any JAX computation (docs/scale.md)
        mesh = _config_mesh(_CONFIG.value)
        _cli.set_cpu_devices(_cli.cpu_devices_needed(_CPU_DEVICES.value, mesh, _SWEEP_DEVICES.value))
        from redeem_jax import distributed

        distributed.initialize(_CONFIG.value)
    except (ConfigError, _cli.CliError) as e:
        _cli.fail(str(e))
    from redeem_jax.experiment.sweep import final, sweep

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


def _config_mesh(config) -> tuple:
    """``config.perf.mesh`` when it is a shape (validation, later, names anything else)."""
    mesh = config.get("perf", {}).get("mesh", ()) if hasattr(config, "get") else ()
    ok = isinstance(mesh, (tuple, list)) and all(isinstance(s, int) and not isinstance(s, bool) for s in mesh)
    return tuple(mesh) if ok else ()


def _parse(argv):
    if _cli.wants_help(argv):
        print(_cli.help_text("python -m redeem_jax.sweep", _FLAGS_HELP))
        raise SystemExit(0)
    try:
        rest = _split_argv(argv)
    except app.UsageError as e:
        _cli.fail(f"sweep: {e}")
    # The axes are checked against the config's fields like the --config.<field> overrides.
    return _cli.parse_flags(rest, flags.FLAGS, axes=list(_AXES))


def main():
    app.run(_main, flags_parser=_parse)


if __name__ == "__main__":
    main()

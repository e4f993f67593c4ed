"""Command line: ``redeem-jax --config NAME_OR_FILE --config.<field>=value --workdir DIR``.

``--config default`` runs a config shipped with the package (``rj.configs.names()``);
``--config configs/default.py`` a file. ``--help`` lists the shipped configs and the config's
sections; a mistake on the command line is one ``error: config.<field>: …`` line, exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from redeem_jax import _cli
from redeem_jax.experiment import config as _config

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "A shipped config's name (default, dp, topologies, ...: see --help) or a path to a config file with get_config().",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics.jsonl, config.json, plots and checkpoints.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices",
    0,
    "CPU devices for JAX to create (fake devices on one host, set before JAX starts); "
    "0: as many as --config.perf.mesh needs, e.g. 8 for '(8,)'.",
)
_FLAGS_HELP = [
    ("--config NAME_OR_FILE", "a shipped config (above) or a path to a .py file with get_config()"),
    ("--config.<field>=VALUE", "override one field, e.g. --config.topology.name=torus --config.num_rounds=50"),
    ("--workdir DIR", "outputs: metrics.jsonl, config.json, plots, checkpoints (default runs/<config name>)"),
    ("--cpu_devices N", "CPU devices for JAX (0: as many as --config.perf.mesh needs)"),
]


def _main(argv):
    del argv
    # Orbax logs every checkpoint step at INFO; the progress bar already says where we are.
    logging.set_verbosity(logging.WARNING)
    if _CONFIG.value is None:
        _cli.fail(
            f"config: --config is required: a shipped config ({', '.join(_cli._shipped().names())}) "
            "or a path to a .py file"
        )
    from redeem_jax.experiment.config import ConfigError

    try:  # the CPU device count, then several hosts: both must precede any JAX computation (docs/scale.md)
        _cli.set_cpu_devices(_cli.cpu_devices_needed(_CPU_DEVICES.value, _mesh(_CONFIG.value)))
        from redeem_jax import distributed

        distributed.initialize(_CONFIG.value)
    except (ConfigError, _cli.CliError) as e:
        _cli.fail(str(e))
    from redeem_jax.experiment.run import run

    workdir = _WORKDIR.value or "runs/" + _config.config_stem(sys.argv)
    try:
        result = run(_CONFIG.value, workdir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a permission: the path and the reason, not a traceback
        print(f"error: {_os_error_line(e)}", file=sys.stderr)
        return 1
    compared = isinstance(result, dict)
    results = result if compared else {"": result}
    for label, r in results.items():
        row = r.final
        acc = ""
        if "test_accuracy" in row:
            acc = (
                f"test accuracy {row['test_accuracy']:.4f} (averaged model), "
                f"{row['node_test_accuracy_mean']:.4f} (nodes' mean), "
            )
        eps = ""
        if "epsilon" in row:
            p = r.experiment.privacy
            eps = (
                f"privacy spent ε = {row['epsilon']:.3f} at δ = {p['delta']:g} "
                f"(σ = {p['noise_multiplier']:.3f}, q = {p['sample_rate']:.3g}), "
            )
        print(
            f"{label + ': ' if label else ''}round {row['round']}: {acc}{eps}test loss {row['test_loss']:.4g}, "
            f"consensus distance {row['consensus_distance']:.3g}, {row['wall_time']:.1f}s"
        )
    per_run = _existing(next(iter(results.values())).workdir, _RUN_OUTPUTS)
    if compared:
        folders = ", ".join(f"{r.workdir.name}/" for r in results.values())
        top = _existing(Path(workdir), ("comparison.png", "comparison.json"))
        print(f"outputs in {workdir}/: {top}; one folder per run ({folders}) with {per_run}")
    else:
        print(f"outputs in {workdir}/: {per_run}")
    return 0


_RUN_OUTPUTS = ("config.json", "metrics.jsonl", "metrics.png", "partition.json", "partition.png", "checkpoints/")


def _existing(folder: Path, names) -> str:
    """The names of ``names`` that exist in ``folder`` (``plots=False`` writes no PNG)."""
    return ", ".join(n for n in names if (folder / n.rstrip("/")).exists())


def _os_error_line(e: OSError) -> str:
    """``<path>: <reason>`` of a filesystem error, on one line."""
    path = e.filename if e.filename is not None else "?"
    reason = e.strerror or (str(e).splitlines()[0] if str(e) else type(e).__name__)
    return f"{path}: {reason}"


def _mesh(config) -> tuple:
    """``config.perf.mesh`` when it is a shape (validation, later, names anything else)."""
    mesh = config.get("perf", {}).get("mesh", ()) if hasattr(config, "get") else ()
    ok = isinstance(mesh, (tuple, list)) and all(isinstance(s, int) and not isinstance(s, bool) for s in mesh)
    return tuple(mesh) if ok else ()


def _parse(argv):
    if _cli.wants_help(argv):
        print(_cli.help_text("redeem-jax", _FLAGS_HELP))
        raise SystemExit(0)
    return _cli.parse_flags(argv, flags.FLAGS)


def main():
    app.run(_main, flags_parser=_parse)


if __name__ == "__main__":
    main()

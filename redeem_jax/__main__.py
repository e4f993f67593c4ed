"""Command line: ``python -m redeem_jax --config configs/<name>.py --config.key=value --workdir DIR``."""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from redeem_jax.experiment import config as _config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file with get_config().",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics.jsonl, config.json, plots and checkpoints.")


def _main(argv):
    del argv
    # Orbax logs every checkpoint step at INFO; the progress bar already says where we are.
    logging.set_verbosity(logging.WARNING)
    if _CONFIG.value is not None:  # several hosts: must precede any JAX computation (docs/scale.md)
        from redeem_jax import distributed

        distributed.initialize(_CONFIG.value)
    from redeem_jax.experiment.config import ConfigError
    from redeem_jax.experiment.run import run

    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config configs/default.py")
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
            acc = (f"test accuracy {row['test_accuracy']:.4f} (averaged model), "
                   f"{row['node_test_accuracy_mean']:.4f} (nodes' mean), ")
        eps = ""
        if "epsilon" in row:
            p = r.experiment.privacy
            eps = (f"privacy spent ε = {row['epsilon']:.3f} at δ = {p['delta']:g} "
                   f"(σ = {p['noise_multiplier']:.3f}, q = {p['sample_rate']:.3g}), ")
        print(f"{label + ': ' if label else ''}round {row['round']}: {acc}{eps}test loss {row['test_loss']:.4g}, "
              f"consensus distance {row['consensus_distance']:.3g}, {row['wall_time']:.1f}s")
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


def main():
    app.run(_main)


if __name__ == "__main__":
    main()

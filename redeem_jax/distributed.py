"""Several processes (hosts) running one network: ``jax.distributed.initialize`` from a config.

JAX's multi-controller model: one Python process per host (or per GPU), all
running the same program; ``jax.devices()`` then lists every device of every
process, and a mesh over them (:func:`redeem_jax.sharding.make_mesh`) spreads
the node axis across hosts. Call :func:`initialize` first thing, before any
JAX computation creates a backend.
"""

from __future__ import annotations

import os

import jax

__all__ = ["initialize", "is_initialized", "settings"]

_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def is_initialized() -> bool:
    """Whether ``jax.distributed.initialize`` has run in this process."""
    return bool(jax.distributed.is_initialized())


def _section(config):
    if config is None:
        return "", 1, -1
    d = config.distributed if hasattr(config, "distributed") else config
    return str(d.coordinator), int(d.num_processes), int(d.process_id)


def settings(config=None, environ=None) -> dict:
    """``coordinator_address``, ``num_processes``, ``process_id`` from ``config.distributed``,
    else from ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` (None: unset)."""
    env = os.environ if environ is None else environ
    coordinator, num, pid = _section(config)
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num <= 1 and env.get("JAX_NUM_PROCESSES"):
        num = int(env["JAX_NUM_PROCESSES"])
    if pid < 0 and env.get("JAX_PROCESS_ID"):
        pid = int(env["JAX_PROCESS_ID"])
    return {
        "coordinator_address": coordinator,
        "num_processes": num if num > 1 else None,
        "process_id": pid if pid >= 0 else None,
    }


def _cluster_detected() -> bool:
    # JAX's own cluster detection (SLURM, Open MPI, Cloud TPU, Kubernetes) fills
    # in whatever the config and environment leave unset.
    # A one-task job (e.g. SLURM with --ntasks=1) stays a plain single process.
    try:
        from jax._src import clusters

        for env in clusters.ClusterEnv._cluster_types:
            if env.__name__ != "Mpi4pyCluster" and env.is_env_present():  # mpi4py is opt-in in JAX too
                return int(env.get_process_count()) > 1
    except Exception:  # private API: if it moves, only explicit settings are used
        return False
    return False


def initialize(config=None, *, local_device_ids=None, initialization_timeout: int = 300) -> bool:
    """``jax.distributed.initialize`` from ``config.distributed`` (or the environment); True if multi-process.

    Idempotent (a second call is a no-op) and a no-op for one process (no
    coordinator, ``num_processes <= 1`` and no cluster detected).
    Otherwise the coordinator ``host:port``, the process count and this
    process's id come from the config, then from ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, then from JAX's cluster
    auto-detection (SLURM, Open MPI, TPU pods, Kubernetes). CPU processes talk
    through gloo collectives. Must run before any JAX computation.
    """
    if is_initialized():
        return jax.process_count() > 1
    s = settings(config)
    if s["num_processes"] is None and s["coordinator_address"] is None and not _cluster_detected():
        return False
    # CPU processes need a cross-process collectives backend; gloo ships with jaxlib.
    # The option only affects the CPU client, so setting it on GPU/TPU hosts is harmless.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=s["coordinator_address"],
            num_processes=s["num_processes"],
            process_id=s["process_id"],
            local_device_ids=local_device_ids,
            initialization_timeout=initialization_timeout,
        )
    except RuntimeError as e:
        if "before any JAX" in str(e) or "backend" in str(e).lower():
            raise RuntimeError(
                "redeem_jax.distributed.initialize must run before any JAX computation "
                f"(first thing in the script): {e}"
            ) from e
        raise
    return jax.process_count() > 1

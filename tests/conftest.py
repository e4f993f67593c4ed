"""Eight fake CPU devices for the sharding tests, and a compilation cache shared by the tests.

Set before any test creates a JAX backend: the device count is fixed when the CPU client
starts. Code that does not ask for a mesh still runs on device 0 only, so the other tests are
unaffected (timings in docs/scale.md).

Many tests compile the same small programs (the same config run by several tests, by both
xdist workers). JAX's persistent compilation cache keys an executable by its HLO, compile
options, backend and library versions, so a hit is the program a fresh compile would give;
sharing it cut the runner and sweep tests from 3:57 to 2:37 on 2 cores.
"""

import os
import tempfile

# Tests check what is computed, not how fast: LLVM's optimisation level only changes the machine
# code XLA's fused kernels are lowered to (fusion and layouts are decided before, by XLA's own
# passes; results move by float rounding at most, e.g. where LLVM would contract a multiply-add),
# and level 0 takes 20-40% less CPU time to compile, which is most of the suite's time on 2
# cores. A user's own XLA_FLAGS setting of it is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
# For the same reason, XLA's CPU loop fusions are emitted by its classic IR emitter rather than
# the newer MLIR fusion emitters (jax 0.10's default): the same fusions, thread partitions and
# layouts, lowered to LLVM by a shorter pipeline. Compiling a D-SGD or robust FedAvg step takes
# 5.5 s instead of 10-10.5 s, a run of small eager ops 2.7 instead of 4.2 s, and the suite with
# an empty compile cache 12:20 instead of 15:16 (docs/performance.md, "Test suite time"). Results
# move by float rounding at most. A user's own XLA_FLAGS setting of it is kept.
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_fusion_emitters=false").strip()

import jax  # noqa: E402

# Every program is cached, the small ones too: about 9,000 of the suite's compiles take under
# 0.2 s (eager jnp ops on a new shape, small jitted helpers), 300 s of CPU together, and a cache
# hit costs a few milliseconds (tests/test_aggregators.py warm: 95 s with a 0.2 s threshold, 57 s
# without). Also exported, so that the processes the tests start (notebook kernels, the README's
# commands, the installed wheel) share the cache; a user's own settings are kept.
_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(), "redeem_jax_tests_xla_cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
for _k, _v in _CACHE.items():
    os.environ.setdefault(_k, _v)

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
)
jax.config.update(
    "jax_persistent_cache_min_entry_size_bytes", int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"])
)

# Property-based tests (hypothesis): a fast profile in `make test`, a long campaign with
# `REDEEM_JAX_FUZZ=long pytest -m fuzz` (docs/reliability.md gives its size). No deadline:
# the first example of a test compiles, and a loaded CI machine must not turn that into a failure.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "fast",
    max_examples=20,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=1000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("REDEEM_JAX_FUZZ", "fast"))

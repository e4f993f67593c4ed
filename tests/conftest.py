"""Eight fake CPU devices for the sharding tests (tests/test_sharding.py).

Set before any test creates a JAX backend: the device count is fixed when the
CPU client starts. Code that does not ask for a mesh still runs on device 0
only, so the other tests are unaffected (timings in docs/scale.md).
"""
import jax

jax.config.update("jax_num_cpu_devices", 8)

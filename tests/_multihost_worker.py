"""One process of the 2-process test in test_multihost.py: ``python _multihost_worker.py PORT ID NPROC OUT JSON``.

Each process has 4 fake CPU devices; the mesh spans all 8, so every process
holds half of the node rows. Process 0 saves the gathered final params.
"""

import json
import sys

import jax

port, pid, nproc, out, overrides = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
jax.config.update("jax_num_cpu_devices", 4)

import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402
from redeem_jax import distributed  # noqa: E402

from _configs import small_config  # noqa: E402

c = small_config(
    **json.loads(overrides),
    **{
        "perf.mesh": (-1,),
        "distributed.coordinator": f"localhost:{port}",
        "distributed.num_processes": nproc,
        "distributed.process_id": pid,
    },
)
assert distributed.initialize(c, initialization_timeout=300)
assert distributed.initialize(c)  # idempotent
assert jax.process_count() == nproc and len(jax.devices()) == 4 * nproc, jax.devices()
result = rj.run(c)
params = result.params
assert params.sharding.spec == jax.sharding.PartitionSpec("nodes"), params.sharding
assert not params.is_fully_addressable  # half of the rows live in the other process
from jax.experimental import multihost_utils  # noqa: E402

full = multihost_utils.process_allgather(params, tiled=True)
if pid == 0:
    np.savez(out, params=np.asarray(full), test_loss=result.metrics["test_loss"])
print(f"process {pid}: ok", flush=True)

"""Two processes on localhost share one network: the node axis is sharded across both.

Each process (tests/_multihost_worker.py) starts with 4 fake CPU devices and
joins through ``redeem_jax.distributed.initialize`` (gloo CPU collectives), so the
global mesh has 8 devices and each process holds half of the node rows. The
gathered final parameters must equal a single-process, unsharded run (same
tolerance as tests/test_sharding.py: 2e-6, float32 reassociation only).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import redeem_jax as rj

from _configs import small_config

HERE = Path(__file__).resolve().parent
# Only catches a hang (a stuck peer): the exchange takes ~15 s on an idle machine and
# was killed at 90 s on one with load average 10-16.
TIMEOUT_S = 600
# Kept tiny: the test must finish in well under a minute on a lightly loaded 2-core machine.
CONFIG = {"num_rounds": 4, "eval_every": 2, "model.name": "linear", "eval.max_test_examples": 200}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    out = tmp_path / "params.npz"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]))
    port = _free_port()
    worker = [sys.executable, str(HERE / "_multihost_worker.py"), str(port)]
    procs = [
        subprocess.Popen(
            worker + [str(i), "2", str(out), json.dumps(CONFIG)],
            cwd=HERE,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    try:
        ref = rj.run(small_config(**CONFIG))  # meanwhile, the single-process reference
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"multi-process run did not finish in {TIMEOUT_S} s:\n" + "\n".join(logs))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {i} failed:\n{log[-4000:]}"
        assert f"process {i}: ok" in log
    got = np.load(out)
    np.testing.assert_allclose(got["params"], np.asarray(ref.params), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(got["test_loss"], ref.metrics["test_loss"], rtol=2e-6, atol=2e-6)

"""Every ``python -m redeem_jax ...`` / ``redeem-jax ...`` command line of the README runs as
written on a CPU machine (issue 17), with quick settings appended.

The quick settings only shorten a run: two rounds, an evaluation every round, no checkpoints
and no progress bar (later ``--config.<field>`` flags win over earlier ones), and a temporary
``--workdir`` in place of the README's. Everything else is the README's own line: its config
(by name or path), its overrides, its compared runs, its mesh of 8 devices (made as CPU devices
by the command line), its sweep axes. ``make ...`` and the experiment and benchmark scripts
(``python experiments/...``) have their own tests.

A line whose config compares several runs (``compare.key``: the default config's three runs, the
seven topology families) compiles one program per run; with two rounds all lines together take
under a minute on 2 quiet cores, so every line runs in ``make test``.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--config.num_rounds=2", "--config.eval_every=1", "--config.checkpoint_every=0", "--config.progress=False"]


def readme_commands(text: str) -> list[list[str]]:
    """The redeem_jax command lines of the ``bash`` blocks of ``text``, split as the shell would
    (continuation lines joined, comments dropped)."""
    out = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:3] in (["python", "-m", "redeem_jax"], ["python", "-m", "redeem_jax.sweep"]) or argv[:1] == [
                "redeem-jax"
            ]:
                out.append(argv)
    return out


COMMANDS = readme_commands((ROOT / "README.md").read_text())


def _ids(argv: list[str]) -> str:
    return " ".join(argv[2 if argv[0] == "python" else 0 :]).replace("--config.", "")[:90]


def _runnable(argv: list[str], workdir: Path) -> list[str]:
    """``argv`` with this interpreter and a temporary workdir, and the quick settings appended."""
    if argv[0] == "redeem-jax":
        argv = [str(Path(sys.executable).parent / "redeem-jax")] + argv[1:]
    else:
        argv = [sys.executable] + argv[1:]
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workdir":
            skip = True
        elif not a.startswith("--workdir="):
            kept.append(a)
    return kept + QUICK + ["--workdir", str(workdir)]


def test_the_readme_shows_configs_by_name_and_by_path():
    assert len(COMMANDS) >= 8
    configs = [a[a.index("--config") + 1] for a in COMMANDS if "--config" in a]
    assert "default" in configs and "configs/default.py" in configs
    assert any(a[0] == "redeem-jax" for a in COMMANDS)


@pytest.mark.parametrize("argv", [pytest.param(a, id=_ids(a)) for a in COMMANDS])
def test_readme_command_runs(argv, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # compile time only (tests/conftest.py)
    # The rest of the environment carries the test suite's compilation cache (tests/conftest.py):
    # the same programs recur across lines.
    workdir = tmp_path / "w"
    out = subprocess.run(_runnable(argv, workdir), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{shlex.join(argv)}\n{out.stderr[-3000:]}"
    assert f"outputs in {workdir}/" in out.stdout
    assert list(workdir.rglob("metrics.jsonl")) or (workdir / "sweep.csv").exists()

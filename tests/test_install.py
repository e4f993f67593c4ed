"""The package as a pip user gets it: a wheel, installed into a fresh virtual environment
outside the checkout, runs the default experiment by name (issue 17, "configs that ship").

The wheel is built from a copy of the working tree's ``pyproject.toml``, ``README.md`` and
``redeem_jax/`` in a temporary folder (``pip wheel --no-deps --no-build-isolation``), so the
build writes nothing into the checkout. Installing JAX, flax, orbax, ... into the fresh venv
from a registry would take minutes and need the network, so the fresh venv (made by ``venv``
from the same base interpreter, without pip) gets the wheel with ``--no-deps`` and one ``.pth``
file that puts the development venv's site-packages directory on ``sys.path`` *after* its
own. That directory holds the third-party packages only: the editable install of redeem_jax
lives in ``__editable__*.pth`` files there, and ``.pth`` files are read only in site
directories, not in paths a ``.pth`` file adds, so the checkout stays invisible; the test
asserts that ``redeem_jax`` is imported from the fresh venv and that its configs are inside it.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "redeem_jax", src / "redeem_jax", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            ".",
            "-w",
            str(tmp / "dist"),
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("redeem_jax-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    third_party = Path(sysconfig.get_paths()["purelib"])  # the development venv's packages
    (site / "zz_third_party.pth").write_text(f"{third_party}\n")  # read last: the fresh venv's own packages win
    return env_dir


def test_wheel_installed_in_a_fresh_venv_runs_the_default_config_by_name(tmp_path):
    wheel = _build_wheel(tmp_path)
    env_dir = _fresh_venv(tmp_path, wheel)
    elsewhere = tmp_path / "elsewhere"  # a cwd with no configs/ folder and no checkout above it
    elsewhere.mkdir()
    # The environment carries the test suite's compilation cache (tests/conftest.py): same
    # programs, same JAX.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    where = subprocess.run(
        [
            str(env_dir / "bin" / "python"),
            "-c",
            "import json, redeem_jax, redeem_jax.configs as c; "
            "print(json.dumps([redeem_jax.__file__, str(c.path('default')), list(c.names())]))",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr[-3000:]
    module, default, names = json.loads(where.stdout)
    assert Path(module).is_relative_to(env_dir) and Path(default).is_relative_to(env_dir)
    assert not Path(module).is_relative_to(ROOT)
    assert {"default", "dp", "topologies", "sweep", "byzantine_gossip", "million"} <= set(names)

    workdir = tmp_path / "run"
    out = subprocess.run(
        [
            str(env_dir / "bin" / "redeem-jax"),
            "--config",
            "default",
            "--config.num_rounds=20",
            "--workdir",
            str(workdir),
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"outputs in {workdir}/" in out.stdout
    # The default config compares plain gossip and ClippedGossip with an attack-free reference.
    for run in ("mean", "clipped_gossip", "reference"):
        rows = [json.loads(line) for line in (workdir / run / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["round"] == 20
    assert json.loads((workdir / "reference" / "config.json").read_text())["num_rounds"] == 20

    bad = subprocess.run(
        [str(env_dir / "bin" / "redeem-jax"), "--config", "defualt"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: config: 'defualt' is neither a shipped config (" + ", ".join(names) + ") nor a file; "
        "did you mean default?"
    )

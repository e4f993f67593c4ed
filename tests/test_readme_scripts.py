"""The README's ``python benchmarks/...`` and ``python experiments/...`` lines (issue 17).

Benchmarks run as written with quick settings appended (tiny sizes, one repeat), in a fresh
interpreter where the optional peers (PyTorch, ByzFL: ``pip install .[bench]``) cannot be
imported, as in the virtual environment ``make test`` creates: a benchmark must then print how to
install them and still report its own figures. Every experiment line names a script whose
``--quick`` mode a test of this suite runs (the experiments' own test files).
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

from _configs import ROOT

# Appended to the README's line: later argparse flags win, so only the sizes change.
QUICK = {
    "round_throughput.py": ["--sizes", "4", "--rounds", "1", "--repeats", "1"],
    "robust_rules.py": ["--n", "8", "--d", "256", "--f", "2", "--degree", "6", "--repeats", "1"],
}

# Runs the script with torch and byzfl made unimportable, whatever this environment has.
NO_PEERS = (
    "import runpy, sys\n"
    "class _Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'byzfl', 'torchvision'):\n"
    "            raise ImportError(f'{name} is blocked: the suite runs the benchmarks without their peers')\n"
    "sys.meta_path.insert(0, _Block())\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def readme_script_lines(kind: str) -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:1] == ["python"] and len(argv) > 1 and argv[1].startswith(f"{kind}/"):
                out.append(argv)
    return out


BENCHMARKS = readme_script_lines("benchmarks")
EXPERIMENTS = readme_script_lines("experiments")


def test_the_readme_has_benchmark_and_experiment_lines():
    assert {_script(a[1]) for a in BENCHMARKS} >= set(QUICK)
    assert len(EXPERIMENTS) >= 5


def _script(p: str) -> str:
    return p.rsplit("/", 1)[-1]


@pytest.mark.parametrize("argv", [pytest.param(a, id=_script(a[1])) for a in BENCHMARKS])
def test_readme_benchmark_line_runs_without_its_peers(argv, tmp_path):
    script = _script(argv[1])
    assert script in QUICK, f"README runs benchmarks/{script}: give it quick settings in QUICK"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # compile time only (tests/conftest.py)
    r = subprocess.run(
        [sys.executable, "-c", NO_PEERS, str(ROOT / argv[1]), *argv[2:], *QUICK[script]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "pip install .[bench]" in r.stdout  # says how to get the missing peers
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("argv", [pytest.param(a, id=_script(a[1])) for a in EXPERIMENTS])
def test_readme_experiment_line_has_a_quick_test(argv):
    # The experiment exists, takes --quick, and some test runs it with --quick.
    name = _script(argv[1]).removesuffix(".py")
    if name == "regenerate":  # not an experiment: tests/test_results_doc.py runs it (--check)
        return
    src = (ROOT / "experiments" / f"{name}.py").read_text()
    assert "--quick" in src
    tests = [p.read_text() for p in (ROOT / "tests").glob("test_experiments_*.py")]
    assert any(f'"{name}"' in t and "--quick" in t for t in tests), f"no test runs experiments/{name}.py --quick"


ALL_EXPERIMENTS = sorted(
    p.stem for p in (ROOT / "experiments").glob("*.py") if not p.stem.startswith("_") and p.stem != "regenerate"
)


@pytest.mark.parametrize("name", ALL_EXPERIMENTS)
def test_every_experiment_has_a_quick_test_and_a_results_folder(name):
    # Issue 16: every experiment's --quick mode runs in the suite, and its full run's files are
    # committed under docs/results/<name> (what docs/results.md is rendered from).
    tests = [p.read_text() for p in (ROOT / "tests").glob("test_experiments_*.py")]
    assert any(f'"{name}"' in t and "--quick" in t for t in tests), f"no test runs experiments/{name}.py --quick"
    files = list((ROOT / "docs" / "results" / name).glob("*.csv"))
    assert files, f"docs/results/{name}/ has no result CSV: run python experiments/{name}.py --out docs/results/{name}"


def test_make_experiments_runs_every_experiment():
    make = (ROOT / "Makefile").read_text()
    listed = re.search(r"^EXPERIMENTS := (.*)$", make, flags=re.M)[1].split()
    assert sorted(listed) == ALL_EXPERIMENTS

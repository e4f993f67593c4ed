"""The command lines as a user meets them (issue 17): configs by name or path, one-line errors
for every family of config mistake, ``--help``, and the CPU device count from the command line."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import redeem_jax as rj
from redeem_jax import _cli

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ", ".join(rj.configs.names())


def _cli_run(*args, module="redeem_jax", cwd=None):
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300, cwd=cwd or ROOT
    )


def test_shipped_configs_are_the_checkouts_configs():
    assert rj.configs.names() == tuple(sorted(p.stem for p in (ROOT / "configs").glob("*.py")))
    for name in rj.configs.names():
        from_file = _cli.load_config(ROOT / "configs" / f"{name}.py")
        assert rj.configs.get(name).to_dict() == from_file.to_dict()
        assert _cli.load_config(rj.configs.path(name)).to_dict() == from_file.to_dict()
    c = rj.configs.get("default")
    c.num_rounds = 1  # a fresh copy each time: changing one leaves the next untouched
    assert rj.configs.get("default").num_rounds == 300
    with pytest.raises(KeyError, match="no shipped config 'nope'"):
        rj.configs.get("nope")


def test_config_argument_by_name_path_or_neither(tmp_path):
    argv, path = _cli.resolve_config(["prog", "--config", "dp", "--config.num_rounds=3"])
    assert path == rj.configs.path("dp") and argv == ["prog", "--config", str(path), "--config.num_rounds=3"]
    argv, path = _cli.resolve_config(["prog", "--config=dp:arg"])
    assert argv == ["prog", f"--config={rj.configs.path('dp')}:arg"]
    mine = tmp_path / "default"  # a file that exists wins over the shipped name
    mine.write_text("x")
    assert _cli.resolve_config(["prog", "--config", str(mine)])[1] == mine
    assert _cli.resolve_config(["prog", "--workdir", "w"]) == (["prog", "--workdir", "w"], None)


# (arguments, the whole stderr line). Each family: unknown field (a misspelled field, a misspelled
# section, a misspelled top-level name), wrong type, unparsable literal, bad value, a bad value
# only the cross-field checks see, a missing file, an unknown config name, no config at all.
MISTAKES = [
    (
        ["--config.topology.nmae=torus"],
        "error: config.topology.nmae: unknown field; did you mean config.topology.name?",
    ),
    (["--config.topolgy.name=torus"], "error: config.topolgy.name: unknown field; did you mean config.topology.name?"),
    (["--config.num_round=3"], "error: config.num_round: unknown field; did you mean config.num_rounds?"),
    (["--config.privcy=3"], "error: config.privcy: unknown field; did you mean config.privacy?"),
    (["--config.zzz.qqq=1"], "error: config.zzz.qqq: unknown field"),
    (
        ["--config.num_rounds=abc"],
        "error: config.num_rounds: cannot read 'abc' as int (invalid literal for int() with base 10: 'abc')",
    ),
    (
        ["--config.optimizer.learning_rate=fast"],
        "error: config.optimizer.learning_rate: cannot read 'fast' as float (could not convert string to float: 'fast')",
    ),
    (["--config.plots=yes"], "error: config.plots: cannot read 'yes' as bool (use True or False)"),
    (
        ["--config.model.hidden=(8,"],
        "error: config.model.hidden: cannot read '(8,' as tuple (Error while parsing string: (8, as tuple)",
    ),
    (["--config.num_rounds=0"], "error: config.num_rounds: must be >= 1, got 0"),
    (
        ["--config.checkpoint_every=15"],
        "error: config.checkpoint_every: must be 0 or a multiple of eval_every (10), got 15",
    ),
]


@pytest.mark.parametrize("args,line", MISTAKES, ids=[a[0].split("=")[0] for a, _ in MISTAKES])
def test_every_config_mistake_is_one_line_and_exit_code_2(args, line, tmp_path):
    out = _cli_run("--config", "default", *args, "--workdir", str(tmp_path / "w"))
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stderr.startswith(line), out.stderr
    assert not (tmp_path / "w").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "config,line",
    [
        (
            "configs/nope.py",
            f"error: config: no such file: 'configs/nope.py' (the shipped configs, by name: {SHIPPED})",
        ),
        (
            "defualt",
            f"error: config: 'defualt' is neither a shipped config ({SHIPPED}) nor a file; did you mean default?",
        ),
        ("", f"error: config: --config needs a value: a shipped config ({SHIPPED}) or a path to a .py file"),
        (None, f"error: config: --config is required: a shipped config ({SHIPPED}) or a path to a .py file"),
    ],
)
def test_a_config_that_does_not_exist_is_one_line(config, line, tmp_path):
    out = _cli_run(*(["--config", config] if config is not None else []), "--workdir", str(tmp_path / "w"))
    assert out.returncode == 2 and out.stderr == line + "\n", out.stderr[-2000:]


def test_sweep_command_line_checks_its_axes_and_config_name(tmp_path):
    out = _cli_run("--config", "sweep", "--sweep.optimizer.learnig_rate=0.1,0.2", module="redeem_jax.sweep")
    assert out.returncode == 2 and out.stderr == (
        "error: config.optimizer.learnig_rate: unknown field; did you mean config.optimizer.learning_rate?\n"
    ), out.stderr[-2000:]
    out = _cli_run("--config", "swep", "--sweep.seed=0,1", module="redeem_jax.sweep")
    assert out.returncode == 2 and "did you mean sweep?" in out.stderr and out.stderr.count("\n") == 1


def test_help_lists_shipped_configs_sections_and_flags():
    out = _cli_run("--help")
    assert out.returncode == 0, out.stderr[-2000:]
    for name in rj.configs.names():
        assert f"  {name}  " in out.stdout.replace(" " * 3, "  ")
    base = rj.config.base_config()
    for section in (k for k, v in base.items() if hasattr(v, "items")):
        assert f"  {section}: " in out.stdout
    assert "--cpu_devices N" in out.stdout and "--config.<field>=VALUE" in out.stdout


@pytest.mark.parametrize(
    "flag,mesh,sweep_devices,want",
    [
        (0, (), 0, 0),
        (0, (8,), 0, 8),
        (0, (4, 2), 0, 8),
        (0, (-1,), 0, 0),
        (0, (1,), 0, 0),
        (3, (8,), 0, 3),
        (0, (), 4, 4),
        (0, (2, -1), 0, 2),
    ],
)
def test_cpu_devices_follow_the_flag_else_the_mesh(flag, mesh, sweep_devices, want):
    assert _cli.cpu_devices_needed(flag, mesh, sweep_devices) == want


CPU_PROBE = """
import sys
sys.argv = ["redeem-jax", "--config", "default"] + sys.argv[1:]
from absl import flags
import redeem_jax.__main__ as m
m._parse(sys.argv)
from redeem_jax import _cli
_cli.set_cpu_devices(_cli.cpu_devices_needed(m._CPU_DEVICES.value, m._mesh(m._CONFIG.value)))
import jax
print(jax.device_count("cpu"))
"""


@pytest.mark.parametrize("args,count", [([], 1), (["--config.perf.mesh=(8,)"], 8), (["--cpu_devices", "3"], 3)])
def test_the_command_line_sets_the_cpu_device_count_before_jax_starts(args, count):
    out = subprocess.run(
        [sys.executable, "-c", CPU_PROBE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) == count


@pytest.mark.parametrize(
    "key,hint",
    [
        ("topology.nmae", "topology.name"),
        ("topolgy.name", "topology.name"),
        ("num_round", "num_rounds"),
        ("privacy.nois_multiplier", "privacy.noise_multiplier"),
    ],
)
def test_the_python_api_names_the_closest_field_too(key, hint):
    c = rj.config.base_config().to_dict()
    c[key] = 1  # a dotted key in a plain dict: a field at that path, as a sweep axis or a JSON config gives it
    with pytest.raises(
        rj.config.ConfigError,
        match=rf"^config\.{re.escape(key)}: unknown field \(did you mean "
        rf"{re.escape(hint)}\?\)$",
    ):
        rj.config.validate(c)

"""Workdirs that can be trusted: verified checkpoints with fallback, append-only rows, rerun
semantics that never silently destroy history, one-line filesystem errors, strict JSON, and an
accountant called a bounded number of times.

The fuzz tests damage a finished run's workdir the way disks and kills do (truncated, zeroed,
deleted or flipped files, an emptied step folder, a torn last row) at several kill points, and
check the one property that matters: the rerun either ends bit-identical to an uninterrupted
run (resumption is deterministic) or stops with a one-line error saying what to delete; never a
silent restore of damaged bytes.
"""

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import redeem_jax as rj
from redeem_jax.experiment import loop as _loop
from redeem_jax.experiment.config import ConfigError

from _configs import small_config

ROOT = Path(__file__).resolve().parents[1]
TINY = {"num_nodes": 4, "model.hidden": (8,), "eval_every": 2, "checkpoint_every": 2, "eval.max_test_examples": 200}
N = 6  # rounds of the reference run; checkpoints every 2 rounds, orbax keeps the last 2


def tiny(**overrides):
    return small_config(**{**TINY, "num_rounds": N, **overrides})


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


def _strict(text: str):
    """A strict JSON parser: NaN / Infinity are not JSON."""

    def refuse(name):
        raise ValueError(f"non-JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Workdirs of the run stopped after k rounds (a kill point), k = 2, 4, 6, and the rows (wall
    time aside) and final models of the uninterrupted run (k = 6)."""
    out = {}
    for k in (2, 4, N):
        wd = tmp_path_factory.mktemp(f"stopped{k}")
        res = rj.run(tiny(num_rounds=k), wd)
        out[k] = wd
    return out, (_strip(res.rows), np.asarray(res.params))


@pytest.fixture(scope="module")
def stopped(runs):
    return runs[0]


@pytest.fixture(scope="module")
def reference(runs):
    return runs[1]


def _steps(ckdir: Path) -> list[int]:
    """The checkpoint step folders under ``ckdir``, newest first."""
    return sorted((int(p.name) for p in ckdir.iterdir() if p.name.isdigit()), reverse=True) if ckdir.is_dir() else []


def _rerun(wd):
    """Rerun the reference config in ``wd``: (result or the exception, warning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = rj.run(tiny(), wd)
        except Exception as e:  # noqa: BLE001 -- judged by the caller: only a one-line refusal is acceptable
            res = e
    return res, [str(w.message) for w in caught]


def _assert_equal_to_reference(res, reference):
    rows, params = reference
    assert _strip(res.rows) == rows
    np.testing.assert_array_equal(np.asarray(res.params), params)


def _assert_one_line_refusal(err):
    assert isinstance(err, ConfigError) and isinstance(err, OSError), repr(err)[:2000]
    msg = str(err)
    assert "\n" not in msg and "no usable checkpoint" in msg and "delete" in msg, msg


# --------------------------------------------------------------------------- #
# corruption modes
# --------------------------------------------------------------------------- #
MODES = ("truncate", "zero", "delete", "flip", "delete_metadata", "empty_step", "delete_step", "torn_metrics")


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file())


def _damage(wd: Path, step: int, mode: str, pick: int, frac: float, flips: int, seed: int) -> None:
    step_dir = wd / "checkpoints" / str(step)
    rng = np.random.default_rng(seed)
    if mode == "torn_metrics":
        path = wd / "metrics.jsonl"
        data = path.read_bytes()
        start = data.rstrip(b"\n").rfind(b"\n") + 1
        cut = start + 1 + int(frac * (len(data) - start - 3))  # inside the last line, before its closing brace
        path.write_bytes(data[:cut])
        return
    if mode == "empty_step":
        shutil.rmtree(step_dir)
        step_dir.mkdir()
        return
    if mode == "delete_step":  # a kill after the row was logged, before orbax committed
        shutil.rmtree(step_dir)
        return
    if mode == "delete_metadata":
        (step_dir / "default" / "_METADATA").unlink()
        return
    files = _files(step_dir)
    target = files[pick % len(files)]
    data = bytearray(target.read_bytes())
    if mode == "truncate":
        target.write_bytes(bytes(data[: int(frac * len(data))]))
    elif mode == "zero":
        target.write_bytes(b"")
    elif mode == "delete":
        target.unlink()
    elif mode == "flip" and data:
        start = int(frac * len(data))
        for i in range(start, min(start + flips, len(data))):
            data[i] ^= int(rng.integers(1, 256))
        target.write_bytes(bytes(data))


@pytest.mark.fuzz
@settings()
@given(
    k=st.sampled_from([2, 4, 6]),
    mode=st.sampled_from(MODES),
    target=st.sampled_from(["newest", "both"]),
    pick=st.integers(0, 10_000),
    frac=st.floats(0.0, 0.999),
    flips=st.integers(1, 64),
    seed=st.integers(0, 2**31),
)
def test_damaged_workdirs_resume_exactly_or_refuse_in_one_line(
    reference, stopped, k, mode, target, pick, frac, flips, seed
):
    wd = Path(tempfile.mkdtemp(prefix="rj_damaged_"))
    try:
        shutil.copytree(stopped[k], wd, dirs_exist_ok=True)
        steps = _steps(wd / "checkpoints")
        hit = steps[:1] if target == "newest" or mode == "torn_metrics" else steps
        for step in hit:
            _damage(wd, step, mode, pick, frac, flips, seed)
        res, said = _rerun(wd)
        intact_older = target == "newest" and len(steps) > 1
        if isinstance(res, Exception):
            # Only when nothing trustworthy is left; never when an older step was untouched.
            assert not intact_older or mode == "torn_metrics" and len(steps) < 2, str(res)
            _assert_one_line_refusal(res)
            return
        _assert_equal_to_reference(res, reference)
        if mode == "empty_step" and k < N:
            assert any(f"checkpoints/{steps[0]}" in s and "unusable" in s for s in said), said
        if mode == "torn_metrics":
            assert any("torn" in s for s in said), said
        # The rows file is whole again, strict JSON, one row per evaluation.
        lines = (wd / "metrics.jsonl").read_text().splitlines()
        assert [_strict(x)["round"] for x in lines] == [r["round"] for r in reference[0]]
    finally:
        shutil.rmtree(wd, ignore_errors=True)


@pytest.mark.fuzz
@settings()
@given(first=st.sampled_from([2, 4, 6]), then=st.sampled_from([None, 4, 6]), lose_newest=st.booleans())
def test_runs_stopped_at_any_rounds_resume_to_the_uninterrupted_run(reference, stopped, first, then, lose_newest):
    """Kill points simulated by stopping after k rounds (and optionally losing the newest step,
    as a kill between the row and the checkpoint does), then continuing to the end."""
    wd = Path(tempfile.mkdtemp(prefix="rj_stops_"))
    try:
        shutil.copytree(stopped[first], wd, dirs_exist_ok=True)
        for k in [first] + ([then] if then is not None and then >= first else []):
            if k != first:
                rj.run(tiny(num_rounds=k), wd)
            if lose_newest:
                shutil.rmtree(wd / "checkpoints" / str(_steps(wd / "checkpoints")[0]))
        res, _ = _rerun(wd)
        _assert_equal_to_reference(res, reference)
    finally:
        shutil.rmtree(wd, ignore_errors=True)


# --------------------------------------------------------------------------- #
# the audit's cases, one by one
# --------------------------------------------------------------------------- #
def test_flipped_bytes_in_the_newest_checkpoint_fall_back_to_the_previous_one(reference, stopped, tmp_path):
    wd = tmp_path / "w"
    shutil.copytree(stopped[N], wd)
    data_files = sorted(
        (wd / "checkpoints" / "6" / "default" / "ocdbt.process_0" / "d").iterdir(), key=lambda p: p.stat().st_size
    )
    for path in data_files[-2:]:  # the two largest chunks: the model rows and the optimizer state
        raw = bytearray(path.read_bytes())
        for i in range(len(raw) // 2, len(raw) // 2 + 64):
            raw[i] ^= 0x5A
        path.write_bytes(bytes(raw))
    res, said = _rerun(wd)
    assert not isinstance(res, Exception), res
    _assert_equal_to_reference(res, reference)
    assert any("checkpoints/6" in s and "unusable" in s for s in said), said


def test_a_torn_last_row_is_dropped_and_the_file_cut_to_whole_rows(reference, stopped, tmp_path):
    wd = tmp_path / "w"
    shutil.copytree(stopped[4], wd)
    path = wd / "metrics.jsonl"
    path.write_bytes(path.read_bytes()[:-25])  # a kill or a full disk in the middle of the last row
    res, said = _rerun(wd)
    assert not isinstance(res, Exception), res
    _assert_equal_to_reference(res, reference)
    assert any("torn" in s for s in said), said
    assert [_strict(x)["round"] for x in path.read_text().splitlines()] == [0, 2, 4, 6]


def test_no_trustworthy_checkpoint_stops_with_one_line_saying_what_to_delete(stopped, tmp_path):
    wd = tmp_path / "w"
    shutil.copytree(stopped[N], wd)
    for step in (4, 6):
        (wd / "checkpoints" / str(step) / "default" / "_METADATA").unlink()
        shutil.rmtree(wd / "checkpoints" / str(step) / "default" / "ocdbt.process_0")
    with pytest.raises(Exception) as err:
        rj.run(tiny(num_rounds=8), wd)
    _assert_one_line_refusal(err.value)
    assert str(wd / "checkpoints") in str(err.value)


def test_rerunning_without_checkpoints_refuses_to_orphan_a_checkpointed_run(stopped, tmp_path):
    wd = tmp_path / "w"
    shutil.copytree(stopped[N], wd)
    before = (wd / "metrics.jsonl").read_text(), (wd / "config.json").read_text()
    with pytest.raises(ConfigError, match="config.checkpoint_every: 0 would discard the run") as err:
        rj.run(tiny(checkpoint_every=0), wd)
    assert "\n" not in str(err.value)
    assert ((wd / "metrics.jsonl").read_text(), (wd / "config.json").read_text()) == before
    assert _steps(wd / "checkpoints") == [6, 4]
    # Explicitly starting afresh is still possible.
    res = rj.run(tiny(checkpoint_every=0, resume=False), wd)
    assert res.final["round"] == N and not (wd / "checkpoints").exists()


def test_num_rounds_below_the_latest_checkpoint_is_refused(stopped, tmp_path):
    wd = tmp_path / "w"
    shutil.copytree(stopped[N], wd)
    before = (wd / "config.json").read_text()
    with pytest.raises(ConfigError, match=r"config.num_rounds: 4 is below round 6") as err:
        rj.run(tiny(num_rounds=4), wd)
    assert "\n" not in str(err.value)
    assert (wd / "config.json").read_text() == before  # the record of the longer run is kept


def test_a_changed_config_names_every_changed_leaf_on_one_line(stopped, tmp_path):
    wd = tmp_path / "w"
    shutil.copytree(stopped[N], wd)
    with pytest.raises(ConfigError) as err:
        rj.run(tiny(**{"optimizer.learning_rate": 0.5, "optimizer.momentum": 0.5, "num_rounds": 8}), wd)
    msg = str(err.value)
    assert "\n" not in msg
    assert "config.optimizer.learning_rate: 0.05 -> 0.5" in msg
    assert "config.optimizer.momentum: 0.9 -> 0.5" in msg
    assert "{" not in msg  # leaves, not dumped sections


def test_unusable_workdirs_are_refused_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for wd in (afile, afile / "sub"):
        for call in (
            lambda wd=wd: rj.run(tiny(), wd),
            lambda wd=wd: rj.sweep(tiny(num_rounds=2), {"seed": [0, 1]}, wd),
        ):
            with pytest.raises(ConfigError) as err:
                call()
            assert isinstance(err.value, OSError)
            assert str(afile) in str(err.value) and "\n" not in str(err.value)
    if os.geteuid() != 0:  # root writes through permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(ConfigError, match=str(ro)):
                rj.run(tiny(), ro)
        finally:
            ro.chmod(0o700)


def test_infinite_epsilon_a_diverged_loss_and_a_bounded_accountant(tmp_path, monkeypatch):
    """σ = 0 (ε = ∞) and a diverged loss (NaN) are written as strict JSON and read back; ε of
    every evaluation comes without calling the accountant once per evaluation."""
    from redeem_jax.privacy.analysis import accounting

    calls = []
    real = accounting.epsilon
    monkeypatch.setattr(accounting, "epsilon", lambda *a, **k: calls.append(a) or real(*a, **k))
    c = tiny(
        **{
            "privacy.mode": "dp_sgd",
            "privacy.sample_rate": 0.5,
            "privacy.sampling": "poisson",
            "optimizer.learning_rate": 1e30,
            "optimizer.name": "sgd",
            "num_rounds": 8,
            "eval_every": 1,
            "checkpoint_every": 4,
        }
    )
    df = rj.sweep(c, {"privacy.noise_multiplier": [0.0, 1.5]}, tmp_path)
    assert len(df) == 2 * 9 and not calls  # RDP: one step's loss per σ, scaled per evaluation
    private = df[df["privacy.noise_multiplier"] == 1.5]
    p = {"q": 0.5, "delta": c.privacy.delta}
    for r, eps in zip(private["round"][1:], private["epsilon"][1:]):  # the floats of composing all steps at once
        assert eps == real(1.5, p["q"], int(r), p["delta"])
    assert np.isinf(df[df["privacy.noise_multiplier"] == 0.0]["epsilon"].iloc[-1])
    assert df["test_loss"].isna().iloc[-1]
    rows_file = tmp_path / "grid" / "rows.jsonl"
    for line in rows_file.read_text().splitlines():
        _strict(line)
    for name in ("sweep.json", "grid/config.json"):
        if (tmp_path / name).exists():
            _strict((tmp_path / name).read_text())
    last = _strict(rows_file.read_text().splitlines()[-2])  # σ = 0
    assert last["epsilon"] is None and last["nonfinite"]["epsilon"] == "inf"
    on_disk = _loop.read_rows(rows_file)
    assert np.isinf(on_disk[-2]["epsilon"]) and np.isnan(on_disk[-2]["test_loss"])
    cols = _loop.columns(on_disk)
    assert np.isinf(cols["epsilon"][-2]) and "nonfinite" not in cols
    # A resumed sweep reads the same values back.
    again = rj.sweep(c, {"privacy.noise_multiplier": [0.0, 1.5]}, tmp_path)
    cols = [k for k in df.columns if k != "wall_time"]
    assert df[cols].equals(again[cols])


def test_ledger_builds_each_sigma_once_and_replays_the_same_chain():
    privacy = {"accountant": "pld", "sampling": "poisson", "sample_rate": 0.05, "delta": 1e-5}
    ledger = _loop.EpsilonLedger(privacy, stride=5, horizon=60)
    values = [ledger(2.0, t) for t in range(5, 61, 5)] + [ledger(2.0, 58)]
    from redeem_jax.privacy.analysis import accounting

    assert values[-2] == pytest.approx(accounting.epsilon(2.0, 0.05, 60, 1e-5, accountant="pld"), rel=1e-3)
    assert ledger.one_step_builds <= 3  # the check, the stride, the remainder
    assert all(a < b for a, b in itertools.pairwise(values[:-1]))  # ε grows with the steps
    fresh = _loop.EpsilonLedger(privacy, stride=5, horizon=60)  # a resumed run: the same floats
    assert fresh(2.0, 40) == values[7]
    assert ledger(0.0, 10) == float("inf") and ledger(2.0, 0) == 0.0


# --------------------------------------------------------------------------- #
# sweeps and the command line
# --------------------------------------------------------------------------- #
def test_a_damaged_sweep_resumes_to_the_same_table(tmp_path):
    axes = {"seed": [0, 1]}
    c = tiny(num_rounds=4)
    whole = rj.sweep(c, axes, tmp_path / "damaged")
    grid = tmp_path / "damaged" / "grid"
    rows = grid / "rows.jsonl"
    rows.write_bytes(rows.read_bytes()[:-10])  # the last point's row of round 4 torn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = rj.sweep(c, axes, tmp_path / "damaged")
    assert any("torn" in str(w.message) for w in caught)
    cols = [k for k in whole.columns if k != "wall_time"]
    assert whole[cols].equals(again[cols])
    with pytest.raises(ConfigError, match="config.checkpoint_every: 0 would discard"):
        rj.sweep(tiny(num_rounds=4, checkpoint_every=0), axes, tmp_path / "damaged")


def test_command_lines_print_one_line_errors_and_list_only_written_outputs(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    base = [
        sys.executable,
        "-m",
        "redeem_jax",
        "--config",
        str(ROOT / "configs/default.py"),
        "--config.num_nodes=4",
        "--config.num_rounds=2",
        "--config.eval_every=2",
        "--config.byzantine.num=0",
        "--config.compare.key=",
        "--config.checkpoint_every=2",
        "--config.model.hidden=(8,)",
        "--config.progress=False",
        "--config.plots=False",
    ]
    bad = subprocess.run(base + ["--workdir", str(afile)], capture_output=True, text=True, timeout=600, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith(f"error: workdir {afile}")
    sweep = subprocess.run(
        [
            sys.executable,
            "-m",
            "redeem_jax.sweep",
            "--config",
            str(ROOT / "configs/sweep.py"),
            "--sweep.seed=0,1",
            "--workdir",
            str(afile / "sub"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert sweep.returncode == 2 and "Traceback" not in sweep.stderr and str(afile) in sweep.stderr
    good = subprocess.run(
        base + ["--workdir", str(tmp_path / "w")], capture_output=True, text=True, timeout=600, check=False
    )
    assert good.returncode == 0, good.stderr[-2000:]
    listed = good.stdout.strip().splitlines()[-1]
    assert "metrics.jsonl" in listed and "checkpoints/" in listed and ".png" not in listed
    assert not list((tmp_path / "w").glob("*.png"))


KILLED = """
import sys
sys.path.insert(0, {tests!r})
from _configs import small_config
import redeem_jax as rj
rj.run(small_config(**{tiny!r}, num_rounds={n}), {wd!r})
"""


@pytest.mark.slow  # two processes importing JAX: about 30 s on 2 shared cores
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_run(tmp_path):
    n = 80
    wd = tmp_path / "killed"
    code = KILLED.format(tests=str(ROOT / "tests"), tiny=TINY, n=n, wd=str(wd))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600  # only catches a hang
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(s >= 10 for s in _steps(wd / "checkpoints")):
                break
            time.sleep(0.02)
        if proc.poll() is not None:
            pytest.skip("the run finished before it could be killed")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    resumed = rj.run(tiny(num_rounds=n), wd)
    full = rj.run(tiny(num_rounds=n, checkpoint_every=0))
    assert _strip(resumed.rows) == _strip(full.rows)
    np.testing.assert_array_equal(np.asarray(resumed.params), np.asarray(full.params))

"""Logging where researchers look: TensorBoard event files beside metrics.jsonl (read back by an
independent TFRecord/CRC32C parser), and runs, running runs and sweeps as DataFrames."""

import json
import shutil
import struct

import numpy as np
import pandas as pd
import pytest

import redeem_jax as rj

from _configs import small_config


def _tiny(**kw):
    return small_config(**{"num_rounds": 20, "eval_every": 5, "num_nodes": 4, **kw})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    wd = tmp_path_factory.mktemp("run")
    return rj.run(_tiny(), wd), wd


# --------------------------------------------------------------------------- #
# an independent reader of event files: TFRecord framing, CRC32C, the Event proto
# --------------------------------------------------------------------------- #
def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def _masked_crc(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    c ^= 0xFFFFFFFF
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _records(path):
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (n,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        assert hcrc == _masked_crc(header)
        body = data[pos + 12 : pos + 12 + n]
        (bcrc,) = struct.unpack("<I", data[pos + 12 + n : pos + 16 + n])
        assert bcrc == _masked_crc(body)
        yield body
        pos += 16 + n


def _scalars(workdir):
    """{tag: {step: value}} over the event files in write order, honouring a purge step as
    TensorBoard does (a file that starts at step s hides earlier files' points at steps >= s)."""
    from tensorboardX.proto.event_pb2 import Event

    files = [[Event.FromString(body) for body in _records(p)] for p in workdir.glob("events.out.tfevents.*")]
    out: dict = {}
    for events in sorted(files, key=lambda evs: evs[0].wall_time):
        for ev in events:
            if ev.HasField("session_log") or (ev.file_version and ev.step):
                for tag in out:
                    out[tag] = {s: v for s, v in out[tag].items() if s < ev.step}
            for v in ev.summary.value:
                out.setdefault(v.tag, {})[ev.step] = v.simple_value
    return out


def _rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _same_scalars(workdir):
    rows = _rows(workdir)
    got = _scalars(workdir)
    want_tags = {k for r in rows for k, v in r.items() if k != "round" and isinstance(v, (int, float))}
    assert set(got) == want_tags
    for tag in want_tags:
        steps = {r["round"]: r[tag] for r in rows if tag in r}
        assert sorted(got[tag]) == sorted(steps)
        np.testing.assert_array_equal(
            [got[tag][s] for s in sorted(steps)], np.float32([steps[s] for s in sorted(steps)])
        )


def test_event_files_hold_the_same_scalars_as_metrics_jsonl(finished):
    pytest.importorskip("tensorboardX")
    _, wd = finished
    assert len(list(wd.glob("events.out.tfevents.*"))) == 1
    _same_scalars(wd)
    assert {"test_accuracy", "test_loss", "consensus_distance"} <= set(_scalars(wd))


def test_resumed_run_purges_the_points_past_its_checkpoint_and_a_fresh_run_replaces_them(tmp_path):
    pytest.importorskip("tensorboardX")
    rj.run(_tiny(num_rounds=15, checkpoint_every=10), tmp_path)  # rows up to 15, checkpoint at 10
    res = rj.run(_tiny(num_rounds=20, checkpoint_every=10), tmp_path)  # resumes at 10: rows 15, 20 anew
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert [r["round"] for r in res.rows] == [0, 5, 10, 15, 20]
    _same_scalars(tmp_path)
    rj.run(_tiny(num_rounds=10, checkpoint_every=10, resume=False), tmp_path)  # starts afresh
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    _same_scalars(tmp_path)


def test_event_files_are_off_when_switched_off_or_without_a_workdir(tmp_path, monkeypatch):
    from redeem_jax.experiment import tensorboard_log

    assert tensorboard_log.open_writer(None, 0) is None
    monkeypatch.setenv("REDEEM_JAX_TENSORBOARD", "0")
    assert not tensorboard_log.available() and tensorboard_log.open_writer(tmp_path, 0) is None
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- #
# DataFrames
# --------------------------------------------------------------------------- #
def test_to_pandas_and_load_run_give_the_metrics_and_the_config_fields(finished):
    res, wd = finished
    df = res.to_pandas()
    back = rj.load_run(wd)
    assert len(df) == len(res.rows) == 5
    for key, values in res.metrics.items():
        np.testing.assert_array_equal(df[key].to_numpy(np.float64), values)
        np.testing.assert_array_equal(back[key].to_numpy(np.float64), values)
    flat = rj.config._flatten(json.loads(res.config.to_json()))
    for key in ("topology.name", "optimizer.learning_rate", "num_nodes", "data.name", "seed"):
        assert (df[key] == flat[key]).all() and (back[key] == flat[key]).all()
    assert df["topology.name"].iloc[0] == "ring" and back["round"].tolist() == [0, 5, 10, 15, 20]
    assert (back["workdir"] == str(wd)).all()
    pd.testing.assert_frame_equal(df.drop(columns="wall_time"), back.drop(columns="wall_time"), check_dtype=False)


def test_running_workdir_with_a_torn_last_line_reads_its_whole_rows(finished, tmp_path):
    res, wd = finished
    shutil.copy(wd / "config.json", tmp_path / "config.json")
    lines = (wd / "metrics.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "metrics.jsonl").write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    df = rj.load_run(tmp_path)
    assert df["round"].tolist() == [0, 5, 10]
    np.testing.assert_array_equal(df["test_loss"].to_numpy(np.float64), res.metrics["test_loss"][:3])
    assert (df["topology.name"] == "ring").all()


def test_sweep_workdir_reads_back_as_the_sweep_table(tmp_path):
    # model.hidden is looped (one folder per value, a tuple in JSON as a list), seed vmapped
    df = rj.sweep(_tiny(num_rounds=10), {"model.hidden": [(8,), (16,)], "seed": [0, 1]}, tmp_path)
    back = rj.load_run(tmp_path)
    assert len(back) == len(df) == 2 * 2 * 3
    for col in ("model.hidden", "seed", "point", "round"):
        assert back[col].tolist() == df[col].tolist()
    np.testing.assert_array_equal(back["test_loss"].to_numpy(np.float64), df["test_loss"].to_numpy(np.float64))
    assert (back["num_nodes"] == 4).all() and (back["topology.name"] == "ring").all()


def test_comparison_workdir_reads_back_one_run_per_folder(tmp_path):
    c = _tiny(num_rounds=5, **{"compare.key": "topology.name", "compare.choices": ("ring", "complete")})
    results = rj.run(c, tmp_path)
    df = rj.load_run(tmp_path)
    assert sorted(df["run"].unique()) == ["complete", "ring"]
    for label, res in results.items():
        part = df[df["run"] == label]
        assert (part["topology.name"] == label).all() and (part["compare.key"] == "").all()
        np.testing.assert_array_equal(part["test_loss"].to_numpy(np.float64), res.metrics["test_loss"])
    # runs of many workdirs are one concat away
    both = pd.concat([rj.load_run(tmp_path / "ring"), rj.load_run(tmp_path / "complete")], ignore_index=True)
    last = both.sort_values("round").groupby("topology.name")["round"].last()
    assert last.to_dict() == {"complete": 5, "ring": 5}

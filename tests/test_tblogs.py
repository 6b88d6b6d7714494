import re

import numpy as np
import pytest

from llmft import tblogs


def test_read_scalars_returns_every_run_and_tag_in_step_order(tmp_path):
    pytest.importorskip("tensorboard")  # tf.summary.scalar is implemented by the tensorboard package
    import tensorflow as tf

    for run, values in [("train", [3.0, 2.0, 1.5]), ("eval", [4.0])]:
        with tf.summary.create_file_writer(str(tmp_path / run)).as_default():
            for step, value in reversed(list(enumerate(values, start=1))):
                tf.summary.scalar("loss", value, step=step)
            tf.summary.text("note", "not a scalar", step=0)
    scalars = tblogs.read_scalars(tmp_path)
    assert scalars == {"eval": {"loss": [(1, 4.0)]}, "train": {"loss": [(1, 3.0), (2, 2.0), (3, 1.5)]}}


def test_each_new_run_dir_is_a_fresh_empty_folder(tmp_path, monkeypatch):
    runs = [tblogs.new_run_dir("ch07-smoke", root=tmp_path) for _ in range(3)]
    assert len(set(runs)) == 3
    assert all(run.is_dir() and not any(run.iterdir()) and run.parent == tmp_path / "ch07-smoke" for run in runs)
    assert all(re.fullmatch(r"\d{8}-\d{6}-\w+", run.name) for run in runs)
    monkeypatch.setenv("LLMFT_HOME", str(tmp_path / "home"))
    assert tblogs.new_run_dir("demo").parent == tmp_path / "home" / "tensorboard" / "demo"


def test_read_scalars_of_an_empty_folder_is_empty(tmp_path):
    assert tblogs.read_scalars(tmp_path) == {}
    assert tblogs.trace_files(tmp_path) == []


def test_profiler_trace_is_found_and_summarised(tmp_path):
    import tensorflow as tf

    a = tf.constant(np.random.default_rng(0).normal(size=(128, 128)), tf.float32)
    step = tf.function(lambda x: tf.reduce_sum(tf.matmul(x, x)))
    step(a)  # trace once, outside the profile
    tf.profiler.experimental.start(str(tmp_path))
    for i in range(3):
        with tf.profiler.experimental.Trace("my step", step_num=i, _r=1):
            step(a)
    tf.profiler.experimental.stop()
    files = tblogs.trace_files(tmp_path)
    assert len(files) == 1 and files[0].name.endswith(".xplane.pb")
    rows = tblogs.op_times(files[0], top=3)
    assert 1 <= len(rows) <= 3 and rows == sorted(rows, key=lambda r: -r["ms"])
    assert any("MatMul" in r["op"] for r in tblogs.op_times(files[0], top=50))
    assert all(0 < r["share"] <= 1 and r["calls"] >= 1 for r in rows)
    by_name = tblogs.op_times(files[0], group_by="name", top=50)
    assert sum(r["share"] for r in by_name) == pytest.approx(1.0) or len(by_name) == 50
    durations = tblogs.event_durations(files[0], "my step")
    assert len(durations) == 3 and all(d > 0 for d in durations)
    assert tblogs.event_durations(files[0], "no such event") == []


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: tblogs.new_run_dir("", root=p), "name must be one folder name"),
        (lambda p: tblogs.new_run_dir("a/b", root=p), "'a/b'"),
        (lambda p: tblogs.new_run_dir("..", root=p), "name"),
        (lambda p: tblogs.new_run_dir(7, root=p), "got 7"),
        (lambda p: tblogs.read_scalars(p / "missing"), "logdir must be an existing folder"),
        (lambda p: tblogs.trace_files(p / "missing"), "logdir"),
        (lambda p: tblogs.op_times(p / "x.xplane.pb"), "xplane_path"),
        (lambda p: tblogs.op_times(p / "x.xplane.pb", group_by="layer"), "group_by"),
        (lambda p: tblogs.op_times(p / "x.xplane.pb", top=0), "top"),
        (lambda p: tblogs.event_durations(p / "x.xplane.pb", ""), "name"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path, call, match):
    with pytest.raises(ValueError, match=match):
        call(tmp_path)

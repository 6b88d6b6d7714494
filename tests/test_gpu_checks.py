"""tools/gpu_run.py (make test-gpu): its thresholds exist and its verdicts are right.

The gpu run itself needs a GPU machine; here the checking logic runs on
made-up result files, and every threshold is checked to name a metric that
the committed cpu run really recorded.
"""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("gpu_run_tool", ROOT / "tools" / "gpu_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_check_names_a_metric_of_the_committed_cpu_run(tool):
    for name, path, rule, amount in tool.CHECKS:
        metrics = tool.load_metrics(ROOT / "results", name)
        assert metrics is not None, name
        assert isinstance(tool.lookup(metrics, path), (int, float)), (name, path)


def _write(folder, name, metrics):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"metrics": metrics}), encoding="utf-8")


def test_verdicts(tool, tmp_path):
    cpu, run = tmp_path / "cpu", tmp_path / "run"
    _write(cpu, "a", {"acc": 0.80, "loss": 2.0})
    _write(run, "a", {"acc": 0.795, "loss": 2.2})
    checks = [("a", "acc", ">= cpu - m", 0.01), ("a", "loss", "<= cpu + m", 0.1),
              ("a", "acc", ">= v", 0.9), ("b", "x", "<= v", 1.0)]
    rows = tool.evaluate(checks, run, cpu)
    assert [r["ok"] for r in rows] == [True, False, False, None]  # b.json was never recorded
    assert rows[0]["bound"] == pytest.approx(0.79) and rows[0]["cpu"] == 0.80
    with pytest.raises(ValueError, match="rule must be one of"):
        tool.evaluate([("a", "acc", "==", 1)], run, cpu)


def test_backend_falls_back_to_jax_without_tensorflow(tool, monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert tool.pick_backend() == "tensorflow"  # installed here
    monkeypatch.setattr(tool.importlib.util, "find_spec", lambda name: None)
    assert tool.pick_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert tool.pick_backend() == "torch"

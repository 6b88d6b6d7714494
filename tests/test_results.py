import json

import numpy as np
import pytest

from llmft import results


def test_record_and_load_round_trip(results_tmp):
    path = results.record("ch99", {"acc": np.float32(0.5), "curve": {"100": 0.7}, "n": np.int64(3)}, profile="smoke")
    assert path.parent == results_tmp
    payload = results.load("ch99")
    assert payload["profile"] == "smoke"
    assert payload["metrics"] == {"acc": 0.5, "curve": {"100": 0.7}, "n": 3}
    assert json.loads(path.read_text(encoding="utf-8")) == payload


def test_no_temporary_files_left(results_tmp):
    results.record("ch99", {"a": 1}, profile="smoke")
    assert [p.name for p in results_tmp.iterdir()] == ["ch99.json"]


@pytest.mark.parametrize("metrics", [{}, None, {"a": float("nan")}, {"a": object()}, {1: 2}])
def test_bad_metrics_are_rejected(results_tmp, metrics):
    with pytest.raises(ValueError, match="metrics"):
        results.record("ch99", metrics, profile="smoke")


@pytest.mark.parametrize("chapter", ["", "Ch 4", "../x", None])
def test_bad_chapter_names(results_tmp, chapter):
    with pytest.raises(ValueError, match="chapter"):
        results.record(chapter, {"a": 1}, profile="smoke")


def test_failed_write_keeps_previous_file(results_tmp, monkeypatch):
    results.record("ch99", {"a": 1}, profile="smoke")
    import os

    def boom(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", boom)
        with pytest.raises(OSError):
            results.record("ch99", {"a": 2}, profile="smoke")
    assert results.load("ch99")["metrics"] == {"a": 1}
    assert [p.name for p in results_tmp.iterdir()] == ["ch99.json"]

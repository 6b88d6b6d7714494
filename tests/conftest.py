"""Test-wide settings: test runs never write to the committed results/ or
the user's cache; they get temporary folders instead."""

import os
import tempfile

import pytest

# Set before llmft is imported anywhere in the test session.
_SESSION_TMP = tempfile.mkdtemp(prefix="llmft-tests-")
os.environ["LLMFT_RESULTS_DIR"] = os.path.join(_SESSION_TMP, "results")
# The data cache is shared across the session (and with the notebook runs
# launched from it) so that corpora are parsed once.
os.environ.setdefault("LLMFT_HOME", os.path.join(_SESSION_TMP, "home"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def results_tmp(tmp_path, monkeypatch):
    """A fresh results folder for one test."""
    monkeypatch.setenv("LLMFT_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"

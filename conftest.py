"""Test-wide settings for `pytest tests chapters` (unit tests and nbval).

It sits at the repository root so that it also applies when only the
chapters are collected (``pytest --nbval-lax chapters``): test runs never
write to the committed results/ or the user's cache, they get temporary
folders instead.
"""

import os
import sys
import tempfile

import pytest

# Set before llmft is imported anywhere in the test session.
_SESSION_TMP = tempfile.mkdtemp(prefix="llmft-tests-")
os.environ["LLMFT_RESULTS_DIR"] = os.path.join(_SESSION_TMP, "results")
# The data cache is shared across the session (and with the notebook runs
# launched from it) so that corpora are parsed once.
os.environ.setdefault("LLMFT_HOME", os.path.join(_SESSION_TMP, "home"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# ipykernel's "python3" kernel spec runs `python` from PATH; make that this
# interpreter (the project's .venv) so notebook kernels import the same llmft.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture
def results_tmp(tmp_path, monkeypatch):
    """A fresh results folder for one test."""
    monkeypatch.setenv("LLMFT_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"

"""Test-wide settings for `pytest tests chapters` (unit tests and nbval).

It sits at the repository root so that it also applies when only the
chapters are collected (``pytest --nbval-lax chapters``): test runs never
write to the committed results/ or the user's cache, they get temporary
folders instead.

It also cuts the session off the network (issue 9, "offline"): see
``tests/network_guard.py`` for what is blocked and what is not. In short:
in this process every socket connection or name lookup to a non-loopback
address raises ``NetworkBlocked``; notebook kernels started by nbval and
papermill install the same guard through an IPython startup file; other
child processes get proxy variables that make HTTP(S) clients fail. Set
``LLMFT_ALLOW_NETWORK=1`` to run the tests without the guard.
"""

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

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


def _load_network_guard():
    path = Path(__file__).resolve().parent / "tests" / "network_guard.py"
    spec = importlib.util.spec_from_file_location("network_guard", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["network_guard"] = module  # `import network_guard` in tests gets this one
    return module, path


if os.environ.get("LLMFT_ALLOW_NETWORK") != "1":
    _guard, _guard_path = _load_network_guard()
    _guard.install()
    os.environ.update(_guard.CHILD_ENV)
    # Kernels (nbval, papermill) run IPython's startup files: a session-only
    # IPYTHONDIR whose startup file installs the guard in every kernel.
    _startup = Path(_SESSION_TMP) / "ipython" / "profile_default" / "startup"
    _startup.mkdir(parents=True)
    (_startup / "00-llmft-network-guard.py").write_text(
        _guard.STARTUP_TEMPLATE.format(path=str(_guard_path)), encoding="utf-8")
    os.environ["IPYTHONDIR"] = str(Path(_SESSION_TMP) / "ipython")


@pytest.fixture
def results_tmp(tmp_path, monkeypatch):
    """A fresh results folder for one test."""
    monkeypatch.setenv("LLMFT_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"

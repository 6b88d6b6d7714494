"""Fixtures shared by the tests of the built book (tests/test_book.py, tests/test_browser.py).

The root ``conftest.py`` holds the session-wide settings (temporary results,
network guard); this file only holds the ``html`` fixture, so that the book
is built once per test session and not once per test module.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def html(tmp_path_factory):
    """The ``_build/html`` folder of a fresh build (``-W -n --keep-going``).

    Set ``LLMFT_BOOK_HTML`` to an already built ``_build/html`` (as
    ``make browser`` does after ``make book``) to test that one instead.
    """
    prebuilt = os.environ.get("LLMFT_BOOK_HTML")
    if prebuilt:
        path = Path(prebuilt).resolve()
        assert (path / "index.html").exists(), f"LLMFT_BOOK_HTML={prebuilt!r} has no index.html"
        return path
    out = tmp_path_factory.mktemp("book")
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or "jupyter-book"
    proc = subprocess.run(
        [jb, "build", str(ROOT), "--path-output", str(out), "--warningiserror", "--nitpick", "--keep-going"],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out / "_build" / "html"

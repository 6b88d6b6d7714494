"""Fixtures shared by the tests of the built book (tests/test_book.py, tests/test_browser.py).

The root ``conftest.py`` holds the session-wide settings (temporary results,
network guard); this file only holds the ``html`` fixture, so that the book
is built once per test run and not once per test module: under pytest-xdist
each worker is its own session, so the build goes to a folder the workers
share, under a file lock (the first worker to need it builds, the others wait
and reuse it).
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
    from llmft import paths

    base = tmp_path_factory.getbasetemp()
    out = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "book"
    done = out / "built-without-errors"
    with paths.exclusive(out):
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)  # what a failed build in another worker left
            jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or "jupyter-book"
            proc = subprocess.run(
                [jb, "build", str(ROOT), "--path-output", str(out), "--warningiserror", "--nitpick", "--keep-going"],
                capture_output=True, text=True, timeout=1200,
            )
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
            done.touch()
    return out / "_build" / "html"


def pytest_collection_modifyitems(config, items):
    # The browser tests reuse the book that tests/test_book.py builds (the `html` fixture). Run
    # them last: under pytest-xdist the other worker has built it by then, instead of this worker
    # waiting idle on the lock while it builds. The sort is stable, so the rest keeps its order.
    items.sort(key=lambda item: item.path.name == "test_browser.py")

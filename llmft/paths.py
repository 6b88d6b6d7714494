"""Where llmft keeps caches and where chapters record results.

``LLMFT_HOME`` (default ``~/.cache/llmft``) holds caches: processed data and
pretrained base models. ``LLMFT_RESULTS_DIR`` (default ``results/`` at the
repository root) receives each chapter's metrics; the test suite points both
at temporary folders so test runs never touch what is committed.
Introduced in chapter 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def llmft_home() -> Path:
    """The cache folder (created on first use)."""
    path = Path(os.environ.get("LLMFT_HOME") or Path.home() / ".cache" / "llmft")
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """The folder for ``results/<chapter>.json`` (created on first use)."""
    path = Path(os.environ.get("LLMFT_RESULTS_DIR") or REPO_ROOT / "results")
    path.mkdir(parents=True, exist_ok=True)
    return path


def chapter_notebooks(root: str | os.PathLike = REPO_ROOT) -> list[Path]:
    """The chapter notebooks in ``root/chapters``, sorted by file name.

    Hidden files are skipped: ``tools/execute.py`` runs a chapter into a
    temporary ``.<name>.<random>.ipynb`` beside it, which is not a chapter.
    """
    folder = Path(root) / "chapters"
    if not folder.is_dir():
        raise ValueError(f"root must contain a chapters/ folder; got root={str(root)!r}")
    return sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))


@contextlib.contextmanager
def exclusive(directory: str | os.PathLike, *, waiting_message: str | None = None):
    """Hold an inter-process lock on ``<directory>.lock`` for the block.

    Two processes that need the same cached model at once, such as the nbval
    and papermill runs of one chapter in ``make test`` or two notebooks opened
    side by side on an empty cache, would otherwise both train it, into the
    same ``checkpoints/`` folder, where one could resume from or delete the
    other's checkpoint. Under this lock the first one trains; the others wait,
    then find the finished model (check the cache again inside the block).
    The lock is ``filelock.FileLock``: released when the block ends or the
    process dies, so a crash never leaves the cache locked.

    Args:
        directory: what is built under the lock (it need not exist yet).
        waiting_message: printed once if another process holds the lock
            (``None``: wait silently).
    """
    import filelock

    path = Path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        if waiting_message:
            print(waiting_message, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def load_or_build(directory: str | os.PathLike, load, build, *, waiting_message: str | None = None):
    """``load()`` the cached thing in ``directory`` if it is complete, else ``build()`` it, once.

    Completeness is ``directory/meta.json``: the builder writes it last
    (atomically), so its presence means every other file is in place. Without
    it, the build runs under :func:`exclusive`; a process that waited there
    finds ``meta.json`` written by the one before it and loads instead.

    Args:
        directory: the cache folder.
        load, build: functions of no arguments; ``build`` must write
            ``meta.json`` last.
        waiting_message: see :func:`exclusive`.
    """
    marker = Path(directory) / "meta.json"
    if marker.exists():
        return load()
    with exclusive(directory, waiting_message=waiting_message):
        if marker.exists():  # built while we waited
            return load()
        return build()


def _give_umask_mode(path):
    # mkstemp creates 0600 files; give the result the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def _replace_on_success(path: Path, prefix: str, suffix: str):
    """A unique temporary file beside ``path`` that replaces ``path`` if the block succeeds.

    Yields ``(fd, tmp)``: the open descriptor, which the block closes, and the
    temporary name. The file gets the mode a new file would get (mkstemp makes
    0600 files). On any error the temporary file is deleted and ``path`` is
    left as it was; on success one ``os.replace`` (atomic on POSIX and
    Windows) moves it onto ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    try:
        _give_umask_mode(tmp)
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers never see a half-written file.

    The bytes go to a temporary file in the same folder, are flushed to disk,
    and then replace ``path`` in one ``os.replace``. A crash leaves either the
    old file or the new one.
    """
    path = Path(path)
    with _replace_on_success(path, f".{path.name}.", ".tmp") as (fd, _):
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def atomic_save_model(model, path: str | os.PathLike) -> Path:
    """``model.save(path)`` so that readers never see a half-written model, even with several writers.

    Keras writes to a temporary ``.keras`` file with a unique name in the same
    folder, which then replaces ``path`` in one ``os.replace``. The unique name
    matters when two processes build the same cache at once (two test workers
    pretraining the same base model): with one shared temporary name, one
    process would move the other's half-written file away.
    """
    path = Path(path)
    with _replace_on_success(path, f".{path.stem}.", ".tmp.keras") as (fd, tmp):  # Keras wants a .keras name
        os.close(fd)
        model.save(tmp)  # Keras rewrites the file in place, keeping the mode given above
    return path


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    """:func:`atomic_write_bytes` for JSON (UTF-8, sorted keys, Chinese kept readable)."""
    text = json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))

"""Re-run chapters in place with papermill (``make execute``).

Each chapter runs into a temporary file first and replaces the committed
notebook only when it finished without an error, so a failed or interrupted
run never leaves a half-executed chapter behind. The wall time of every run
is printed and kept in the notebook's papermill metadata.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parent.parent


def execute(notebook: Path, profile: str) -> float:
    """Run ``notebook`` with ``LLMFT_PROFILE=profile``; replace it on success.

    The profile travels through the environment, not as a papermill
    parameter: an injected ``PROFILE = "cpu"`` cell would stay in the
    committed notebook and override ``LLMFT_PROFILE=smoke`` when nbval
    re-runs it in CI. The chapter prints the profile it resolved.
    """
    start = time.perf_counter()
    os.environ["LLMFT_PROFILE"] = profile
    # Kernels start `python` from PATH: make it this interpreter.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    fd, tmp = tempfile.mkstemp(suffix=".ipynb", dir=notebook.parent, prefix=f".{notebook.stem}.")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; the notebook is a normal file
    try:
        # Start from a clean copy: drop a previous run's injected parameters.
        nb = nbformat.read(notebook, as_version=4)
        nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        nb.metadata.pop("papermill", None)
        nbformat.write(nb, tmp)
        papermill.execute_notebook(
            tmp, tmp, kernel_name="python3", cwd=str(notebook.parent), progress_bar=False,
        )
        os.replace(tmp, notebook)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu", "tpu", "auto"])
    parser.add_argument("chapters", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.profile != "cpu":
        print(f"note: committed outputs come from the cpu profile; running {args.profile!r}", file=sys.stderr)
    for nb in args.chapters:
        if nb.suffix != ".ipynb" or not nb.is_file():
            parser.error(f"chapters: {nb} is not a notebook file")
    for nb in args.chapters:
        seconds = execute(nb.resolve(), args.profile)
        print(f"{nb}: {seconds:.0f} s ({args.profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write (or check) the Colab set-up cell of every chapter.

The cell comes right after a chapter's ``parameters`` cell. In Colab it
installs ``llmft`` from the book's repository (the URL is read from
``_config.yml``, its only home) and calls :func:`llmft.colab.setup`;
elsewhere it does nothing. ``tests/test_colab.py`` checks that every chapter
has exactly this cell, so a changed URL means running this tool again::

    python tools/colab_cell.py            # check
    python tools/colab_cell.py --write    # insert or update the cell
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
MARKER = "# Colab set-up"


def repository_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    return config["repository"]["url"]


def cell_source(notebook: str, url: str | None = None) -> str:
    """The set-up cell of ``notebook`` (a file name); only the open-models appendix needs keras-hub."""
    url = url or repository_url()
    extras = "[hub]" if "open_models" in notebook else ""
    requirement = f"llmft{extras} @ git+{url}"
    return f'''{MARKER}: in Colab, install llmft (with its data packages) once per runtime;
# on a TPU runtime choose the JAX backend; with USE_DRIVE = True keep caches and
# checkpoints on Google Drive so that a disconnected session resumes.
# Outside Colab this cell does nothing.
USE_DRIVE = False
import importlib.util, subprocess, sys
if "google.colab" in sys.modules:
    if importlib.util.find_spec("llmft") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", {json.dumps(requirement)}], check=True)
    from llmft import colab
    colab.setup(use_drive=USE_DRIVE)'''


def setup_cell_index(nb) -> int | None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.startswith(MARKER):
            return i
    return None


def parameters_index(nb) -> int:
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.metadata.get("tags", []):
            return i
    raise ValueError("notebook has no cell tagged 'parameters'")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="insert or update the cell")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    # hidden files are tools/execute.py's temporary copies, not chapters
    notebooks = args.notebooks or sorted(p for p in (ROOT / "chapters").glob("*.ipynb") if not p.name.startswith("."))
    bad = []
    for path in notebooks:
        expected = cell_source(path.name)
        nb = nbformat.read(path, as_version=4)
        index, wanted = setup_cell_index(nb), parameters_index(nb) + 1
        if index == wanted and nb.cells[index].source == expected:
            continue
        if not args.write:
            bad.append(path.name)
            continue
        if index is not None:
            nb.cells[index].source = expected
            nb.cells.insert(wanted, nb.cells.pop(index))
        else:
            cell = nbformat.v4.new_code_cell(expected)
            cell.metadata["tags"] = ["colab-setup"]
            nb.cells.insert(wanted, cell)
        nbformat.write(nb, path)
        print("wrote", path.name)
    if bad:
        print("Colab set-up cell missing or outdated in: " + ", ".join(bad) + " (run tools/colab_cell.py --write)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

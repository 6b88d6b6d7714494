"""Every chapter: committed outputs are sound, and it runs under papermill.

The papermill run injects ``PROFILE="smoke"`` through the ``parameters``
cell and writes the executed copy to a temporary folder; the nbval run of
the same chapters happens in ``make test`` (``pytest chapters --nbval-lax``).
"""

from pathlib import Path

import nbformat
import pytest

from llmft import paths

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = paths.chapter_notebooks(ROOT)
IDS = [p.stem for p in CHAPTERS]


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_there_are_chapters():
    assert CHAPTERS, "no chapters found"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_first_code_cell_is_the_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    first = code_cells(nb)[0]
    assert "parameters" in first.metadata.get("tags", [])
    assert 'PROFILE = os.environ.get("LLMFT_PROFILE", "auto")' in first.source


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_committed_outputs_come_from_a_clean_cpu_run(path):
    nb = nbformat.read(path, as_version=4)
    # No injected parameters cell: it would pin the profile when nbval re-runs the chapter.
    assert not [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    # The Colab set-up cell does nothing outside Colab; chapters last run
    # before it was added carry it unexecuted (tests/test_colab.py checks it).
    cells = [c for c in code_cells(nb) if "colab-setup" not in c.metadata.get("tags", [])]
    # env.start_chapter prints the resolved profile in the cell after `parameters`.
    first_output = "".join(o.get("text", "") for o in cells[1].outputs)
    assert first_output.startswith("profile=cpu "), first_output[:200]
    assert all(c.get("execution_count") for c in cells if c.source.strip()), "unexecuted cells"
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors[0].get("ename")
    stderr = "".join(o.get("text", "") for c in cells for o in c.outputs if o.get("name") == "stderr")
    assert "Traceback" not in stderr


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapter_ends_with_summary_and_exercises(path):
    nb = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## 小结" in markdown and "## 练习" in markdown
    assert ":class: dropdown" in markdown  # solutions are collapsed


@pytest.mark.notebook
@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapter_runs_with_smoke_profile_under_papermill(path, tmp_path):
    import papermill

    out = tmp_path / path.name
    papermill.execute_notebook(
        str(path), str(out), parameters={"PROFILE": "smoke"},
        kernel_name="python3", cwd=str(path.parent), progress_bar=False,
    )
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'PROFILE = "smoke"' in injected[0].source
    text = "".join(o.get("text", "") for c in code_cells(nb) for o in c.outputs)
    assert "profile=smoke" in text  # env.start_chapter printed the resolved profile


def stated_cpu_seconds(nb):
    """The cpu run time a chapter states at its top ("cpu | 约 12 分钟", "`cpu` 约 30 秒")."""
    import re

    top = "\n".join(c.source for c in nb.cells[:4] if c.cell_type == "markdown")
    m = re.search(r"`?cpu`?\s*\|?\s*约\s*([\d.]+)\s*(分钟|秒)", top)
    return None if m is None else float(m.group(1)) * (60 if m.group(2) == "分钟" else 1)


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_stated_cpu_run_time_matches_the_committed_run(path):
    # The reader plans by the time at the top of the chapter; it must stay
    # close to what the committed cpu run took (papermill records it).
    nb = nbformat.read(path, as_version=4)
    stated = stated_cpu_seconds(nb)
    assert stated is not None, "the chapter does not state its cpu run time at the top"
    measured = nb.metadata["papermill"]["duration"]
    assert abs(stated - measured) <= 60 or 0.5 <= stated / measured <= 2, (stated, measured)


def test_chapter_notebooks_skip_the_temporary_copies_of_a_run(tmp_path):
    # tools/execute.py runs a chapter into ".<name>.<random>.ipynb" beside it;
    # tests, tools/bench.py and the book must not take that for a chapter.
    (tmp_path / "chapters").mkdir()
    for name in ("02_b.ipynb", "01_a.ipynb", ".01_a.x7k2.ipynb", "notes.md"):
        (tmp_path / "chapters" / name).write_text("{}", encoding="utf-8")
    assert [p.name for p in paths.chapter_notebooks(tmp_path)] == ["01_a.ipynb", "02_b.ipynb"]
    with pytest.raises(ValueError, match="root must contain a chapters/ folder"):
        paths.chapter_notebooks(tmp_path / "missing")

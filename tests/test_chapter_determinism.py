"""The same chapter run twice records the same metrics (issue: reliability).

Chapter 3 trains both base models from scratch in the smoke profile (each run
gets its own empty LLMFT_HOME, so nothing comes from a cache) and records
them; every metric that is not a wall-clock time must be identical.
"""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "chapters" / "03_pretraining.ipynb"
# Wall-clock times, and the equal-time comparison that stops on a time budget.
TIMED = ("seconds", "equal_time")


def _untimed(tree):
    if isinstance(tree, dict):
        return {k: _untimed(v) for k, v in tree.items() if not any(t in k for t in TIMED)}
    return tree


@pytest.mark.notebook
def test_chapter_3_records_identical_metrics_twice(tmp_path, monkeypatch):
    import papermill

    recorded = []
    for run in ("first", "second"):
        home, out = tmp_path / run / "home", tmp_path / run / "results"
        (tmp_path / run).mkdir()
        monkeypatch.setenv("LLMFT_HOME", str(home))
        monkeypatch.setenv("LLMFT_RESULTS_DIR", str(out))
        papermill.execute_notebook(str(CHAPTER), str(tmp_path / run / CHAPTER.name),
                                   parameters={"PROFILE": "smoke"}, kernel_name="python3",
                                   cwd=str(CHAPTER.parent), progress_bar=False)
        recorded.append(json.loads((out / "ch03.json").read_text(encoding="utf-8"))["metrics"])
    first, second = (_untimed(m) for m in recorded)
    assert first["gpt"]["val_loss"] > 0 and "lstm" in first  # the comparison covers the trained models
    assert first == second

"""The numbers a chapter's prose quotes come from its committed run.

After a re-run the outputs and ``results/*.json`` change at once, but the
sentences that quote them ("全参数微调 0.793") do not. This test finds every
number with three or more decimals in the prose of a chapter and asks that
one of the chapter's outputs, or its results file, rounds to it. Text after
the "## 练习" heading (the exercises' answers run code the chapter does not)
and LaTeX math (constants such as e^2 ≈ 7.389) are not checked. Numbers
with fewer decimals are left out: most are section numbers ("6.4") or
percentage points, which would match some output by chance.
"""

import json
import re

import nbformat
import pytest

from test_notebooks import CHAPTERS, IDS, ROOT

QUOTED = re.compile(r"(?<![\d.])\d+\.\d{3,}(?![\d.])")
ANY_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
RECORD = re.compile(r"results\.record\(\s*\"(\w+)\"")


def prose(nb) -> list[tuple[int, str]]:
    """``(cell index, text)`` of the markdown before the exercises, math removed."""
    cells = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        text, heading, _ = cell.source.partition("## 练习")
        cells.append((i, MATH.sub(" ", text)))
        if heading:
            break
    return cells


def numbers_in(obj) -> list[float]:
    """Every number in a JSON value or a piece of text."""
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in numbers_in(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in numbers_in(v)]
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, str):
        return [float(m) for m in ANY_NUMBER.findall(obj)]
    return []


def measured(nb) -> list[float]:
    """Numbers the chapter's committed run produced: its outputs and its results file."""
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            found += numbers_in(out.get("text", ""))
            found += numbers_in([v for k, v in out.get("data", {}).items() if k.startswith("text/")])
        for name in RECORD.findall(cell.source):
            path = ROOT / "results" / f"{name}.json"
            if path.exists():
                found += numbers_in(json.loads(path.read_text(encoding="utf-8")))
    return found


def unmatched(quoted: str, values: list[float]) -> bool:
    """True when no value, sign aside, rounds to ``quoted`` at its number of decimals.

    Prose gives magnitudes ("低 0.099" for a printed -0.0985). A value printed
    with at least one more decimal than the prose may be off by half of its
    own last unit, hence 0.55 and not 0.5 units of the quoted last decimal.
    """
    tolerance = 0.55 * 10 ** -len(quoted.split(".")[1])
    x = float(quoted)
    return not any(abs(abs(v) - x) <= tolerance for v in values)


def test_prose_is_found_and_math_and_exercises_are_skipped():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("准确率 0.715，$e^{2} \\approx 7.389$"),
        nbformat.v4.new_markdown_cell("## 小结\n\n0.720\n\n## 练习\n\n答案 0.6420"),
        nbformat.v4.new_markdown_cell("0.999"),
    ])
    texts = " ".join(t for _, t in prose(nb))
    assert QUOTED.findall(texts) == ["0.715", "0.720"]


@pytest.mark.parametrize("quoted, values, stale", [
    ("0.715", [0.71549], False),
    ("0.715", [0.7146], False),
    ("0.715", [0.7156], True),
    ("0.099", [-0.0985], False),
    ("0.099", [0.0984], True),
    ("0.7930", [0.79301], False),
    ("0.7930", [0.7936], True),
    ("2.885", [], True),
])
def test_rounding_rule(quoted, values, stale):
    assert unmatched(quoted, values) is stale


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_numbers_quoted_in_the_prose_come_from_the_committed_run(path):
    nb = nbformat.read(path, as_version=4)
    values = measured(nb)
    stale = [(i, q) for i, text in prose(nb) for q in QUOTED.findall(text) if unmatched(q, values)]
    assert not stale, f"prose numbers no output or results value rounds to (cell, number): {stale}"

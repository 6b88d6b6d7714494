"""llmft.bibliography: parsing the .bib file and counting citations."""

import json

import pytest

from llmft import bibliography

BIB = r"""
@article{alpha2001,
  author  = {M{\"u}ller, Hans and Smith, Jane and Doe, John},
  title   = {A {Title} with {LSTM}},
  journal = {Journal of Tests},
  year    = {2001},
  doi     = {10.1/xyz}
}
@book{beta2020,
  author    = {邱锡鹏},
  title     = {神经网络与深度学习},
  publisher = {机械工业出版社},
  year      = {2020}
}
"""


def test_load_entries_plain_text(tmp_path):
    path = tmp_path / "refs.bib"
    path.write_text(BIB, encoding="utf-8")
    a, b = bibliography.load_entries(path)
    assert (a.key, a.kind, a.year, a.venue, a.doi) == ("alpha2001", "article", 2001, "Journal of Tests", "10.1/xyz")
    assert a.authors == ("Müller", "Smith", "Doe") and a.short_authors() == "Müller 等"
    assert a.title == "A Title with LSTM"
    assert (b.authors, b.venue, b.doi, b.short_authors()) == (("邱锡鹏",), "机械工业出版社", "", "邱锡鹏")


def test_load_entries_rejects_missing_file_and_bad_year(tmp_path):
    with pytest.raises(ValueError, match="path"):
        bibliography.load_entries(tmp_path / "nope.bib")
    path = tmp_path / "bad.bib"
    path.write_text("@misc{x, title={T}, year={n.d.}}", encoding="utf-8")
    with pytest.raises(ValueError, match="'x'"):
        bibliography.load_entries(path)


def test_cited_keys_all_role_forms():
    text = "见 {cite}`a,b`、{cite:p}`c` 与 {cite:t}` d `；`{not a role}` 和 {term}`微调` 不算。"
    assert bibliography.cited_keys(text) == ["a", "b", "c", "d"]
    # prose about the syntax: the role inside inline code is not a citation
    assert bibliography.cited_keys("写成 `{cite}` 角色，指向 `book/references.bib`。") == []
    with pytest.raises(ValueError, match="text"):
        bibliography.cited_keys(None)


def test_page_texts_reads_markdown_cells_only(tmp_path):
    (tmp_path / "chapters").mkdir()
    (tmp_path / "book").mkdir()
    nb = {"cells": [
        {"cell_type": "markdown", "source": ["# T\n", "{cite}`a`"], "metadata": {}},
        {"cell_type": "code", "source": "x = '{cite}`b`'", "metadata": {}, "outputs": []},
    ]}
    (tmp_path / "chapters" / "01_x.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    (tmp_path / "book" / "intro.md").write_text("{cite}`a,c`", encoding="utf-8")
    (tmp_path / "chapters" / ".01_x.tmp123.ipynb").write_text(json.dumps(nb), encoding="utf-8")  # make execute's temp copy
    pages = bibliography.page_texts(tmp_path)
    assert set(pages) == {"chapters/01_x", "book/intro"}
    counts = bibliography.citation_counts(pages)
    assert counts["a"] == {"chapters/01_x": 1, "book/intro": 1}
    assert "b" not in counts and counts["c"] == {"book/intro": 1}
    with pytest.raises(ValueError, match="root"):
        bibliography.page_texts(tmp_path / "book")
    with pytest.raises(ValueError, match="pages"):
        bibliography.citation_counts(["x"])


def test_the_books_bibliography_parses():
    entries = bibliography.load_entries()
    assert len(entries) >= 15
    assert len({e.key for e in entries}) == len(entries)
    assert all(1900 < e.year < 2100 and e.title and e.venue for e in entries)


def test_chapter_10_was_run_on_the_current_bibliography():
    # Chapter 10 counts the entries and citations; a .bib edit without a re-run
    # (python tools/execute.py --profile cpu chapters/10_references.ipynb) leaves it stale.
    from llmft import paths

    committed = paths.REPO_ROOT / "results" / "ch10.json"  # the tests' own results dir is a temp folder
    recorded = json.loads(committed.read_text(encoding="utf-8"))["metrics"]
    entries = bibliography.load_entries()
    assert recorded["entries"] == len(entries)
    assert set(recorded["citations"]) == {e.key for e in entries}

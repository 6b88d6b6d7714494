"""The HTML book builds from the committed outputs with warnings as errors."""

import html as html_text
import json
import re
from pathlib import Path

import pytest

from llmft import paths

ROOT = Path(__file__).resolve().parent.parent

# The `html` fixture (the book built once per session) is in tests/conftest.py.


@pytest.mark.book
def test_front_matter_and_chapters_are_built(html):
    assert (html / "index.html").exists()
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    for page in re.findall(r"file:\s*(\S+)", toc):
        assert (html / f"{page}.html").exists(), page


@pytest.mark.book
def test_book_ui_is_chinese_with_launch_buttons(html):
    page = (html / "chapters" / "04_math.html").read_text(encoding="utf-8")
    assert 'lang="zh-CN"' in page or 'lang="zh_CN"' in page
    assert "colab.research.google.com/github/" in page and "04_math.ipynb" in page
    assert "mybinder.org" in page


@pytest.mark.book
def test_math_glossary_and_citations_render(html):
    ch1 = (html / "chapters" / "01_background.html").read_text(encoding="utf-8")
    assert re.search(r'<dl class="[^"]*glossary', ch1)
    ch4 = (html / "chapters" / "04_math.html").read_text(encoding="utf-8")
    assert "\\begin{" in ch4 or "math notranslate" in ch4
    assert "Hochreiter" in ch4  # a {cite} resolved against references.bib
    assert 'href="01_background.html#term-' in ch4  # glossary links from a later chapter


def _sections(page: str, tag: str = "h2") -> dict:
    """{heading text: html of its section} for one HTML page."""
    parts = re.split(rf"<{tag}>", page)[1:]
    return {re.sub(r"<[^>]+>", "", p.split(f"</{tag}>")[0]).strip("#").strip(): p for p in parts}


@pytest.mark.book
def test_pitfalls_page_lists_the_ten_errors_with_resolving_links(html):
    page = (html / "book" / "pitfalls.html").read_text(encoding="utf-8")
    sections = _sections(page)
    errors = {int(m.group(1)): body for title, body in sections.items() if (m := re.match(r"误区 (\d+)：", title))}
    assert sorted(errors) == list(range(1, 11)), sorted(errors)
    for number, body in errors.items():
        # each error links to the chapter cell that proves it ({ref} to a label in a chapter)
        assert re.search(r'<a class="reference internal" href="\.\./chapters/\d\d_\w+\.html#ch\d+-[\w-]+"', body), number
        assert "原文" in body and "正确的说法" in body and "证据" in body, number
    # a {ref} whose label does not exist renders as a bare span instead of a link
    unresolved = re.findall(r'<span class="xref std std-ref">([^<]*)</span>', page)  # resolved: "std std-ref"
    assert not unresolved, f"links without a target: {unresolved}"


@pytest.mark.book
def test_api_page_documents_every_module(html):
    page = (html / "book" / "api.html").read_text(encoding="utf-8")
    modules = sorted(p.stem for p in (ROOT / "llmft").glob("*.py") if not p.stem.startswith("_"))
    missing = [m for m in modules if f'id="module-llmft.{m}"' not in page]
    assert not missing, f"add these modules to book/api.md: {missing}"
    for target in ["llmft.gpt.GPT", "llmft.train.pretrain", "llmft.heads.SequenceClassifier", "llmft.lora.enable_lora"]:
        assert f'id="{target}"' in page, target
    # Keras classes show their real arguments, not __new__'s (*args, **kwargs) (book/_ext/llmft_autodoc.py)
    gpt = page[page.index('id="llmft.gpt.GPT"'):][:3000]
    assert "vocab_size" in gpt and "*args" not in gpt.split("</dt>")[0]


@pytest.mark.book
def test_chapters_link_into_the_api_page_and_the_glossary(html):
    ch3 = (html / "chapters" / "03_pretraining.html").read_text(encoding="utf-8")
    ch5 = (html / "chapters" / "05_project.html").read_text(encoding="utf-8")
    assert 'href="../book/api.html#llmft.train.pretrain"' in ch3
    assert 'href="../book/api.html#llmft.heads.SequenceClassifier"' in ch5
    assert 'href="../book/api.html#llmft.lora.enable_lora"' in ch5
    for name in ["02_concepts", "03_pretraining", "04_math", "05_project"]:
        page = (html / "chapters" / f"{name}.html").read_text(encoding="utf-8")
        assert len(set(re.findall(r'href="01_background\.html#(term-[^"]+)"', page))) >= 10, name


@pytest.mark.book
def test_every_figure_has_a_caption_and_a_label(html):
    """Each code cell with an image output is a numbered figure with a caption (issue #11).

    The caption and the label live in the cell metadata that MyST-NB reads:
    ``"mystnb": {"figure": {"caption": ..., "name": "fig-<chapter>-<slug>"}}``.
    """
    from docutils.nodes import make_id

    built = set(re.findall(r"file:\s*chapters/(\S+)", (ROOT / "_toc.yml").read_text(encoding="utf-8")))
    names = []
    for path in paths.chapter_notebooks(ROOT):
        figures = []
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code" or not any("image/png" in o.get("data", {}) for o in cell["outputs"]):
                continue
            figure = cell["metadata"].get("mystnb", {}).get("figure", {})
            where = f"{path.name}, cell {cell.get('id')}"
            assert str(figure.get("caption", "")).strip(), f"{where}: add mystnb.figure.caption to the cell metadata"
            assert re.fullmatch(rf"fig-{re.escape(path.stem)}-[a-z0-9-]+", str(figure.get("name", ""))), where
            figures.append(figure)
        names += [f["name"] for f in figures]
        if path.stem not in built:  # a chapter not yet in _toc.yml has no page
            continue
        page = (html / "chapters" / f"{path.stem}.html").read_text(encoding="utf-8")
        for figure in figures:
            m = re.search(rf'<figure[^>]*\bid="{make_id(figure["name"])}"[^>]*>(.*?)</figure>', page, re.S)
            assert m and "<figcaption" in m.group(1), f"{path.stem}: no captioned figure {figure['name']}"
            caption = re.search(r'<span class="caption-text">(.*?)</span><a class="headerlink"', m.group(1), re.S)
            assert caption, figure["name"]
            assert html_text.unescape(re.sub(r"<[^>]+>", "", caption.group(1))) == figure["caption"].replace("`", "")
    assert len(names) >= 18 and len(names) == len(set(names)), names


def test_every_bibliography_entry_is_cited_and_every_citation_defined():
    from llmft import bibliography

    keys = {e.key for e in bibliography.load_entries(ROOT / "book" / "references.bib")}
    cited = set(bibliography.citation_counts(bibliography.page_texts(ROOT)))
    assert len(keys) >= 15
    assert not keys - cited, f"entries of references.bib that no page cites: {sorted(keys - cited)}"
    assert not cited - keys, f"cited keys missing from references.bib: {sorted(cited - keys)}"

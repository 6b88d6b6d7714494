"""The HTML book builds from the committed outputs with warnings as errors."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or "jupyter-book"
    proc = subprocess.run(
        [jb, "build", str(ROOT), "--path-output", str(out), "--warningiserror", "--nitpick", "--keep-going"],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out / "_build" / "html"


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

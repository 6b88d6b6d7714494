"""The book's bibliography: the entries of ``book/references.bib`` and where
the pages cite them.

Chapter 10 uses it to list every reference with its year and venue and to
count how often each one is cited; ``tests/test_book.py`` uses it to check
that no entry of the bibliography goes uncited. Citations are the MyST roles
``{cite}`key``` (also ``{cite:p}``, ``{cite:t}``, ...), possibly with several
comma-separated keys. Parsing the ``.bib`` file needs ``pybtex``, which the
``book`` extra installs (it comes with sphinxcontrib-bibtex).

Introduced in chapter 10.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
from pathlib import Path

from llmft.paths import REPO_ROOT

# {cite}`a,b`, {cite:p}`a`, {cite:t}`a`, {cite:ps}`a` ... A role written
# inside inline code (`{cite}` in prose about the syntax) starts with a
# backtick and is not a citation.
CITE_ROLE = re.compile(r"(?<!`)\{cite(?::[a-z]+)?\}`([^`\n]+)`")

# Where the venue of an entry is, by BibTeX field, first match wins.
_VENUE_FIELDS = ("journal", "booktitle", "publisher", "institution", "howpublished")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One bibliography entry, with LaTeX markup turned into plain text.

    Attributes:
        key: the citation key, e.g. ``"vaswani2017attention"``.
        kind: the BibTeX entry type (``article``, ``inproceedings``, ``book`` ...).
        authors: the family names of all authors, in order.
        title: the title.
        year: the year as an int.
        venue: journal, proceedings, publisher, institution or ``howpublished``.
        doi: the DOI, or ``""``.
    """

    key: str
    kind: str
    authors: tuple
    title: str
    year: int
    venue: str
    doi: str

    def short_authors(self) -> str:
        """``"Bengio 等"`` for three or more authors, ``"A 和 B"`` for two."""
        if len(self.authors) >= 3:
            return f"{self.authors[0]} 等"
        return " 和 ".join(self.authors)


def default_bib_path() -> Path:
    """``book/references.bib`` of the repository this package was installed from."""
    return REPO_ROOT / "book" / "references.bib"


def _plain(text: str) -> str:
    """LaTeX accents and braces to plain text: ``R{\\'e}jean`` -> ``Réjean``."""
    import codecs

    import latexcodec  # noqa: F401  (registers the "ulatex" codec; a pybtex dependency)

    text = codecs.decode(text, "ulatex")
    return re.sub(r"\s+", " ", text.replace("{", "").replace("}", "")).strip()


def load_entries(path: str | Path | None = None) -> list[Entry]:
    """Parse a ``.bib`` file into :class:`Entry` objects, in file order.

    Args:
        path: the ``.bib`` file; default :func:`default_bib_path`.

    Returns:
        A list of :class:`Entry`.

    Raises:
        ValueError: if the file does not exist, an entry has no numeric year,
            or ``pybtex`` is not installed.

    Example:
        >>> entries = load_entries()  # doctest: +SKIP
        >>> entries[0].key, entries[0].year  # doctest: +SKIP
        ('bengio2003neural', 2003)
    """
    path = Path(default_bib_path() if path is None else path)
    if not path.is_file():
        raise ValueError(f"path must be an existing .bib file; got {str(path)!r}")
    try:
        from pybtex.database import parse_file
    except ImportError as err:  # pragma: no cover - the book extra installs it
        raise ValueError("reading .bib files needs pybtex: pip install -e '.[book]'") from err
    data = parse_file(str(path), bib_format="bibtex")
    entries = []
    for key, item in data.entries.items():
        year = item.fields.get("year", "")
        if not str(year).isdigit():
            raise ValueError(f"entry {key!r} needs a numeric year; got {year!r}")
        venue = next((item.fields[f] for f in _VENUE_FIELDS if f in item.fields), "")
        people = item.persons.get("author", [])
        authors = tuple(_plain(" ".join(p.last_names) or " ".join(p.first_names)) for p in people)
        entries.append(Entry(
            key=key, kind=item.type, authors=authors, title=_plain(item.fields.get("title", "")),
            year=int(year), venue=_plain(venue), doi=item.fields.get("doi", ""),
        ))
    return entries


def cited_keys(text: str) -> list[str]:
    """Every key cited in ``text``, in order, repeats kept.

    Example:
        >>> cited_keys("见 {cite}`a,b` 和 {cite:p}`a`。")
        ['a', 'b', 'a']
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string; got {type(text).__name__}")
    return [key.strip() for match in CITE_ROLE.finditer(text) for key in match.group(1).split(",") if key.strip()]


def page_texts(root: str | Path | None = None) -> dict[str, str]:
    """The Markdown of every page of the book: ``{page: text}``.

    Pages are the Markdown cells of ``chapters/*.ipynb`` and the files
    ``book/*.md``; the page name is the path without suffix, e.g.
    ``"chapters/04_math"``. Code cells are left out: a citation role only
    renders in Markdown. Hidden files (``.name``, e.g. the temporary copies
    ``make execute`` runs) are not pages.

    Args:
        root: the repository root; default the one this package lives in.
    """
    root = Path(REPO_ROOT if root is None else root)
    if not (root / "chapters").is_dir():
        raise ValueError(f"root must be the book's repository (with chapters/); got {str(root)!r}")
    pages = {}
    for nb_path in sorted((root / "chapters").glob("[!.]*.ipynb")):
        cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
        pages[f"chapters/{nb_path.stem}"] = "\n\n".join(
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells if c["cell_type"] == "markdown"
        )
    for md_path in sorted((root / "book").glob("[!.]*.md")):
        pages[f"book/{md_path.stem}"] = md_path.read_text(encoding="utf-8")
    return pages


def citation_counts(pages: dict[str, str]) -> dict[str, collections.Counter]:
    """How often each key is cited on each page: ``{key: Counter({page: n})}``.

    Args:
        pages: ``{page: markdown}``, e.g. from :func:`page_texts`.
    """
    if not isinstance(pages, dict):
        raise ValueError(f"pages must be a dict of page name -> text; got {type(pages).__name__}")
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for page, text in pages.items():
        for key in cited_keys(text):
            counts[key][page] += 1
    return dict(counts)

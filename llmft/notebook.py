"""Small display helpers for chapters: show library code, show a table.

Introduced in chapter 1. Chapters use them so that the code a reader sees is
the code the tests run (no second copy in the notebook).
"""

from __future__ import annotations

import inspect
import textwrap


def show_source(obj) -> None:
    """Display the source of a function or class as a highlighted code block."""
    if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismethod(obj)):
        raise ValueError(f"obj must be a function, method or class; got {obj!r}")
    from IPython.display import Markdown, display

    source = textwrap.dedent(inspect.getsource(obj))
    display(Markdown(f"```python\n{source}```"))


def show_table(rows: list[dict], *, floatfmt: str = ".4f") -> None:
    """Display a list of dicts as a Markdown table (the keys of the first row are the columns)."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"rows must be a non-empty list of dicts; got {rows!r}")
    from IPython.display import Markdown, display

    display(Markdown(markdown_table(rows, floatfmt=floatfmt)))


def markdown_table(rows: list[dict], *, floatfmt: str = ".4f") -> str:
    """Render ``rows`` as a Markdown table string."""
    columns = list(rows[0])

    def cell(value) -> str:
        if isinstance(value, float):
            return format(value, floatfmt)
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def weighted_tokens_html(tokens: list[str], weights) -> str:
    """HTML that shows ``tokens`` with the ones of positive weight highlighted.

    Chapter 6.4 uses it to show which tokens of a conversation the SFT loss
    counts (the assistant's) and which it ignores (system, user, role tokens).
    """
    import html

    weights = list(weights)
    if len(tokens) != len(weights):
        raise ValueError(f"tokens and weights must have the same length; got {len(tokens)} and {len(weights)}")
    spans = []
    for tok, w in zip(tokens, weights):
        style = ("background:#c8e6c9;color:#1b5e20;font-weight:bold" if w > 0
                 else "background:#eeeeee;color:#757575")
        text = html.escape(tok.replace("\n", "⏎"))
        spans.append(f'<span style="{style};padding:1px 2px;margin:1px;border-radius:3px">{text}</span>')
    return '<div style="line-height:2;font-family:monospace">' + "".join(spans) + "</div>"


def show_weighted_tokens(tokens: list[str], weights) -> None:
    """Display :func:`weighted_tokens_html` (counted tokens green, ignored grey)."""
    from IPython.display import HTML, display

    display(HTML(weighted_tokens_html(tokens, weights)))

"""Record a chapter's key metrics to ``results/<chapter>.json``.

The committed JSON files come from ``make execute PROFILE=cpu``; tests and
smoke runs write to ``LLMFT_RESULTS_DIR`` instead (see :mod:`llmft.paths`).
Introduced in chapter 1.
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
import re
from pathlib import Path

from llmft import paths

_CHAPTER = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


def _plain(value, where: str):
    """Convert numpy scalars/arrays to JSON types; reject NaN and unknown types."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"metrics keys must be strings; got {key!r} at {where}")
            out[key] = _plain(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist(), where)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"metrics must be finite numbers; got {value!r} at {where}")
        return value
    raise ValueError(f"metrics values must be numbers, strings, lists or dicts; got {value!r} at {where}")


def results_path(chapter: str) -> Path:
    """Path of ``<results_dir>/<chapter>.json``."""
    if not isinstance(chapter, str) or not _CHAPTER.match(chapter):
        raise ValueError(f"chapter must be a lowercase name like 'ch04'; got {chapter!r}")
    return paths.results_dir() / f"{chapter}.json"


def record(chapter: str, metrics: dict, *, profile: str) -> Path:
    """Write ``metrics`` for ``chapter`` atomically and return the file path.

    Args:
        chapter: file stem, e.g. ``"ch04"``.
        metrics: nested dict of numbers/strings (numpy values are converted).
        profile: the profile that produced the numbers (stored beside them).

    Example:
        >>> record("ch04", {"softmax_row1": [0.1996]}, profile="cpu")  # doctest: +SKIP
    """
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError(f"metrics must be a non-empty dict; got {metrics!r}")
    if not isinstance(profile, str) or not profile:
        raise ValueError(f"profile must be a profile name; got {profile!r}")
    payload = {
        "chapter": chapter,
        "profile": profile,
        "recorded": datetime.date.today().isoformat(),
        "metrics": _plain(metrics, "metrics"),
    }
    return paths.atomic_write_json(results_path(chapter), payload)


def load(chapter: str) -> dict:
    """Read back what :func:`record` wrote (the whole payload)."""
    path = results_path(chapter)
    if not path.exists():
        raise ValueError(f"no results recorded for chapter {chapter!r} at {path}")
    return json.loads(path.read_text(encoding="utf-8"))

"""Figures for the book, with Chinese labels that render.

Matplotlib's default font (DejaVu Sans) has no Chinese glyphs and draws empty
boxes. :func:`use_cjk_font` registers Noto Sans CJK, which the PyPI package
``cvttf-notosanscjk-regular`` ships, so figures look the same on a fresh
machine, in CI and in Colab; a CJK font the system already has is the
fallback. Introduced in chapter 1.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib
from matplotlib import font_manager

# Families that carry Simplified Chinese glyphs, tried after the bundled font.
SYSTEM_CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
)

_registered: str | None = None


def bundled_font_file() -> Path | None:
    """The Noto Sans CJK file from ``cvttf-notosanscjk-regular``, if installed."""
    spec = importlib.util.find_spec("cvttf_NotoSansCJK_Regular")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for path in sorted(Path(folder).glob("*.otf")):
            return path
    return None


def use_cjk_font() -> str:
    """Make matplotlib draw Chinese; return the font family now in use.

    Raises:
        ValueError: if neither the bundled font nor a system CJK font exists
            (install ``cvttf-notosanscjk-regular``).
    """
    global _registered
    if _registered is None:
        family = None
        path = bundled_font_file()
        if path is not None:
            font_manager.fontManager.addfont(str(path))
            family = font_manager.FontProperties(fname=str(path)).get_name()
        else:
            installed = {f.name for f in font_manager.fontManager.ttflist}
            family = next((f for f in SYSTEM_CJK_FAMILIES if f in installed), None)
        if family is None:
            raise ValueError(
                "font: no CJK font found; install it with `pip install cvttf-notosanscjk-regular`"
            )
        _registered = family
    matplotlib.rcParams["font.family"] = "sans-serif"
    sans = [f for f in matplotlib.rcParams["font.sans-serif"] if f != _registered]
    matplotlib.rcParams["font.sans-serif"] = [_registered, *sans]
    # The minus sign U+2212 is missing from some CJK fonts; use ASCII '-'.
    matplotlib.rcParams["axes.unicode_minus"] = False
    return _registered


def missing_glyphs(text: str, family: str | None = None) -> list[str]:
    """Characters of ``text`` that the font of ``family`` cannot draw.

    Used by tests and by chapter 1 to prove that figures have no empty boxes.
    """
    from matplotlib.ft2font import FT2Font

    family = family or use_cjk_font()
    path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
    font = FT2Font(path)
    charmap = font.get_charmap()
    return sorted({ch for ch in text if not ch.isspace() and ord(ch) not in charmap})

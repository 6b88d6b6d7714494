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


# --------------------------------------------------------------------------
# The book's recurring figures
# --------------------------------------------------------------------------


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    use_cjk_font()
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_history(histories: dict, *, x: str = "step", ys=("val_loss",), baselines: dict | None = None,
                 ax=None, title: str | None = None):
    """Loss curves of one or more runs of :func:`llmft.train.pretrain` (or :func:`llmft.sft.fit_sft`).

    Args:
        histories: ``{name: history}``, each history a list of rows with
            ``step``, ``tokens``, ``seconds``, ``train_loss``, ``val_loss``
            (SFT rows have ``epoch`` instead of ``step`` and ``tokens``).
        x: the x axis: ``"step"``, ``"epoch"``, ``"tokens"`` or ``"seconds"``.
        ys: which losses to draw per run.
        baselines: ``{name: loss}`` drawn as horizontal dashed lines.
    """
    labels = {"step": "训练步数", "epoch": "轮次", "tokens": "已见词元数", "seconds": "训练时间（秒）",
              "train_loss": "训练损失", "val_loss": "验证损失"}
    if x not in ("step", "epoch", "tokens", "seconds"):
        raise ValueError(f"x must be 'step', 'epoch', 'tokens' or 'seconds'; got {x!r}")
    if not isinstance(histories, dict) or not histories:
        raise ValueError(f"histories must be a non-empty dict of name -> history; got {histories!r:.80}")
    for y in ys:
        if y not in ("train_loss", "val_loss"):
            raise ValueError(f"ys must contain 'train_loss' and/or 'val_loss'; got {y!r}")
    ax = _axes(ax, (6.4, 4))
    for name, history in histories.items():
        if any(x not in row for row in history):
            raise ValueError(f"histories[{name!r}] rows must all have the x key {x!r}; got keys {sorted(history[0])}")
        for y in ys:
            points = [(row[x], row[y]) for row in history if row.get(y) is not None]
            style = "-" if y == "val_loss" else ":"
            ax.plot(*zip(*points), style, marker="o", markersize=3, label=f"{name} {labels[y]}")
    for name, value in (baselines or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1, color="gray")
        ax.annotate(f"{name} {value:.2f}", xy=(1, value), xycoords=("axes fraction", "data"),
                    ha="right", va="bottom", fontsize=8, color="gray")
    ax.set_xlabel(labels[x])
    ax.set_ylabel("交叉熵（奈特/词元）")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def plot_attention(weights, tokens, *, ax=None, title: str | None = None):
    """Heatmap of one attention matrix: row = query position, column = key position."""
    import numpy as np

    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"weights must be a square (T, T) matrix; got shape {weights.shape}")
    if len(tokens) != weights.shape[0]:
        raise ValueError(f"tokens must have {weights.shape[0]} entries; got {len(tokens)}")
    ax = _axes(ax, (4.5, 4))
    image = ax.imshow(weights, cmap="viridis", vmin=0.0)
    ax.set_xticks(range(len(tokens)), labels=list(tokens))
    ax.set_yticks(range(len(tokens)), labels=list(tokens))
    ax.set_xlabel("被关注的位置（键）")
    ax.set_ylabel("当前位置（查询）")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, label="注意力权重")
    if title:
        ax.set_title(title)
    return ax


def plot_embeddings_2d(points, labels, *, ax=None, title: str | None = None):
    """Scatter 2-D points (e.g. a PCA projection of embeddings) with a text label each."""
    import numpy as np

    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2); got {points.shape}")
    if len(labels) != len(points):
        raise ValueError(f"labels must have {len(points)} entries; got {len(labels)}")
    ax = _axes(ax, (6, 5))
    ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.4)
    for (px, py), label in zip(points, labels):
        ax.annotate(label, (px, py), fontsize=9)
    ax.set_xlabel("第 1 主成分")
    ax.set_ylabel("第 2 主成分")
    if title:
        ax.set_title(title)
    return ax


def plot_confusion(matrix, labels, *, ax=None, title: str | None = None):
    """Confusion matrix heatmap: rows are true classes, columns predictions.

    Each cell shows its count; the colour bar is labelled. Introduced in
    chapter 5 (sentiment) and reused for the topics of chapter 6.1.
    """
    import numpy as np

    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"matrix must be a non-empty square (K, K) array; got shape {matrix.shape}")
    if len(labels) != matrix.shape[0]:
        raise ValueError(f"labels must have {matrix.shape[0]} entries; got {len(labels)}")
    size = max(3.4, 0.55 * len(labels) + 1.6)
    ax = _axes(ax, (size + 0.8, size))
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    threshold = matrix.max() / 2 if matrix.max() > 0 else 1
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            text = f"{value:.2f}" if np.issubdtype(matrix.dtype, np.floating) else f"{value}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")
    ax.set_xticks(range(len(labels)), labels=list(labels), rotation=45 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    ax.set_yticks(range(len(labels)), labels=list(labels))
    ax.set_xlabel("预测类别")
    ax.set_ylabel("真实类别")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, label="样本数")
    if title:
        ax.set_title(title)
    return ax

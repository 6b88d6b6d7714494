import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from llmft import plotting  # noqa: E402

CHINESE = "大语言模型有监督微调训练损失困惑度注意力嵌入"


def test_bundled_font_is_found_and_used():
    assert plotting.bundled_font_file() is not None
    family = plotting.use_cjk_font()
    assert matplotlib.rcParams["font.sans-serif"][0] == family


def test_font_has_every_glyph_of_the_labels():
    assert plotting.missing_glyphs(CHINESE + "，。：0123456789-") == []
    # The check can fail: DejaVu Sans (matplotlib's default) lacks Chinese.
    assert plotting.missing_glyphs("中文", family="DejaVu Sans") == ["中", "文"]


def test_figure_with_chinese_renders_without_missing_glyph_warnings(recwarn):
    plotting.use_cjk_font()
    fig, ax = plt.subplots()
    ax.set_title(CHINESE)
    ax.set_xlabel("步数")
    fig.canvas.draw()
    plt.close(fig)
    assert not [w for w in recwarn if "missing from font" in str(w.message)]


def test_recurring_figures_draw_and_validate():
    import numpy as np
    import pytest

    h = [{"step": 10, "tokens": 100, "seconds": 1.0, "train_loss": 3.0, "val_loss": 3.2},
         {"step": 20, "tokens": 200, "seconds": 2.0, "train_loss": 2.0, "val_loss": 2.5}]
    ax = plotting.plot_history({"GPT": h}, x="seconds", ys=("train_loss", "val_loss"), baselines={"二元": 2.8})
    assert len(ax.lines) == 3 and ax.get_xlabel() == "训练时间（秒）"
    ax = plotting.plot_attention(np.eye(3), ["我", "们", "好"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["我", "们", "好"]
    colour_bar = ax.images[0].colorbar
    assert colour_bar is not None and colour_bar.ax.get_ylabel() == "注意力权重"
    plotting.plot_embeddings_2d(np.zeros((2, 2)), ["甲", "乙"])
    plt.close("all")
    with pytest.raises(ValueError, match="x must be"):
        plotting.plot_history({"GPT": h}, x="wall")
    with pytest.raises(ValueError, match="must all have the x key 'epoch'"):
        plotting.plot_history({"GPT": h}, x="epoch")  # pretraining rows count steps, not epochs
    ax = plotting.plot_history({"SFT": [{"epoch": 1, "val_loss": 2.0}, {"epoch": 2, "val_loss": 1.5}]}, x="epoch")
    assert ax.get_xlabel() == "轮次"
    plt.close("all")
    with pytest.raises(ValueError, match="square"):
        plotting.plot_attention(np.zeros((2, 3)), ["a", "b"])
    ax = plotting.plot_confusion(np.array([[5, 1], [2, 7]]), ["负面", "正面"])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("预测类别", "真实类别")
    assert [t.get_text() for t in ax.texts] == ["5", "1", "2", "7"]
    assert ax.images[0].colorbar.ax.get_ylabel() == "样本数"
    plt.close("all")
    with pytest.raises(ValueError, match="matrix must be"):
        plotting.plot_confusion(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="labels must have 2"):
        plotting.plot_confusion(np.zeros((2, 2)), ["a"])
    with pytest.raises(ValueError, match="labels"):
        plotting.plot_embeddings_2d(np.zeros((2, 2)), ["甲"])

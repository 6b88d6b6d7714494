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

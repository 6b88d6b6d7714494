"""Tests for llmft.translation: the pinyin -> characters data, vocabulary, baseline and metrics."""

import dataclasses

import numpy as np
import pytest

from llmft import data, translation as tr
from llmft.translation import Pair


def test_clauses_keep_pure_chinese_pieces_between_punctuation():
    text = "１９９８年，中国经济保持了良好的发展势头。江泽民说：“好！”新华社北京电"
    assert tr.clauses(text) == ["中国经济保持了良好的发展势头", "江泽民说", "新华社北京电"]
    assert tr.clauses(text, min_chars=1, max_chars=4) == ["江泽民说", "好"]  # "１９９８年" has digits
    for bad in [dict(min_chars=0), dict(min_chars=5, max_chars=4)]:
        with pytest.raises(ValueError, match="_chars"):
            tr.clauses(text, **bad)
    with pytest.raises(ValueError, match="text"):
        tr.clauses(None)


def test_to_pinyin_is_toneless_one_syllable_per_character():
    assert tr.to_pinyin("银行行长") == ["yin", "hang", "hang", "zhang"]  # phrase dictionary picks readings
    assert tr.to_pinyin("绿色") == ["lv", "se"]
    for bad in ["", "中国1", "abc", None]:
        with pytest.raises(ValueError, match="text"):
            tr.to_pinyin(bad)


@pytest.fixture(scope="module")
def splits():
    # Only part of each split is converted to pinyin (the whole train split takes minutes on 2 cores).
    return {s: tr.load_pairs(s, limit=2000) for s in data.SPLITS}


def test_splits_are_disjoint_and_aligned(splits):
    texts = {s: tr.load_clauses(s) for s in data.SPLITS}
    assert len(texts["train"]) > 80_000 and len(texts["test"]) > 10_000
    for s in data.SPLITS:
        assert len(set(texts[s])) == len(texts[s])  # each clause once
    assert not set(texts["train"]) & set(texts["test"])
    assert not set(texts["train"]) & set(texts["val"])
    assert not set(texts["val"]) & set(texts["test"])
    for s, pairs in splits.items():
        assert {p.hanzi for p in pairs} <= set(texts[s])
        assert all(len(p.pinyin) == len(p.hanzi) and 4 <= len(p.hanzi) <= 30 for p in pairs)


def test_test_clauses_come_from_test_sentences(splits):
    test_text = "\n".join("".join(w for w, _ in s) for s in data.load_peoples_daily("test"))
    assert all(p.hanzi in test_text for p in splits["test"][:300])


def test_limit_is_a_prefix_of_the_same_shuffle(splits):
    small = tr.load_pairs("val", limit=50)
    assert small == splits["val"][:50]
    with pytest.raises(ValueError, match="limit"):
        tr.load_pairs("val", limit=0)
    with pytest.raises(ValueError, match="split"):
        tr.load_pairs("dev")
    with pytest.raises(ValueError, match="seed"):
        tr.load_pairs("val", seed=-1)


def test_source_file_is_checksum_verified(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMFT_HOME", str(tmp_path))  # no cache: the corpus must be read again
    bad = dataclasses.replace(data.SOURCES["peoples_daily"], sha256="0" * 64)
    monkeypatch.setitem(data.SOURCES, "peoples_daily", bad)
    with pytest.raises(ValueError, match="sha256"):
        tr.load_pairs("test", limit=5)


def test_vocabulary_and_encode_round_trip(splits):
    pairs = splits["train"][:500]
    src_v = tr.Vocabulary.train(p.pinyin for p in pairs)
    tgt_v = tr.Vocabulary.train(p.hanzi for p in pairs)
    assert src_v.tokens[:4] == list(tr.SPECIAL_TOKENS) and tgt_v.eos_id == 3
    source, target = tr.encode_pairs(pairs, src_v, tgt_v, max_length=30)
    assert source.shape == (500, 30) and target.shape == (500, 32)
    for i, p in enumerate(pairs[:50]):
        assert tuple(src_v.decode(source[i])) == p.pinyin
        assert "".join(tgt_v.decode(target[i])) == p.hanzi
        assert target[i, 0] == tgt_v.bos_id and target[i, len(p.hanzi) + 1] == tgt_v.eos_id
    assert tgt_v.encode("龘") == [tgt_v.unk_id]
    with pytest.raises(ValueError, match="max_length"):
        tr.encode_pairs(pairs, src_v, tgt_v, max_length=3)
    with pytest.raises(ValueError, match="ids"):
        tgt_v.decode([len(tgt_v)])
    with pytest.raises(ValueError, match="tokens"):
        tr.Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="tokens"):
        tr.Vocabulary(["<pad>"])


def test_frequency_baseline():
    pairs = [Pair(("shi", "shi"), "是事"), Pair(("shi", "ta"), "是他"), Pair(("ta",), "她")]
    b = tr.FrequencyBaseline.fit(pairs)
    assert b.table == {"shi": "是", "ta": "他"}  # tie between 他 and 她: smaller code point
    assert b.translate(("ta", "shi", "zzz")) == "他是?"
    with pytest.raises(ValueError, match="pairs"):
        tr.FrequencyBaseline.fit([Pair(("shi",), "是事")])
    with pytest.raises(ValueError, match="pinyin"):
        b.translate("shi")


def test_metrics_sanity():
    refs = ["中国经济保持了良好的发展势头", "新华社北京电", "关注东亚金融形势"]
    same = tr.evaluate(refs, refs)
    assert same["bleu"] == pytest.approx(100) and same["chrf"] == pytest.approx(100)
    assert same["char_accuracy"] == 1.0 and same["exact_match"] == 1.0
    worse = tr.evaluate(["中国经济保持了良好的发展事头", "新华社北京点", "关注东亚金融行事"], refs)
    assert 0 < worse["bleu"] < 100 and 0 < worse["chrf"] < 100 and worse["exact_match"] == 0.0
    assert worse["char_accuracy"] == pytest.approx(1 - 4 / sum(map(len, refs)))
    assert tr.evaluate(["", "", ""], refs)["char_accuracy"] == 0.0
    with pytest.raises(ValueError, match="hypotheses"):
        tr.evaluate(refs[:2], refs)
    with pytest.raises(ValueError, match="references"):
        tr.evaluate(["中国"], "中国")


def test_edit_distance():
    assert tr._edit_distance("中国人", "中国") == 1
    assert tr._edit_distance("", "abc") == 3
    assert tr._edit_distance("kitten", "sitting") == 3
    assert np.isclose(tr.evaluate(["中国人"], ["中国"])["char_accuracy"], 0.5)

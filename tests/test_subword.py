import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmft import subword
from llmft.subword import BPETokenizer, train_bpe
from llmft.tokenizers import PAD, UNK

CORPUS = ["今天天气很好", "今天天气不好", "天气预报"] * 3
TEXTS = ["今天天气很好。", "我们去公园散步吧！", "天气预报说明天下雨", "Keras 3 很好用"]


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(CORPUS, vocab_size=12)


def test_vocabulary_is_specials_then_alphabet_then_merges(bpe):
    vocab = bpe.vocab
    assert bpe.vocab_size == len(bpe) == 12
    assert vocab[PAD] == 0 and vocab[UNK] == 1 == bpe.unk_id
    # 8 distinct characters, then the merges in the order they were learned.
    assert set("今天气很好不预报") <= set(vocab)
    assert bpe.id_to_token(10) == "天气"  # the most frequent pair (9 times) is merged first
    assert bpe.id_to_token(11) == "今天"


def test_merges_shorten_the_sequence(bpe):
    assert bpe.tokenize("今天天气很好") == ["今天", "天气", "很", "好"]
    char_level = train_bpe(CORPUS, vocab_size=10)  # alphabet only: no merges
    assert char_level.tokenize("今天天气很好") == list("今天天气很好")


def test_unknown_characters_become_unk_and_are_counted(bpe):
    ids = bpe.encode("明天天气")
    assert ids[0] == bpe.unk_id and bpe.id_to_token(ids[-1]) == "天气"
    assert bpe.tokenize("明天天气") == ["明", "天", "天气"]  # the text, not "<unk>"
    assert bpe.decode(ids) == "天天气"
    assert bpe.decode(ids, skip_special=False) == "<unk>天天气"
    assert bpe.unknown_rate("明天天气") == pytest.approx(0.25)
    assert bpe.unknown_rate("") == 0.0


def test_limit_alphabet_keeps_the_most_frequent_characters():
    # 天 (15) and 气 (9) are the most frequent characters; 今 and 好 tie at 6
    # and the tie goes to the lower code point (今), in every run.
    for _ in range(5):
        tok = train_bpe(CORPUS, vocab_size=5, limit_alphabet=3)
        assert {t for t in tok.vocab if t not in (PAD, UNK)} == {"天", "气", "今"}
    assert tok.unknown_rate("天气好") == pytest.approx(1 / 3)


def test_merges_never_cross_punctuation_or_spaces():
    tok = train_bpe(["好。好。好。好。", "a b a b a b"], vocab_size=50, min_frequency=1)
    assert "好。" not in tok.vocab and "a b" not in tok.vocab
    assert tok.tokenize("好。a b") == ["好", "。", "a", " ", "b"]


def test_training_is_deterministic():
    a = train_bpe(TEXTS * 2, vocab_size=60)
    b = train_bpe(TEXTS * 2, vocab_size=60)
    assert a.vocab == b.vocab


def test_save_and_load_round_trip(bpe, tmp_path):
    path = bpe.save(tmp_path / "bpe.json")
    loaded = BPETokenizer.load(path)
    assert loaded.vocab == bpe.vocab
    assert loaded.encode("今天天气很好") == bpe.encode("今天天气很好")


def test_load_rejects_missing_and_broken_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        BPETokenizer.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="not a saved tokenizer"):
        BPETokenizer.load(tmp_path / "bad.json")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(texts="今天天气", vocab_size=10), "texts must be an iterable of strings"),
        (dict(texts=[], vocab_size=10), "texts must not be empty"),
        (dict(texts=["好", 3], vocab_size=10), "texts must contain strings; got 3"),
        (dict(texts=CORPUS, vocab_size=0), "vocab_size must be an integer >= 1; got 0"),
        (dict(texts=CORPUS, vocab_size=True), "vocab_size must be an integer >= 1; got True"),
        (dict(texts=CORPUS, vocab_size=2), "vocab_size must be larger than the 2 special tokens; got 2"),
        (dict(texts=CORPUS, vocab_size=10, min_frequency=0), "min_frequency must be an integer >= 1; got 0"),
        (dict(texts=CORPUS, vocab_size=10, limit_alphabet=-1), "limit_alphabet must be an integer >= 1; got -1"),
        (dict(texts=CORPUS, vocab_size=10, special_tokens=["<pad>"]), "special_tokens must include '<unk>'"),
        (dict(texts=CORPUS, vocab_size=10, special_tokens="<unk>"), "special_tokens must be a list"),
    ],
)
def test_train_bpe_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_bpe(**kwargs)


def test_encode_and_ids_validate(bpe):
    with pytest.raises(ValueError, match="text must be a string; got int"):
        bpe.encode(3)
    with pytest.raises(ValueError, match=r"token_id must be in \[0, 12\); got 12"):
        bpe.id_to_token(12)
    with pytest.raises(ValueError, match="token_id must be"):
        bpe.decode([True])
    with pytest.raises(ValueError, match="tokenizer must be a tokenizers.Tokenizer with a BPE model"):
        BPETokenizer("not a tokenizer")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=5))
def test_pieces_cover_the_text_and_known_text_round_trips(texts):
    tok = train_bpe(texts, vocab_size=40, min_frequency=1)
    for text in texts:
        assert "".join(tok.tokenize(text)) == text
        assert len(tok.tokenize(text)) == len(tok.encode(text))
        assert tok.decode(tok.encode(text)) == text  # every character was seen in training
        assert tok.unknown_rate(text) == 0.0


def test_word_tokenize_methods():
    assert subword.word_tokenize("今天天气很好", method="whitespace") == ["今天天气很好"]
    assert subword.word_tokenize("今天 天气", method="whitespace") == ["今天", "天气"]
    assert subword.word_tokenize("天气", method="char") == ["天", "气"]
    words = subword.word_tokenize("我们去公园散步吧", method="jieba")
    assert "".join(words) == "我们去公园散步吧" and {"我们", "公园", "散步"} <= set(words)
    with pytest.raises(ValueError, match="method must be one of .* got 'bert'"):
        subword.word_tokenize("好", method="bert")
    with pytest.raises(ValueError, match="text must be a string; got list"):
        subword.word_tokenize(["好"])


def test_word_vocabulary_applies_min_freq():
    lists = [["今天", "天气"], ["今天", "好"]]
    assert subword.word_vocabulary(lists) == {"今天"}
    assert subword.word_vocabulary(lists, min_freq=1) == {"今天", "天气", "好"}
    with pytest.raises(ValueError, match="min_freq must be an integer >= 1; got 0"):
        subword.word_vocabulary(lists, min_freq=0)
    with pytest.raises(ValueError, match="not strings"):
        subword.word_vocabulary(["今天天气"])


def test_vocabulary_coverage_counts_tokens_and_characters():
    stats = subword.vocabulary_coverage([["今天", "天气"], ["好"]], {"今天", "好"})
    assert stats["tokens_per_text"] == 1.5
    assert stats["chars_per_token"] == pytest.approx(5 / 3)
    assert stats["unknown_token_rate"] == pytest.approx(1 / 3)
    assert stats["unknown_char_rate"] == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="non-empty list of token lists"):
        subword.vocabulary_coverage([], {"好"})
    with pytest.raises(ValueError, match="at least one token"):
        subword.vocabulary_coverage([[]], {"好"})

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmft import tokenizers
from llmft.tokenizers import CharTokenizer

TEXTS = ["今天天气很好。", "我们去公园散步吧！", "天气预报说明天下雨"]


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.train(TEXTS)


def test_special_tokens_come_first(tok):
    assert tok.tokens[: len(tokenizers.SPECIAL_TOKENS)] == list(tokenizers.SPECIAL_TOKENS)
    assert tok.pad_id == 0
    assert {tok.unk_id, tok.bos_id, tok.eos_id} == {1, 2, 3}
    assert tok.token_to_id(tokenizers.ASSISTANT) == 6


def test_vocabulary_is_ordered_by_frequency(tok):
    assert tok.tokens[len(tokenizers.SPECIAL_TOKENS)] == "天"  # 天 appears 4 times


def test_unknown_characters_and_bos_eos(tok):
    ids = tok.encode("天空", add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and ids[2] == tok.unk_id
    assert tok.decode(ids) == "天"
    assert tok.decode(ids, skip_special=False) == "<bos>天<unk><eos>"
    assert tok.unknown_rate("天空") == 0.5


def test_min_freq_and_max_vocab():
    assert "天" in CharTokenizer.train(TEXTS, min_freq=3).tokens
    assert "我" not in CharTokenizer.train(TEXTS, min_freq=2).tokens
    assert CharTokenizer.train(TEXTS, max_vocab=10).vocab_size == 10


def test_special_strings_in_text_are_plain_characters():
    tok = CharTokenizer.train(["<|user|><pad>"])
    assert tok.encode("<pad>") != [tok.pad_id]
    assert tok.decode(tok.encode("<|user|>")) == "<|user|>"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=5))
def test_round_trip_for_any_string_without_unknown_characters(texts):
    tok = CharTokenizer.train(texts)
    for text in texts:
        assert tok.decode(tok.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20))
def test_encode_never_fails_on_any_string(text):
    tok = CharTokenizer.train(TEXTS)
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert all(0 <= i < tok.vocab_size for i in ids)


def test_batch_padding_truncation_and_mask(tok):
    batch = tok.encode_batch(["今天", "我们去公园"], add_bos=True)
    assert batch["input_ids"].shape == (2, 6) and batch["input_ids"].dtype == np.int32
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert batch["input_ids"][0, 3:].tolist() == [tok.pad_id] * 3
    fixed = tok.encode_batch(["今天天气很好。"], max_length=4, padding="max_length")
    assert fixed["input_ids"].shape == (1, 4) and tok.decode(fixed["input_ids"][0]) == "今天天气"
    with pytest.raises(ValueError, match=r"texts\[0\] has 7 tokens"):
        tok.encode_batch(["今天天气很好。"], max_length=4, truncation=False)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda t: t.encode(123), "text must be a string"),
        (lambda t: t.decode([999]), "ids must be integers"),
        (lambda t: t.encode_batch([]), "texts must be a non-empty list"),
        (lambda t: t.encode_batch("今天"), "texts must be a non-empty list"),
        (lambda t: t.encode_batch(["今天"], padding="left"), "padding"),
        (lambda t: t.encode_batch(["今天"], padding="max_length"), "max_length"),
        (lambda t: CharTokenizer.train("今天"), "not a single string"),
        (lambda t: CharTokenizer.train([]), "texts must not be empty"),
        (lambda t: CharTokenizer.train(TEXTS, min_freq=0), "min_freq"),
        (lambda t: CharTokenizer.train(TEXTS, max_vocab=3), "max_vocab"),
        (lambda t: CharTokenizer(["ab"]), "single characters"),
        (lambda t: CharTokenizer(["a", "a"]), "unique"),
    ],
)
def test_bad_input_is_a_clear_error(tok, call, match):
    with pytest.raises(ValueError, match=match):
        call(tok)


def test_save_load_round_trip(tok, tmp_path):
    path = tok.save(tmp_path / "tok.json")
    loaded = CharTokenizer.load(path)
    assert loaded.tokens == tok.tokens and loaded.fingerprint == tok.fingerprint
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]


def test_load_rejects_altered_or_foreign_files(tok, tmp_path):
    import json

    path = tok.save(tmp_path / "tok.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["chars"] = data["chars"][::-1]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="fingerprint"):
        CharTokenizer.load(path)
    path.write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a saved"):
        CharTokenizer.load(path)
    with pytest.raises(ValueError, match="does not exist"):
        CharTokenizer.load(tmp_path / "missing.json")

"""Tests for llmft.tagging: BIO spans, entity scores, windows, taggers (tiny configs)."""

import keras
import numpy as np
import pytest

from llmft import gpt, tagging
from llmft.tokenizers import CharTokenizer

NAMES = tagging.tag_names(["PER", "LOC"])


def test_tag_names():
    assert NAMES == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for bad in ["PER", [], ["PER", "PER"], ["B-X"]]:
        with pytest.raises(ValueError, match="types"):
            tagging.tag_names(bad)


def test_spans_from_bio():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-LOC"]
    assert tagging.entity_spans_from_bio(tags) == [(0, 2, "PER"), (3, 4, "LOC"), (4, 7, "LOC")]
    assert tagging.entity_spans_from_bio([]) == []


def test_malformed_i_starts_an_entity():
    # I- at the start, after O, and after another type each begin a new entity (CoNLL convention).
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-PER", "I-LOC"]
    assert tagging.entity_spans_from_bio(tags) == [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "PER"), (5, 6, "LOC")]


def test_spans_from_bio_rejects_bad_tags():
    for bad in [["X-PER"], ["B-"], ["B"], [3]]:
        with pytest.raises(ValueError, match="tags"):
            tagging.entity_spans_from_bio(bad)
    with pytest.raises(ValueError, match="tags"):
        tagging.entity_spans_from_bio("B-PER")



def test_bio_transitions():
    start, allowed = tagging.bio_transitions(NAMES)  # O B-PER I-PER B-LOC I-LOC
    assert start.tolist() == [True, True, False, True, False]
    assert allowed[:, 2].tolist() == [False, True, True, False, False]  # I-PER only after B-PER/I-PER
    assert allowed[:, 4].tolist() == [False, False, False, True, True]
    assert allowed[:, [0, 1, 3]].all()
    for bad in ["O", [], ["O", "X-PER"]]:
        with pytest.raises(ValueError, match="names|tags"):
            tagging.bio_transitions(bad)


def _valid(seq):
    return all(not NAMES[t].startswith("I-") or (i > 0 and NAMES[seq[i - 1]][2:] == NAMES[t][2:])
               for i, t in enumerate(seq))


def test_viterbi_equals_brute_force_over_valid_sequences():
    import itertools

    rng = np.random.default_rng(1)
    log_probs = np.log(rng.dirichlet(np.ones(5) * 0.3, size=(6, 5)))  # (N=6, T=5, K=5), peaked
    lengths = np.array([5, 4, 1, 3, 5, 0])
    got = tagging.viterbi_decode(log_probs, lengths, NAMES)
    for row, n in enumerate(lengths):
        assert (got[row, n:] == -1).all()
        if n == 0:
            continue
        valid = [s for s in itertools.product(range(5), repeat=int(n)) if _valid(s)]
        best = max(valid, key=lambda s: sum(log_probs[row, i, t] for i, t in enumerate(s)))
        assert tuple(got[row, :n]) == best
    # argmax alone breaks the constraints somewhere in this sample; Viterbi never does
    assert not all(_valid(log_probs[r, :n].argmax(-1)) for r, n in enumerate(lengths))


def test_viterbi_validates():
    with pytest.raises(ValueError, match="log_probs"):
        tagging.viterbi_decode(np.zeros((1, 2, 3)), [2], NAMES)
    with pytest.raises(ValueError, match="lengths"):
        tagging.viterbi_decode(np.zeros((1, 2, 5)), [3], NAMES)
    with pytest.raises(ValueError, match="lengths"):
        tagging.viterbi_decode(np.zeros((2, 2, 5)), [1], NAMES)

def test_entity_prf_hand_example():
    gold = [[(0, 3, "PER"), (4, 6, "LOC"), (7, 9, "TIME")], [(0, 2, "LOC")]]
    pred = [[(0, 2, "PER"), (4, 6, "LOC"), (7, 9, "ORG")], [(0, 2, "LOC"), (3, 4, "LOC")]]
    s = tagging.entity_prf(gold, pred, types=["PER", "LOC", "ORG", "TIME"])
    # LOC: tp 2, fp 1, fn 0; PER: tp 0, fp 1, fn 1; ORG: fp 1; TIME: fn 1.
    assert s["LOC"]["precision"] == pytest.approx(2 / 3) and s["LOC"]["recall"] == 1.0
    assert s["LOC"]["f1"] == pytest.approx(0.8) and s["LOC"]["support"] == 2
    assert s["PER"]["f1"] == 0.0 and s["ORG"]["support"] == 0 and s["TIME"]["recall"] == 0.0
    assert s["micro"]["precision"] == pytest.approx(2 / 5)
    assert s["micro"]["recall"] == pytest.approx(2 / 4)
    assert s["micro"]["f1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    assert s["micro"]["support"] == 4


def test_entity_prf_perfect_and_default_types():
    gold = [[(0, 1, "A")], [(2, 4, "B")]]
    s = tagging.entity_prf(gold, gold)
    assert set(s) == {"A", "B", "micro"} and s["micro"]["f1"] == 1.0


def test_entity_prf_validates():
    with pytest.raises(ValueError, match="pred_spans"):
        tagging.entity_prf([[]], [[], []])
    with pytest.raises(ValueError, match="true_spans"):
        tagging.entity_prf("abc", [[]])


def test_split_points_cover_and_respect_limits():
    text = "今天，北京下雪了。上海晴天很暖和没有风也没有雨"
    windows = tagging.split_points(text, 8)
    assert "".join(text[a:b] for a, b in windows) == text
    assert all(0 < b - a <= 8 for a, b in windows)
    assert windows[0] == (0, 3)  # after "，": "北京下雪了。" would make it 9
    assert text[windows[1][1] - 1] == "。"


def test_split_points_never_cut_inside_an_entity():
    text = "甲乙丙丁戊己庚辛壬癸"
    tags = ["O", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O", "O", "O", "O"]
    windows = tagging.split_points(text, 4, tags)
    assert windows == [(0, 3), (3, 7), (7, 10)]
    assert tagging.split_points(text, 4) == [(0, 4), (4, 8), (8, 10)]  # without tags: hard cuts


def test_split_points_validates():
    with pytest.raises(ValueError, match="max_length"):
        tagging.split_points("abc", 0)
    with pytest.raises(ValueError, match="tags"):
        tagging.split_points("abc", 2, ["O"])


def test_encode_pads_labels_with_ignore():
    tok = CharTokenizer.train(["北京天安门"])
    ids, labels = tagging.encode(tok, ["北京", "天安门"], [["B-LOC", "I-LOC"], ["B-LOC", "I-LOC", "I-LOC"]],
                                 max_length=4, tag_to_id={t: i for i, t in enumerate(NAMES)})
    assert ids.shape == labels.shape == (2, 4)
    assert labels[0].tolist() == [3, 4, -1, -1] and (ids[0, 2:] == 0).all()
    with pytest.raises(ValueError, match="max_length"):
        tagging.encode(tok, ["北京天安门"], max_length=2)


def test_token_tagger_output_shape_and_validation():
    keras.utils.set_random_seed(0)
    backbone = gpt.from_preset("tiny", vocab_size=30)
    for units in (0, 4):
        tagger = tagging.TokenTagger(backbone, num_tags=5, bilstm_units=units)
        assert tuple(tagger(np.array([[5, 6, 7, 0], [1, 2, 0, 0]], "int32")).shape) == (2, 4, 5)
    with pytest.raises(ValueError, match="backbone"):
        tagging.TokenTagger(keras.layers.Dense(3), num_tags=5)
    with pytest.raises(ValueError, match="num_tags"):
        tagging.TokenTagger(backbone, num_tags=1)
    with pytest.raises(ValueError, match="bilstm_units"):
        tagging.TokenTagger(backbone, num_tags=5, bilstm_units=-1)
    with pytest.raises(ValueError, match="vocab_size"):
        tagging.bilstm_tagger(vocab_size=0, num_tags=5)


def test_padding_does_not_change_tags_of_real_positions():
    keras.utils.set_random_seed(0)
    tagger = tagging.TokenTagger(gpt.from_preset("tiny", vocab_size=30), num_tags=5, bilstm_units=4)
    short = keras.ops.convert_to_numpy(tagger(np.array([[5, 6, 7]], "int32")))
    padded = keras.ops.convert_to_numpy(tagger(np.array([[5, 6, 7, 0, 0]], "int32")))
    np.testing.assert_allclose(short[0], padded[0, :3], atol=1e-5)



def test_char_bigrams_hash_pairs_and_keep_padding():
    layer = tagging.CharBigrams(vocab_size=10, buckets=7)
    ids = np.array([[3, 4, 3, 4, 0, 0], [9, 9, 9, 0, 0, 0]], "int32")
    got = keras.ops.convert_to_numpy(layer(ids))
    bucket = lambda a, b: (a * 10 + b) % 7 + 1  # noqa: E731
    assert got.tolist() == [[bucket(3, 4), bucket(4, 3), bucket(3, 4), bucket(4, 0), 0, 0],
                            [bucket(9, 9), bucket(9, 9), bucket(9, 0), 0, 0, 0]]
    assert got.min() >= 0 and got.max() <= 7
    with pytest.raises(ValueError, match="vocab_size"):
        tagging.CharBigrams(vocab_size=50_000, buckets=7)
    with pytest.raises(ValueError, match="buckets"):
        tagging.CharBigrams(vocab_size=10, buckets=0)


def test_bigram_tagger_size_and_save_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    plain = tagging.bilstm_tagger(vocab_size=12, num_tags=5, embedding_dim=4, units=4)
    model = tagging.bilstm_tagger(vocab_size=12, num_tags=5, embedding_dim=4, units=4, bigram_buckets=11, bigram_dim=3)
    x = np.array([[5, 6, 7, 0], [8, 9, 0, 0]], "int32")
    model(x), plain(x)
    # the bigram table, plus the LSTM's wider input (3 more features, 4 gates, 2 directions, 4 units)
    assert model.count_params() - plain.count_params() == 12 * 3 + 3 * 4 * 4 * 2
    path = tmp_path / "bigram_tagger.keras"
    model.save(path)
    back = keras.models.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(back(x)))
    with pytest.raises(ValueError, match="bigram_buckets"):
        tagging.bilstm_tagger(vocab_size=12, num_tags=5, bigram_buckets=-1)

def _toy_tagging(n, rng, length=12):
    # Token 3 is a one-token entity "B-PER" only when the NEXT token is 4: needs right context.
    x = rng.integers(3, 6, size=(n, length)).astype("int32")
    y = np.zeros_like(x)
    y[:, :-1] = np.where((x[:, :-1] == 3) & (x[:, 1:] == 4), 1, 0)
    return x, y


def test_tiny_taggers_learn_a_toy_task():
    rng = np.random.default_rng(0)
    train, val = _toy_tagging(512, rng), _toy_tagging(64, rng)
    keras.utils.set_random_seed(0)
    scratch = tagging.bilstm_tagger(vocab_size=8, num_tags=5, embedding_dim=8, units=8)
    rows = tagging.fit_tagger(scratch, train, val, epochs=12, learning_rate=2e-2, batch_size=32,
                              names=NAMES, verbose=False)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert max(r["val_f1"] for r in rows) > 0.9
    pred = tagging.predict_tags(scratch, val[0])
    assert pred.shape == val[0].shape and set(np.unique(pred)) <= set(range(5))
    constrained = tagging.predict_tags(scratch, val[0], decode="viterbi", names=NAMES)
    assert all(_valid(row) for row in constrained)
    assert (constrained == pred).mean() > 0.95  # the constraints change only a few positions
    log_probs = tagging.predict_log_probs(scratch, val[0])  # one forward pass, decoded twice
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(tagging.decode_tags(log_probs, val[0]), pred)
    np.testing.assert_array_equal(tagging.decode_tags(log_probs, val[0], decode="viterbi", names=NAMES), constrained)


def test_fit_tagger_validates():
    x = np.ones((4, 3), "int32")
    model = tagging.bilstm_tagger(vocab_size=4, num_tags=5, embedding_dim=2, units=2)
    with pytest.raises(ValueError, match="names"):
        tagging.fit_tagger(model, (x, x), (x, x), epochs=1, learning_rate=1e-3)
    with pytest.raises(ValueError, match="learning_rate"):
        tagging.fit_tagger(model, (x, x), (x, x), epochs=1, learning_rate=0, names=NAMES)
    with pytest.raises(ValueError, match="x must"):
        tagging.predict_tags(model, np.ones(3, "int32"))
    with pytest.raises(ValueError, match="decode"):
        tagging.predict_tags(model, x, decode="beam")
    with pytest.raises(ValueError, match="names"):
        tagging.predict_tags(model, x, decode="viterbi")
    with pytest.raises(ValueError, match="log_probs"):
        tagging.decode_tags(np.zeros((4, 2, 5)), x)

"""Tests for llmft.finetune with a tiny GPT backbone."""

import keras
import numpy as np
import pytest

from llmft import data, finetune, gpt, heads
from llmft.tokenizers import CharTokenizer

VOCAB = 30


def _ids(n=48, length=12, seed=0):
    """Rows of random length, right-padded with 0; label 1 if token 5 appears."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, length), "int32")
    labels = rng.integers(0, 2, n).astype("int32")
    for i in range(n):
        k = rng.integers(2, length + 1)
        ids[i, :k] = rng.integers(6, VOCAB, k)
        if labels[i]:
            ids[i, rng.integers(0, k)] = 5
    return ids, labels


def _classifier(pooling="last", seed=0):
    keras.utils.set_random_seed(seed)
    clf = heads.SequenceClassifier(gpt.from_preset("tiny", vocab_size=VOCAB), num_classes=2, pooling=pooling)
    clf(np.ones((1, 4), "int32"))
    return clf


def test_encode_pads_truncates_and_keeps_labels():
    tok = CharTokenizer.train(["很好看", "太差了"])
    x, y = finetune.encode(tok, [data.Example("很好看很好看", 1), data.Example("差", 0)], max_length=4)
    assert x.shape == (2, 4) and x.dtype == np.int32
    assert tok.decode(x[0]) == "很好看很" and x[1, 1:].tolist() == [0, 0, 0]
    assert y.tolist() == [1, 0]
    with pytest.raises(ValueError, match="max_length"):
        finetune.encode(tok, [data.Example("好", 1)], max_length=0)
    with pytest.raises(ValueError, match="examples"):
        finetune.encode(tok, [], max_length=4)


def test_batch_indices_cover_every_row_once_and_change_per_seed():
    lengths = np.random.default_rng(0).integers(1, 50, 101)
    a = finetune.batch_indices(lengths, batch_size=8, shuffle=True, seed=0)
    b = finetune.batch_indices(lengths, batch_size=8, shuffle=True, seed=1)
    assert sorted(np.concatenate(a).tolist()) == list(range(101))
    assert [g.tolist() for g in a] != [g.tolist() for g in b]
    assert [g.tolist() for g in a] == [g.tolist() for g in finetune.batch_indices(lengths, batch_size=8, shuffle=True, seed=0)]
    ordered = finetune.batch_indices(lengths, batch_size=8, shuffle=False, bucket=False)
    assert np.concatenate(ordered).tolist() == list(range(101))


def test_batches_cut_each_batch_to_its_longest_row():
    x, y = _ids(n=40, length=16)
    seen = 0
    for xb, yb in finetune.batches(x, y, batch_size=8, multiple=1):
        xb = xb.numpy()
        assert (xb != 0).sum(axis=1).max() == xb.shape[1]  # no all-pad column at the end
        seen += len(yb)
    assert seen == 40
    with pytest.raises(ValueError, match="same length"):
        finetune.batches(x, y[:-1])


def test_fit_classifier_learns_and_restores_the_best_epoch():
    x, y = _ids(n=96)
    xv, yv = _ids(n=48, seed=1)
    clf = _classifier()
    rows = finetune.fit_classifier(
        clf, finetune.batches(x, y, batch_size=16, shuffle=True), finetune.batches(xv, yv, batch_size=16),
        epochs=4, learning_rate=1e-2, steps_per_epoch=6, verbose=False,
    )
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss"] < rows[0]["loss"]
    acc = np.mean(finetune.predict_logits(clf, xv).argmax(-1) == yv)
    assert acc == pytest.approx(max(r["val_accuracy"] for r in rows), abs=1e-6)
    with pytest.raises(ValueError, match="learning_rate"):
        finetune.fit_classifier(clf, None, None, epochs=1, learning_rate=0, steps_per_epoch=1)


def test_predict_logits_keeps_the_input_order_and_matches_the_model():
    x, _ = _ids(n=37)
    clf = _classifier()
    expected = keras.ops.convert_to_numpy(clf(x))  # padding never changes a causal model's logits
    np.testing.assert_allclose(finetune.predict_logits(clf, x, batch_size=8), expected, atol=1e-5)


def test_extract_features_gives_each_pooling_from_one_pass():
    x, _ = _ids(n=20)
    clf = _classifier(pooling="mean")
    feats = finetune.extract_features(clf, x, batch_size=8, poolings=("last", "mean"))
    np.testing.assert_allclose(feats["mean"], keras.ops.convert_to_numpy(clf.features(x)), atol=1e-5)
    np.testing.assert_allclose(finetune.extract_features(clf, x), feats["mean"], atol=1e-6)
    last = _classifier(pooling="last")
    last.backbone.set_weights(clf.backbone.get_weights())
    np.testing.assert_allclose(feats["last"], keras.ops.convert_to_numpy(last.features(x)), atol=1e-5)
    with pytest.raises(ValueError, match="poolings"):
        finetune.extract_features(clf, x, poolings=("max",))

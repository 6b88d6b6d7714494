"""Tests for llmft.baselines: validation-chosen TF-IDF + LR and linear probes."""

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from llmft import baselines

POS = ["好看", "很好", "喜欢", "推荐", "满意", "不错"]
NEG = ["难看", "很差", "讨厌", "失望", "退货", "糟糕"]


def _texts(seed, n):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    texts = ["".join(rng.choice(POS if y else NEG, 2)) + "的东西" for y in labels]
    return texts, labels


def _features(seed, n, dim=6, noise=1.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    signal = np.outer(2.0 * labels - 1.0, np.ones(dim)) * 0.5
    return {"last": rng.normal(size=(n, dim)) * noise, "mean": signal + rng.normal(size=(n, dim)) * noise}, labels


def test_tfidf_logreg_matches_a_hand_built_pipeline():
    (tr, ytr), (va, yva) = _texts(0, 60), _texts(1, 40)
    choice = baselines.tfidf_logreg(tr, ytr, va, yva, Cs=(3.0,))
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
    ref = LogisticRegression(C=3.0, max_iter=3000).fit(vec.fit_transform(tr), ytr)
    np.testing.assert_array_equal(choice.predict(va), ref.predict(vec.transform(va)))
    assert choice.val_accuracy == pytest.approx(np.mean(ref.predict(vec.transform(va)) == yva))
    assert choice.val_accuracy == 1.0  # the task is separable by the words


def test_tfidf_logreg_picks_the_best_validation_score():
    (tr, ytr), (va, yva) = _texts(0, 60), _texts(1, 40)
    yva_flipped = 1 - yva  # no C can do well; the scores still decide
    choice = baselines.tfidf_logreg(tr, ytr, va, yva_flipped, Cs=(0.001, 1.0, 100.0))
    assert set(choice.val_scores) == {0.001, 1.0, 100.0}
    assert choice.val_accuracy == max(choice.val_scores.values())
    assert choice.setting == {"C": max(choice.val_scores, key=choice.val_scores.get)}


def test_linear_probe_chooses_the_informative_pooling():
    (tr, ytr), (va, yva) = _features(0, 200), _features(1, 200)
    probe = baselines.linear_probe(tr, ytr, va, yva, Cs=(0.1, 1.0))
    assert probe.setting["pooling"] == "mean"  # "last" is pure noise
    assert set(probe.val_scores) == {(p, c) for p in ("last", "mean") for c in (0.1, 1.0)}
    ref = LogisticRegression(C=probe.setting["C"], max_iter=3000).fit(tr["mean"], ytr)
    np.testing.assert_array_equal(probe.predict(va), ref.predict(va["mean"]))
    np.testing.assert_array_equal(probe.predict(va["mean"]), probe.predict(va))
    assert probe.val_accuracy > 0.8 > 0.6 > max(a for (p, _), a in probe.val_scores.items() if p == "last")


def test_linear_probe_on_one_array_and_ties_keep_the_first_C():
    x = np.array([[-2.0], [-1.0], [1.0], [2.0]] * 5)
    y = np.array([0, 0, 1, 1] * 5)
    probe = baselines.linear_probe(x, y, x, y, Cs=(0.5, 5.0))
    assert probe.val_scores == {0.5: 1.0, 5.0: 1.0}
    assert probe.setting == {"C": 0.5}


@pytest.mark.parametrize("Cs", [(), [0.0], (1.0, -1.0), "10", (True,), None])
def test_bad_Cs(Cs):
    (tr, ytr), (va, yva) = _texts(0, 20), _texts(1, 10)
    with pytest.raises(ValueError, match="Cs must be"):
        baselines.tfidf_logreg(tr, ytr, va, yva, Cs=Cs)
    with pytest.raises(ValueError, match="Cs must be"):
        baselines.linear_probe(np.ones((4, 2)), [0, 1, 0, 1], np.ones((4, 2)), [0, 1, 0, 1], Cs=Cs)


def test_bad_texts_labels_and_ngrams():
    (tr, ytr), (va, yva) = _texts(0, 20), _texts(1, 10)
    with pytest.raises(ValueError, match="train_texts must be"):
        baselines.tfidf_logreg([], [], va, yva)
    with pytest.raises(ValueError, match="val_texts must be"):
        baselines.tfidf_logreg(tr, ytr, "一句话", [1])
    with pytest.raises(ValueError, match=r"val_labels must .* \(10\)"):
        baselines.tfidf_logreg(tr, ytr, va, yva[:-1])
    with pytest.raises(ValueError, match="at least two classes"):
        baselines.tfidf_logreg(tr, np.ones_like(ytr), va, yva)
    with pytest.raises(ValueError, match="ngram_range"):
        baselines.tfidf_logreg(tr, ytr, va, yva, ngram_range=(3, 1))


def test_bad_features():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="train_features must be"):
        baselines.linear_probe(np.ones(4), y, np.ones((4, 2)), y)
    with pytest.raises(ValueError, match="same poolings"):
        baselines.linear_probe({"last": np.ones((4, 2))}, y, {"mean": np.ones((4, 2))}, y)
    with pytest.raises(ValueError, match="same width"):
        baselines.linear_probe(np.ones((4, 2)), y, np.ones((4, 3)), y)
    with pytest.raises(ValueError, match="train_labels must"):
        baselines.linear_probe(np.ones((4, 2)), y[:3], np.ones((4, 2)), y)
    with pytest.raises(ValueError, match="val_features must be"):
        baselines.linear_probe(np.ones((4, 2)), y, {}, y)

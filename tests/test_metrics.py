"""Tests for llmft.metrics: losses, n-gram baselines, classification scores."""

import math

import keras
import numpy as np
import pytest
from sklearn import metrics as skm

from llmft import gpt, metrics

# -- cross-entropy and perplexity ------------------------------------------------


def test_cross_entropy_matches_keras_and_the_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 7)) * 3
    targets = rng.integers(0, 7, (3, 4))
    expected = keras.ops.convert_to_numpy(
        keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    ).mean()
    assert metrics.cross_entropy(targets, logits) == pytest.approx(expected, rel=1e-5)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert metrics.cross_entropy(targets, probs, from_logits=False) == pytest.approx(expected)
    # Uniform prediction over V tokens costs log V nats.
    assert metrics.cross_entropy([0, 5], np.zeros((2, 10))) == pytest.approx(math.log(10))
    # Huge logits do not overflow.
    assert metrics.cross_entropy([0], [[1000.0, 0.0]]) == pytest.approx(0.0)


def test_perplexity_is_exp_of_the_loss():
    assert metrics.perplexity(math.log(50)) == pytest.approx(50)
    assert metrics.perplexity(1.3) == pytest.approx(math.exp(1.3))
    assert metrics.perplexity(0) == 1.0
    for bad in (-0.1, float("nan"), "2"):
        with pytest.raises(ValueError, match="loss"):
            metrics.perplexity(bad)


def test_cross_entropy_validation():
    with pytest.raises(ValueError, match="predictions must have shape"):
        metrics.cross_entropy([0, 1], np.zeros((3, 4)))
    with pytest.raises(ValueError, match="targets must be < V=4; got a value 4"):
        metrics.cross_entropy([4], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="targets must hold integers"):
        metrics.cross_entropy([0.5], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="probabilities"):
        metrics.cross_entropy([0], [[0.7, 0.7]], from_logits=False)


# -- n-gram baselines -------------------------------------------------------------


def test_unigram_against_a_hand_computation():
    lm = metrics.UnigramLM(add_k=1, vocab_size=4).fit([0, 0, 1, 2])
    # counts (2, 1, 1, 0) + 1 over 4 + 4: p = (3, 2, 2, 1) / 8
    np.testing.assert_allclose(lm.probabilities(), [3 / 8, 2 / 8, 2 / 8, 1 / 8])
    expected = -(math.log(3 / 8) + math.log(1 / 8)) / 2
    assert lm.cross_entropy([0, 3]) == pytest.approx(expected)  # unseen 3 stays finite
    unsmoothed = metrics.UnigramLM(add_k=0, vocab_size=4).fit([0, 0, 1, 2])
    assert unsmoothed.cross_entropy([3]) == math.inf


def test_bigram_against_a_hand_computation():
    lm = metrics.BigramLM(add_k=0.5, vocab_size=3).fit([0, 1, 0, 2, 0, 1])
    # c(0,1)=2, c(1,0)=1, c(0,2)=1, c(2,0)=1; c(0,.)=3, c(1,.)=1, c(2,.)=1
    p_1_given_0 = (2 + 0.5) / (3 + 0.5 * 3)
    p_2_given_1 = (0 + 0.5) / (1 + 0.5 * 3)
    expected = -(math.log(p_1_given_0) + math.log(p_2_given_1)) / 2
    assert lm.cross_entropy([0, 1, 2]) == pytest.approx(expected)
    # Each row p(. | u) is a distribution.
    for u in range(3):
        row = (lm.pair_count([u] * 3, [0, 1, 2]) + 0.5) / (lm.context_counts[u] + 1.5)
        assert row.sum() == pytest.approx(1.0)
    assert metrics.BigramLM(add_k=0).fit([0, 1, 0, 1]).cross_entropy([1, 1]) == math.inf


def test_bigram_beats_unigram_on_structured_text():
    ids = np.tile([0, 1, 2, 3, 4], 40)
    unigram = metrics.UnigramLM(add_k=0.1).fit(ids)
    bigram = metrics.BigramLM(add_k=0.1).fit(ids)
    assert unigram.cross_entropy(ids) == pytest.approx(math.log(5), rel=1e-3)
    assert bigram.cross_entropy(ids) < 0.01


def test_ngram_validation():
    with pytest.raises(ValueError, match="add_k must.*got -1"):
        metrics.BigramLM(add_k=-1)
    with pytest.raises(ValueError, match="vocab_size must.*got 0"):
        metrics.UnigramLM(vocab_size=0)
    with pytest.raises(ValueError, match="fit"):
        metrics.UnigramLM().cross_entropy([0, 1])
    lm = metrics.BigramLM(vocab_size=3).fit([0, 1, 2])
    with pytest.raises(ValueError, match="ids must be < vocab_size=3; got a value 7"):
        lm.cross_entropy([0, 7])
    with pytest.raises(ValueError, match="ids must hold at least 2 tokens"):
        lm.cross_entropy([0])
    with pytest.raises(ValueError, match="ids must be 1-D"):
        lm.fit([[0, 1], [1, 0]])


# -- a Keras model on held-out text --------------------------------------------------


class NextIdPredictor:
    """Predicts (x + 1) mod V with near certainty: CE ~ 0 only if targets align."""

    vocab = 7

    def predict_on_batch(self, x):
        return np.eye(self.vocab)[(np.asarray(x) + 1) % self.vocab] * 50.0


def test_model_cross_entropy_aligns_inputs_and_targets():
    ids = np.arange(103) % 7
    assert metrics.model_cross_entropy(NextIdPredictor(), ids, 10, batch_size=4) < 1e-6


def test_model_cross_entropy_of_a_gpt_equals_a_direct_computation():
    keras.utils.set_random_seed(0)
    model = gpt.from_preset("tiny", vocab_size=20)
    ids = np.random.default_rng(0).integers(0, 20, 75)
    # 75 tokens, context 16: four windows (64 predictions); the tail is dropped.
    x, y = ids[:64].reshape(4, 16), ids[1:65].reshape(4, 16)
    direct = metrics.cross_entropy(y, keras.ops.convert_to_numpy(model(x)))
    got = metrics.model_cross_entropy(model, ids, 16, batch_size=3)
    assert got == pytest.approx(direct, rel=1e-5)
    with pytest.raises(ValueError, match="ids must hold at least context_length"):
        metrics.model_cross_entropy(model, ids[:16], 16)
    with pytest.raises(ValueError, match="batch_size must.*got 0"):
        metrics.model_cross_entropy(model, ids, 16, batch_size=0)


# -- classification ----------------------------------------------------------------


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, 1 - y_true)
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    expected = skm.precision_recall_fscore_support(y_true, y_pred, average="binary")[:3]
    np.testing.assert_allclose(metrics.precision_recall_f1(y_true, y_pred), expected)
    expected = skm.precision_recall_fscore_support(y_true, y_pred, average="binary", pos_label=0)
    got = metrics.precision_recall_f1(y_true, y_pred, pos_label=0)
    np.testing.assert_allclose(got, expected[:3])

    y_true = rng.integers(0, 4, 300)
    y_pred = np.where(rng.random(300) < 0.5, y_true, rng.integers(0, 4, 300))
    y_pred[y_pred == 2] = 1  # class 2 is never predicted: precision 0/0
    expected = skm.precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    got = metrics.precision_recall_f1(y_true, y_pred, average="macro")
    np.testing.assert_allclose(got, expected[:3])
    np.testing.assert_array_equal(
        metrics.confusion_matrix(y_true, y_pred), skm.confusion_matrix(y_true, y_pred)
    )
    # With num_classes, a class absent from both arrays counts (as sklearn's labels=).
    expected = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=range(5), average="macro", zero_division=0
    )
    got = metrics.precision_recall_f1(y_true, y_pred, average="macro", num_classes=5)
    np.testing.assert_allclose(got, expected[:3])
    assert metrics.confusion_matrix(y_true, y_pred, num_classes=5).shape == (5, 5)


def test_classification_validation():
    with pytest.raises(ValueError, match="same non-zero length; got 2 and 3"):
        metrics.accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="same non-zero length"):
        metrics.accuracy([], [])
    with pytest.raises(ValueError, match="average must.*got 'micro'"):
        metrics.precision_recall_f1([0, 1], [1, 1], average="micro")
    with pytest.raises(ValueError, match="num_classes must.*got 2"):
        metrics.confusion_matrix([0, 2], [1, 1], num_classes=2)
    with pytest.raises(ValueError, match="y_pred must be >= 0; got a value -1"):
        metrics.confusion_matrix([0, 1], [0, -1])
    with pytest.raises(ValueError, match="pos_label"):
        metrics.precision_recall_f1([0, 1], [1, 1], pos_label="yes")


def test_strided_evaluation_scores_each_target_once_and_matches_manual():
    import keras

    from llmft import gpt

    keras.utils.set_random_seed(0)
    model = gpt.from_preset("tiny", vocab_size=11, context_length=8)
    ids = np.arange(40) % 10 + 1
    n = metrics.evaluated_length(ids.size, 8, stride=4)
    assert n == 8 + 7 * 4  # windows at 0, 4, ..., 28
    # Manual: score target t+1 with the window that ends closest after it.
    manual = 0.0
    for t in range(n):
        start = 0 if t < 8 else t - 7 + (3 - (t - 8) % 4)
        logits = np.asarray(model(ids[None, start : start + 8].astype("int32")))[0, t - start]
        manual -= metrics.log_softmax(logits.astype(np.float64))[ids[t + 1]]
    got = metrics.model_cross_entropy(model, ids, 8, batch_size=3, stride=4)
    assert got == pytest.approx(manual / n, rel=1e-5)
    assert metrics.model_cross_entropy(model, ids, 8) == pytest.approx(
        metrics.model_cross_entropy(model, ids, 8, stride=8))
    with pytest.raises(ValueError, match="stride"):
        metrics.model_cross_entropy(model, ids, 8, stride=9)


# -- generated text ----------------------------------------------------------

def test_distinct_n_counts_distinct_ngrams_over_all_ngrams():
    assert metrics.distinct_n(["abab"], 2) == pytest.approx(2 / 3)
    assert metrics.distinct_n([[1, 2, 3], [1, 2]], 1) == pytest.approx(3 / 5)
    assert metrics.distinct_n([[1, 2, 3], [1, 2]], 2) == pytest.approx(2 / 3)  # no n-gram across sequences
    assert metrics.distinct_n("aaaa", 1) == 0.25  # one sequence works too
    assert metrics.distinct_n([[1, 2], [3]], 2) == 1.0  # [3] has no bigram


def test_repetition_rate_is_the_mean_share_of_repeated_ngrams():
    assert metrics.repetition_rate(["很好很好很好"], 2) == pytest.approx(0.6)
    assert metrics.repetition_rate(["abcdefg"]) == 0.0
    # Per sequence, then averaged; the short one is skipped.
    assert metrics.repetition_rate([[1, 1, 1, 1, 1], [1, 2, 3, 4, 5], [7]], 2) == pytest.approx((0.75 + 0.0) / 2)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: metrics.distinct_n([[1, 2]], 0), "n must"),
        (lambda: metrics.distinct_n([[1, 2]], 3), "sequences"),
        (lambda: metrics.distinct_n([], 1), "sequences"),
        (lambda: metrics.repetition_rate([[1, 2]], 4), "sequences"),
        (lambda: metrics.repetition_rate([[1, 2, 3]], True), "n must"),
    ],
)
def test_generation_metrics_reject_bad_arguments(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_continuation_cross_entropy_scores_only_the_continuation():
    import keras

    from llmft import gpt

    keras.utils.set_random_seed(0)
    model = gpt.from_preset("tiny", vocab_size=20)
    prompt, continuation = [3, 4, 5], [6, 7, 8, 9]
    total, count = metrics.continuation_cross_entropy(model, prompt, continuation)
    ids = np.array([prompt + continuation])
    logp = metrics.log_softmax(keras.ops.convert_to_numpy(model(ids[:, :-1]))[0])
    manual = -sum(logp[i - 1, ids[0, i]] for i in range(3, 7))
    assert count == 4 and total == pytest.approx(manual, rel=1e-5)
    with pytest.raises(ValueError, match="context_length"):
        metrics.continuation_cross_entropy(model, list(range(20)), list(range(13)))
    with pytest.raises(ValueError, match="continuation_ids"):
        metrics.continuation_cross_entropy(model, prompt, [])


def test_mcnemar_exact_matches_scipys_binomial_test():
    from scipy import stats

    rng = np.random.default_rng(0)
    for n_items in (1, 7, 40, 100):
        a, b = rng.random(n_items) < 0.6, rng.random(n_items) < 0.4
        out = metrics.mcnemar_exact(a, b)
        assert out["a_only"] == int(np.sum(a & ~b)) and out["b_only"] == int(np.sum(~a & b))
        n = out["a_only"] + out["b_only"]
        expected = stats.binomtest(out["a_only"], n, 0.5).pvalue if n else 1.0
        assert out["p_value"] == pytest.approx(expected, rel=1e-12)
    # Agreement on every item: no evidence either way.
    assert metrics.mcnemar_exact([1, 0, 1], [1, 0, 1]) == {"a_only": 0, "b_only": 0, "p_value": 1.0}


@pytest.mark.parametrize("a, b, match", [
    ([], [], "correct_a must be a non-empty"),
    ([1, 2], [1, 0], "correct_a must be a non-empty"),
    ([1, 0], [[1, 0]], "correct_b must be a non-empty"),
    ([1, 0, 1], [1, 0], "same items; got lengths 3 and 2"),
])
def test_mcnemar_exact_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        metrics.mcnemar_exact(a, b)

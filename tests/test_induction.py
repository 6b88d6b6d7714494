"""Tests for llmft.induction: the repeated-random-sequence copy probe."""

import keras
import numpy as np
import pytest

from llmft import gpt, induction

V = 12


class _Copier:
    """Predicts the token ``length - 1`` positions back: a perfect copier for sequences of a known length."""

    context_length = 64

    def __init__(self, length):
        self.length = length

    def __call__(self, x, training=False):
        logits = np.zeros(x.shape + (V,))
        for t in range(self.length - 1, x.shape[1]):
            logits[np.arange(x.shape[0]), t, x[:, t - self.length + 1]] = 50.0
        return logits


class _Uniform:
    context_length = 64

    def __call__(self, x, training=False):
        return np.zeros(x.shape + (V,))


def test_sequences_repeat_and_draw_only_from_the_candidates():
    ids = induction.repeated_sequences(range(3, 9), length=5, rows=4, seed=1)
    assert ids.shape == (4, 10) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids[:, 5:], ids[:, :5])
    assert set(np.unique(ids)) <= set(range(3, 9))
    np.testing.assert_array_equal(ids, induction.repeated_sequences(range(3, 9), length=5, rows=4, seed=1))


def test_a_perfect_copier_is_right_on_the_second_copy_only():
    out = induction.repeated_sequence_probe(_Copier(6), np.arange(1, V), length=6, rows=8)
    assert out["second_accuracy"] == 1.0 and out["second_loss"] < 1e-6
    # On the first copy it has nothing to copy from: uniform logits, log V nats per token.
    assert out["first_loss"] == pytest.approx(np.log(V)) and out["first_accuracy"] == 0.0


def test_a_model_that_cannot_copy_scores_the_same_on_both_copies():
    out = induction.repeated_sequence_probe(_Uniform(), np.arange(1, V), length=6, rows=8)
    assert out["first_loss"] == pytest.approx(np.log(V)) and out["second_loss"] == pytest.approx(np.log(V))
    assert out["second_accuracy"] == 0.0  # argmax of a uniform row is id 0, never a candidate


def test_probe_runs_on_the_books_gpt():
    keras.utils.set_random_seed(0)
    model = gpt.GPT(vocab_size=V, context_length=16, num_layers=1, num_heads=2, hidden_dim=16)
    out = induction.repeated_sequence_probe(model, range(4, V), length=8, rows=3)
    assert out["length"] == 8 and out["rows"] == 3
    assert all(np.isfinite(out[k]) for k in ("first_loss", "second_loss"))
    with pytest.raises(ValueError, match="context_length is 16"):
        induction.repeated_sequence_probe(model, range(4, V), length=9)


@pytest.mark.parametrize("kwargs, match", [
    (dict(candidates=[3], length=4), "at least 2 token ids"),
    (dict(candidates=["a", "b"], length=4), "at least 2 token ids"),
    (dict(candidates=range(3, 9), length=1), "length must be an integer >= 2"),
    (dict(candidates=range(3, 9), length=4, rows=0), "rows must be an integer >= 1"),
])
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        induction.repeated_sequences(**kwargs)

"""llmft.reference: each NumPy formula against the Keras layer with the same weights."""

import numpy as np
import pytest

from llmft import reference  # sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads

import keras  # noqa: E402  (after llmft on purpose)

ARTICLE_MATRIX = np.array(
    [
        [0.2, 0.3, 0.1, 0.2, 0.2],
        [0.1, 0.2, 0.3, 0.2, 0.2],
        [0.2, 0.2, 0.2, 0.2, 0.2],
        [0.1, 0.1, 0.3, 0.3, 0.2],
        [0.3, 0.2, 0.2, 0.1, 0.2],
    ]
)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    np.random.seed(0)


def rng():
    return np.random.default_rng(0)


# --- embedding ---------------------------------------------------------------


def test_one_hot():
    out = reference.one_hot(np.array([2, 0]), 3)
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0]])


def test_embedding_matches_keras():
    layer = keras.layers.Embedding(input_dim=7, output_dim=4)
    ids = np.array([[0, 3, 6], [5, 5, 1]])
    expected = keras.ops.convert_to_numpy(layer(ids))
    (W,) = layer.get_weights()
    got = reference.embedding_lookup_via_onehot(ids, W)
    assert got.shape == (2, 3, 4)
    np.testing.assert_allclose(got, expected, atol=0)
    np.testing.assert_array_equal(got, W[ids])


# --- softmax / sigmoid ---------------------------------------------------------


def test_softmax_article_example():
    probs = reference.softmax(ARTICLE_MATRIX)
    np.testing.assert_array_equal(np.round(probs[0], 4), [0.1996, 0.2206, 0.1806, 0.1996, 0.1996])
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0)
    assert not np.allclose(probs, ARTICLE_MATRIX, atol=1e-3)  # the article's claim is false
    np.testing.assert_allclose(reference.softmax(np.log(ARTICLE_MATRIX)), ARTICLE_MATRIX, atol=1e-12)


def test_softmax_matches_keras_and_is_stable():
    x = rng().normal(size=(3, 4, 5)).astype("float32")
    for axis in (-1, 0, 1):
        expected = keras.ops.convert_to_numpy(keras.ops.softmax(x, axis=axis))
        np.testing.assert_allclose(reference.softmax(x, axis=axis), expected, atol=1e-6)
    big = reference.softmax([1000.0, 1001.0, 1002.0])
    assert np.all(np.isfinite(big))
    np.testing.assert_allclose(big, reference.softmax([0.0, 1.0, 2.0]))


def test_sigmoid_matches_keras_and_saturates():
    x = np.linspace(-8, 8, 33).astype("float32")
    expected = keras.ops.convert_to_numpy(keras.ops.sigmoid(x))
    np.testing.assert_allclose(reference.sigmoid(x), expected, atol=1e-6)
    with np.errstate(all="raise"):
        np.testing.assert_allclose(reference.sigmoid([-1000.0, 1000.0]), [0.0, 1.0])


# --- RNN and LSTM ----------------------------------------------------------------


def test_article_formula_is_simple_rnn_with_sigmoid():
    x = rng().normal(size=(2, 6, 3)).astype("float32")
    layer = keras.layers.SimpleRNN(4, activation="sigmoid", return_sequences=True)
    expected = keras.ops.convert_to_numpy(layer(x))
    kernel, recurrent_kernel, bias = layer.get_weights()
    W_h = np.concatenate([recurrent_kernel, kernel], axis=0).T  # (units, units + input_dim)
    got = reference.rnn_forward(x, W_h, bias, activation="sigmoid")
    assert got.shape == (2, 6, 4)
    assert np.abs(got - expected).max() <= 1e-5


def test_lstm_matches_keras():
    x = rng().normal(size=(2, 7, 3)).astype("float32")
    layer = keras.layers.LSTM(5, return_sequences=True, return_state=True)
    seq, h_last, c_last = (keras.ops.convert_to_numpy(t) for t in layer(x))
    kernel, recurrent_kernel, bias = layer.get_weights()
    assert kernel.shape == (3, 20) and recurrent_kernel.shape == (5, 20) and bias.shape == (20,)
    hs, cs, gates = reference.lstm_forward(x, kernel, recurrent_kernel, bias)
    assert np.abs(hs - seq).max() <= 1e-5
    assert np.abs(hs[:, -1] - h_last).max() <= 1e-5
    assert np.abs(cs[:, -1] - c_last).max() <= 1e-5
    assert set(gates) == {"i", "f", "g", "o"}
    for name in "ifo":
        assert gates[name].shape == (2, 7, 5)
        assert 0 < gates[name].min() and gates[name].max() < 1
    assert np.abs(gates["g"]).max() < 1


def test_lstm_cell_step_formulas():
    r = rng()
    x, h, c = r.normal(size=3), r.normal(size=2), r.normal(size=2)
    kernel, rk, bias = r.normal(size=(3, 8)), r.normal(size=(2, 8)), r.normal(size=8)
    h_t, c_t, g = reference.lstm_cell_step(x, h, c, kernel, rk, bias)
    z = x @ kernel + h @ rk + bias
    f = 1 / (1 + np.exp(-z[2:4]))  # the forget gate is the second block
    np.testing.assert_allclose(g["f"], f)
    np.testing.assert_allclose(c_t, g["f"] * c + g["i"] * g["g"])
    np.testing.assert_allclose(h_t, g["o"] * np.tanh(c_t))


# --- cross-entropy and perplexity ----------------------------------------------


def test_cross_entropy_matches_keras():
    logits = rng().normal(size=(2, 5, 6)).astype("float32")
    targets = rng().integers(0, 6, size=(2, 5))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    expected = float(keras.ops.convert_to_numpy(loss(targets, logits)))
    got = reference.cross_entropy(logits, targets, from_logits=True)
    assert abs(got - expected) <= 1e-5
    probs = reference.softmax(logits)
    loss_p = keras.losses.SparseCategoricalCrossentropy()
    expected_p = float(keras.ops.convert_to_numpy(loss_p(targets, probs.astype("float32"))))
    assert abs(reference.cross_entropy(probs, targets) - expected_p) <= 1e-5
    per_token = reference.cross_entropy(logits, targets, from_logits=True, reduction="none")
    assert per_token.shape == (2, 5)


@pytest.mark.parametrize("vocab", [2, 5, 1000])
def test_uniform_model_perplexity_is_vocab_size(vocab):
    ce = reference.cross_entropy(np.zeros((4, vocab)), np.arange(4) % vocab, from_logits=True)
    assert reference.perplexity(ce) == pytest.approx(vocab)


# --- attention -----------------------------------------------------------------------


def test_scaled_dot_product_attention_small():
    q = np.array([[1.0, 0.0]])
    k = np.array([[1.0, 0.0], [0.0, 1.0]])
    v = np.array([[1.0, 2.0], [3.0, 4.0]])
    out, w = reference.scaled_dot_product_attention(q, k, v)
    p = np.exp(1 / np.sqrt(2)) / (np.exp(1 / np.sqrt(2)) + 1)
    np.testing.assert_allclose(w, [[p, 1 - p]])
    np.testing.assert_allclose(out, [[p * 1 + (1 - p) * 3, p * 2 + (1 - p) * 4]])
    _, wc = reference.scaled_dot_product_attention(k, k, v, mask=reference.causal_mask(2))
    assert wc[0, 1] == 0.0


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("return_scores", [False, True])
def test_multi_head_attention_matches_keras(causal, return_scores):
    x = rng().normal(size=(2, 5, 8)).astype("float32")
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3)
    result = layer(x, x, use_causal_mask=causal, return_attention_scores=return_scores)
    weights = layer.get_weights()
    assert [w.shape for w in weights] == [
        (8, 2, 3), (2, 3), (8, 2, 3), (2, 3), (8, 2, 3), (2, 3), (2, 3, 8), (8,)
    ]
    out, attn = reference.multi_head_attention(x, x, weights=weights, use_causal_mask=causal)
    expected = result[0] if return_scores else result
    assert np.abs(out - keras.ops.convert_to_numpy(expected)).max() <= 1e-5
    if return_scores:
        assert np.abs(attn - keras.ops.convert_to_numpy(result[1])).max() <= 1e-6
    assert attn.shape == (2, 2, 5, 5)
    if causal:
        assert np.all(attn[..., np.triu_indices(5, k=1)[0], np.triu_indices(5, k=1)[1]] < 1e-12)
    as_dict = dict(zip(reference.MHA_WEIGHT_NAMES, weights))
    out2, _ = reference.multi_head_attention(x, x, x, weights=as_dict, use_causal_mask=causal)
    np.testing.assert_array_equal(out, out2)


def test_multi_head_attention_cross_attention_matches_keras():
    r = rng()
    query = r.normal(size=(1, 3, 4)).astype("float32")
    value = r.normal(size=(1, 6, 4)).astype("float32")
    layer = keras.layers.MultiHeadAttention(num_heads=3, key_dim=2, value_dim=5)
    expected = keras.ops.convert_to_numpy(layer(query, value))
    out, attn = reference.multi_head_attention(query, value, weights=layer.get_weights())
    assert attn.shape == (1, 3, 3, 6)
    assert np.abs(out - expected).max() <= 1e-5


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: reference.one_hot([0, 5], 5), r"ids must lie in \[0, 5\); got min 0, max 5"),
        (lambda: reference.one_hot([0.5], 5), "ids must hold integer ids"),
        (lambda: reference.one_hot([0], 0), "depth must be a positive integer; got 0"),
        (lambda: reference.embedding_lookup_via_onehot([0], np.ones(3)), r"W must have at least 2 axes; got shape \(3,\)"),
        (lambda: reference.softmax([1.0, 2.0], axis=1), "axis must be in"),
        (lambda: reference.rnn_cell_step(np.ones(3), np.ones(2), np.ones((2, 4)), np.ones(2)), r"W_h must have shape \(2, 5\); got shape \(2, 4\)"),
        (lambda: reference.rnn_cell_step(np.ones(3), np.ones(2), np.ones((2, 5)), np.ones(2), "relu"), "activation must be one of"),
        (lambda: reference.lstm_cell_step(np.ones(3), np.ones(2), np.ones(2), np.ones((3, 6)), np.ones((2, 8)), np.ones(8)), r"kernel must have shape \(3, 8\); got shape \(3, 6\)"),
        (lambda: reference.lstm_cell_step(np.ones(3), np.ones(2), np.ones(3), np.ones((3, 8)), np.ones((2, 8)), np.ones(8)), "h_prev and c_prev must both have shape"),
        (lambda: reference.lstm_forward(np.ones((4, 3)), np.ones((3, 8)), np.ones((2, 8)), np.ones(7)), r"bias must have shape \(8,\); got shape \(7,\)"),
        (lambda: reference.cross_entropy(np.full((2, 3), 0.5), [0, 1]), "must be probabilities"),
        (lambda: reference.cross_entropy(np.zeros((2, 3)), [0, 3], from_logits=True), r"targets must lie in \[0, 3\)"),
        (lambda: reference.cross_entropy(np.zeros((2, 3)), [0], from_logits=True), r"targets must have shape \(2,\); got shape \(1,\)"),
        (lambda: reference.perplexity(-1.0), "mean_ce must be a finite, non-negative cross-entropy; got -1.0"),
        (lambda: reference.perplexity(float("nan")), "mean_ce must be a finite"),
        (lambda: reference.scaled_dot_product_attention(np.ones((2, 3)), np.ones((2, 4)), np.ones((2, 4))), "q and k must have the same last axis"),
        (lambda: reference.scaled_dot_product_attention(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)), mask=np.ones((2, 2))), "mask must be a boolean array"),
        (lambda: reference.scaled_dot_product_attention(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)), mask=np.ones((3, 3), bool)), "does not broadcast"),
        (lambda: reference.multi_head_attention(np.ones((2, 4)), np.ones((2, 4)), weights=[np.ones(1)] * 3), "weights must be a dict or a list of 8 arrays"),
        (lambda: reference.multi_head_attention(np.ones((2, 4)), np.ones((2, 4)), weights={"query_kernel": 1}), "weights is missing"),
        (lambda: reference.causal_mask(0), "length must be a positive integer; got 0"),
    ],
)
def test_validation_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_mha_kernel_shape_error_names_the_kernel():
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3)
    x = np.ones((1, 4, 8), dtype="float32")
    layer(x, x)
    with pytest.raises(ValueError, match=r"query_kernel must have shape \(6, heads, head_dim\); got shape \(8, 2, 3\)"):
        reference.multi_head_attention(np.ones((1, 4, 6)), x, weights=layer.get_weights())

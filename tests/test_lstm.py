"""Tests for llmft.lstm with tiny configs."""

import keras
import numpy as np
import pytest

from llmft import lstm, metrics

VOCAB = 50
to_numpy = keras.ops.convert_to_numpy


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return lstm.from_preset("tiny", vocab_size=VOCAB, num_layers=2)


def _ids(batch=2, length=12, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, length)).astype("int32")


def test_shapes_and_causality(model):
    x = _ids()
    logits = to_numpy(model(x))
    assert logits.shape == (2, 12, VOCAB)
    assert tuple(model.hidden_states(x).shape) == (2, 12, 32)
    y = x.copy()
    y[:, 6:] = (y[:, 6:] + 1) % VOCAB
    np.testing.assert_allclose(to_numpy(model(y))[:, :6], logits[:, :6], atol=1e-6)
    # Weights named as in the source article's model, so chapter 3 can point at them.
    assert [layer.name for layer in model.lstm_layers] == ["lstm_1", "lstm_2"]


def test_get_config_and_keras_file_round_trip(model, tmp_path):
    config = model.get_config()
    assert lstm.LSTMLanguageModel.from_config(config).get_config() == config
    path = tmp_path / "lstm.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = _ids()
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))


# Recorded per backend (their random streams differ); see tests/test_gpt.py.
EXPECTED_INITIAL = {"tensorflow": (3.911394, 6.851140), "jax": (3.911373, 6.250587)}


def test_seeded_initial_loss_regression():
    backend = keras.backend.backend()
    if backend not in EXPECTED_INITIAL:
        pytest.skip(f"no recorded values for the {backend} backend")
    keras.utils.set_random_seed(0)
    fresh = lstm.from_preset("tiny", vocab_size=VOCAB)
    x = (np.arange(40).reshape(2, 20) * 7) % VOCAB
    logits = to_numpy(fresh(x))
    loss, abs_sum = EXPECTED_INITIAL[backend]
    assert metrics.cross_entropy((x + 1) % VOCAB, logits) == pytest.approx(loss, abs=1e-5)
    assert float(np.abs(logits).sum()) == pytest.approx(abs_sum, rel=1e-4)


def test_loss_falls_on_a_repetitive_corpus():
    keras.utils.set_random_seed(0)
    small = lstm.from_preset("tiny", vocab_size=8)
    corpus = np.tile(np.arange(8), 60)
    x = np.stack([corpus[i : i + 16] for i in range(0, 400, 2)])
    y = np.stack([corpus[i + 1 : i + 17] for i in range(0, 400, 2)])
    small.compile(
        optimizer=keras.optimizers.Adam(2e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = small.evaluate(x, y, verbose=0)
    small.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert before > 1.8  # about log(8) = 2.08
    assert small.evaluate(x, y, verbose=0) < 0.5


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(vocab_size=0), "vocab_size"),
        (dict(embedding_dim=-1), "embedding_dim"),
        (dict(hidden_dim=2.5), "hidden_dim"),
        (dict(num_layers=0), "num_layers"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    config = dict(vocab_size=VOCAB, embedding_dim=8, hidden_dim=8)
    config.update(kwargs)
    with pytest.raises(ValueError, match=name) as info:
        lstm.LSTMLanguageModel(**config)
    assert f"got {config[name]!r}" in str(info.value)


def test_presets():
    with pytest.raises(ValueError, match="'huge'"):
        lstm.from_preset("huge", vocab_size=VOCAB)
    assert set(lstm.PRESETS) >= {"tiny", "small", "base"}
    assert lstm.from_preset("small", vocab_size=VOCAB, dropout=0.0).dropout == 0.0

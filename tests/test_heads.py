"""Tests for llmft.heads with tiny backbones."""

import warnings

import keras
import numpy as np
import pytest

from llmft import gpt, heads, lstm
from llmft.tokenizers import CharTokenizer
from toy_tasks import contains_token_task

VOCAB = 30
to_numpy = keras.ops.convert_to_numpy


def _classifier(kind="gpt", pooling="last", num_classes=3, seed=0, **backbone_kwargs):
    keras.utils.set_random_seed(seed)
    module = gpt if kind == "gpt" else lstm
    backbone = module.from_preset("tiny", vocab_size=VOCAB, **backbone_kwargs)
    return heads.SequenceClassifier(backbone, num_classes=num_classes, pooling=pooling)


def _padded(rows, length):
    ids = np.zeros((len(rows), length), "int32")  # pad id 0, right padding
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids


def _toy_task(n=128):
    return contains_token_task(n, vocab=VOCAB)


def _compile(model, learning_rate=1e-2):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


ROWS = [[5, 6, 7], [8, 9, 10, 11, 12], [13]]


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_output_shapes(kind, pooling):
    model = _classifier(kind, pooling)
    x = _padded(ROWS, 8)
    logits = model(x)
    assert tuple(logits.shape) == (3, 3)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert tuple(model.features(x).shape) == (3, 32)
    assert tuple(model.features([[1, 2, 3]]).shape) == (1, 32)  # lists work too


def test_pooling_weights():
    ids = _padded([[5, 6, 7], [8], []], 5)
    last = to_numpy(_classifier(pooling="last").pooling_weights(ids))
    np.testing.assert_array_equal(last, [[0, 0, 1, 0, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    mean = to_numpy(_classifier(pooling="mean").pooling_weights(ids))
    np.testing.assert_allclose(mean, [[1 / 3] * 3 + [0, 0], [1, 0, 0, 0, 0], [0] * 5])


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_last_pooling_uses_the_last_real_token(kind):
    model = _classifier(kind, "last")
    x = _padded(ROWS, 8)
    # The same as taking the hidden state at the last real position by hand.
    hidden = to_numpy(model.backbone.hidden_states(x))
    last = [len(row) - 1 for row in ROWS]
    expected = to_numpy(model.head(hidden[np.arange(3), last]))
    np.testing.assert_allclose(to_numpy(model(x)), expected, atol=1e-6)

    # More padding, or a longer neighbour in the batch, changes nothing.
    np.testing.assert_allclose(to_numpy(model(_padded(ROWS, 16))), to_numpy(model(x)), atol=1e-5)
    alone = to_numpy(model(_padded(ROWS[:1], 3)))
    np.testing.assert_allclose(alone, to_numpy(model(x))[:1], atol=1e-5)

    # Changing the last real token does change the logits.
    y = x.copy()
    y[0, 2] = 20
    assert np.abs(to_numpy(model(y))[0] - to_numpy(model(x))[0]).max() > 1e-4


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_mean_pooling_ignores_pads(kind):
    model = _classifier(kind, "mean")
    x = _padded(ROWS, 8)
    hidden = to_numpy(model.backbone.hidden_states(x))
    pooled = np.stack([hidden[i, : len(row)].mean(axis=0) for i, row in enumerate(ROWS)])
    np.testing.assert_allclose(to_numpy(model.features(x)), pooled, atol=1e-5)
    np.testing.assert_allclose(to_numpy(model(_padded(ROWS, 16))), to_numpy(model(x)), atol=1e-5)


def test_frozen_backbone_trains_only_the_head():
    model = _classifier("lstm", "mean", num_classes=2)
    x, y = _toy_task(n=16)
    model(x[:1])
    model.freeze_backbone()
    assert [w.path.split("/")[-2:] for w in model.trainable_weights] == [["head", "kernel"], ["head", "bias"]]
    backbone_before = [to_numpy(w).copy() for w in model.backbone.weights]
    head_before = [to_numpy(w).copy() for w in model.head.weights]
    _compile(model)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for before, w in zip(backbone_before, model.backbone.weights):
        np.testing.assert_array_equal(to_numpy(w), before)
    assert all(not np.array_equal(to_numpy(w), b) for w, b in zip(model.head.weights, head_before))
    model.unfreeze_backbone()
    # Everything except the backbone's unused next-token layer.
    frozen = {id(w) for w in model.weights} - {id(w) for w in model.trainable_weights}
    assert frozen == {id(w) for w in model.backbone.lm_head.weights}


def test_full_fine_tuning_trains_the_backbone_without_gradient_warnings():
    model = _classifier("lstm", "last", num_classes=2)
    x, y = _toy_task(n=16)
    model(x[:1])
    before = [to_numpy(w).copy() for w in model.backbone.lstm_layers[0].weights]
    _compile(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Gradients do not exist")
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    after = model.backbone.lstm_layers[0].weights
    assert all(not np.array_equal(to_numpy(w), b) for w, b in zip(after, before))


def test_frozen_backbone_runs_in_inference_mode():
    # A linear probe learns on fixed features: no dropout inside a frozen backbone.
    model = _classifier("gpt", "last", dropout=0.5)
    x = _padded(ROWS, 8)
    assert np.abs(to_numpy(model.features(x, training=True)) - to_numpy(model.features(x))).max() > 1e-3
    model.freeze_backbone()
    np.testing.assert_array_equal(to_numpy(model.features(x, training=True)), to_numpy(model.features(x)))


def test_loss_goes_down_on_a_toy_task():
    model = _classifier("gpt", "last", num_classes=2)
    x, y = _toy_task()
    _compile(model, learning_rate=2e-3)
    history = model.fit(x, y, batch_size=32, epochs=8, verbose=0).history["loss"]
    assert history[0] == pytest.approx(np.log(2), abs=0.1)  # small head init: ~log(K)
    assert min(history[-3:]) < 0.7 * history[0], history


@pytest.mark.parametrize("kind,pooling,freeze", [("gpt", "last", False), ("lstm", "mean", True)])
def test_save_and_load_reproduces_predictions(tmp_path, kind, pooling, freeze):
    model = _classifier(kind, pooling, num_classes=2)
    x, y = _toy_task(n=16)
    model(x[:1])
    if freeze:
        model.freeze_backbone()
    _compile(model)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "classifier.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, heads.SequenceClassifier)
    assert (loaded.pooling, loaded.num_classes) == (pooling, 2)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    # A frozen backbone stays frozen after loading.
    assert len(loaded.trainable_weights) == len(model.trainable_weights)


def test_classify_returns_probabilities_per_label():
    tok = CharTokenizer.train(["这家店很好吃", "服务太差了"])
    model = _classifier("gpt", "last", num_classes=2)
    texts = ["很好吃", "太差了", "好吃"]
    out = heads.classify(model, tok, texts, max_length=8, labels=["负面", "正面"], batch_size=2)
    assert len(out) == 3 and all(list(d) == ["负面", "正面"] for d in out)
    ids = tok.encode_batch(texts, max_length=8)["input_ids"]
    logits = to_numpy(model(ids)).astype("float64")
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose([list(d.values()) for d in out], expected, atol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        heads.classify(model, tok, texts, max_length=8, labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="texts"):
        heads.classify(model, tok, "很好吃", max_length=8, labels=["负面", "正面"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_classes=1), "num_classes"),
        (dict(num_classes=2.0), "num_classes"),
        (dict(num_classes=2, pooling="first"), "pooling"),
        (dict(num_classes=2, pad_id=-1), "pad_id"),
        (dict(num_classes=2, dropout=1.0), "dropout"),
    ],
)
def test_validation_errors(kwargs, match):
    backbone = gpt.from_preset("tiny", vocab_size=VOCAB)
    with pytest.raises(ValueError, match=match):
        heads.SequenceClassifier(backbone, **kwargs)


def test_backbone_without_hidden_states_is_rejected():
    with pytest.raises(ValueError, match="backbone"):
        heads.SequenceClassifier(keras.Sequential([keras.layers.Dense(2)]), num_classes=2)


def test_module_pooling_weights_match_the_classifier_and_validate():
    ids = np.array([[7, 8, 9, 0], [0, 0, 0, 0]], "int32")
    last = keras.ops.convert_to_numpy(heads.pooling_weights(ids, pooling="last"))
    mean = keras.ops.convert_to_numpy(heads.pooling_weights(ids, pooling="mean"))
    np.testing.assert_array_equal(last, [[0, 0, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_allclose(mean, [[1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="pooling must be one of"):
        heads.pooling_weights(ids, pooling="max")

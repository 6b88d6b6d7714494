"""Tests for llmft.lora on a tiny GPT classifier."""

import keras
import numpy as np
import pytest

from llmft import gpt, heads, lora, lstm
from toy_tasks import contains_token_task

VOCAB = 30
to_numpy = keras.ops.convert_to_numpy
LORA_NAMES = {"lora_kernel_a", "lora_kernel_b"}
ALL_PATHS = [
    f"block_{i}/{name}" for i in range(2) for name in ("attn/qkv", "attn/attn_out", "mlp_in", "mlp_out")
]


def _classifier(seed=0):
    keras.utils.set_random_seed(seed)
    model = heads.SequenceClassifier(gpt.from_preset("tiny", vocab_size=VOCAB), num_classes=2)
    model(_ids())  # build
    return model


def _ids(n=16, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (n, length)).astype("int32")
    ids[::2, 8:] = 0  # right padding on half of the rows
    return ids


def _labels(ids):
    return (ids == 5).any(axis=1).astype("int32")


def _fit(model, ids, epochs=1, learning_rate=1e-2):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model.fit(ids, _labels(ids), batch_size=8, epochs=epochs, verbose=0).history["loss"]


def _randomize_b(model, scale=0.05, seed=1):
    # Trained B is non-zero; a random one makes the LoRA update visible at once.
    rng = np.random.default_rng(seed)
    for layer in lora.dense_layers(model).values():
        if layer.lora_enabled:
            layer.lora_kernel_b.assign(scale * rng.standard_normal(layer.lora_kernel_b.shape))


def test_enable_lora_picks_layers_and_keeps_outputs():
    model = _classifier()
    x = _ids()
    before = to_numpy(model(x))
    assert lora.enable_lora(model, 4) == ALL_PATHS
    # B starts at zero: the adapted model computes exactly what it did before.
    np.testing.assert_array_equal(to_numpy(model(x)), before)
    qkv = lora.dense_layers(model)["block_0/attn/qkv"]
    assert tuple(qkv.lora_kernel_a.shape) == (32, 4) and tuple(qkv.lora_kernel_b.shape) == (4, 96)


def test_targets_match_by_path_suffix():
    assert lora.enable_lora(_classifier(), 2, targets=("qkv",)) == ["block_0/attn/qkv", "block_1/attn/qkv"]
    assert lora.enable_lora(_classifier(), 2, targets=["block_1/mlp_out"]) == ["block_1/mlp_out"]


def test_only_lora_weights_and_head_train():
    model = _classifier()
    lora.enable_lora(model, 4)
    trainable = model.trainable_weights
    assert {w.name for w in trainable} == LORA_NAMES | {"kernel", "bias"}
    head_ids = {id(w) for w in model.head.weights}
    assert all(w.name in LORA_NAMES or id(w) in head_ids for w in trainable)
    assert len(trainable) == 2 * len(ALL_PATHS) + 2

    before = {id(w): to_numpy(w).copy() for w in model.weights}
    _fit(model, _ids(), epochs=1)  # 2 steps: B moves in step 1, A from step 2
    trainable_ids = {id(w) for w in trainable}
    changed = {id(w) for w in model.weights if not np.array_equal(to_numpy(w), before[id(w)])}
    assert changed == trainable_ids


def test_trainable_fraction_is_small():
    model = _classifier()
    _, total_before, _ = lora.trainable_fraction(model)
    assert lora.trainable_fraction(model)[2] == 1.0
    lora.enable_lora(model, 2)
    trainable, total, fraction = lora.trainable_fraction(model)
    # r * (d_in + d_out) per layer: qkv 32->96, attn_out 32->32, mlp_in 32->128, mlp_out 128->32
    lora_params = 2 * 2 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
    head_params = 32 * 2 + 2
    assert trainable == lora_params + head_params
    assert total == total_before + lora_params
    assert fraction == trainable / total < 0.1


def test_merge_gives_same_outputs_and_plain_dense_layers():
    model = _classifier()
    x = _ids()
    lora.enable_lora(model, 4, alpha=8)  # scale alpha / rank = 2: the merge must apply it
    _randomize_b(model)
    adapted = to_numpy(model(x))
    assert np.abs(adapted - to_numpy(_classifier()(x))).max() > 1e-3  # LoRA did change the model

    assert lora.merge_lora(model) == ALL_PATHS
    np.testing.assert_allclose(to_numpy(model(x)), adapted, atol=1e-5)
    assert not any("lora" in w.name for w in model.weights)
    for layer in lora.dense_layers(model).values():
        assert not layer.lora_enabled and "lora_rank" not in layer.get_config()
    assert len(model.trainable_weights) == len(model.weights)  # an ordinary model again
    assert lora.merge_lora(model) == []
    assert lora.enable_lora(model, 2, targets=("qkv",)) == ["block_0/attn/qkv", "block_1/attn/qkv"]


def test_fine_tuned_lora_classifier_saves_and_merges_without_changing_predictions(tmp_path):
    model = _classifier()
    x = _ids()
    lora.enable_lora(model, 4)
    _fit(model, x, epochs=1)
    expected = model.predict(x, verbose=0)  # traces a predict function with LoRA

    path = tmp_path / "lora.keras"
    model.save(path)
    # compile=False: the saved optimizer state has slots for A and B that the
    # reloaded (merged) model doesn't have.
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    # Keras saves the merged kernel, not A and B: the reloaded model is merged.
    assert not any("lora" in w.name for w in loaded.weights)

    lora.merge_lora(model)  # predict must not reuse the function traced with LoRA
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)


def _toy_task(n=64):
    return contains_token_task(n, vocab=VOCAB)


def test_lora_loss_goes_down_on_a_toy_task():
    model = _classifier()
    x, y = _toy_task(n=128)
    lora.enable_lora(model, 4)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, batch_size=32, epochs=8, verbose=0).history["loss"]
    assert min(history[-3:]) < 0.7 * history[0], history


def test_enable_lora_after_freeze_backbone_still_trains_lora():
    model = _classifier()
    model.freeze_backbone()
    lora.enable_lora(model, 2, targets=("qkv",))
    assert {w.name for w in model.trainable_weights} == LORA_NAMES | {"kernel", "bias"}
    model.unfreeze_backbone()  # back to full fine-tuning (LoRA weights included)
    assert len(model.trainable_weights) == len(model.weights)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(rank=0), "rank"),
        (dict(rank=2.0), "rank"),
        (dict(rank=2, targets=("nope",)), "nope"),
        (dict(rank=2, targets=()), "targets"),
        (dict(rank=2, targets="qkv"), "targets"),
        (dict(rank=2, alpha=-1), "alpha"),
    ],
)
def test_enable_lora_validation(kwargs, match):
    model = _classifier()
    with pytest.raises(ValueError, match=match):
        lora.enable_lora(model, **kwargs)
    assert not any("lora" in w.name for w in model.weights)  # nothing half-done


def test_enable_lora_errors_on_unbuilt_twice_and_lstm():
    unbuilt = heads.SequenceClassifier(gpt.from_preset("tiny", vocab_size=VOCAB), num_classes=2)
    with pytest.raises(ValueError, match="built"):
        lora.enable_lora(unbuilt, 2)
    with pytest.raises(ValueError, match="no weights"):
        lora.trainable_fraction(unbuilt)
    model = _classifier()
    lora.enable_lora(model, 2, targets=("qkv",))
    with pytest.raises(ValueError, match="already enabled"):
        lora.enable_lora(model, 2)
    lstm_model = heads.SequenceClassifier(lstm.from_preset("tiny", vocab_size=VOCAB), num_classes=2)
    lstm_model(_ids())
    with pytest.raises(ValueError, match="matches no Dense layer"):
        lora.enable_lora(lstm_model, 2)  # its only Dense is the unused lm_head

import json

import keras
import numpy as np
import pytest

from llmft import gpt, train


def tiny_model(vocab=20):
    keras.utils.set_random_seed(0)
    return gpt.from_preset("tiny", vocab_size=vocab, context_length=16)


def stream(n=3000, vocab=20):
    # A deterministic, learnable stream: counting modulo the vocabulary.
    return (np.arange(n) % (vocab - 1) + 1).astype(np.int32)


def test_schedule_warmup_then_cosine():
    s = train.WarmupCosine(1.0, warmup_steps=10, total_steps=110, final_ratio=0.1)
    values = [float(s(i)) for i in (0, 9, 10, 60, 110, 500)]
    assert values[0] == pytest.approx(0.1) and values[1] == pytest.approx(1.0)
    assert values[2] == pytest.approx(1.0) and values[3] == pytest.approx(0.55)
    assert values[4] == pytest.approx(0.1) and values[5] == pytest.approx(0.1)
    assert train.WarmupCosine.from_config(s.get_config()).get_config() == s.get_config()


def test_window_batches_are_shifted_and_reproducible():
    ids = stream()
    a = list(train.window_batches(ids, batch_size=4, context_length=8, seed=1, num_steps=3))
    b = list(train.window_batches(ids, batch_size=4, context_length=8, seed=1, start_step=2, num_steps=1))
    x, y = (np.asarray(t) for t in a[0])  # tf.data tensors on TensorFlow, arrays elsewhere
    assert x.shape == y.shape == (4, 8)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    assert not np.array_equal(np.asarray(a[0][0]), np.asarray(a[1][0]))  # each step draws new windows
    np.testing.assert_array_equal(np.asarray(a[2][0]), np.asarray(b[0][0]))  # batch of step 2 is the same on resume


def test_token_stream_appends_eos():
    from llmft.tokenizers import CharTokenizer

    tok = CharTokenizer.train(["你好", "世界"])
    ids = train.token_stream(["你好", "世界"], tok)
    assert ids.tolist() == tok.encode("你好", add_eos=True) + tok.encode("世界", add_eos=True)


def test_loss_goes_down_and_history_is_complete(capsys):
    ids = stream()
    model, history = train.pretrain(tiny_model(), ids, ids[:600], steps=60, batch_size=8, eval_every=20,
                                    warmup_steps=5, learning_rate=1e-2, eval_batches=2)
    assert [h["step"] for h in history] == [20, 40, 60]
    assert history[-1]["tokens"] == 60 * 8 * 16
    assert history[-1]["val_loss"] < history[0]["val_loss"] < np.log(20)
    assert len(capsys.readouterr().out.strip().splitlines()) == 3  # one line per evaluation


def test_resume_from_checkpoint_continues_the_run(tmp_path):
    ids = stream()
    kwargs = dict(batch_size=8, eval_every=10, warmup_steps=2, learning_rate=1e-2, eval_batches=1, verbose=False)
    _, first = train.pretrain(tiny_model(), ids, ids[:400], steps=20, checkpoint_dir=tmp_path, **kwargs)
    info = json.loads((tmp_path / "latest.json").read_text())
    assert info["step"] == 20 and (tmp_path / info["checkpoint"]).is_file()
    # A second call with more steps resumes at step 20 and keeps the history.
    model, history = train.pretrain(tiny_model(), ids, ids[:400], steps=40, checkpoint_dir=tmp_path, **kwargs)
    assert [h["step"] for h in history] == [10, 20, 30, 40]
    assert history[:2] == first
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step-0000030.keras", "step-0000040.keras"]


def test_latest_points_to_complete_checkpoint_only(tmp_path):
    assert train.latest_checkpoint(tmp_path) is None
    (tmp_path / "latest.json").write_text(json.dumps({"checkpoint": "step-0000010.keras", "step": 10, "history": []}))
    with pytest.raises(ValueError, match="missing"):
        train.latest_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 30, "eval_every": 20}, "multiple of eval_every"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"warmup_steps": 100, "steps": 100, "eval_every": 10}, "warmup_steps"),
        ({"batch_size": 2.5}, "batch_size"),
    ],
)
def test_bad_config_is_a_clear_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        train.pretrain(tiny_model(), stream(), **overrides)


def test_too_short_stream_is_a_clear_error():
    with pytest.raises(ValueError, match="train_ids must hold more than"):
        train.pretrain(tiny_model(), np.arange(10, dtype=np.int32) % 19 + 1, steps=10, eval_every=10, warmup_steps=1)
    with pytest.raises(ValueError, match="1-D"):
        train.pretrain(tiny_model(), np.zeros((4, 100), dtype=np.int32), steps=10, eval_every=10, warmup_steps=1)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    # Weight decay on: a resumed optimizer must keep excluding LayerNorm and biases.
    ids = stream()
    kwargs = dict(batch_size=8, eval_every=10, warmup_steps=2, learning_rate=1e-2, eval_batches=1,
                  weight_decay=0.1, verbose=False)
    straight, _ = train.pretrain(tiny_model(), ids, ids[:400], steps=20, **kwargs)
    train.pretrain(tiny_model(), ids, ids[:400], steps=20, checkpoint_dir=tmp_path, **kwargs)
    # Stop after the first evaluation: keep only the step-10 checkpoint, as if killed there.
    (tmp_path / "step-0000020.keras").unlink()
    info = json.loads((tmp_path / "latest.json").read_text())
    info.update(checkpoint="step-0000010.keras", step=10, history=info["history"][:1])
    (tmp_path / "latest.json").write_text(json.dumps(info))
    resumed, _ = train.pretrain(tiny_model(), ids, ids[:400], steps=20, checkpoint_dir=tmp_path, **kwargs)
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, err_msg=a.path)


def test_extra_callbacks_see_every_training_batch():
    class Count(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches, self.epochs = 0, []

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(epoch)

    count = Count()
    _, history = train.pretrain(tiny_model(), stream(), steps=30, batch_size=4, eval_every=10, warmup_steps=2,
                                verbose=False, callbacks=[count])
    assert count.batches == 30 and count.epochs == [0, 1, 2]  # one Keras "epoch" per evaluation
    assert [h["step"] for h in history] == [10, 20, 30]  # the book's own callback still ran


def test_tensorboard_callback_logs_the_batch_loss(tmp_path):
    pytest.importorskip("tensorboard")
    import tensorflow as tf

    board = keras.callbacks.TensorBoard(str(tmp_path), update_freq=1, write_graph=False)
    _, history = train.pretrain(tiny_model(), stream(), steps=20, batch_size=4, eval_every=10, warmup_steps=2,
                                verbose=False, callbacks=[board])
    steps = [e.step for f in (tmp_path / "train").glob("events.out.tfevents.*")
             for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value if v.tag == "batch_loss"]
    assert steps == list(range(1, 21))


@pytest.mark.parametrize("callbacks", [None, keras.callbacks.History(), ["not a callback"]])
def test_bad_callbacks_are_a_clear_error(callbacks):
    with pytest.raises(ValueError, match="callbacks must be a list"):
        train.pretrain(tiny_model(), stream(), steps=10, eval_every=10, warmup_steps=1, callbacks=callbacks)


tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="build_before_fit only acts on TensorFlow (Keras builds first elsewhere)")


def _classifier_fit():
    from llmft import bench, finetune, heads

    keras.utils.set_random_seed(0)
    clf = heads.SequenceClassifier(tiny_model(vocab=30), num_classes=2)
    rng = np.random.default_rng(0)
    x, y = rng.integers(1, 30, (40, 12)).astype("int32"), rng.integers(0, 2, 40).astype("int32")
    traces = bench.count_step_traces(clf)
    finetune.fit_classifier(clf, finetune.batches(x, y, batch_size=8, shuffle=True), finetune.batches(x, y, batch_size=8),
                            epochs=2, learning_rate=1e-3, steps_per_epoch=5, verbose=False)
    return clf, traces


def _pretrain_fit():
    from llmft import bench

    model = tiny_model()  # not built yet: build_before_fit builds it first
    traces = bench.count_step_traces(model)
    train.pretrain(model, stream(), steps=10, batch_size=4, eval_every=5, warmup_steps=1, verbose=False)
    return model, traces


@tensorflow_only
@pytest.mark.parametrize("run", [_classifier_fit, _pretrain_fit], ids=["fit_classifier", "pretrain"])
def test_the_training_step_is_traced_once_and_the_weights_are_unchanged(run, monkeypatch):
    from llmft import finetune

    model, traces = run()
    assert len(traces) == 1
    # Without the early build, Keras creates the optimizer's (and the metrics') variables in the
    # first trace, and tf.function traces again; training itself is the same.
    for module in (train, finetune):
        monkeypatch.setattr(module, "build_before_fit", lambda model, data: None)
    lazy, lazy_traces = run()
    assert len(lazy_traces) == 2
    assert [w.shape for w in model.weights] == [w.shape for w in lazy.weights]  # paths differ by Keras' name counter
    for a, b in zip(model.weights, lazy.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


def test_build_before_fit_needs_a_compiled_model():
    with pytest.raises(ValueError, match="model must be compiled"):
        train.build_before_fit(tiny_model(), None)

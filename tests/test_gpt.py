"""Tests for llmft.gpt with tiny configs."""

import keras
import numpy as np
import pytest

from llmft import gpt, metrics

VOCAB = 50
to_numpy = keras.ops.convert_to_numpy


def _ids(batch=2, length=20, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, length)).astype("int32")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return gpt.from_preset("tiny", vocab_size=VOCAB)


def test_output_shapes(model):
    x = _ids()
    assert tuple(model(x).shape) == (2, 20, VOCAB)
    assert tuple(model.hidden_states(x).shape) == (2, 20, 32)


def test_hidden_states_work_in_a_functional_model(model):
    # How a classification head can sit on the backbone (chapter 5).
    inputs = keras.Input(shape=(None,), dtype="int32")
    head = keras.layers.Dense(3)
    classifier = keras.Model(inputs, head(model.hidden_states(inputs)[:, -1]))
    x = _ids()
    expected = to_numpy(head(model.hidden_states(x)[:, -1]))
    np.testing.assert_allclose(to_numpy(classifier(x)), expected, atol=1e-6)
    assert tuple(model.hidden_states([[1, 2, 3]]).shape) == (1, 3, 32)  # lists work too


def test_changing_future_tokens_leaves_earlier_logits_unchanged(model):
    x = _ids(batch=1)
    y = x.copy()
    y[:, 10:] = (y[:, 10:] + 1) % VOCAB
    a, b = to_numpy(model(x)), to_numpy(model(y))
    np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert np.abs(a[:, 10:] - b[:, 10:]).max() > 1e-3


def test_logits_at_equals_the_full_pass_at_each_rows_position(model):
    x = _ids(batch=3)
    positions = np.array([0, 7, 19])
    full = to_numpy(model(x))[np.arange(3), positions]
    np.testing.assert_allclose(to_numpy(model.logits_at(x, positions)), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_logits_equal_full_pass(model):
    x = _ids(length=32)  # the whole context, so the last step fills the cache
    full = to_numpy(model(x))
    cache = model.init_cache(2)
    logits, cache = model.call_with_cache(x[:, :7], cache, 0)  # prompt in one go
    steps = [to_numpy(logits)]
    for i in range(7, 32):  # then one token at a time
        logits, cache = model.call_with_cache(x[:, i : i + 1], cache, i)
        steps.append(to_numpy(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4)
    assert tuple(cache.shape) == (2, 2, 2, 2, 32, 16)  # (B, layers, k/v, H, S, D)


def test_cache_rejects_writing_past_its_end(model):
    cache = model.init_cache(1, max_length=8)
    with pytest.raises(ValueError, match="cache_index"):
        model.call_with_cache(_ids(batch=1, length=2), cache, 7)
    with pytest.raises(ValueError, match="max_length"):
        model.init_cache(1, max_length=33)


def test_get_config_round_trip(model):
    config = model.get_config()
    assert config["vocab_size"] == VOCAB and config["mlp_dim"] == 128
    assert gpt.GPT.from_config(config).get_config() == config


def test_keras_file_round_trip_gives_identical_outputs(model, tmp_path):
    x = _ids()
    path = tmp_path / "gpt.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, gpt.GPT)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))


def test_tied_embeddings_share_the_weight_matrix(model):
    x = _ids()
    hidden = to_numpy(model.hidden_states(x))
    table = to_numpy(model.token_embedding.embeddings)  # (V, C)
    np.testing.assert_allclose(to_numpy(model(x)), hidden @ table.T, atol=1e-5)
    untied = gpt.from_preset("tiny", vocab_size=VOCAB, tie_embeddings=False)
    untied(x)
    # Untying adds exactly one (C, V) output matrix.
    assert untied.count_params() - model.count_params() == 32 * VOCAB
    assert not any(tuple(w.shape) == (32, VOCAB) for w in model.weights)


def test_attention_weights_are_causal_distributions(model):
    weights = model.attention_weights(_ids(length=12))
    assert len(weights) == 2
    for w in weights:
        assert w.shape == (2, 2, 12, 12)  # (B, heads, T, T)
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.triu(w, k=1) == 0)  # no weight on future tokens
        rows, cols = np.tril_indices(12)
        assert np.all(w[..., rows, cols] > 0)  # and some on every earlier one


# Initial loss and sum(|logits|) of from_preset("tiny", vocab_size=50) after
# keras.utils.set_random_seed(0). Random streams differ between backends.
# Recompute after an intended change to initialisation or architecture.
EXPECTED_INITIAL = {"tensorflow": (3.920787, 196.0473), "jax": (3.938761, 186.2645)}


def test_seeded_initial_loss_and_logits_regression():
    backend = keras.backend.backend()
    if backend not in EXPECTED_INITIAL:
        pytest.skip(f"no recorded values for the {backend} backend")
    keras.utils.set_random_seed(0)
    fresh = gpt.from_preset("tiny", vocab_size=VOCAB)
    x = (np.arange(40).reshape(2, 20) * 7) % VOCAB
    logits = to_numpy(fresh(x))
    loss, abs_sum = EXPECTED_INITIAL[backend]
    # Close to log(50) = 3.912: small initial weights give near-uniform output.
    assert metrics.cross_entropy((x + 1) % VOCAB, logits) == pytest.approx(loss, abs=1e-4)
    assert float(np.abs(logits).sum()) == pytest.approx(abs_sum, rel=1e-4)


def test_loss_falls_on_a_repetitive_corpus():
    keras.utils.set_random_seed(0)
    small = gpt.from_preset("tiny", vocab_size=8, context_length=16)
    corpus = np.tile(np.arange(8), 60)
    x = np.stack([corpus[i : i + 16] for i in range(0, 400, 2)])
    y = np.stack([corpus[i + 1 : i + 17] for i in range(0, 400, 2)])
    small.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = small.evaluate(x, y, verbose=0)
    small.fit(x, y, batch_size=16, epochs=3, verbose=0)  # 39 steps
    after = small.evaluate(x, y, verbose=0)
    assert before > 1.8  # about log(8) = 2.08
    assert after < 0.3


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(hidden_dim=30, num_heads=4), "hidden_dim"),
        (dict(num_layers=0), "num_layers"),
        (dict(vocab_size=-3), "vocab_size"),
        (dict(context_length=0), "context_length"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(mlp_dim=0), "mlp_dim"),
        (dict(num_heads=2.0), "num_heads"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    config = dict(vocab_size=VOCAB, context_length=8, num_layers=1, num_heads=2, hidden_dim=8)
    config.update(kwargs)
    with pytest.raises(ValueError, match=name) as info:
        gpt.GPT(**config)
    assert f"got {config[name]!r}" in str(info.value)


def test_sequences_longer_than_the_context_are_rejected(model):
    with pytest.raises(ValueError, match="context_length=32.*got length 33"):
        model(_ids(length=33))
    with pytest.raises(ValueError, match="token_ids"):
        model.attention_weights(np.zeros(5, "int32"))


def test_presets():
    with pytest.raises(ValueError, match="'huge'"):
        gpt.from_preset("huge", vocab_size=VOCAB)
    small = gpt.from_preset("small", vocab_size=5000)
    small.build((None, small.context_length))
    assert small.context_length == 128
    assert 1_000_000 <= small.count_params() <= 3_000_000
    assert gpt.from_preset("tiny", vocab_size=VOCAB, num_layers=3).num_layers == 3


def test_compiled_cache_step_matches_eager_and_is_traced_once(model):
    # TensorFlow: tf.function concrete functions; JAX: one jax.jit for the single-token step.
    x = _ids(batch=1, length=12)
    cache = model.init_cache(1, 16)
    eager, eager_cache = model.call_with_cache(x[:, :4], cache, 0, compiled=False)
    fast, fast_cache = model.call_with_cache(x[:, :4], cache, 0)
    np.testing.assert_allclose(to_numpy(fast), to_numpy(eager), atol=1e-5)
    compilations = []  # JAX: how many shapes the one-token step has compiled so far
    for i in range(4, 12):
        eager, eager_cache = model.call_with_cache(x[:, i : i + 1], eager_cache, i, compiled=False)
        fast, fast_cache = model.call_with_cache(x[:, i : i + 1], fast_cache, i)
        np.testing.assert_allclose(to_numpy(fast), to_numpy(eager), atol=1e-5)
        step = model.__dict__.get("_llmft_jax_jit", {}).get("_cached_forward")
        if hasattr(step, "_cache_size"):  # jax's (private) count of compilations
            compilations.append(step._cache_size())
    np.testing.assert_allclose(to_numpy(fast_cache), to_numpy(eager_cache), atol=1e-5)
    if keras.backend.backend() == "tensorflow":
        functions = dict(model.__dict__["_llmft_cached_calls"])
        model.call_with_cache(x[:, :3], model.init_cache(1, 16), 0)  # a new sequence, another length
        assert model.__dict__["_llmft_cached_calls"] == functions  # the same two functions, reused
    elif keras.backend.backend() == "jax":
        assert "_cached_forward" in model.__dict__["_llmft_jax_jit"]
        # Other tests share this model (other cache shapes), so count only what
        # these steps added: the first may compile, the other positions reuse it.
        assert len(set(compilations)) <= 1, compilations


def test_compiled_cache_step_sees_lora_weights_added_after_the_first_trace():
    keras.utils.set_random_seed(1)
    fresh = gpt.from_preset("tiny", vocab_size=VOCAB)
    x = _ids(batch=1, length=6)
    _, cache = fresh.call_with_cache(x[:, :5], fresh.init_cache(1), 0)  # prompt, traced without LoRA
    fresh.call_with_cache(x[:, 5:], cache, 5)  # the one-token step, compiled without LoRA
    for block in fresh.blocks:
        block.attn.qkv.enable_lora(2)
        block.attn.qkv.lora_kernel_b.assign(np.full(block.attn.qkv.lora_kernel_b.shape, 0.05, "float32"))
    full = to_numpy(fresh(x))[:, -1]
    logits, _ = fresh.call_with_cache(x, fresh.init_cache(1), 0)
    np.testing.assert_allclose(to_numpy(logits)[:, -1], full, atol=1e-4)
    _, cache = fresh.call_with_cache(x[:, :5], fresh.init_cache(1), 0)
    step, _ = fresh.call_with_cache(x[:, 5:], cache, 5)
    np.testing.assert_allclose(to_numpy(step)[:, -1], full, atol=1e-4)


@pytest.mark.parametrize("compiled", [True, False])
def test_rows_at_their_own_positions_equal_the_full_pass(compiled):
    # Three rows of one cache, each its own sequence: row 0 starts at once, row 1 two steps
    # later, row 2 first decodes another (stale) sequence, then starts over at slot 0.
    keras.utils.set_random_seed(3)
    fresh = gpt.from_preset("tiny", vocab_size=VOCAB)
    seqs, stale = _ids(batch=3, length=12, seed=1), _ids(batch=1, length=6, seed=2)[0]
    full = to_numpy(fresh(seqs))  # (3, 12, V)
    cache = fresh.init_cache(3, 16)
    starts = {0: 0, 1: 2, 2: 6}  # the step at which each row feeds its sequence's first token
    for step in range(18):
        where = np.array([max(step - starts[b], 0) if step - starts[b] < 12 else 0 for b in range(3)])
        ids = seqs[np.arange(3), where]
        if step < 6:  # row 2: the stale sequence, in slots 0..5
            where[2], ids[2] = step, stale[step]
        logits, cache = fresh.call_rows_with_cache(ids, cache, where, compiled=compiled)
        for b in range(3):
            if 0 <= step - starts[b] < 12:
                np.testing.assert_allclose(to_numpy(logits)[b], full[b, step - starts[b]], atol=1e-5)
    assert tuple(cache.shape) == (3, 2, 2, 2, 16, 16)


@pytest.mark.parametrize("compiled", [True, False])
def test_prefilled_rows_continue_like_the_full_pass(compiled):
    # Rows 0 and 2 take 6 and 3 tokens in one prefill (row 2's right-padded with ids that its
    # later steps never read), row 3 takes 8 in another, after every row decoded a stale
    # sequence of 10 tokens, which row 1 goes on with.
    keras.utils.set_random_seed(3)
    fresh = gpt.from_preset("tiny", vocab_size=VOCAB)
    seqs = _ids(batch=3, length=12, seed=1)
    full = to_numpy(fresh(seqs))
    cache = fresh.init_cache(4, 16)
    for t in range(10):
        _, cache = fresh.call_rows_with_cache(np.full(4, 7), cache, np.full(4, t), compiled=compiled)
    before = to_numpy(cache)
    cache = fresh.prefill_rows(np.stack([seqs[0, :6], np.r_[seqs[1, :3], 9, 9, 9]]), cache, [0, 2],
                               compiled=compiled)
    cache = fresh.prefill_rows(seqs[2:3, :8], cache, np.array([3]), compiled=compiled)
    after = to_numpy(cache)
    np.testing.assert_array_equal(after[1], before[1])  # a row not prefilled is left as it was
    assert np.abs(before[0, :, :, :, 6:10]).max() > 0
    np.testing.assert_array_equal(after[0, :, :, :, 6:], 0)  # a prefilled row's later slots become zeros
    where = np.array([6, 10, 3, 8])
    for step in range(3):
        ids = np.array([seqs[0, 6 + step], 7, seqs[1, 3 + step], seqs[2, 8 + step]])
        logits, cache = fresh.call_rows_with_cache(ids, cache, where + step, compiled=compiled)
        for b, (s, p) in {0: (0, 6), 2: (1, 3), 3: (2, 8)}.items():
            np.testing.assert_allclose(to_numpy(logits)[b], full[s, p + step], atol=1e-5)


def test_prefill_sees_lora_weights_added_after_the_first_trace():
    keras.utils.set_random_seed(1)
    fresh = gpt.from_preset("tiny", vocab_size=VOCAB)
    x = _ids(batch=2, length=5)

    def last_logits():
        cache = fresh.prefill_rows(x[:, :4], fresh.init_cache(2, 8), [0, 1])
        return to_numpy(fresh.call_rows_with_cache(x[:, 4], cache, np.full(2, 4))[0])

    last_logits()  # traced without LoRA
    for block in fresh.blocks:
        block.attn.qkv.enable_lora(2)
        block.attn.qkv.lora_kernel_b.assign(np.full(block.attn.qkv.lora_kernel_b.shape, 0.05, "float32"))
    np.testing.assert_allclose(last_logits(), to_numpy(fresh(x))[:, -1], atol=1e-4)


@pytest.mark.parametrize("ids, rows, cache_shape, message", [
    ([1, 2], [0], (1, 2, 2, 2, 8, 16), "token_ids must be a 2-D array"),
    ([[1.5]], [0], (1, 2, 2, 2, 8, 16), "token_ids must be a 2-D array of integer ids"),
    ([[1] * 9], [0], (1, 2, 2, 2, 8, 16), r"1 <= T <= 8 \(the cache length\); got shape \(1, 9\)"),
    ([[1], [2]], [0, 0], (2, 2, 2, 2, 8, 16), r"rows must be 2 distinct integers in \[0, 2\).*got \[0, 0\]"),
    ([[1], [2]], [0, 2], (2, 2, 2, 2, 8, 16), "rows must be 2 distinct integers"),
    ([[1], [2]], [0], (2, 2, 2, 2, 8, 16), "rows must be 2 distinct integers"),
    ([[1]], [0], (1, 2, 2, 8, 16), "cache must come from init_cache"),
])
def test_prefill_rejects_bad_arguments(model, ids, rows, cache_shape, message):
    with pytest.raises(ValueError, match=message):
        model.prefill_rows(np.array(ids), np.zeros(cache_shape, "float32"), np.array(rows, "int64"))


def test_compiled_rows_step_sees_lora_weights_added_after_the_first_trace():
    keras.utils.set_random_seed(1)
    fresh = gpt.from_preset("tiny", vocab_size=VOCAB)
    x = _ids(batch=2, length=5)

    def last_logits():
        cache = fresh.init_cache(2, 8)
        for t in range(5):
            logits, cache = fresh.call_rows_with_cache(x[:, t], cache, np.full(2, t))
        return to_numpy(logits)

    last_logits()  # traced and compiled without LoRA
    for block in fresh.blocks:
        block.mlp_in.enable_lora(2)
        block.mlp_in.lora_kernel_b.assign(np.full(block.mlp_in.lora_kernel_b.shape, 0.05, "float32"))
    np.testing.assert_allclose(last_logits(), to_numpy(fresh(x))[:, -1], atol=1e-4)


@pytest.mark.parametrize("ids, positions, cache_shape, message", [
    ([[1]], [0], (1, 2, 2, 2, 8, 16), "token_ids must be a 1-D array"),
    ([], [], (0, 2, 2, 2, 8, 16), "token_ids must be a 1-D array"),
    ([1.5], [0], (1, 2, 2, 2, 8, 16), "token_ids must be a 1-D array of integer ids"),
    ([1, 2], [0, 1], (1, 2, 2, 2, 8, 16), r"cache must come from init_cache\(2, ...\)"),
    ([1, 2], [0, 8], (2, 2, 2, 2, 8, 16), r"positions must be 2 integers in \[0, 8\).*got \[0, 8\]"),
    ([1, 2], [0, -1], (2, 2, 2, 2, 8, 16), "positions must be 2 integers"),
    ([1, 2], [0], (2, 2, 2, 2, 8, 16), "positions must be 2 integers"),
])
def test_rows_step_rejects_bad_arguments(model, ids, positions, cache_shape, message):
    with pytest.raises(ValueError, match=message):
        model.call_rows_with_cache(np.array(ids), np.zeros(cache_shape, "float32"), np.array(positions, "int64"))


def test_cache_rejects_a_cache_of_the_wrong_rank(model):
    with pytest.raises(ValueError, match="cache"):
        model.call_with_cache(_ids(batch=1, length=2), np.zeros((1, 2, 2, 32, 16), "float32"), 0)


def test_attention_gradient_has_no_slice_gradients():
    # Taking q, k, v as three slices of one tensor makes three full-size
    # zero-padded gradients (StridedSliceGrad) that are then summed;
    # unstacking makes one stack (~10% of a no-XLA step of the ~5M bench
    # config, measured in commit 56c2b4a); this guards the graph shape.
    if keras.backend.backend() != "tensorflow":
        pytest.skip("inspects a TensorFlow graph")
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    small = gpt.from_preset("tiny", vocab_size=VOCAB)
    small.build((None, small.context_length))
    x = tf.constant(_ids())

    @tf.function
    def grads(ids):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(small(ids, training=True))
        return tape.gradient(loss, small.trainable_variables)

    ops_used = {op.type for op in grads.get_concrete_function(x).graph.get_operations()}
    assert "MatMul" in ops_used  # the graph really holds the step
    assert "StridedSliceGrad" not in ops_used, sorted(ops_used)


def test_gelu_is_keras_gelu_in_float32_and_upcasts_bfloat16():
    # float32 (every chapter): Keras' own exact GELU, value and gradient bit
    # for bit. bfloat16: computed in float32 and cast back (make bench's
    # train.gelu section times why).
    x = np.linspace(-6, 6, 241, dtype="float32")
    ref = keras.activations.gelu
    assert np.array_equal(to_numpy(gpt.gelu(x)), to_numpy(ref(x)))
    half = keras.ops.cast(x, "bfloat16")
    out = gpt.gelu(half)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        expected = tf.cast(ref(tf.cast(half, "float32")), "bfloat16")
        assert np.array_equal(to_numpy(tf.cast(out, "float32")), to_numpy(tf.cast(expected, "float32")))
        for dtype in ("float32", "bfloat16"):
            t = tf.cast(x, dtype)
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(t)
                ours, keras_own = gpt.gelu(t), ref(tf.cast(t, "float32"))
            g_ours = tf.cast(tape.gradient(ours, t), "float32").numpy()
            g_ref = tape.gradient(keras_own, t).numpy()
            if dtype == "float32":
                assert np.array_equal(g_ours, g_ref)
            else:  # the float32 gradient rounded once to bfloat16
                np.testing.assert_allclose(g_ours, g_ref, rtol=2**-7, atol=1e-6)
    # the blocks use it, and it survives a config round trip
    block = gpt.TransformerBlock(hidden_dim=8, num_heads=2, mlp_dim=32)
    assert block.mlp_in.activation is gpt.gelu
    dense = keras.layers.Dense.from_config(block.mlp_in.get_config())
    assert dense.activation is gpt.gelu

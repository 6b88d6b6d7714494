"""Tests for llmft.sampling: filters, strategies, KV cache, stop ids, validation."""

import keras
import numpy as np
import pytest

from llmft import gpt, lstm, sampling

VOCAB = 50
PROMPT = [3, 14, 15, 9, 26]


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return gpt.from_preset("tiny", vocab_size=VOCAB)  # context_length 32


class FixedLogits:
    """A stand-in model whose next-token logits never change."""

    def __init__(self, logits):
        self.logits = np.asarray(logits, dtype="float32")

    def __call__(self, ids, training=False):
        return np.broadcast_to(self.logits, (*np.shape(ids), self.logits.size))


# -- filters ---------------------------------------------------------------

def test_top_k_filter_keeps_the_k_largest():
    logits = np.array([1.0, 4.0, 3.0, -2.0])
    assert sampling.top_k_filter(logits, 2).tolist() == [-np.inf, 4.0, 3.0, -np.inf]
    np.testing.assert_array_equal(sampling.top_k_filter(logits, 4), logits)
    np.testing.assert_array_equal(sampling.top_k_filter(logits, 10), logits)
    # Ties: exactly k survive, lower index first (like argmax).
    assert sampling.top_k_filter([2.0, 5.0, 5.0], 1).tolist() == [-np.inf, 5.0, -np.inf]
    # Works row by row on a batch.
    rows = sampling.top_k_filter([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]], 1)
    assert np.isfinite(rows).tolist() == [[False, False, True], [True, False, False]]


def test_top_p_filter_keeps_the_nucleus():
    logits = np.log([0.2, 0.5, 0.3])  # unsorted on purpose
    kept = lambda p: np.isfinite(sampling.top_p_filter(logits, p)).tolist()  # noqa: E731
    assert kept(0.4) == [False, True, False]  # 0.5 alone reaches 0.4
    assert kept(0.7) == [False, True, True]  # 0.5 + 0.3
    assert kept(0.85) == [True, True, True]
    assert kept(1e-9) == [False, True, False]  # the top token always survives
    np.testing.assert_array_equal(sampling.top_p_filter(logits, 1.0), logits)
    np.testing.assert_allclose(sampling.top_p_filter(logits, 0.7)[1:], logits[1:])


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_top_k_filter_rejects_bad_k(k):
    with pytest.raises(ValueError, match=f"k must.*got {k!r}"):
        sampling.top_k_filter([1.0, 2.0], k)


@pytest.mark.parametrize("p", [0, -0.1, 1.01])
def test_top_p_filter_rejects_bad_p(p):
    with pytest.raises(ValueError, match=f"p must.*got {p!r}"):
        sampling.top_p_filter([1.0, 2.0], p)


# -- sampling on a fixed distribution -----------------------------------------

def test_sampling_follows_the_filtered_distribution():
    fixed = FixedLogits(np.log([0.1, 0.2, 0.3, 0.4]))
    tokens = sampling.generate(fixed, [0], 4000, temperature=1.0, seed=0)
    frequencies = np.bincount(tokens, minlength=4) / 4000
    np.testing.assert_allclose(frequencies, [0.1, 0.2, 0.3, 0.4], atol=0.03)
    tokens = sampling.generate(fixed, [0], 500, top_k=2, seed=0)
    assert set(tokens) == {2, 3}
    tokens = sampling.generate(fixed, [0], 500, top_p=0.65, seed=0)  # 0.4 + 0.3 >= 0.65
    assert set(tokens) == {2, 3}
    # A low temperature sharpens towards the argmax, a high one flattens.
    cold = sampling.generate(fixed, [0], 500, temperature=0.1, seed=0)
    hot = sampling.generate(fixed, [0], 500, temperature=10.0, seed=0)
    assert np.mean(np.array(cold) == 3) > 0.9
    assert np.mean(np.array(hot) == 0) > 0.17  # 0.23 expected, 0.1 at temperature 1


# -- generation with the GPT ------------------------------------------------------

def test_greedy_is_deterministic_and_starts_with_the_argmax(model):
    first = sampling.generate(model, PROMPT, 10)
    assert first == sampling.generate(model, PROMPT, 10, strategy="greedy")
    assert len(first) == 10 and all(isinstance(t, int) for t in first)
    logits = keras.ops.convert_to_numpy(model(np.array([PROMPT])))
    assert first[0] == int(np.argmax(logits[0, -1]))
    assert sampling.generate(model, np.array([PROMPT]), 10) == first  # shape (1, T) works


def test_seeded_sampling_is_reproducible(model):
    a = sampling.generate(model, PROMPT, 15, temperature=1.5, seed=1)
    assert a == sampling.generate(model, PROMPT, 15, temperature=1.5, seed=1)
    assert a != sampling.generate(model, PROMPT, 15, temperature=1.5, seed=2)


def test_top_k_one_and_tiny_top_p_equal_greedy(model):
    greedy = sampling.generate(model, PROMPT, 8)
    assert sampling.generate(model, PROMPT, 8, top_k=1, seed=3) == greedy
    assert sampling.generate(model, PROMPT, 8, top_p=1e-6, seed=3) == greedy


def test_cache_and_no_cache_give_the_same_tokens_past_the_context(model):
    # 5 + 40 tokens > context 32: the cached run switches to the sliding window.
    cached = sampling.generate(model, PROMPT, 40, use_cache=True)
    recomputed = sampling.generate(model, PROMPT, 40, use_cache=False)
    assert len(cached) == 40
    assert cached == recomputed


def test_stop_ids_end_generation_and_are_not_returned(model):
    greedy = sampling.generate(model, PROMPT, 12)
    stop = greedy[4]
    first = greedy.index(stop)
    assert sampling.generate(model, PROMPT, 12, stop_ids=[stop]) == greedy[:first]
    assert sampling.generate(model, PROMPT, 0) == []


def test_lstm_generation_without_a_context_limit():
    keras.utils.set_random_seed(0)
    rnn = lstm.from_preset("tiny", vocab_size=VOCAB)
    tokens = sampling.generate(rnn, PROMPT, 6, temperature=0.8, seed=0)
    assert len(tokens) == 6 and all(0 <= t < VOCAB for t in tokens)
    assert tokens == sampling.generate(rnn, PROMPT, 6, temperature=0.8, seed=0, use_cache=False)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(temperature=0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=0), "top_k"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(strategy="beam"), "strategy"),
        (dict(strategy="greedy", temperature=0.7), "strategy"),
        (dict(prompt_ids=[]), "prompt_ids"),
        (dict(prompt_ids=list(range(33))), "prompt_ids"),
        (dict(prompt_ids=[[1, 2], [3, 4]]), "prompt_ids"),
        (dict(prompt_ids=[1.5, 2.0]), "prompt_ids"),
    ],
)
def test_generate_rejects_bad_arguments(model, kwargs, name):
    args = {"prompt_ids": PROMPT, "max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=name):
        sampling.generate(model, **args)


# -- cache length and the compiled paths ------------------------------------

def test_cache_length_rounds_up_and_stops_at_the_context():
    assert sampling.cache_length(10, 256, 512) == 320  # 10 + 255 slots, rounded up to 64s
    assert sampling.cache_length(10, 256, 128) == 128
    assert sampling.cache_length(5, 60, 128) == 64  # 5 + 59 = 64 exactly
    assert sampling.cache_length(5, 61, 128) == 128
    assert sampling.cache_length(3, 0, 128, multiple=8) == 8
    for kwargs, name in [(dict(prompt_length=0), "prompt_length"), (dict(max_new_tokens=-1), "max_new_tokens"),
                         (dict(context_length=1.5), "context_length"), (dict(multiple=0), "multiple")]:
        args = {"prompt_length": 5, "max_new_tokens": 10, "context_length": 64, **kwargs}
        with pytest.raises(ValueError, match=name):
            sampling.cache_length(**args)


@pytest.mark.parametrize("new_tokens", [59, 60, 61, 130])
def test_cache_and_no_cache_agree_around_the_cache_length(new_tokens):
    # Context 128: 5 + 59 fills a 64-slot cache exactly, 61 needs 128, 130 slides past the context.
    keras.utils.set_random_seed(2)
    wide = gpt.GPT(vocab_size=VOCAB, context_length=128, num_layers=1, num_heads=2, hidden_dim=16)
    cached = sampling.generate(wide, PROMPT, new_tokens, temperature=1.3, seed=4)
    assert len(cached) == new_tokens
    assert cached == sampling.generate(wide, PROMPT, new_tokens, temperature=1.3, seed=4, use_cache=False)


# -- batched greedy decoding ------------------------------------------------

class Counting:
    """A stand-in causal model whose next token is always the last token + 1 (mod VOCAB)."""

    vocab_size, context_length = VOCAB, 32

    def __call__(self, ids, training=False):
        return np.eye(VOCAB, dtype="float32")[(np.asarray(ids) + 1) % VOCAB]  # (B, T, V)


@pytest.mark.parametrize("continuous", [True, False])
def test_greedy_batch_equals_decoding_each_prompt_alone(continuous):
    # Counting up from a prompt's last token to the stop id 12 takes a known number of steps,
    # so with 3 rows the rows finish at different steps (0 to 8 new tokens) and get refilled.
    counting = Counting()
    prompts = [PROMPT[:n] + [last] for n, last in zip((4, 0, 2, 5, 1, 3, 0, 4, 2), (9, 11, 3, 7, 10, 5, 12, 1, 8))]
    together = sampling.greedy_batch(counting, prompts, 8, stop_ids=[12], batch_size=3, continuous=continuous)
    for prompt, (ids, stopped) in zip(prompts, together):
        alone = sampling.generate(counting, prompt, 8, stop_ids=[12], use_cache=False)
        expected = list(range(prompt[-1] + 1, 12 if prompt[-1] < 12 else VOCAB))[:8]
        assert ids == alone == expected
        assert stopped == (len(alone) < 8)
    assert len({len(ids) for ids, _ in together}) == 7


@pytest.mark.parametrize("cache", ["prefill", "one token per step", "none"])
@pytest.mark.parametrize("continuous", [True, False])
def test_greedy_batch_with_a_gpt_equals_decoding_each_prompt_alone(model, continuous, cache):
    # Prompts of 1 to 20 tokens: with the cache, rows take new prompts (and prefill them) at
    # different steps, or without prefill feed them for different numbers of steps.
    prompts = [PROMPT[:n] + [20 + n] for n in (4, 0, 2, 5, 1, 3, 0, 4)] + [list(range(10, 30))]
    together = sampling.greedy_batch(model, prompts, 8, stop_ids=(6, 21, 29), batch_size=3, continuous=continuous,
                                     use_cache=cache != "none", prefill=cache == "prefill")
    for prompt, (ids, stopped) in zip(prompts, together):
        alone = sampling.generate(model, prompt, 8, stop_ids=(6, 21, 29), use_cache=False)
        assert (ids, stopped) == (alone, len(alone) < 8)


def test_greedy_batch_counts_its_work(model):
    # Two prompts of 3 tokens, one batch of 2 rows, 8 new tokens, no stop. Without the
    # cache: 8 steps, the rows grow from 3 to 10 tokens, widths rounded up to 4: 4, 4, 8,
    # 8, 8, 8, 12, 12. With it: one prefill of the prompts' first two tokens (width
    # rounded up to 16), then 8 steps of one token per row.
    for continuous in (True, False):
        work = {}
        sampling.greedy_batch(model, [[1, 2, 3], [4, 5, 6]], 8, batch_size=2, multiple=4, continuous=continuous,
                              use_cache=False, work=work)
        assert work == {"steps": 8, "positions": 2 * (4 + 4 + 8 + 8 + 8 + 8 + 12 + 12)}
        sampling.greedy_batch(model, [[1, 2, 3], [4, 5, 6]], 8, batch_size=2, continuous=continuous, work=work)
        assert work == {"steps": 1 + 8, "positions": 2 * 16 + 2 * 8}
    # One row at a time: the first prompt's steps, then the second's.
    work = {}
    sampling.greedy_batch(model, [[1, 2, 3], [4, 5, 6]], 8, batch_size=1, multiple=4, use_cache=False, work=work)
    assert work == {"steps": 16, "positions": 2 * (4 + 4 + 8 + 8 + 8 + 8 + 12 + 12)}
    sampling.greedy_batch(model, [[1, 2, 3], [4, 5, 6]], 8, batch_size=1, work=work)
    assert work == {"steps": 2 * (1 + 8), "positions": 2 * (16 + 8)}
    # Without prefill the prompts' first two tokens take two steps of one token per row.
    work = {}
    sampling.greedy_batch(model, [[1, 2, 3], [4, 5, 6]], 8, batch_size=2, prefill=False, work=work)
    assert work == {"steps": 2 + 8, "positions": 2 * (2 + 8)}


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_batch_stops_at_the_context(model, use_cache):
    (ids, stopped), = sampling.greedy_batch(model, [list(range(1, 30))], 8, use_cache=use_cache)  # context 32
    assert len(ids) == 3 and not stopped


@pytest.mark.parametrize("prompts, kwargs, message", [
    ([[]], {}, r"prompts\[0\] is empty"),
    ([[1], list(range(32))], {}, r"prompts\[1\] has 32 tokens; the context_length=32 leaves no room"),
    ([[1]], {"batch_size": 0}, "batch_size must be an integer >= 1"),
    ([[1]], {"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
    ([[1], [2, VOCAB]], {}, r"prompts\[1\] must be ids in \[0, vocab_size=50\); got \[50\]"),
    ([[1]], {"stop_ids": 3}, "stop_ids must be a collection of integer ids"),
])
def test_greedy_batch_rejects_bad_arguments(model, prompts, kwargs, message):
    kwargs = {"max_new_tokens": 4} | kwargs
    with pytest.raises(ValueError, match=message):
        sampling.greedy_batch(model, prompts, **kwargs)


def test_greedy_batch_needs_a_context_length():
    with pytest.raises(ValueError, match="model must have a context_length"):
        sampling.greedy_batch(lstm.from_preset("tiny", vocab_size=VOCAB), [PROMPT], 4)


# -- the compiled forward pass -----------------------------------------------

# A one-token row makes Keras warn about a softmax over one key; that is the point of the case.
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")
@pytest.mark.parametrize("length", [1, 5, 16, 17, 32])
def test_forward_fn_gives_the_models_own_logits(model, length):
    # On JAX the ids are padded on the right to a power-of-two length before
    # the compiled pass; the real positions' logits must not change.
    ids = np.random.default_rng(length).integers(0, VOCAB, size=(2, length)).astype("int32")
    fast = np.asarray(keras.ops.convert_to_numpy(sampling.forward_fn(model)(ids)))
    slow = np.asarray(keras.ops.convert_to_numpy(model(ids, training=False)))
    assert fast.shape == (2, length, VOCAB)
    np.testing.assert_allclose(fast, slow, atol=1e-5, rtol=1e-5)


def test_forward_fn_sees_weights_changed_after_its_first_call(model):
    ids = np.array([PROMPT], "int32")
    forward = sampling.forward_fn(model)
    before = np.asarray(keras.ops.convert_to_numpy(forward(ids)))
    saved = [keras.ops.convert_to_numpy(w) for w in model.weights]
    try:
        for w in model.weights:
            w.assign(keras.ops.convert_to_numpy(w) * 1.5)
        after = np.asarray(keras.ops.convert_to_numpy(forward(ids)))  # the same function as before
        np.testing.assert_allclose(after, keras.ops.convert_to_numpy(model(ids, training=False)), atol=1e-5, rtol=1e-5)
        assert np.abs(after - before).max() > 1e-3
    finally:
        for w, value in zip(model.weights, saved):
            w.assign(value)


# A one-token row makes Keras warn about a softmax over one key; that is the point of the case.
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")
@pytest.mark.parametrize("length", [1, 17])
def test_last_logits_fn_gives_each_rows_logits_at_its_position(model, length):
    rng = np.random.default_rng(length)
    ids = rng.integers(0, VOCAB, size=(3, length)).astype("int32")
    last = rng.integers(0, length, size=3)
    fast = sampling.last_logits_fn(model)(ids, last)
    full = np.asarray(keras.ops.convert_to_numpy(model(ids, training=False)))
    assert fast.shape == (3, VOCAB)
    np.testing.assert_allclose(fast, full[np.arange(3), last], atol=1e-5, rtol=1e-5)


def test_last_logits_fn_sees_lora_weights_added_after_its_first_trace():
    keras.utils.set_random_seed(1)
    fresh = gpt.from_preset("tiny", vocab_size=VOCAB)
    ids, last = np.array([PROMPT, PROMPT[::-1]], "int32"), np.array([4, 2])
    before = sampling.last_logits_fn(fresh)(ids, last)  # traced without LoRA
    for block in fresh.blocks:
        block.attn.qkv.enable_lora(2)
        block.attn.qkv.lora_kernel_b.assign(np.full(block.attn.qkv.lora_kernel_b.shape, 0.05, "float32"))
    after = sampling.last_logits_fn(fresh)(ids, last)
    full = np.asarray(keras.ops.convert_to_numpy(fresh(ids, training=False)))[np.arange(2), last]
    np.testing.assert_allclose(after, full, atol=1e-5, rtol=1e-5)
    assert np.abs(after - before).max() > 1e-3


def test_last_logits_fn_of_a_model_without_logits_at():
    keras.utils.set_random_seed(0)
    model = lstm.from_preset("tiny", vocab_size=VOCAB)
    ids, last = np.array([PROMPT, PROMPT[::-1]], "int32"), np.array([1, 4])
    full = np.asarray(keras.ops.convert_to_numpy(model(ids, training=False)))
    np.testing.assert_allclose(sampling.last_logits_fn(model)(ids, last), full[np.arange(2), last], atol=1e-6)


@pytest.mark.parametrize("length, cap, expected", [(1, None, 16), (16, None, 16), (17, None, 32),
                                                   (33, 40, 40), (100, None, 128), (30, 24, 30)])
def test_bucket_pads_to_a_power_of_two_within_the_cap(length, cap, expected):
    assert sampling.bucket(length, cap) == expected

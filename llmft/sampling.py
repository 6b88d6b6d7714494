"""Text generation: greedy decoding, temperature, top-k and top-p sampling.

Introduced in chapter 6 (6.6 generation); chapter 3 uses :func:`generate` to
show what the pretrained models write. :func:`greedy_batch` decodes many
prompts together (static or continuous batching, with or without a KV
cache per row, compared in 6.6); chapter 6.4's replies go through it. The
model runs on the Keras backend; the choice of the next token happens in
numpy on the last position's logits, so a seed gives the same tokens on
every backend.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from llmft import padding
from llmft.checks import check_int

STRATEGIES = ("greedy", "sample")


def _as_logits(logits):
    try:
        logits = np.asarray(logits, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"logits must be an array of numbers; got {logits!r:.80}") from None
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have a non-empty last axis; got shape {logits.shape}")
    return logits


def top_k_filter(logits, k):
    """Keep the ``k`` largest logits on the last axis; set the others to ``-inf``.

    Exactly ``k`` survive: among equal logits the lower index wins (as with
    ``argmax``), so ``k=1`` is greedy decoding. ``k >= V`` changes nothing.

    Example:
        >>> top_k_filter([1.0, 3.0, 2.0], 2).tolist()
        [-inf, 3.0, 2.0]
    """
    logits = _as_logits(logits)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    if k >= logits.shape[-1]:
        return logits.copy()
    keep = np.argsort(-logits, axis=-1, kind="stable")[..., :k]
    out = np.full_like(logits, -np.inf)
    np.put_along_axis(out, keep, np.take_along_axis(logits, keep, axis=-1), axis=-1)
    return out


def top_p_filter(logits, p):
    """Nucleus filter: keep the most likely tokens whose total probability reaches ``p``.

    Tokens are taken in order of decreasing probability until the running
    sum is >= ``p``; the most likely token is always kept, so a tiny ``p``
    is greedy decoding and ``p=1`` changes nothing. The rest become ``-inf``.

    Example:
        >>> top_p_filter(np.log([0.5, 0.3, 0.2]), 0.7).round(3).tolist()
        [-0.693, -1.204, -inf]
    """
    logits = _as_logits(logits)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1]; got {p!r}")
    if p == 1:
        return logits.copy()
    order = np.argsort(-logits, axis=-1, kind="stable")
    sorted_probs = _softmax(np.take_along_axis(logits, order, axis=-1))
    # Probability mass before each token: keep a token while that mass < p.
    mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = mass_before < p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return np.where(keep, logits, -np.inf)


def _softmax(logits):
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _check_options(strategy, temperature, top_k, top_p, max_new_tokens):
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
            or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0; got {max_new_tokens!r}")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float))
        or not temperature > 0
    ):
        raise ValueError(f"temperature must be a number > 0 (or None); got {temperature!r}")
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1
    ):
        raise ValueError(f"top_k must be an integer >= 1 (or None); got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        raise ValueError(f"top_p must be in (0, 1] (or None); got {top_p!r}")
    sampling_args = (temperature, top_k, top_p) != (None, None, None)
    if strategy is None:
        strategy = "sample" if sampling_args else "greedy"
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES} (or None); got {strategy!r}")
    if strategy == "greedy" and sampling_args:
        raise ValueError(
            "strategy='greedy' takes no temperature/top_k/top_p; got "
            f"temperature={temperature!r}, top_k={top_k!r}, top_p={top_p!r}"
        )
    return strategy


def _as_prompt(prompt_ids):
    prompt = np.asarray(prompt_ids)
    if prompt.ndim == 2 and prompt.shape[0] == 1:
        prompt = prompt[0]
    if prompt.ndim != 1:
        raise ValueError(
            f"prompt_ids must be a 1-D sequence of ids (or shape (1, T)); got shape {prompt.shape}"
        )
    if prompt.size == 0:
        raise ValueError("prompt_ids must contain at least one token; got an empty prompt")
    if not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(f"prompt_ids must be integer token ids; got dtype {prompt.dtype}")
    return [int(i) for i in prompt]


def generate(
    model, prompt_ids, max_new_tokens, *, strategy=None, temperature=None, top_k=None,
    top_p=None, seed=None, stop_ids=(), use_cache=True,
):
    """Continue ``prompt_ids`` with up to ``max_new_tokens`` tokens; return the new ids.

    With no sampling option the decoding is greedy (argmax). Any of
    ``temperature``, ``top_k``, ``top_p`` switches to sampling; they apply in
    that order (divide by temperature, keep the top k, keep the nucleus p).

    The model sees at most ``model.context_length`` tokens (when it has that
    attribute, like :class:`llmft.gpt.GPT`). With ``use_cache=True`` and a
    model that has ``init_cache`` the KV cache is used while the sequence
    fits in the context; past it, generation continues without the cache on
    a sliding window of the last ``context_length`` tokens, exactly as
    ``use_cache=False`` does, so both give the same tokens. Models without a
    context length (the LSTM) always see the whole sequence. The cache gets
    :func:`cache_length` slots. On the TensorFlow backend both paths run
    compiled functions that are traced once per model (see
    ``GPT.call_with_cache`` and ``_compiled_forward``), so per-token
    Python overhead does not hide what the cache saves (chapter 6.6).

    Args:
        model: a Keras language model; ``model(ids)`` gives logits (1, T, V).
        prompt_ids: 1-D sequence of token ids (or shape (1, T)).
        max_new_tokens: most tokens to generate (>= 0).
        strategy: ``"greedy"``, ``"sample"`` or ``None`` (greedy unless a
            sampling option is given).
        temperature: > 0; below 1 sharpens, above 1 flattens the distribution.
            ``None`` means 1 when sampling.
        top_k: keep only the k most likely tokens (>= 1).
        top_p: keep the smallest set of tokens with total probability >= p.
        seed: seed (or ``numpy.random.Generator``) for reproducible sampling.
        stop_ids: token ids that end generation; the stop token itself is
            not included in the result.
        use_cache: use the model's KV cache if it has one.

    Returns:
        list of int: the generated ids, without the prompt.

    Example (``model`` a trained GPT, ``tokenizer`` from :mod:`llmft.tokenizers`)::

        new_ids = generate(model, tokenizer.encode("今天"), 50, temperature=0.8, top_k=50, seed=0)
    """
    strategy = _check_options(strategy, temperature, top_k, top_p, max_new_tokens)
    tokens = _as_prompt(prompt_ids)
    context = getattr(model, "context_length", None)
    if context is not None and len(tokens) > context:
        raise ValueError(
            f"prompt_ids is longer than the model's context_length={context}; "
            f"got {len(tokens)} tokens"
        )
    vocab = getattr(model, "vocab_size", None)
    if vocab is not None and not all(0 <= t < vocab for t in tokens):
        raise ValueError(f"prompt_ids must be ids in [0, vocab_size={vocab}) (a tokenizer that matches the "
                         f"model); got {[t for t in tokens if not 0 <= t < vocab][:5]}")
    stop = _stop_set(stop_ids)
    if seed is not None and not isinstance(seed, np.random.Generator) and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be None, an integer >= 0 or a numpy Generator; got {seed!r:.80}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    new = []
    if max_new_tokens == 0:
        return new

    caching = bool(use_cache) and hasattr(model, "init_cache") and context is not None
    if caching:
        cache = model.init_cache(1, cache_length(len(tokens), max_new_tokens, context))
        logits, cache = model.call_with_cache(np.array([tokens], "int32"), cache, 0)
    else:
        logits = _window_logits(model, tokens, context)

    while True:
        last = np.asarray(ops.convert_to_numpy(logits))[0, -1].astype(np.float64)  # (V,)
        next_id = _choose(last, strategy, temperature, top_k, top_p, rng)
        if next_id in stop:
            break
        new.append(next_id)
        tokens.append(next_id)
        if len(new) == max_new_tokens:
            break
        if caching and len(tokens) <= cache.shape[-2]:
            # Only the new token goes through the model; earlier keys and
            # values come from the cache.
            step = np.array([[next_id]], "int32")
            logits, cache = model.call_with_cache(step, cache, len(tokens) - 1)
        else:
            caching = False  # the cache is full: slide the window instead
            logits = _window_logits(model, tokens, context)
    return new


def _stop_set(stop_ids):
    iterable = hasattr(stop_ids, "__iter__") and not isinstance(stop_ids, (str, bytes))
    stop = list(stop_ids) if iterable else None
    if stop is None or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in stop):
        raise ValueError(f"stop_ids must be a collection of integer ids; got {stop_ids!r:.80}")
    return {int(s) for s in stop}


def greedy_batch(model, prompts, max_new_tokens, *, stop_ids=(), batch_size=64, continuous=True, use_cache=True,
                 prefill=True, multiple=16, work=None):
    """Greedy continuations of many prompts, decoded together: a list of ``(new_ids, stopped)``.

    Up to ``batch_size`` prompts are decoded at once, one row each; each
    step appends every row's most likely next token at that row's end, and
    a row stops at a token of ``stop_ids`` (not included; ``stopped`` is
    then True), at ``max_new_tokens``, or at the model's context limit. A
    row's tokens do not depend on which rows share its steps (up to float
    rounding).

    With ``use_cache=True`` and a model that has ``call_rows_with_cache``
    (:class:`llmft.gpt.GPT`), every row keeps its own KV cache and each step
    runs one token per row, each row at its own position. With ``prefill``
    (and a model that has ``prefill_rows``), a row that takes a new prompt
    first gets all of it but its last token in one pass (the rows that take
    prompts at the same step share it), then feeds the last prompt token and
    its own new tokens one step at a time; without, it feeds the whole
    prompt one token per step while the other rows decode. Otherwise
    (``use_cache=False``, or another model) there is no cache: every step
    reruns the rows, right-padded and cut to the longest row so far (rounded
    up to ``multiple``), and computes the logits of each row's last position
    only (:func:`last_logits_fn`); the causal mask makes the padding
    invisible.

    With ``continuous=True`` a finished row hands its place to the next
    prompt at once ("continuous batching", Yu et al. 2022, *Orca*), so short
    continuations do not wait for the longest one of their batch. With
    ``continuous=False`` the prompts go in fixed batches and each batch runs
    until its longest row is done (static batching, for comparison). Either
    way prompts go in order of length, so the rows decoded together have
    similar widths. Without a KV cache a step costs about rows x width, and
    the width is that of the longest row: continuous batching keeps every
    row busy, but rows at different stages keep the width near its maximum,
    while a static batch starts narrow and widens as it goes. Which one does
    less work then depends on how much the continuations' lengths vary
    (``work`` counts it; chapter 6.6 measures the cases). With the cache a
    step costs one position per row (plus reading the cache), whatever the
    rows' lengths.

    Args:
        model: a causal language model with ``context_length`` (:class:`llmft.gpt.GPT`).
        prompts: sequences of token ids, each shorter than the context.
        max_new_tokens: most tokens per continuation (>= 1).
        stop_ids: token ids that end a continuation.
        batch_size: most rows decoded at once (>= 1).
        continuous: refill finished rows (True) or decode fixed batches (False).
        use_cache: a KV cache per row, if the model has one.
        prefill: with the cache, a new prompt enters it in one pass.
        multiple: the width of a step without the cache, and of a prefill
            with it, is rounded up to this (fewer shapes to trace).
        work: a dict to fill with ``steps`` (model calls, prefills included)
            and ``positions`` (the sum over calls of rows x width: the
            positions the model ran; a cached step has width 1).

    Returns:
        list of ``(new_ids, stopped)`` in the order of ``prompts``.
    """
    check_int("max_new_tokens", max_new_tokens)
    check_int("batch_size", batch_size)
    check_int("multiple", multiple)
    context = getattr(model, "context_length", None)
    if context is None:
        raise ValueError("model must have a context_length (a causal model such as llmft.gpt.GPT)")
    context = int(context)
    prompts = [[int(t) for t in p] for p in prompts]
    vocab = getattr(model, "vocab_size", None)
    for i, ids in enumerate(prompts):
        if not ids:
            raise ValueError(f"prompts[{i}] is empty; a prompt needs at least one token")
        if len(ids) >= context:
            raise ValueError(f"prompts[{i}] has {len(ids)} tokens; the context_length={context} "
                             "leaves no room for a reply")
        if vocab is not None and not all(0 <= t < vocab for t in ids):
            raise ValueError(f"prompts[{i}] must be ids in [0, vocab_size={vocab}); "
                             f"got {[t for t in ids if not 0 <= t < vocab][:5]}")
    stop = _stop_set(stop_ids)
    waiting = list(np.argsort([len(p) for p in prompts], kind="stable")[::-1])  # pop() takes the shortest
    slots = min(batch_size, len(prompts))
    buf = np.zeros((slots, context), "int32")
    owner = np.full(slots, -1)  # the prompt each row is decoding; -1: free
    lengths, prompt_len, stopped, fed = (np.zeros(slots, int) for _ in range(4))  # fed: tokens in the row's cache
    results = [None] * len(prompts)
    caching = bool(use_cache) and hasattr(model, "call_rows_with_cache") and bool(prompts)
    prefill = caching and bool(prefill) and hasattr(model, "prefill_rows")
    if caching:
        cache = model.init_cache(slots, cache_length(max(map(len, prompts)), max_new_tokens, context))
    else:
        last_logits = last_logits_fn(model)  # one trace for every batch shape

    def start(j):
        r = waiting.pop()
        buf[j] = 0
        buf[j, :len(prompts[r])] = prompts[r]
        owner[j], lengths[j], prompt_len[j], stopped[j], fed[j] = r, len(prompts[r]), len(prompts[r]), False, 0

    for j in range(slots):
        start(j)
    done = np.zeros(slots, bool)  # static batching: finished, waiting for the rest of its batch
    steps = positions = 0
    while (owner >= 0).any():
        active = np.flatnonzero((owner >= 0) & ~done)
        if prefill:
            # Rows that have just taken a prompt: all of it but the last token in one pass; the
            # step below feeds the last one and so gives the first new token, as for any row.
            new = active[(fed[active] == 0) & (lengths[active] > 1)]
            if len(new):
                width = padding.width(lengths[new] - 1, multiple, int(cache.shape[4]))
                cache = model.prefill_rows(buf[new, :width], cache, new)
                fed[new] = lengths[new] - 1
                steps, positions = steps + 1, positions + len(new) * width
        if caching:
            # Every row of the cache, one token each: a free or finished row feeds a dummy
            # token at slot 0, which the row's next prompt overwrites before reading it.
            rows = np.arange(slots)
            where = np.zeros(slots, "int32")
            where[active] = fed[active]
            logits, cache = model.call_rows_with_cache(buf[rows, where], cache, where)
            logits = np.asarray(ops.convert_to_numpy(logits))
            fed[active] += 1
            ready = active[fed[active] == lengths[active]]  # rows still feeding their prompt wait
            steps, positions = steps + 1, positions + slots
        else:
            if continuous:
                # A power-of-two number of rows (free rows fill up the rest): on JAX every new
                # batch shape compiles again, and the last few prompts would make one per size.
                rows = np.concatenate([active, np.flatnonzero(owner < 0)])[:bucket(len(active), slots, 1)]
            else:
                rows = np.flatnonzero(owner >= 0)  # the whole batch, finished rows included
            width = padding.width(lengths[rows], multiple, context)
            logits = last_logits(buf[rows, :width], lengths[rows] - 1)
            steps, positions = steps + 1, positions + len(rows) * width
            ready = active
        next_ids = dict(zip(rows, logits.argmax(-1)))
        for j in ready:
            token = next_ids[j]
            if token in stop:
                stopped[j] = True
            else:
                buf[j, lengths[j]] = token
                lengths[j] += 1
                if lengths[j] - prompt_len[j] < max_new_tokens and lengths[j] < context:
                    continue
            results[owner[j]] = (buf[j, prompt_len[j]:lengths[j]].tolist(), bool(stopped[j]))
            done[j] = True
            if continuous:
                owner[j], done[j] = -1, False
                if waiting:
                    start(j)
        if not continuous and done[owner >= 0].all():
            owner[:], done[:] = -1, False
            for j in range(min(slots, len(waiting))):
                start(j)
    if work is not None:
        work.update(steps=steps, positions=positions)
    return results


def cache_length(prompt_length, max_new_tokens, context_length, multiple=64):
    """KV-cache slots for a generation: prompt + new tokens, rounded up, at most the context.

    Every step attends over (and copies) the whole preallocated cache, so a
    cache no longer than needed is faster. Rounding up to a ``multiple``
    keeps the number of distinct cache shapes, each compiled once, small.

    Example:
        >>> cache_length(10, 256, 512), cache_length(10, 256, 128)
        (320, 128)
    """
    for name, value in (("prompt_length", prompt_length), ("max_new_tokens", max_new_tokens),
                        ("context_length", context_length), ("multiple", multiple)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0 \
                or (value == 0 and name != "max_new_tokens"):
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    # The last new token is never fed back, so it needs no slot.
    needed = prompt_length + max(max_new_tokens - 1, 0)
    return int(min(context_length, -(-needed // multiple) * multiple))


def _window_logits(model, tokens, context):
    window = tokens if context is None else tokens[-context:]
    return forward_fn(model)(np.array([window], "int32"))


def forward_fn(model):
    """``ids (B, T) int32 -> logits`` of ``model``, compiled once per model on TensorFlow.

    Any batch size and length use the same trace (``_compiled_forward``);
    on JAX it is ``jax.jit``-compiled once per padded length (see
    ``_jax_forward``); PyTorch, and a model not built yet, run eagerly. Chapter 6.4's
    batched replies (:func:`llmft.sft.generate_replies`) use it too.
    """
    compiled = _compiled_forward(model)
    if compiled is not None:
        import tensorflow as tf

        return lambda ids: compiled(tf.constant(ids, dtype=tf.int32))
    jitted = _jax_forward(model)
    if jitted is not None:
        return jitted
    return lambda ids: model(ids, training=False)


def last_logits_fn(model):
    """``(ids (B, T) int32, last (B,) int) -> logits (B, V)``: each row's logits at ``last[b]``, as numpy.

    A model with ``logits_at`` (:class:`llmft.gpt.GPT`) runs its output layer
    on those positions only; on TensorFlow that is a ``tf.function`` traced
    once per model for every batch shape. Other models, and other backends,
    take the positions from :func:`forward_fn`'s full logits.
    """
    import keras

    if keras.backend.backend() == "tensorflow" and hasattr(model, "logits_at") and model.built:
        import tensorflow as tf

        # Keyed by the number of weights, like _compiled_forward (enable_lora adds weights).
        functions = model.__dict__.setdefault("_llmft_last_logits", {})
        key = len(model.weights)
        if key not in functions:
            functions[key] = tf.function(
                lambda ids, last: model.logits_at(ids, last),
                input_signature=[tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None,), tf.int32)],
            ).get_concrete_function()
        function = functions[key]
        return lambda ids, last: function(tf.constant(ids, tf.int32), tf.constant(last, tf.int32)).numpy()
    forward = forward_fn(model)
    return lambda ids, last: np.asarray(keras.ops.convert_to_numpy(forward(ids)))[np.arange(len(last)), last]


def _compiled_forward(model):
    """A ``tf.function`` of ``model(ids)`` with a free length, made once per model; else None.

    Without the cache every new token reruns the whole window. Compiling that
    pass too (one trace for every length) keeps the comparison with the
    cache fair: both paths pay the same per-call overhead, and the
    difference that remains is the recomputation the cache saves.
    """
    import keras

    if keras.backend.backend() != "tensorflow" or not isinstance(model, keras.Model) \
            or not model.built:  # an unbuilt model builds itself in its first eager call
        return None
    import tensorflow as tf

    # Keyed by the number of weights: enable_lora after a first trace adds
    # weights, and a graph traced before would not use them.
    functions = model.__dict__.setdefault("_llmft_generate_forward", {})
    key = len(model.weights)
    if key not in functions:
        function = tf.function(
            lambda ids: model(ids, training=False),
            input_signature=[tf.TensorSpec((None, None), tf.int32)],
        )
        # The concrete function skips tf.function's per-call argument matching,
        # as the cached path does (see GPT._compiled_cached_call).
        functions[key] = function.get_concrete_function()
    return functions[key]


def bucket(length, cap=None, smallest=16):
    """The padded length for ``length``: the next power of two (at least ``smallest``), at most ``cap``."""
    bucket = max(smallest, 1 << max(int(length) - 1, 0).bit_length())
    return bucket if cap is None else max(int(length), min(bucket, int(cap)))


def _jax_forward(model):
    """A ``jax.jit`` of ``model(ids)`` made once per model on the JAX backend; else None.

    Eager JAX compiles every operation again for each new input shape, and
    generation without the cache makes a new shape (one token longer) at
    every step, so eager decoding spends most of its time compiling. Here the
    whole forward pass is one compiled function of the weights and the ids.
    For a causal model with a context length (:class:`llmft.gpt.GPT`) the ids
    are padded on the right to a power-of-two length: position ``t`` never
    attends to later positions, so the logits of the real positions do not
    change, and a whole generation compiles a handful of lengths instead of
    one per token. The weights are passed in at each call, so training (or
    ``enable_lora``) after the first call is seen.
    """
    import keras

    if keras.backend.backend() != "jax" or not isinstance(model, keras.Model) or not model.built:
        return None
    if "_llmft_jax_forward" not in model.__dict__:
        import jax

        def run(trainable, non_trainable, ids):
            logits, _ = model.stateless_call(trainable, non_trainable, ids, training=False)
            return logits

        model.__dict__["_llmft_jax_forward"] = jax.jit(run)
    run = model.__dict__["_llmft_jax_forward"]
    context = getattr(model, "context_length", None)

    def call(ids):
        ids = np.asarray(ids, dtype="int32")
        length = ids.shape[1]
        if context is not None:  # causal: right padding leaves the real positions' logits alone
            padded = np.zeros((ids.shape[0], bucket(length, context)), "int32")
            padded[:, :length] = ids
            ids = padded
        logits = run([v.value for v in model.trainable_variables],
                     [v.value for v in model.non_trainable_variables], ids)
        return logits[:, :length]

    return call


def _choose(logits, strategy, temperature, top_k, top_p, rng):
    if strategy == "greedy":
        return int(np.argmax(logits))
    logits = logits / (1.0 if temperature is None else temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = _softmax(logits)
    return int(rng.choice(probs.shape[-1], p=probs))

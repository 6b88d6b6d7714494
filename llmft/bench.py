"""Benchmarks: matmul peak, training throughput, generation speed, peak memory.

What ``make bench`` (``tools/bench.py``) measures and the appendix page
"性能基准" (``book/bench.ipynb``) shows:

1. ``matmul_peak``: FLOP/s of one large square matrix multiplication, the
   ceiling that a training step made of matmuls can approach on this machine;
   ``step_matmuls``: each matmul of a real training step timed alone, at its
   own shape, which tells the matmuls' time from the rest of the step;
2. ``train_throughput``: tokens/s of training steps (forward, loss,
   backward, AdamW) and the achieved FLOP/s, from the matmul FLOPs per token
   that :func:`llmft.estimates.gpt_flops_per_token` counts; for the book's
   GPT and, as a peer, the same configuration built with KerasHub's
   ``GPT2Backbone`` (:func:`keras_hub_gpt`); optionally with TensorFlow's
   op determinism on, as the chapters train (in a fresh process);
   ``first_step_seconds``: the start of a ``fit`` (tracing), with and
   without :func:`llmft.train.build_before_fit`; ``median_runs`` and
   ``round_ratios``: the variants are measured in alternating rounds, and
   each ratio is the median of its per-round values;
   ``activation_seconds``: the MLP's GELU alone, in float32 and bfloat16;
3. ``generation_speed``: new tokens/s of :func:`llmft.sampling.generate`
   with and without the KV cache;
4. ``peak_rss``: the peak resident memory of a training or fine-tuning run,
   measured in a fresh Python process (``VmHWM``, or ``resource.getrusage``);
5. ``notebook_seconds``: chapter wall times that papermill wrote into the
   executed notebooks.

Speeds depend on the machine and on what else runs on it: compare ratios
measured back to back in one run, not absolute numbers across runs. The
matmul and training measurements need the TensorFlow backend.
Introduced in the appendix on benchmarks (book/bench.ipynb).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np

from llmft import estimates, gpt, lora, sampling, train
from llmft.checks import check_int

DTYPE_POLICIES = ("float32", "mixed_bfloat16")
BUILDERS = ("llmft", "keras_hub")
RSS_TASKS = ("idle", "train", "finetune_full", "finetune_lora")


def _require_tensorflow(what):
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"backend must be 'tensorflow' for {what}; got {keras.backend.backend()!r}")
    import tensorflow as tf

    return tf


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return value


@contextlib.contextmanager
def dtype_policy(name):
    """Set the global Keras dtype policy inside the ``with`` block, then restore it."""
    _check_choice("dtype_policy", name, DTYPE_POLICIES)
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


# ---------------------------------------------------------------------------
# Matmul peak
# ---------------------------------------------------------------------------


def matmul_peak(dtype="float32", *, size=1024, repeats=10, trials=3, jit_compile=False) -> dict:
    """FLOP/s of ``repeats`` multiplications of two (size, size) matrices, best of ``trials``.

    The matmuls run inside one compiled loop, so Python and dispatch
    overhead do not count; one (n, n) x (n, n) product is 2 n**3 FLOPs.

    Args:
        dtype: ``"float32"`` or ``"bfloat16"``.
        size: n, the matrix side.
        repeats: matmuls per timed call.
        trials: timed calls; the fastest counts (others were disturbed by
            other work on the machine).
        jit_compile: compile the loop with XLA instead of running it as a
            TensorFlow graph. The two use different matmul kernels (on CPU,
            the graph uses oneDNN where TensorFlow enables it), so their
            peaks can differ, most of all in bfloat16.

    Returns:
        dict with ``dtype``, ``size``, ``jit_compile``, ``flops`` (per timed call),
        ``seconds`` (each trial) and ``flops_per_second`` (the best trial).
    """
    _check_choice("dtype", dtype, ("float32", "bfloat16"))
    size, repeats, trials = (check_int(n, v) for n, v in (("size", size), ("repeats", repeats), ("trials", trials)))
    if not isinstance(jit_compile, bool):
        raise ValueError(f"jit_compile must be True or False; got {jit_compile!r}")
    tf = _require_tensorflow("matmul_peak")
    seconds = _time_matmul(tf, (size, size), (size, size), dtype, False, False, repeats, trials, jit_compile)
    flops = 2 * size**3 * repeats
    return {"dtype": dtype, "size": size, "jit_compile": jit_compile, "flops": flops, "seconds": seconds,
            "flops_per_second": flops / min(seconds)}


def _matmul_loop(tf, dtype, transpose_a, transpose_b, repeats, jit_compile=False):
    """A ``tf.function(a, b)`` doing ``repeats`` products ``a @ b`` in one compiled loop."""

    @tf.function(jit_compile=jit_compile)
    def loop(a, b):
        total = tf.constant(0.0)
        for i in tf.range(repeats):
            # XLA hoists a product of loop-invariant inputs out of the loop
            # (it measured 4x the float32 peak that way): under XLA the left
            # factor changes each time, at the cost of one elementwise add.
            left = a + tf.cast(i, dtype) if jit_compile else a
            # One element of each product is kept, so no matmul is dead code.
            product = tf.linalg.matmul(left, b, transpose_a=transpose_a, transpose_b=transpose_b)
            total += tf.cast(tf.reshape(product, [-1])[0], tf.float32)
        return total

    return loop


def _time_matmul(tf, a_shape, b_shape, dtype, transpose_a, transpose_b, repeats, trials, jit_compile=False):
    """Seconds of ``repeats`` products ``a @ b`` (batched over leading axes) in one compiled loop, per trial."""
    rng = np.random.default_rng(0)
    a = tf.cast(rng.standard_normal(a_shape, dtype=np.float32), dtype)
    b = tf.cast(rng.standard_normal(b_shape, dtype=np.float32), dtype)
    loop = _matmul_loop(tf, dtype, transpose_a, transpose_b, repeats, jit_compile)
    loop(a, b).numpy()  # trace and warm up
    seconds = []
    for _ in range(trials):
        start = time.perf_counter()
        loop(a, b).numpy()
        seconds.append(time.perf_counter() - start)
    return seconds


def step_matmuls(model, batch_size, *, trials=3, flops_per_call=2e9) -> dict:
    """Time each matrix multiplication of one training step of ``model`` on its own, at its own shape.

    The step (forward, cross-entropy, gradients, AdamW) is traced, not run
    (:func:`llmft.estimates.train_step_graph`); every ``MatMul`` and
    ``BatchMatMul`` in it, with its transpose flags, is timed alone in a
    compiled loop, and the fastest trial counts. Summing count x FLOPs /
    (FLOP/s) over the distinct shapes gives the time a step would take if it
    did nothing but its matmuls, each as fast as it runs alone with warm
    caches: a lower bound of the real step time. What the real step spends
    beyond it goes to the other operations (softmax, LayerNorm, GELU, AdamW,
    cross-entropy, copies).

    Args:
        model: a built Keras model mapping ids (B, T) to logits (B, T, V),
            with a ``context_length`` (the training window).
        batch_size: B of the traced step.
        trials: timed calls per shape.
        flops_per_call: about how many FLOPs one timed call does (the loop
            repeats the product to reach it), so that small shapes are
            timed over more than a few microseconds.

    Returns:
        dict with ``matmuls`` (one row per distinct shape: ``op``,
        ``a_shape``, ``b_shape``, ``transpose_a``, ``transpose_b``,
        ``count`` in the step, ``flops`` of one product, ``flops_per_second``),
        ``flops`` (all matmuls of the step, as
        :func:`llmft.estimates.count_matmul_flops` counts them) and
        ``seconds`` (the matmul-only step time above).
    """
    batch_size, trials = check_int("batch_size", batch_size), check_int("trials", trials)
    if isinstance(flops_per_call, bool) or not isinstance(flops_per_call, (int, float)) or not flops_per_call > 0:
        raise ValueError(f"flops_per_call must be a positive number; got {flops_per_call!r}")
    tf = _require_tensorflow("step_matmuls")
    rows = {}
    for op in estimates.matmul_ops(estimates.train_step_graph(model, batch_size)):
        key = (op["op"], tuple(op["a_shape"]), tuple(op["b_shape"]), op["transpose_a"], op["transpose_b"],
               op["dtype"], op["flops"])
        rows[key] = rows.get(key, 0) + 1
    out, total, seconds = [], 0, 0.0
    for (op_type, a_shape, b_shape, transpose_a, transpose_b, dtype, flops), count in rows.items():
        repeats = max(1, math.ceil(flops_per_call / flops))
        best = min(_time_matmul(tf, a_shape, b_shape, dtype, transpose_a, transpose_b, repeats, trials))
        rate = flops * repeats / best
        out.append({"op": op_type, "a_shape": list(a_shape), "b_shape": list(b_shape), "transpose_a": transpose_a,
                    "transpose_b": transpose_b, "count": count, "flops": flops, "flops_per_second": rate})
        total += count * flops
        seconds += count * flops / rate
    return {"matmuls": out, "flops": total, "seconds": seconds}


# ---------------------------------------------------------------------------
# Training throughput
# ---------------------------------------------------------------------------


def keras_hub_gpt(config) -> keras.Model:
    """The peer: KerasHub's ``GPT2Backbone`` with the same sizes as a GPT config, random init.

    A functional model ``ids (B, T) -> logits (B, T, V)``: the backbone with
    an all-ones padding mask, then its tied token embedding reversed (the
    output layer, as in the book's GPT with ``tie_embeddings=True``).

    Args:
        config: a dict with ``vocab_size``, ``context_length``,
            ``num_layers``, ``num_heads``, ``hidden_dim`` and optionally
            ``mlp_dim`` and ``dropout`` (as :class:`llmft.gpt.GPT` takes them).
    """
    import keras_hub

    if not isinstance(config, dict) or "num_heads" not in config:
        raise ValueError(f"config must be a GPT config dict with num_heads; got {config!r:.80}")
    V, T, L, C, F, _ = estimates._gpt_sizes(config)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=V, num_layers=L, num_heads=check_int("num_heads", config["num_heads"]),
        hidden_dim=C, intermediate_dim=F, dropout=float(config.get("dropout", 0.0)), max_sequence_length=T,
    )
    ids = keras.Input((T,), dtype="int32", name="token_ids")
    hidden = backbone({"token_ids": ids, "padding_mask": keras.ops.ones_like(ids)})  # (B, T, C)
    logits = keras.ops.cast(backbone.token_embedding(hidden, reverse=True), "float32")  # (B, T, V)
    model = keras.Model(ids, logits, name="keras_hub_gpt2")
    model.context_length = T
    return model


def _build_model(builder, config):
    if builder == "keras_hub":
        return keras_hub_gpt(config)
    model = gpt.GPT(**config)
    model.build((None, model.context_length))
    return model


class _StepClock(keras.callbacks.Callback):
    """Time at the end of every training step (the loss is read, so the step has finished)."""

    def __init__(self):
        super().__init__()
        self.times, self.cpu_times, self.losses = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float((logs or {}).get("loss", float("nan"))))
        self.times.append(time.perf_counter())
        self.cpu_times.append(time.process_time())


def train_throughput(config, ids, *, batch_size=32, steps=10, warmup_steps=3, jit_compile=False,
                     policy="float32", builder="llmft", seed=0, deterministic=False, timeout=600) -> dict:
    """Tokens/s and FLOP/s of training steps of a GPT ``config`` on the token stream ``ids``.

    The model is trained as :func:`llmft.train.pretrain` trains it (same
    optimizer, loss and ``tf.data`` windows) in one ``model.fit``: the first
    ``warmup_steps`` steps trace and compile, the ``steps`` after them are
    timed (from the end of the last warm-up step to the end of the last step).

    Args:
        config: GPT keyword arguments (``vocab_size``, ``context_length``,
            ``num_layers``, ``num_heads``, ``hidden_dim`` ...).
        ids: 1-D integer token stream.
        batch_size: windows per step.
        steps: timed steps.
        warmup_steps: untimed steps before them.
        jit_compile: compile the step with XLA.
        policy: ``"float32"`` or ``"mixed_bfloat16"`` (Keras dtype policy).
        builder: ``"llmft"`` (:class:`llmft.gpt.GPT`) or ``"keras_hub"``
            (:func:`keras_hub_gpt`).
        seed: seed of the initial weights and of the windows.
        deterministic: measure with TensorFlow's op determinism on, as the
            chapters train (:func:`llmft.env.set_seed`). TensorFlow offers no
            public way to turn it off again, so this run happens in a fresh
            Python process (``timeout`` seconds at most) and leaves this one
            as it was.
        timeout: seconds allowed for that process.

    Returns:
        dict with the settings (``deterministic`` among them), ``params``,
        ``flops_per_token`` (training, 3 x forward, from :func:`llmft.estimates.gpt_flops_per_token`),
        ``seconds_per_step``, ``cpu_seconds_per_step`` (CPU time of this
        process, all threads: less disturbed by other work on a shared
        machine than the wall time), ``tokens_per_second``, ``flops_per_second``,
        ``warmup_seconds`` (tracing and compiling included) and
        ``final_loss``.
    """
    _check_choice("builder", builder, BUILDERS)
    _check_choice("policy", policy, DTYPE_POLICIES)
    if not isinstance(jit_compile, bool):
        raise ValueError(f"jit_compile must be True or False; got {jit_compile!r}")
    batch_size, steps, warmup_steps, timeout = (check_int(n, v) for n, v in (
        ("batch_size", batch_size), ("steps", steps), ("warmup_steps", warmup_steps), ("timeout", timeout)))
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict of GPT keyword arguments; got {config!r:.80}")
    if not isinstance(deterministic, bool):
        raise ValueError(f"deterministic must be True or False; got {deterministic!r}")
    _require_tensorflow("train_throughput")
    options = {"config": config, "batch_size": batch_size, "steps": steps, "warmup_steps": warmup_steps,
               "jit_compile": jit_compile, "policy": policy, "builder": builder, "seed": seed}
    if deterministic:
        payload = json.dumps({**options, "ids": np.asarray(ids).astype(int).tolist()})
        code = "from llmft import bench; bench._deterministic_throughput_main()"
        proc = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"train_throughput(deterministic=True) failed:\n{proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    keras.utils.set_random_seed(seed)
    return {**_measure_throughput(ids=ids, **options), "deterministic": False}


def _deterministic_throughput_main():
    """Body of the fresh process of ``train_throughput(deterministic=True)``: options on stdin, JSON out."""
    from llmft import env

    options = json.loads(sys.stdin.read())
    env.set_seed(options["seed"], deterministic=True)
    out = _measure_throughput(**options)
    print(json.dumps({**out, "deterministic": True}))


def _measure_throughput(config, ids, batch_size, steps, warmup_steps, jit_compile, policy, builder, seed):
    with dtype_policy(policy):
        model = _build_model(builder, config)
        context = int(config["context_length"])
        recipe = train.TrainConfig(steps=warmup_steps + steps, batch_size=batch_size, warmup_steps=0,
                                   eval_every=1, seed=seed, jit_compile=jit_compile)
        train.compile_for_pretraining(model, recipe)
        data = train.window_batches(ids, batch_size=batch_size, context_length=context, seed=seed)
        clock = _StepClock()
        start = time.perf_counter()
        model.fit(data.take(warmup_steps + steps), epochs=1, verbose=0, callbacks=[clock], shuffle=False)
    seconds = (clock.times[-1] - clock.times[warmup_steps - 1]) / steps
    cpu_seconds = (clock.cpu_times[-1] - clock.cpu_times[warmup_steps - 1]) / steps
    per_token = estimates.gpt_flops_per_token(config)["train"]
    tokens = batch_size * context / seconds
    return {
        "builder": builder, "policy": policy, "jit_compile": jit_compile, "batch_size": batch_size,
        "context_length": context, "steps": steps, "params": int(model.count_params()),
        "flops_per_token": per_token, "seconds_per_step": seconds, "cpu_seconds_per_step": cpu_seconds, "tokens_per_second": tokens,
        "flops_per_second": tokens * per_token, "warmup_seconds": clock.times[warmup_steps - 1] - start,
        "final_loss": clock.losses[-1],
    }


def count_step_traces(model) -> list:
    """Make ``model`` record each trace of its training step; returns the (growing) list of traces.

    Keras wraps ``model.train_step`` in a ``tf.function``, whose Python code
    runs only while it is traced, so one entry is one trace. Set this before
    ``model.compile`` / ``fit`` build the training function.
    """
    traces, step = [], model.train_step

    def counted_step(data):
        traces.append(1)
        return step(data)

    model.train_step = counted_step
    return traces


def first_step_seconds(config, ids, *, batch_size=16, build_first=True, seed=0) -> dict:
    """Seconds from the start of ``model.fit`` to the end of its first training step: mostly tracing.

    A fresh GPT ``config`` is compiled as :func:`llmft.train.pretrain` compiles
    it and trained for one step. With ``build_first``,
    :func:`llmft.train.build_before_fit` runs first (its time is counted);
    without it Keras creates the optimizer's variables inside the first trace
    and ``tf.function`` traces the step twice. ``traces`` counts how often
    the step's Python code ran, i.e. how often it was traced.

    Returns:
        dict with ``build_first``, ``seconds``, ``traces``, ``params`` and ``batch_size``.
    """
    if not isinstance(build_first, bool):
        raise ValueError(f"build_first must be True or False; got {build_first!r}")
    batch_size = check_int("batch_size", batch_size)
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict of GPT keyword arguments; got {config!r:.80}")
    _require_tensorflow("first_step_seconds")
    keras.utils.set_random_seed(seed)
    model = gpt.GPT(**config)  # not built: the first step (or build_before_fit) builds it
    traces = count_step_traces(model)
    recipe = train.TrainConfig(steps=1, batch_size=batch_size, warmup_steps=0, eval_every=1, seed=seed)
    train.compile_for_pretraining(model, recipe)
    data = train.window_batches(ids, batch_size=batch_size, context_length=int(config["context_length"]), seed=seed)
    start = time.perf_counter()
    if build_first:
        train.build_before_fit(model, data)
    model.fit(data.take(1), epochs=1, verbose=0, shuffle=False)
    return {"build_first": build_first, "seconds": time.perf_counter() - start, "traces": len(traces),
            "params": int(model.count_params()), "batch_size": batch_size}


VARIANT_KEYS = ("config", "builder", "policy", "jit_compile", "deterministic")


def variant_key(run) -> tuple:
    """What tells one measured variant from another: ``run``'s values of ``VARIANT_KEYS``."""
    return tuple(run[k] for k in VARIANT_KEYS)


def median_runs(runs) -> list[dict]:
    """One row per variant of :func:`train_throughput` ``runs``: the median over its rounds.

    On a shared machine two measurements of the same variant minutes apart
    differ by 10% or more, so ``make bench`` measures the variants in
    alternating rounds. Each row keeps the first run's settings and holds the
    median ``seconds_per_step`` and ``cpu_seconds_per_step`` over the rounds;
    ``tokens_per_second`` and ``flops_per_second`` follow from the median
    seconds (so ``tokens_per_second == batch_size * context_length /
    seconds_per_step`` still holds); ``rounds`` counts the runs. Rows come in
    the order in which the variants first appear.
    """
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(variant_key(run), []).append(run)
    if not groups:
        raise ValueError("runs must hold at least one train_throughput result; got none")
    rows = []
    for group in groups.values():
        seconds = float(np.median([r["seconds_per_step"] for r in group]))
        tokens = group[0]["batch_size"] * group[0]["context_length"] / seconds
        rows.append({**{k: v for k, v in group[0].items() if k not in ("round", "final_loss", "warmup_seconds")},
                     "rounds": len(group), "seconds_per_step": seconds,
                     "cpu_seconds_per_step": float(np.median([r["cpu_seconds_per_step"] for r in group])),
                     "tokens_per_second": tokens, "flops_per_second": tokens * group[0]["flops_per_token"]})
    return rows


def round_ratios(runs, faster, slower, *, cpu=False) -> list[float]:
    """Per round, how many times faster variant ``faster`` trained than ``slower`` (keys from :func:`variant_key`).

    Pairs the two variants' runs of the same ``round``: the ratio of their
    tokens/s, or with ``cpu=True`` the inverse ratio of their CPU seconds
    per step (CPU time of all threads, less disturbed by other processes).
    """
    def by_round(key):
        found = {r.get("round", 0): r for r in runs if variant_key(r) == tuple(key)}
        if not found:
            raise ValueError(f"runs hold no variant {tuple(key)!r}")
        return found

    a, b = by_round(faster), by_round(slower)
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError(f"variants {tuple(faster)!r} and {tuple(slower)!r} share no round")
    if cpu:
        return [ratio(b[i]["cpu_seconds_per_step"], a[i]["cpu_seconds_per_step"]) for i in common]
    return [ratio(a[i]["tokens_per_second"], b[i]["tokens_per_second"]) for i in common]


def activation_seconds(shape, *, dtype="float32", upcast=True, repeats=10, trials=3) -> dict:
    """Seconds per forward and backward pass of the MLP's exact GELU on a ``shape`` tensor of ``dtype``.

    ``upcast=True`` times :func:`llmft.gpt.gelu`, the book's activation
    (under bfloat16 it computes in float32 and casts back); ``False`` times
    Keras' ``gelu`` in ``dtype`` itself. One call of a ``tf.function``
    computes the GELU and its gradient for a random upstream gradient; the
    result is the fastest of ``trials`` timings of ``repeats`` calls, per call.

    Returns:
        dict with ``shape``, ``dtype``, ``upcast``, ``seconds`` (per pass)
        and ``trials`` (seconds per pass of each trial).
    """
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16'; got {dtype!r}")
    if not isinstance(upcast, bool):
        raise ValueError(f"upcast must be True or False; got {upcast!r}")
    if not isinstance(shape, (tuple, list)) or not shape or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive integers; got {shape!r}")
    repeats, trials = check_int("repeats", repeats), check_int("trials", trials)
    tf = _require_tensorflow("activation_seconds")
    fn = gpt.gelu if upcast else keras.activations.gelu
    rng = np.random.default_rng(0)
    x = tf.cast(rng.standard_normal(shape, dtype=np.float32), dtype)
    upstream = tf.cast(rng.standard_normal(shape, dtype=np.float32), dtype)

    @tf.function
    def step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return tape.gradient(y, x, output_gradients=upstream)

    step(x, upstream)  # trace
    timings = []
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            step(x, upstream)
        timings.append((time.perf_counter() - start) / repeats)
    return {"shape": list(shape), "dtype": dtype, "upcast": upcast, "seconds": min(timings), "trials": timings}


# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------


def generation_speed(model, prompt_ids, new_tokens, *, use_cache=True, repeats=3) -> dict:
    """New tokens/s of greedy :func:`llmft.sampling.generate`, best of ``repeats`` after a warm-up.

    The warm-up call generates the same number of tokens, so that every
    compiled function (one per cache shape, one for the full forward) is
    traced before timing. ``stop_ids`` is empty: exactly ``new_tokens`` come out.

    Returns:
        dict with ``use_cache``, ``new_tokens``, ``seconds`` (each repeat),
        ``tokens_per_second`` (the best repeat) and ``tokens`` (the ids, to
        check that both paths agree).
    """
    check_int("new_tokens", new_tokens)
    check_int("repeats", repeats)
    run = lambda: sampling.generate(model, prompt_ids, new_tokens, use_cache=use_cache)
    tokens = run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return {"use_cache": bool(use_cache), "new_tokens": int(new_tokens), "seconds": seconds,
            "tokens_per_second": len(tokens) / min(seconds), "tokens": tokens}


# ---------------------------------------------------------------------------
# Peak memory
# ---------------------------------------------------------------------------


def _rss_task(task, config, batch_size, steps, rank):
    """Run ``task`` in this process (the child of :func:`peak_rss`)."""
    keras.utils.set_random_seed(0)
    model = _build_model("llmft", config)
    ids = np.random.default_rng(0).integers(0, config["vocab_size"], 20 * config["context_length"] + 2)
    model(ids[None, : config["context_length"]].astype("int32"))
    if task == "idle":
        return model.count_params()
    if task == "finetune_lora":
        lora.enable_lora(model, rank)
    recipe = train.TrainConfig(steps=steps, batch_size=batch_size, warmup_steps=0, eval_every=steps)
    train.compile_for_pretraining(model, recipe)
    data = train.window_batches(ids.astype("int32"), batch_size=batch_size,
                                context_length=config["context_length"], seed=0)
    model.fit(data.take(steps), epochs=1, verbose=0, shuffle=False)
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _peak_rss_bytes():
    """This process's peak RSS: ``VmHWM`` on Linux, else ``ru_maxrss``.

    On Linux ``ru_maxrss`` survives ``exec``: a child started by a large
    parent reports the parent's peak. ``VmHWM`` belongs to the new address
    space, so it starts from zero at ``exec``.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024  # macOS: bytes, else KiB


def peak_rss(task, config, *, batch_size=8, steps=3, rank=8, timeout=600) -> dict:
    """Peak resident memory of ``task`` run in a fresh Python process.

    A new process, so that what this one already holds does not count; its
    peak RSS is read when the task is done (``VmHWM`` of ``/proc/self/status``
    on Linux, ``resource.getrusage`` elsewhere). Tasks:

    - ``"idle"``: import TensorFlow and Keras, build the GPT, one forward pass;
    - ``"train"``: then ``steps`` training steps of every weight (as pretraining);
    - ``"finetune_full"``: the same steps, read as full fine-tuning;
    - ``"finetune_lora"``: LoRA of ``rank`` on every Dense layer
      (:func:`llmft.lora.enable_lora`), only A and B trained.

    ``"train"`` and ``"finetune_full"`` run the same code: their difference
    is the run-to-run noise of the measurement.

    Returns:
        dict with ``task``, ``peak_rss_bytes`` and ``trainable_params``
        (for ``"idle"``: all parameters).
    """
    _check_choice("task", task, RSS_TASKS)
    for name, value in (("batch_size", batch_size), ("steps", steps), ("rank", rank)):
        check_int(name, value)
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict of GPT keyword arguments; got {config!r:.80}")
    args = json.dumps({"task": task, "config": config, "batch_size": batch_size, "steps": steps, "rank": rank})
    code = "import sys; from llmft import bench; bench._rss_main(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"peak_rss({task!r}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rss_main(args):
    options = json.loads(args)
    trainable = _rss_task(options["task"], options["config"], options["batch_size"], options["steps"],
                          options["rank"])
    rss = _peak_rss_bytes()
    print(json.dumps({"task": options["task"], "peak_rss_bytes": rss, "trainable_params": int(trainable)}))


# ---------------------------------------------------------------------------
# Wall times, summaries
# ---------------------------------------------------------------------------


def notebook_seconds(paths) -> dict:
    """``{notebook stem: seconds}`` from the papermill metadata of executed notebooks.

    Notebooks without papermill metadata (never executed by papermill) are left out.
    """
    if isinstance(paths, (str, os.PathLike)) or not hasattr(paths, "__iter__"):
        raise ValueError(f"paths must be a list of notebook paths; got {paths!r:.80}")
    out = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"paths must name existing notebooks; got {str(path)!r}")
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("papermill", {})
        if isinstance(meta.get("duration"), (int, float)):
            out[path.stem] = float(meta["duration"])
    return out


def ratio(numerator, denominator) -> float:
    """``numerator / denominator`` for two positive measurements."""
    for name, value in (("numerator", numerator), ("denominator", denominator)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                or not math.isfinite(value):
            raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(numerator) / float(denominator)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    import platform

    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags(names=("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")) -> dict:
    """Which of ``names`` the CPU advertises in ``/proc/cpuinfo`` (empty dict elsewhere)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return {}
    flags = set()
    for line in info.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {name: name in flags for name in names}

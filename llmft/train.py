"""Pretraining a language model on a token stream: data, schedule, checkpoints.

One function, :func:`pretrain`, trains any Keras model that maps token ids
``(B, T)`` to next-token logits ``(B, T, V)`` (the book's GPT and LSTM). What
it adds to ``model.fit``:

1. a windowed input pipeline (``tf.data`` on TensorFlow, NumPy on JAX and
   PyTorch, which need no TensorFlow) whose batch for step ``s`` depends only
   on ``(seed, s)``, so a resumed run sees exactly the batches it would have seen;
2. AdamW with linear warmup and cosine decay, and global gradient clipping;
3. validation loss every ``eval_every`` steps, one compact line each;
4. ``.keras`` checkpoints (weights and optimizer state) written atomically,
   and resume from the latest complete one after an interruption.

Introduced in chapter 3.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import keras
import numpy as np

from llmft import paths
from llmft.checks import check_int


# ---------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="llmft")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to ``peak`` over ``warmup_steps``, then cosine decay to ``peak * final_ratio``.

    Args:
        peak: the learning rate after warmup.
        warmup_steps: steps of linear increase from 0.
        total_steps: step at which the cosine reaches its minimum.
        final_ratio: the minimum as a fraction of ``peak``.

    Example:
        >>> sched = WarmupCosine(1e-3, warmup_steps=10, total_steps=100)
        >>> round(float(sched(10)), 6)
        0.001
    """

    def __init__(self, peak, warmup_steps, total_steps, final_ratio=0.1):
        if not peak > 0:
            raise ValueError(f"peak must be > 0; got {peak!r}")
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}); got {warmup_steps!r}")
        if not 0 <= final_ratio <= 1:
            raise ValueError(f"final_ratio must be in [0, 1]; got {final_ratio!r}")
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.final_ratio = float(final_ratio)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        # 1) warmup: 0 -> peak linearly (step + 1 so the very first update is not zero)
        warm = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        # 2) cosine from peak down to peak * final_ratio
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        progress = keras.ops.clip(progress, 0.0, 1.0)
        cosine = 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        decayed = self.peak * (self.final_ratio + (1.0 - self.final_ratio) * cosine)
        # 3) pick the phase
        return keras.ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "final_ratio": self.final_ratio,
        }


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def _check_stream(name, ids, context_length):
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D sequence of integer token ids; got shape {ids.shape} dtype {ids.dtype}")
    if len(ids) < context_length + 2:
        raise ValueError(
            f"{name} must hold more than context_length + 1 = {context_length + 1} tokens; got {len(ids)}"
        )
    return ids.astype(np.int32)


def _tf_pipeline() -> bool:
    # tf.data only on the TensorFlow backend: JAX and PyTorch runs must not
    # need TensorFlow installed (the GPU machine of make test-gpu has none).
    return keras.backend.backend() == "tensorflow"


def window_batches(ids, *, batch_size, context_length, seed, start_step=0, num_steps=None):
    """``(inputs, targets)`` windows sampled at random offsets, one batch per step.

    The offsets of step ``s`` come from a stateless RNG seeded by
    ``(seed, s)``: the batch of step ``s`` is the same in a fresh run and in
    a run resumed at ``s``. Targets are the inputs shifted by one token.
    On TensorFlow this is a ``tf.data.Dataset``; on the other backends a
    NumPy generator (its offsets come from NumPy's RNG, so the two backends
    see different, equally random, windows).
    """
    ids = _check_stream("ids", ids, context_length)
    if not _tf_pipeline():
        return _numpy_windows(ids, batch_size, context_length, seed, start_step, num_steps)
    import tensorflow as tf

    tokens = tf.constant(ids)
    high = len(ids) - context_length - 1
    offsets = tf.range(context_length + 1, dtype=tf.int64)

    def batch_for(step):
        starts = tf.random.stateless_uniform(
            [batch_size], seed=tf.stack([tf.cast(seed, tf.int64), step]), maxval=high + 1, dtype=tf.int64
        )
        windows = tf.gather(tokens, starts[:, None] + offsets[None, :])  # (B, T + 1)
        return windows[:, :-1], windows[:, 1:]

    steps = tf.data.Dataset.range(start_step, start_step + num_steps) if num_steps else \
        tf.data.Dataset.range(start_step, 2**62)
    return steps.map(batch_for, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
        tf.data.AUTOTUNE
    )


def _numpy_windows(ids, batch_size, context_length, seed, start_step, num_steps):
    high = len(ids) - context_length - 1
    offsets = np.arange(context_length + 1)
    step = start_step
    while num_steps is None or step < start_step + num_steps:
        starts = np.random.default_rng([int(seed), int(step)]).integers(0, high + 1, size=batch_size)
        windows = ids[starts[:, None] + offsets[None, :]]  # (B, T + 1)
        yield windows[:, :-1], windows[:, 1:]
        step += 1


class _ArrayBatches(keras.utils.PyDataset):
    """Fixed batches of two arrays; each ``evaluate`` call reads them from the start."""

    def __init__(self, inputs, targets, batch_size):
        super().__init__()
        self.inputs, self.targets, self.batch_size = inputs, targets, batch_size

    def __len__(self):
        return math.ceil(len(self.inputs) / self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.inputs[part], self.targets[part]


def eval_batches(ids, *, batch_size, context_length, max_batches=None):
    """Non-overlapping windows covering ``ids`` in order (for validation loss)."""
    ids = _check_stream("val_ids", ids, context_length)
    n = (len(ids) - 1) // context_length
    inputs = ids[: n * context_length].reshape(n, context_length)
    targets = ids[1 : n * context_length + 1].reshape(n, context_length)
    if max_batches is not None:
        inputs, targets = inputs[: max_batches * batch_size], targets[: max_batches * batch_size]
    if not _tf_pipeline():
        return _ArrayBatches(inputs, targets, batch_size)
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(batch_size)


def token_stream(documents, tokenizer):
    """Concatenate documents into one id stream, each followed by ``<eos>``."""
    if isinstance(documents, str) or not documents:
        raise ValueError(f"documents must be a non-empty list of strings; got {documents!r:.80}")
    out = []
    for doc in documents:
        out.extend(tokenizer.encode(doc, add_eos=True))
    return np.asarray(out, dtype=np.int32)


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------

LATEST = "latest.json"


def save_checkpoint(model, directory, step, history):
    """Write ``step-XXXXXXX.keras`` atomically, then point ``latest.json`` at it.

    The model file is saved under a temporary name and renamed; only then is
    ``latest.json`` (also written atomically) updated. A crash at any moment
    leaves ``latest.json`` naming a complete checkpoint. Older checkpoints
    beyond the newest two are removed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}.keras"
    paths.atomic_save_model(model, directory / name)
    paths.atomic_write_json(directory / LATEST, {"checkpoint": name, "step": step, "history": history,
                                                 "rng": seed_states(model)})
    for old in sorted(directory.glob("step-*.keras"))[:-2]:
        old.unlink(missing_ok=True)
    return directory / name


def seed_states(model):
    """The dropout random state: ``[seed, counter]`` of every Keras seed generator in ``model``.

    ``model.save`` keeps weights and optimizer state but not these counters
    (``model.variables`` has them, ``model.weights`` does not), so a resumed
    run would draw other dropout masks than an uninterrupted one.
    :func:`save_checkpoint` stores them in ``latest.json``; resuming puts
    them back with :func:`restore_seed_states`.
    """
    return [[int(x) for x in keras.ops.convert_to_numpy(v)] for v in model.variables
            if v.name == "seed_generator_state"]


def restore_seed_states(model, states):
    """Assign ``states`` (from :func:`seed_states`) to ``model``'s seed generators, in order."""
    variables = [v for v in model.variables if v.name == "seed_generator_state"]
    if not isinstance(states, list) or len(states) != len(variables):
        raise ValueError(f"states must list {len(variables)} seed generator states for this model; got {states!r:.80}")
    for variable, state in zip(variables, states):
        variable.assign(np.asarray(state, dtype=variable.dtype))


def latest_checkpoint(directory):
    """``(path, step, history)`` of the newest complete checkpoint, or ``None``."""
    meta = Path(directory) / LATEST
    if not meta.is_file():
        return None
    info = json.loads(meta.read_text(encoding="utf-8"))
    path = Path(directory) / info["checkpoint"]
    if not path.is_file():
        raise ValueError(f"directory {str(directory)!r}: {LATEST} names {info['checkpoint']} which is missing")
    return path, int(info["step"]), info["history"]


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of :func:`pretrain` (see there)."""

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    clip_norm: float = 1.0
    eval_every: int = 100
    eval_batches: int | None = 20
    seed: int = 0
    # "auto": XLA when every layer supports it and TF op determinism is off
    # (Keras turns XLA off under determinism, see llmft.env.set_seed).
    jit_compile: bool | str = "auto"

    def validate(self):
        for name in ("steps", "batch_size", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.steps % self.eval_every:
            raise ValueError(f"steps must be a multiple of eval_every={self.eval_every}; got {self.steps!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate!r}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}); got {self.warmup_steps!r}")
        if self.weight_decay < 0 or not self.clip_norm > 0:
            raise ValueError(
                f"weight_decay must be >= 0 and clip_norm > 0; got {self.weight_decay!r}, {self.clip_norm!r}"
            )


def _exclude_from_decay(optimizer):
    # No weight decay on LayerNorm scales/offsets and biases: it would pull them to 0.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])


def finetune_optimizer(learning_rate, total_steps, *, warmup_fraction, weight_decay, clip_norm,
                       final_ratio=0.0, beta_2=0.999):
    """AdamW with warmup/cosine and global-norm clipping for a fine-tuning run.

    The recipe of the fine-tuning loops (:func:`llmft.finetune.fit_classifier`,
    :func:`llmft.sft.fit_sft`, :func:`llmft.tagging.fit_tagger`): warm up for
    ``warmup_fraction`` of ``total_steps``, then cosine decay to
    ``final_ratio`` of the peak; no weight decay on biases and LayerNorm.
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0; got {learning_rate!r}")
    check_int("total_steps", total_steps)
    schedule = WarmupCosine(learning_rate, int(warmup_fraction * total_steps), total_steps, final_ratio=final_ratio)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay, beta_2=beta_2,
                                       global_clipnorm=clip_norm)
    _exclude_from_decay(optimizer)
    return optimizer


@keras.saving.register_keras_serializable(package="llmft")
class ReplicaAdamW(keras.optimizers.AdamW):
    """AdamW whose ``global_clipnorm`` clips the gradient summed over all replicas.

    Keras 3 on TensorFlow clips each replica's gradient *before* the
    all-reduce, so under ``MirroredStrategy`` every replica is clipped to the
    norm on its own and the sum can be larger than one device would allow.
    Here the replicas first add up their gradients to get the norm of the
    total, and all scale by the same factor: the summed update is the
    single-device one. With one replica it is exactly ``AdamW``.
    Introduced in chapter 7 (see :func:`llmft.env.strategy`).
    """

    def _clip_gradients(self, grads):
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if not self.global_clipnorm or context is None or context.num_replicas_in_sync == 1:
            return super()._clip_gradients(grads)
        # Dense first: summed IndexedSlices (embedding gradients) repeat a row
        # once per replica, and the norm of their values is not the gradient's.
        dense = [tf.convert_to_tensor(g) for g in grads if g is not None]
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, dense)
        norm = tf.linalg.global_norm(total)
        clip = tf.cast(self.global_clipnorm, norm.dtype)
        scale = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)  # NaN if the norm is not finite
        return [None if g is None else g * tf.cast(scale, g.dtype) for g in grads]


def compile_for_pretraining(model, config: TrainConfig):
    """AdamW + warmup/cosine + global-norm clipping, loss on logits.

    Under a ``tf.distribute`` strategy with several replicas the optimizer is
    :class:`ReplicaAdamW`, so that clipping sees the whole batch's gradient.
    """
    schedule = WarmupCosine(config.learning_rate, config.warmup_steps, config.steps)
    replicas = 1
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
    optimizer = (ReplicaAdamW if replicas > 1 else keras.optimizers.AdamW)(
        learning_rate=schedule, weight_decay=config.weight_decay, beta_2=0.99, global_clipnorm=config.clip_norm
    )
    _exclude_from_decay(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=config.jit_compile,
    )
    return model


def build_before_fit(model, data):
    """Create the variables ``model.fit`` would create in its first trace, before it traces.

    On TensorFlow without a distribution strategy, Keras builds the optimizer
    (AdamW's two moments per weight) and the compiled metrics lazily, inside
    the first trace of the training step; ``tf.function`` then traces the
    step a second time, because variables were created during the first.
    For a short ``fit`` (the smoke profile, the tests) that second trace is
    a large part of the time; :func:`llmft.bench.first_step_seconds` measures
    it (the appendix on benchmarks shows the numbers). This builds the
    model, the optimizer, the loss and the metrics eagerly, from a dummy
    batch of ones shaped like ``data``'s elements (unknown sizes as 2: a
    length of 1 would make Keras warn about a softmax over one key), and
    resets the metrics. The new variables hold the same initial values
    either way, so training is unchanged (``tests/test_train.py`` checks
    identical weights).

    Nothing happens on JAX and PyTorch (Keras builds before ``fit`` there),
    under a ``tf.distribute`` strategy (Keras builds symbolically then), or
    when ``data`` is not a ``tf.data.Dataset``. ``data`` is not iterated:
    the book's pipelines count epochs as they are iterated.

    Args:
        model: a compiled Keras model.
        data: the ``tf.data.Dataset`` that will be passed to ``model.fit``,
            with elements ``x``, ``(x, y)`` or ``(x, y, sample_weight)``.
    """
    if not getattr(model, "compiled", False):
        raise ValueError(f"model must be compiled before build_before_fit; got an uncompiled {type(model).__name__}")
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    own_strategy = model.distribute_strategy is not tf.distribute.get_strategy()
    if not isinstance(data, tf.data.Dataset) or tf.distribute.has_strategy() or own_strategy:
        return
    dummy = tf.nest.map_structure(
        lambda spec: tf.ones([2 if d is None else d for d in spec.shape], spec.dtype), data.element_spec)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(dummy)
    y_pred = model(x, training=False)  # first: the optimizer needs the model's variables
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    if y is not None:
        model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
        model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        model.reset_metrics()


class _Progress(keras.callbacks.Callback):
    """One line per evaluation; records history and writes checkpoints."""

    def __init__(self, runner):
        super().__init__()
        self.runner = runner

    def on_epoch_end(self, epoch, logs=None):
        self.runner.after_eval(logs or {})


class _Runner:
    def __init__(self, model, config, val_data, checkpoint_dir, verbose, start_step, history, tokens_per_step):
        self.model, self.config, self.val_data = model, config, val_data
        self.checkpoint_dir, self.verbose = checkpoint_dir, verbose
        self.step, self.history, self.tokens_per_step = start_step, history, tokens_per_step
        self.start = time.perf_counter()
        self.seconds_before = history[-1]["seconds"] if history else 0.0

    def after_eval(self, logs):
        self.step = min(self.step + self.config.eval_every, self.config.steps)
        val_loss = float(self.model.evaluate(self.val_data, verbose=0)) if self.val_data is not None else None
        row = {
            "step": self.step,
            "tokens": self.step * self.tokens_per_step,
            "train_loss": float(logs.get("loss", float("nan"))),
            "val_loss": val_loss,
            "seconds": round(self.seconds_before + time.perf_counter() - self.start, 2),
        }
        self.history.append(row)
        if self.verbose:
            val = f"{val_loss:.4f}" if val_loss is not None else "-"
            print(f"step {row['step']:>6d}  tokens {row['tokens']:>10,d}  train {row['train_loss']:.4f}  "
                  f"val {val}  {row['seconds']:.0f}s", flush=True)
        if self.checkpoint_dir is not None:
            save_checkpoint(self.model, self.checkpoint_dir, self.step, self.history)


def pretrain(model, train_ids, val_ids=None, *, config: TrainConfig | None = None,
             context_length=None, checkpoint_dir=None, verbose=True, callbacks=(), **overrides):
    """Train ``model`` to predict the next token of ``train_ids``.

    Args:
        model: a Keras model ``(B, T) ids -> (B, T, V) logits``.
        context_length: tokens per training window; default the model's
            ``context_length`` attribute (an LSTM has none: pass it).
        train_ids: 1-D integer token stream (e.g. :func:`token_stream`).
        val_ids: held-out stream for the validation loss (optional).
        config: a :class:`TrainConfig`; keyword ``overrides`` replace fields.
        checkpoint_dir: if given, a checkpoint is written after every
            evaluation, and a run started again with the same directory
            resumes from the latest complete checkpoint.
        verbose: print one line per evaluation.
        callbacks: extra ``keras.callbacks.Callback`` objects, run after the
            book's own progress callback in every ``fit`` call, e.g. a
            ``keras.callbacks.TensorBoard`` (chapter 7). Keras counts epochs
            as evaluations here: one "epoch" is ``eval_every`` steps.

    Returns:
        ``(model, history)``: the trained model (the resumed one if a
        checkpoint was loaded) and a list of dicts with ``step``, ``tokens``,
        ``train_loss``, ``val_loss`` (nats per token) and ``seconds``.
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    config.validate()
    if not isinstance(callbacks, (list, tuple)) or not all(
            isinstance(cb, keras.callbacks.Callback) for cb in callbacks):
        raise ValueError(f"callbacks must be a list of keras.callbacks.Callback objects; got {callbacks!r}")
    if context_length is None:
        context_length = getattr(model, "context_length", None)
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"context_length must be a positive integer (or a model attribute); got {context_length!r}")
    train_ids = _check_stream("train_ids", train_ids, context_length)

    start_step, history = 0, []
    if checkpoint_dir is not None:
        found = latest_checkpoint(checkpoint_dir)
        if found is not None:
            path, start_step, history = found
            model = keras.saving.load_model(path, safe_mode=True)
            rng = json.loads((Path(checkpoint_dir) / LATEST).read_text(encoding="utf-8")).get("rng")
            if rng is not None:  # absent in checkpoints written before it was saved
                restore_seed_states(model, rng)
            # The exclusion list is not part of the saved optimizer config:
            # set it again, or a resumed run would decay LayerNorm and biases.
            _exclude_from_decay(model.optimizer)
            if verbose:
                print(f"resumed from {path.name} at step {start_step}")
    if not getattr(model, "optimizer", None) or not model.compiled:
        compile_for_pretraining(model, config)
    if start_step >= config.steps:
        return model, history

    val_data = None
    if val_ids is not None:
        val_data = eval_batches(val_ids, batch_size=config.batch_size, context_length=context_length,
                                max_batches=config.eval_batches)
    data = window_batches(train_ids, batch_size=config.batch_size, context_length=context_length,
                          seed=config.seed, start_step=start_step)
    runner = _Runner(model, config, val_data, checkpoint_dir, verbose, start_step, history,
                     config.batch_size * context_length)
    first_eval = start_step // config.eval_every
    total_evals = math.ceil(config.steps / config.eval_every)
    build_before_fit(model, data)
    model.fit(
        data,
        initial_epoch=first_eval,
        epochs=total_evals,
        steps_per_epoch=config.eval_every,
        callbacks=[_Progress(runner), *callbacks],
        shuffle=False,  # batches are already random windows, chosen per step
        verbose=0,
    )
    return model, history

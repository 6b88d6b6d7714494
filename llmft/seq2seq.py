"""An encoder-decoder Transformer (Vaswani et al., 2017) in Keras 3, with greedy and beam search.

The book's GPT (:mod:`llmft.gpt`) is decoder-only: one stack, causal
attention, the prompt and the answer in one sequence. Sequence-to-sequence
tasks such as translation are where the original encoder-decoder design
belongs: an **encoder** reads the whole source with bidirectional
self-attention (only padding is masked), a **decoder** writes the target one
token at a time with causal self-attention plus **cross-attention** to the
encoder's output. Chapter 6.3 trains it on pinyin -> characters.

1. :class:`EncoderBlock`, :class:`DecoderBlock`: pre-LayerNorm blocks on
   ``keras.layers.MultiHeadAttention``;
2. :class:`Seq2SeqTransformer`: ``call((source_ids, target_ids))`` gives
   next-token logits; :func:`from_preset` builds a named size;
3. :func:`fit_seq2seq`: teacher forcing (the decoder reads the gold prefix),
   cross-entropy that ignores padding through ``sample_weight``;
4. :func:`sequence_log_probs`, :func:`greedy_decode`, :func:`beam_search`.

Shapes in comments: B batch, S source length, T target length, C hidden_dim,
V target vocabulary, K beam size. Id 0 is padding on both sides.
Introduced in chapter 6.3.
"""

from __future__ import annotations

import time

import keras
import numpy as np
from keras import ops

from llmft import finetune, gpt, padding
from llmft.checks import check_dropout, check_int
from llmft.train import build_before_fit, finetune_optimizer

# Named sizes; the vocabularies come from the data. "small" is the cpu
# profile's model: about 0.55M parameters with 400 syllables and 4300
# characters (most of them in the tied character embedding). No dropout:
# the cpu run sees less than half an epoch, so it cannot overfit.
PRESETS: dict[str, dict] = {
    "tiny": dict(num_encoder_layers=1, num_decoder_layers=1, num_heads=2, hidden_dim=32),
    "small": dict(num_encoder_layers=2, num_decoder_layers=2, num_heads=4, hidden_dim=64),
    "base": dict(num_encoder_layers=6, num_decoder_layers=6, num_heads=8, hidden_dim=512, dropout=0.1),
}


# Keras' default initialisers (Glorot uniform kernels, uniform(-0.05, 0.05)
# embeddings), as in the Keras seq2seq examples: with GPT-2's N(0, 0.02) the
# cross-attention path starts so small that the decoder first learns to
# ignore the source (measured: a 400 -> 4000 token substitution task stayed
# at the loss of a source-blind model for hundreds of steps).
def _attention(hidden_dim, num_heads, dropout, name):
    return keras.layers.MultiHeadAttention(num_heads, hidden_dim // num_heads, dropout=dropout, name=name)


@keras.saving.register_keras_serializable(package="llmft")
class EncoderBlock(keras.layers.Layer):
    """Pre-LN encoder block: ``x + self_attn(ln(x))`` (every position sees every real token), then an MLP.

    Args:
        hidden_dim: width C; must divide by num_heads.
        num_heads: attention heads.
        mlp_dim: hidden width of the MLP.
        dropout: dropout on attention weights and residual branches.
    """

    def __init__(self, hidden_dim, num_heads, mlp_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.num_heads, self.mlp_dim, self.dropout = hidden_dim, num_heads, mlp_dim, dropout
        self.ln_1 = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_1")
        self.attn = _attention(hidden_dim, num_heads, dropout, "self_attn")
        self.ln_2 = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_2")
        self.mlp_in = keras.layers.Dense(mlp_dim, activation=gpt.gelu, name="mlp_in")
        self.mlp_out = keras.layers.Dense(hidden_dim, name="mlp_out")
        self.drop = keras.layers.Dropout(dropout, name="resid_dropout")

    def build(self, input_shape):
        shape = (None, None, self.hidden_dim)
        for ln in (self.ln_1, self.ln_2):
            ln.build(shape)
        self.attn.build(shape, shape)
        self.mlp_in.build(shape)
        self.mlp_out.build((None, None, self.mlp_dim))

    def call(self, x, attention_mask, training=False):
        # attention_mask (B, S, S): True where the key is a real source token.
        h = self.ln_1(x)
        x = x + self.drop(self.attn(h, h, attention_mask=attention_mask, training=training), training=training)
        return x + self.drop(self.mlp_out(self.mlp_in(self.ln_2(x))), training=training)  # (B, S, C)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="llmft")
class DecoderBlock(keras.layers.Layer):
    """Pre-LN decoder block: causal self-attention, cross-attention to the encoder, MLP.

    Args:
        hidden_dim: width C; must divide by num_heads.
        num_heads: attention heads.
        mlp_dim: hidden width of the MLP.
        dropout: dropout on attention weights and residual branches.
    """

    def __init__(self, hidden_dim, num_heads, mlp_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.num_heads, self.mlp_dim, self.dropout = hidden_dim, num_heads, mlp_dim, dropout
        self.ln_1 = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_1")
        self.self_attn = _attention(hidden_dim, num_heads, dropout, "self_attn")
        self.ln_2 = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_2")
        self.cross_attn = _attention(hidden_dim, num_heads, dropout, "cross_attn")
        self.ln_3 = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_3")
        self.mlp_in = keras.layers.Dense(mlp_dim, activation=gpt.gelu, name="mlp_in")
        self.mlp_out = keras.layers.Dense(hidden_dim, name="mlp_out")
        self.drop = keras.layers.Dropout(dropout, name="resid_dropout")

    def build(self, input_shape):
        shape = (None, None, self.hidden_dim)
        for ln in (self.ln_1, self.ln_2, self.ln_3):
            ln.build(shape)
        self.self_attn.build(shape, shape)
        self.cross_attn.build(shape, shape)
        self.mlp_in.build(shape)
        self.mlp_out.build((None, None, self.mlp_dim))

    def call(self, x, memory, cross_mask, training=False):
        # x (B, T, C) target side; memory (B, S, C) encoder output; cross_mask (B, T, S).
        h = self.ln_1(x)
        # Causal: position t sees target positions <= t. Right padding needs no
        # extra mask: a real token never sees a later (padding) position.
        h = self.self_attn(h, h, use_causal_mask=True, training=training)
        x = x + self.drop(h, training=training)
        h = self.cross_attn(self.ln_2(x), memory, attention_mask=cross_mask, training=training)
        x = x + self.drop(h, training=training)  # every target position may read every real source token
        return x + self.drop(self.mlp_out(self.mlp_in(self.ln_3(x))), training=training)  # (B, T, C)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="llmft")
class Seq2SeqTransformer(keras.Model):
    """Encoder-decoder Transformer; ``call((source_ids, target_ids))`` returns logits (B, T, V).

    ``target_ids`` is the decoder input (``<bos>`` and the gold prefix under
    teacher forcing); the logits at position t predict target token t + 1.
    Introduced in chapter 6.3.

    Args:
        source_vocab_size: number of source ids.
        target_vocab_size: number of target ids V.
        max_source_length: longest source (learned positions).
        max_target_length: longest decoder input (learned positions).
        num_encoder_layers, num_decoder_layers: depth of the two stacks.
        num_heads: attention heads; must divide hidden_dim.
        hidden_dim: width C of embeddings and residual streams.
        mlp_dim: MLP width; default ``4 * hidden_dim``.
        dropout: dropout rate in [0, 1).
        pad_id: padding id of both sides (masked in the encoder and in cross-attention).

    Example:
        >>> m = Seq2SeqTransformer(source_vocab_size=20, target_vocab_size=30, max_source_length=8,
        ...                        max_target_length=9, num_encoder_layers=1, num_decoder_layers=1,
        ...                        num_heads=2, hidden_dim=16)
        >>> tuple(m((np.ones((2, 5), "int32"), np.ones((2, 3), "int32"))).shape)
        (2, 3, 30)
    """

    def __init__(self, *, source_vocab_size, target_vocab_size, max_source_length, max_target_length,
                 num_encoder_layers, num_decoder_layers, num_heads, hidden_dim, mlp_dim=None, dropout=0.0,
                 pad_id=0, **kwargs):
        for name, value in [("source_vocab_size", source_vocab_size), ("target_vocab_size", target_vocab_size),
                            ("max_source_length", max_source_length), ("max_target_length", max_target_length),
                            ("num_encoder_layers", num_encoder_layers), ("num_decoder_layers", num_decoder_layers),
                            ("num_heads", num_heads), ("hidden_dim", hidden_dim)]:
            check_int(name, value)
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim must be divisible by num_heads={num_heads}; got {hidden_dim!r}")
        mlp_dim = 4 * hidden_dim if mlp_dim is None else mlp_dim
        check_int("mlp_dim", mlp_dim)
        check_dropout(dropout)
        check_int("pad_id", pad_id, minimum=0)
        super().__init__(**kwargs)
        self.source_vocab_size, self.target_vocab_size = int(source_vocab_size), int(target_vocab_size)
        self.max_source_length, self.max_target_length = int(max_source_length), int(max_target_length)
        self.num_encoder_layers, self.num_decoder_layers = int(num_encoder_layers), int(num_decoder_layers)
        self.num_heads, self.hidden_dim, self.mlp_dim = int(num_heads), int(hidden_dim), int(mlp_dim)
        self.dropout, self.pad_id = float(dropout), int(pad_id)

        def embedding(n, name):
            return keras.layers.Embedding(n, hidden_dim, name=name)

        self.source_embedding = embedding(source_vocab_size, "source_embedding")
        self.source_position = embedding(max_source_length, "source_position")
        self.target_embedding = embedding(target_vocab_size, "target_embedding")  # also the output layer (tied)
        self.target_position = embedding(max_target_length, "target_position")
        self.embed_dropout = keras.layers.Dropout(dropout, name="embed_dropout")
        self.encoder_blocks = [EncoderBlock(hidden_dim, num_heads, mlp_dim, dropout, name=f"encoder_{i}")
                               for i in range(num_encoder_layers)]
        self.decoder_blocks = [DecoderBlock(hidden_dim, num_heads, mlp_dim, dropout, name=f"decoder_{i}")
                               for i in range(num_decoder_layers)]
        self.encoder_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="encoder_ln")
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="decoder_ln")

    def build(self, input_shape=None):
        # Sizes come from the config, not from input_shape: the model accepts any B, S, T.
        for emb, n in [(self.source_embedding, None), (self.target_embedding, None)]:
            emb.build((None, n))
        self.source_position.build((None,))
        self.target_position.build((None,))
        for block in self.encoder_blocks + self.decoder_blocks:
            block.build((None, None, self.hidden_dim))
        self.encoder_norm.build((None, None, self.hidden_dim))
        self.decoder_norm.build((None, None, self.hidden_dim))

    @staticmethod
    def _ids(ids, name, limit):
        if isinstance(ids, (list, tuple, np.ndarray)):
            ids = np.asarray(ids, dtype="int32")
        if len(ids.shape) != 2:
            raise ValueError(f"{name} must have shape (batch, length); got shape {tuple(ids.shape)}")
        if isinstance(ids.shape[1], int) and ids.shape[1] > limit:
            raise ValueError(f"{name} must be at most {limit} tokens long; got length {ids.shape[1]}")
        return ids

    def encode(self, source_ids, training=False):
        """Encoder output ``memory`` (B, S, C) of ``source_ids`` (B, S)."""
        source_ids = self._ids(source_ids, "source_ids", self.max_source_length)
        if not self.built:
            self.build()
        length = ops.shape(source_ids)[1]
        x = self.source_embedding(source_ids) + self.source_position(ops.arange(length))[None]  # (B, S, C)
        x = self.embed_dropout(x, training=training)
        valid = ops.not_equal(source_ids, self.pad_id)  # (B, S)
        mask = ops.logical_and(valid[:, None, :], ops.ones_like(valid)[:, :, None])  # (B, S, S): key is real
        for block in self.encoder_blocks:
            x = block(x, mask, training=training)
        return self.encoder_norm(x)

    def decode(self, memory, source_ids, target_ids, training=False):
        """Logits (B, T, V) of the decoder reading ``target_ids`` (B, T) and ``memory`` (B, S, C)."""
        target_ids = self._ids(target_ids, "target_ids", self.max_target_length)
        source_ids = self._ids(source_ids, "source_ids", self.max_source_length)
        length = ops.shape(target_ids)[1]
        x = self.target_embedding(target_ids) + self.target_position(ops.arange(length))[None]  # (B, T, C)
        x = self.embed_dropout(x, training=training)
        valid = ops.not_equal(source_ids, self.pad_id)  # (B, S)
        cross_mask = ops.logical_and(valid[:, None, :], ops.ones_like(target_ids, dtype="bool")[:, :, None])
        for block in self.decoder_blocks:
            x = block(x, memory, cross_mask, training=training)  # (B, T, C)
        x = self.decoder_norm(x)
        kernel = ops.cast(self.target_embedding.embeddings, x.dtype)  # (V, C), tied output layer
        return ops.cast(ops.matmul(x, ops.transpose(kernel)), "float32")  # (B, T, V)

    def call(self, inputs, training=False):
        source_ids, target_ids = inputs
        return self.decode(self.encode(source_ids, training), source_ids, target_ids, training)

    def get_config(self):
        keys = ("source_vocab_size", "target_vocab_size", "max_source_length", "max_target_length",
                "num_encoder_layers", "num_decoder_layers", "num_heads", "hidden_dim", "mlp_dim", "dropout",
                "pad_id")
        return {**super().get_config(), **{k: getattr(self, k) for k in keys}}


def from_preset(name, *, source_vocab_size, target_vocab_size, max_source_length=32, max_target_length=32,
                **overrides):
    """A :class:`Seq2SeqTransformer` of size ``PRESETS[name]``; ``overrides`` replace preset values.

    Example:
        >>> from_preset("tiny", source_vocab_size=10, target_vocab_size=12).hidden_dim
        32
    """
    if name not in PRESETS:
        raise ValueError(f"name must be one of {sorted(PRESETS)}; got {name!r}")
    return Seq2SeqTransformer(source_vocab_size=source_vocab_size, target_vocab_size=target_vocab_size,
                              max_source_length=max_source_length, max_target_length=max_target_length,
                              **{**PRESETS[name], **overrides})


# --------------------------------------------------------------------------
# Training: teacher forcing, loss on real target tokens only
# --------------------------------------------------------------------------


def _check_pair(name, value):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be (source_ids, target_ids); got {type(value).__name__}")
    source, target = (np.asarray(a, dtype="int32") for a in value)
    if source.ndim != 2 or target.ndim != 2 or len(source) != len(target) or len(source) == 0:
        raise ValueError(f"{name} must be two non-empty (N, length) arrays with the same N; "
                         f"got shapes {source.shape} and {target.shape}")
    return source, target


def teacher_forcing(target_ids, pad_id=0):
    """``(decoder_input, labels, weights)`` of ``target_ids`` (``<bos> ... <eos>`` padded).

    The decoder reads ``target[:, :-1]`` and predicts ``target[:, 1:]``; the
    weight is 1 on real label tokens (``<eos>`` included) and 0 on padding.
    """
    target_ids = np.asarray(target_ids, dtype="int32")
    if target_ids.ndim != 2 or target_ids.shape[1] < 2:
        raise ValueError(f"target_ids must have shape (N, length >= 2); got shape {target_ids.shape}")
    labels = target_ids[:, 1:]
    return target_ids[:, :-1], labels, (labels != pad_id).astype("float32")


def _batches(source, target, batch_size, seed, shuffle, fixed=False):
    """A ``tf.data`` pipeline of ``((src, dec_in), labels, weights)``, bucketed by length.

    With ``shuffle`` it repeats forever (a new seeded order each pass). With
    ``fixed`` every batch keeps the full width, so that an XLA-compiled step
    sees one shape only.
    """
    import tensorflow as tf

    lengths, epoch = padding.lengths(target), [0]

    def generate():
        while True:
            groups = finetune.batch_indices(lengths, batch_size=batch_size, shuffle=shuffle, seed=seed + epoch[0])
            epoch[0] += 1
            for rows in groups:
                src, tgt = source[rows], target[rows]
                if not fixed:
                    src, tgt = src[:, :padding.batch_width(src)], tgt[:, :padding.batch_width(tgt) + 1]
                yield (src, *teacher_forcing(tgt)[:1]), *teacher_forcing(tgt)[1:]
            if not shuffle:
                return

    ids = tf.TensorSpec((None, None), tf.int32)
    spec = ((ids, ids), ids, tf.TensorSpec((None, None), tf.float32))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=spec)
    if shuffle:
        return dataset  # endless: fit() takes steps_per_epoch batches per evaluation
    # A known length lets Keras end each validation pass cleanly (no "ran out of data" warning).
    return dataset.apply(tf.data.experimental.assert_cardinality(-(-len(source) // batch_size)))


def fit_seq2seq(model, train, val, *, steps, batch_size=64, learning_rate=1e-3, eval_every=100,
                warmup_fraction=0.05, weight_decay=0.01, clip_norm=1.0, seed=0, jit_compile=False, verbose=True):
    """Train ``model`` with teacher forcing; one printed line and one history row per evaluation.

    The loss is the mean cross-entropy per real target token: padding gets
    ``sample_weight`` 0 and the reduction ``"mean_with_sample_weight"``
    divides by the number of real tokens, not by ``B * T``.

    Args:
        model: Seq2SeqTransformer;
            The model to train (in place).
        train, val: tuple;
            ``(source_ids, target_ids)`` from :func:`llmft.translation.encode_pairs`.
        steps: int;
            Optimisation steps; a multiple of ``eval_every``.
        batch_size, learning_rate, eval_every: int, float, int;
            Batch size, peak learning rate (warmup then cosine), steps between evaluations.
        jit_compile: bool;
            Compile the training step with XLA. Batches then keep the full
            padded width (one shape, one compilation): more padding, but on a
            small model far less per-step overhead. Otherwise each batch is cut
            to its longest row.

    Returns:
        ``step``, ``tokens`` (target tokens seen), ``train_loss``, ``val_loss``, ``seconds``.
    """
    for name, value in [("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)]:
        check_int(name, value)
    if steps % eval_every:
        raise ValueError(f"steps must be a multiple of eval_every={eval_every}; got {steps!r}")
    source, target = _check_pair("train", train)
    val_source, val_target = _check_pair("val", val)
    optimizer = finetune_optimizer(learning_rate, steps, warmup_fraction=warmup_fraction,
                                   weight_decay=weight_decay, clip_norm=clip_norm)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")
    if not isinstance(jit_compile, bool):
        raise ValueError(f"jit_compile must be True or False; got {jit_compile!r}")
    model.compile(optimizer=optimizer, loss=loss, jit_compile=jit_compile)
    tokens_per_step = float((target[:, 1:] != 0).sum()) / len(target) * batch_size
    history, start = [], time.perf_counter()

    class _Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            step = (epoch + 1) * eval_every
            row = {"step": step, "tokens": int(step * tokens_per_step), "train_loss": float(logs["loss"]),
                   "val_loss": float(logs["val_loss"]), "seconds": round(time.perf_counter() - start, 1)}
            history.append(row)
            if verbose:
                print(f"步 {step:>5}  训练损失 {row['train_loss']:.4f}  验证损失 {row['val_loss']:.4f}  "
                      f"{row['seconds']:.0f}s", flush=True)

    train_data = _batches(source, target, batch_size, seed, True, jit_compile)
    build_before_fit(model, train_data)
    # shuffle=False: the pipeline shuffles itself, with a new seeded order each pass.
    model.fit(train_data, epochs=steps // eval_every,
              steps_per_epoch=eval_every,
              validation_data=_batches(val_source, val_target, 256, seed, False, jit_compile),
              callbacks=[_Log()], shuffle=False, verbose=0)
    return history


# --------------------------------------------------------------------------
# Scoring and decoding
# --------------------------------------------------------------------------


def sequence_log_probs(model, source_ids, target_ids, *, batch_size=256):
    """Log-probability (natural log) under ``model`` of each target row given its source.

    ``target_ids`` rows are ``<bos> t1 ... tn <eos>`` padded with ``pad_id``:
    the result sums ``log p(t_i | source, t_<i)`` over every token after
    ``<bos>`` (``<eos>`` included), shape (N,).
    """
    check_int("batch_size", batch_size)
    source_ids, target_ids = _check_pair("(source_ids, target_ids)", (source_ids, target_ids))
    out = []
    for i in range(0, len(source_ids), batch_size):
        dec_in, labels, weights = teacher_forcing(target_ids[i:i + batch_size], model.pad_id)
        logits = model((source_ids[i:i + batch_size], dec_in), training=False)  # (B, T, V)
        logp = ops.convert_to_numpy(ops.log_softmax(logits, axis=-1))
        picked = np.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]  # (B, T)
        out.append((picked * weights).sum(axis=1))
    return np.concatenate(out)


def _step_function(model):
    """``step(memory, source_ids, prefix) -> log p(next token)`` (B, V), compiled once per model on TF."""
    def step(memory, source_ids, prefix):
        logits = model.decode(memory, source_ids, prefix, training=False)[:, -1]  # (B, V) at the last position
        return ops.log_softmax(logits, axis=-1)

    if keras.backend.backend() != "tensorflow":
        return step, model.encode
    import tensorflow as tf

    cache = model.__dict__.setdefault("_llmft_decode_fns", {})
    if not cache:
        ids = tf.TensorSpec((None, None), tf.int32)
        memory = tf.TensorSpec((None, None, model.hidden_dim), model.compute_dtype)
        def encode(source_ids):
            return model.encode(source_ids, training=False)

        cache["step"] = tf.function(step, input_signature=[memory, ids, ids])
        cache["encode"] = tf.function(encode, input_signature=[ids])
    return cache["step"], cache["encode"]


def _check_decode_args(model, source_ids, bos_id, eos_id, max_length, batch_size):
    if not isinstance(model, Seq2SeqTransformer):
        raise ValueError(f"model must be a Seq2SeqTransformer; got {type(model).__name__}")
    source_ids = np.asarray(source_ids, dtype="int32")
    if source_ids.ndim != 2 or len(source_ids) == 0:
        raise ValueError(f"source_ids must have shape (N, S) with N >= 1; got shape {source_ids.shape}")
    for name, value in [("bos_id", bos_id), ("eos_id", eos_id)]:
        check_int(name, value, minimum=0)
        if value >= model.target_vocab_size:
            raise ValueError(f"{name} must be < target_vocab_size={model.target_vocab_size}; got {value}")
    check_int("max_length", max_length)
    if max_length > model.max_target_length:
        raise ValueError(f"max_length must be <= max_target_length={model.max_target_length}; got {max_length}")
    check_int("batch_size", batch_size)
    return source_ids


def _strip(row, eos_id, pad_id):
    out = []
    for t in row:
        if t == eos_id:
            break
        if t != pad_id:
            out.append(int(t))
    return out


def greedy_decode(model, source_ids, *, bos_id, eos_id, max_length, batch_size=256):
    """Pick the most probable next token at every step until ``<eos>`` (or ``max_length`` tokens).

    Args:
        model: Seq2SeqTransformer;
        source_ids: array (N, S);
            Padded source ids.
        bos_id, eos_id: int;
            Start and end tokens of the target vocabulary.
        max_length: int;
            Most tokens generated per row, ``<eos>`` included.

    Returns:
        The tuple ``(sequences, log_probs)`` with one list of ids per row (without
        ``<bos>``/``<eos>``), and the summed log-probability of the generated
        tokens (``<eos>`` included) as an array (N,).
    """
    source_ids = _check_decode_args(model, source_ids, bos_id, eos_id, max_length, batch_size)
    step, encode = _step_function(model)
    sequences, scores = [], []
    for i in range(0, len(source_ids), batch_size):
        src = source_ids[i:i + batch_size]
        src = src[:, :padding.batch_width(src, 1)]
        memory = encode(src)  # (B, S, C): the encoder runs once per source
        tokens = np.full((len(src), max_length + 1), model.pad_id, "int32")
        tokens[:, 0] = bos_id
        done = np.zeros(len(src), bool)
        score = np.zeros(len(src), "float64")
        for t in range(max_length):
            logp = ops.convert_to_numpy(step(memory, src, tokens[:, :t + 1]))  # (B, V)
            nxt = logp.argmax(axis=-1)
            score += np.where(done, 0.0, logp[np.arange(len(src)), nxt])
            tokens[:, t + 1] = np.where(done, model.pad_id, nxt)
            done |= nxt == eos_id
            if done.all():
                break
        sequences += [_strip(row[1:], eos_id, model.pad_id) for row in tokens]
        scores.append(score)
    return sequences, np.concatenate(scores)


def beam_search(model, source_ids, *, bos_id, eos_id, max_length, beam_size=4, length_penalty=1.0,
                batch_size=64):
    """Keep the ``beam_size`` most probable prefixes at every step; return the best finished one per row.

    Batched over rows and beams: every step scores all ``B * K`` prefixes at
    once. A prefix that emitted ``<eos>`` is frozen (it keeps its score and
    stays in the beam, competing with the live ones), so ``beam_size=1`` is
    exactly :func:`greedy_decode`. The beams are ranked by summed
    log-probability while searching; at the end the best of the K is chosen
    by the **length-normalised** score ``log p / length ** length_penalty``
    (``length_penalty=0``: no normalisation), because a plain sum favours
    short outputs (every token adds a negative term).

    Args:
        model: Seq2SeqTransformer;
        source_ids: array (N, S);
        bos_id, eos_id: int;
        max_length: int;
            Most tokens generated per row, ``<eos>`` included.
        beam_size: int;
            K; at most the target vocabulary size.
        length_penalty: float;
            Exponent of the length in the final normalisation (>= 0).

    Returns:
        ``(sequences, log_probs)`` as in :func:`greedy_decode` (``log_probs``
        is the un-normalised sum of the chosen sequence).
    """
    source_ids = _check_decode_args(model, source_ids, bos_id, eos_id, max_length, batch_size)
    check_int("beam_size", beam_size)
    if beam_size > model.target_vocab_size:
        raise ValueError(f"beam_size must be <= target_vocab_size={model.target_vocab_size}; got {beam_size}")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or not length_penalty >= 0:
        raise ValueError(f"length_penalty must be a number >= 0; got {length_penalty!r}")
    step, encode = _step_function(model)
    K, V = beam_size, model.target_vocab_size
    sequences, best_scores = [], []
    for i in range(0, len(source_ids), batch_size):
        src = source_ids[i:i + batch_size]
        src = src[:, :padding.batch_width(src, 1)]
        B = len(src)
        src_k = np.repeat(src, K, axis=0)  # (B*K, S): row b*K + k is beam k of item b
        memory = ops.repeat(encode(src), K, axis=0)  # (B*K, S, C)
        tokens = np.full((B, K, max_length + 1), model.pad_id, "int32")
        tokens[:, :, 0] = bos_id
        scores = np.full((B, K), -np.inf)
        scores[:, 0] = 0.0  # one live beam at the start: the K copies would all pick the same tokens
        finished = np.zeros((B, K), bool)
        lengths = np.zeros((B, K), "int64")
        rows = np.arange(B)[:, None]
        for t in range(max_length):
            logp = ops.convert_to_numpy(step(memory, src_k, tokens[:, :, :t + 1].reshape(B * K, t + 1)))
            logp = logp.reshape(B, K, V).astype("float64")
            logp[finished] = -np.inf  # a finished beam has one continuation: padding, at no cost
            logp[finished, model.pad_id] = 0.0
            candidates = (scores[:, :, None] + logp).reshape(B, K * V)  # (B, K*V)
            top = np.argpartition(-candidates, K - 1, axis=1)[:, :K]  # the K best, unordered
            top_scores = np.take_along_axis(candidates, top, axis=1)
            order = np.lexsort((top, -top_scores), axis=1)  # by score, ties by index
            top = np.take_along_axis(top, order, axis=1)  # (B, K)
            beam, token = top // V, top % V
            was_finished = finished[rows, beam]
            tokens = tokens[rows, beam]  # (B, K, L): each new beam continues its parent
            tokens[:, :, t + 1] = token
            scores = np.take_along_axis(candidates, top, axis=1)
            lengths = lengths[rows, beam] + ~was_finished
            finished = was_finished | (token == eos_id)
            if finished.all():
                break
        normalised = scores / np.maximum(lengths, 1) ** float(length_penalty)
        best = normalised.argmax(axis=1)  # (B,)
        sequences += [_strip(tokens[b, k, 1:], eos_id, model.pad_id) for b, k in enumerate(best)]
        best_scores.append(scores[np.arange(B), best])
    return sequences, np.concatenate(best_scores)

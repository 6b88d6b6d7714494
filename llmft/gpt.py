"""A decoder-only Transformer (GPT) in Keras 3, written with ``keras.ops``.

Chapter 2 introduces the architecture (causal self-attention, decoder-only);
chapter 3 pretrains it as the book's base language model; chapters 5 and 6
fine-tune it. Only ``keras.ops`` is used, so the same code runs on the
TensorFlow (default), JAX and PyTorch backends.

Shapes in comments: B batch, T tokens, C hidden_dim, H heads, D = C / H,
S cache length, V vocab_size.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from llmft.checks import check_dropout, check_int

# Named sizes (the vocabulary comes from the tokenizer, so it is not here).
# "small" is the cpu profile's base model: 1.19M parameters with that
# profile's 3000-character vocabulary (chapter 3). On a 2-core CPU a training
# step (batch 32, context 128) takes about 0.6-0.7 s, a quarter to a third of
# it in the output layer and its softmax cross-entropy (chapter 7's profile).
PRESETS: dict[str, dict] = {
    "tiny": dict(context_length=32, num_layers=2, num_heads=2, hidden_dim=32),
    "small": dict(context_length=128, num_layers=4, num_heads=4, hidden_dim=128, dropout=0.1),
    "base": dict(context_length=256, num_layers=8, num_heads=8, hidden_dim=512, dropout=0.1),
}


@keras.saving.register_keras_serializable(package="llmft")
def gelu(x):
    """Exact GELU, ``x * Phi(x)`` (Hendrycks & Gimpel, 2016): Keras' ``"gelu"``.

    In float32 (every chapter) this *is* ``keras.activations.gelu``, op for
    op. Under ``mixed_bfloat16`` on TensorFlow it upcasts to float32 and
    casts the result back: on the book's CPU host the GELU's forward and
    backward pass (an ``erfc``, then an ``exp``) took longer in bfloat16 than
    in float32, eating into what the bfloat16 matmuls gain (``make bench``
    times both ways, :func:`llmft.bench.activation_seconds`; the appendix
    on benchmarks shows the numbers). The MLP's matmuls stay in bfloat16;
    only this elementwise step does not.
    """
    if keras.backend.backend() == "tensorflow" and keras.backend.standardize_dtype(x.dtype) == "bfloat16":
        return ops.cast(keras.activations.gelu(ops.cast(x, "float32")), "bfloat16")
    return keras.activations.gelu(x)


def _normal(std):
    # A fresh initializer per layer: one shared instance would give every
    # layer the same seed. std=0.02 follows GPT-2.
    return keras.initializers.RandomNormal(stddev=std)


@keras.saving.register_keras_serializable(package="llmft")
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head self-attention where token t only sees tokens <= t.

    Written out (instead of ``keras.layers.MultiHeadAttention``) so that it can
    return the attention weights and read/write a KV cache.

    Args:
        hidden_dim: width C of the residual stream; must divide by num_heads.
        num_heads: number of heads H.
        dropout: dropout rate on the attention weights.
        output_init_std: stddev of the output projection's initializer.
    """

    def __init__(self, hidden_dim, num_heads, dropout=0.0, output_init_std=0.02, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.dropout = dropout
        self.output_init_std = output_init_std
        # One fused projection gives q, k and v in a single matmul.
        self.qkv = keras.layers.Dense(3 * hidden_dim, kernel_initializer=_normal(0.02), name="qkv")
        self.attn_out = keras.layers.Dense(
            hidden_dim, kernel_initializer=_normal(output_init_std), name="attn_out"
        )
        self.attn_dropout = keras.layers.Dropout(dropout, name="attn_dropout")

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.attn_out.build(input_shape)

    def forward(self, x, training=False, cache=None, cache_index=0, row_positions=None):
        """Return ``(output, attention_weights, new_cache)``.

        ``cache`` is ``None`` for a plain causal pass, or this layer's
        ``(B, 2, H, S, D)`` keys/values; the new keys and values of ``x`` are
        written at positions ``cache_index ... cache_index + T - 1``. With
        ``row_positions`` (B,) instead, ``x`` is one token per row (T = 1),
        row ``b`` at its own position ``row_positions[b]``: it attends to its
        cache slots before that position and to itself, the cache is only
        read, and ``new_cache`` is the new keys and values, (B, 2, H, D), for
        the caller to write at those positions (see ``GPT.call_rows_with_cache``).
        """
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        qkv = self.qkv(x)  # (B, T, 3C)
        qkv = ops.reshape(qkv, (batch, length, 3, self.num_heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # (3, B, H, T, D)
        # unstack, not qkv[0], qkv[1], qkv[2]: the gradient of three slices is
        # three full-size zero tensors summed, that of unstack one stack;
        # a training step is ~10% faster on a 2-core CPU, bit for bit the same.
        q, k, v = ops.unstack(qkv, 3, axis=0)  # each (B, H, T, D)

        if row_positions is not None:
            return self._attend_rows(q, k, v, cache, row_positions, x.dtype)
        query_pos = ops.arange(length) + cache_index  # (T,)
        if cache is None:
            key_pos = ops.arange(length)
            new_cache = None
        else:
            update = ops.stack([k, v], axis=1)  # (B, 2, H, T, D)
            new_cache = ops.slice_update(cache, [0, 0, 0, cache_index, 0], update)
            k, v = new_cache[:, 0], new_cache[:, 1]  # (B, H, S, D)
            # Slots after the current position are zeros (or stale); the
            # causal mask below hides them, so no separate padding mask.
            key_pos = ops.arange(ops.shape(cache)[3])
        mask = key_pos[None, :] <= query_pos[:, None]  # (T, T) or (T, S)

        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))  # (B, H, T, S)
        # Softmax in float32: under mixed precision float16 would overflow
        # the -1e9 fill value and lose precision in the normalisation.
        scores = ops.cast(scores, "float32") / math.sqrt(self.head_dim)
        scores = ops.where(mask, scores, -1e9)
        weights = ops.softmax(scores, axis=-1)  # (B, H, T, S), rows sum to 1
        dropped = self.attn_dropout(ops.cast(weights, x.dtype), training=training)
        out = ops.matmul(dropped, v)  # (B, H, T, D)
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (batch, length, self.hidden_dim))
        return self.attn_out(out), weights, new_cache  # (B, T, C)

    def _attend_rows(self, q, k, v, cache, row_positions, dtype):
        """Attention of one token per row over that row's cached slots and itself.

        The cache is only read here, and the row's own key and value enter as
        one more score: the caller writes them into the cache afterwards (in
        place on JAX), instead of this pass writing them into a copy of the
        whole cache first, as ``call_with_cache`` does.
        """
        cached_k, cached_v = cache[:, 0], cache[:, 1]  # (B, H, S, D)
        slots = ops.arange(ops.shape(cache)[3])
        # Slots from a row's position on are stale (an earlier prompt of that row) or zeros.
        earlier = (slots[None, :] < row_positions[:, None])[:, None, None, :]  # (B, 1, 1, S)
        # Products and sums, not matmul: with one query per row a batched matmul is B x H tiny
        # matrix-vector products, which XLA on a CPU runs several times slower than one fused pass.
        scores = ops.cast(ops.sum(q * cached_k, axis=-1), "float32")[:, :, None, :]  # (B, H, 1, S)
        scores = ops.where(earlier, scores / math.sqrt(self.head_dim), -1e9)
        own = ops.cast(ops.sum(q * k, axis=-1, keepdims=True), "float32") / math.sqrt(self.head_dim)  # (B, H, 1, 1)
        weights = ops.softmax(ops.concatenate([scores, own], axis=-1), axis=-1)  # (B, H, 1, S + 1)
        weights = ops.cast(weights, dtype)
        out = ops.sum(ops.transpose(weights[..., :-1], (0, 1, 3, 2)) * cached_v, axis=2, keepdims=True) \
            + weights[..., -1:] * v  # (B, H, 1, D)
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (ops.shape(q)[0], 1, self.hidden_dim))
        return self.attn_out(out), weights, ops.stack([k[:, :, 0], v[:, :, 0]], axis=1)  # new: (B, 2, H, D)

    def call(self, x, training=False):
        return self.forward(x, training=training)[0]

    def get_config(self):
        keys = ("hidden_dim", "num_heads", "dropout", "output_init_std")
        return {**super().get_config(), **{key: getattr(self, key) for key in keys}}


@keras.saving.register_keras_serializable(package="llmft")
class TransformerBlock(keras.layers.Layer):
    """Pre-LayerNorm block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``.

    Pre-LN (GPT-2 style) keeps an un-normalised residual path from input to
    output, which trains more stably than the original Post-LN (Xiong et al.,
    2020, "On Layer Normalization in the Transformer Architecture").

    Args:
        hidden_dim: width C of the residual stream.
        num_heads: attention heads.
        mlp_dim: width of the MLP's hidden layer (usually 4C).
        dropout: dropout on attention weights and on both residual branches.
        layer_norm_epsilon: epsilon of both LayerNorms.
        output_init_std: stddev for the two projections that write into the
            residual stream.
    """

    def __init__(
        self, hidden_dim, num_heads, mlp_dim, dropout=0.0, layer_norm_epsilon=1e-5,
        output_init_std=0.02, **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.output_init_std = output_init_std
        self.ln_1 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="ln_1")
        self.attn = CausalSelfAttention(
            hidden_dim, num_heads, dropout=dropout, output_init_std=output_init_std, name="attn"
        )
        self.ln_2 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="ln_2")
        self.mlp_in = keras.layers.Dense(
            mlp_dim, activation=gelu, kernel_initializer=_normal(0.02), name="mlp_in"
        )
        self.mlp_out = keras.layers.Dense(
            hidden_dim, kernel_initializer=_normal(output_init_std), name="mlp_out"
        )
        self.resid_dropout_1 = keras.layers.Dropout(dropout, name="resid_dropout_1")
        self.resid_dropout_2 = keras.layers.Dropout(dropout, name="resid_dropout_2")

    def build(self, input_shape):
        self.ln_1.build(input_shape)
        self.attn.build(input_shape)
        self.ln_2.build(input_shape)
        self.mlp_in.build(input_shape)
        self.mlp_out.build((*input_shape[:-1], self.mlp_dim))

    def forward(self, x, training=False, cache=None, cache_index=0, row_positions=None):
        """Return ``(output, attention_weights, new_cache)``; see CausalSelfAttention."""
        h, weights, new_cache = self.attn.forward(
            self.ln_1(x), training=training, cache=cache, cache_index=cache_index, row_positions=row_positions
        )
        x = x + self.resid_dropout_1(h, training=training)  # (B, T, C)
        h = self.mlp_out(self.mlp_in(self.ln_2(x)))  # (B, T, C) via (B, T, mlp_dim)
        x = x + self.resid_dropout_2(h, training=training)
        return x, weights, new_cache

    def call(self, x, training=False):
        return self.forward(x, training=training)[0]

    def get_config(self):
        keys = ("hidden_dim", "num_heads", "mlp_dim", "dropout", "layer_norm_epsilon",
                "output_init_std")
        return {**super().get_config(), **{key: getattr(self, key) for key in keys}}


@keras.saving.register_keras_serializable(package="llmft")
class GPT(keras.Model):
    """Decoder-only Transformer language model; ``call`` returns logits (B, T, V).

    ``call(token_ids, training=False, return_hidden_states=False)``: with
    ``return_hidden_states=True`` it returns the final hidden states instead.

    Introduced in chapter 2, pretrained in chapter 3.

    Args:
        vocab_size: number of token ids V.
        context_length: longest sequence the model accepts (learned positions).
        num_layers: number of Transformer blocks.
        num_heads: attention heads per block; must divide hidden_dim.
        hidden_dim: width C of embeddings and the residual stream.
        mlp_dim: MLP hidden width; default ``4 * hidden_dim``.
        dropout: dropout rate in [0, 1) for embeddings, attention, residuals.
        tie_embeddings: reuse the token embedding matrix as the output layer
            (saves V*C parameters and usually helps small models).
        layer_norm_epsilon: epsilon of every LayerNorm.

    Example:
        >>> model = GPT(vocab_size=100, context_length=16, num_layers=2,
        ...             num_heads=2, hidden_dim=32)
        >>> tuple(model(np.zeros((1, 16), "int32")).shape)
        (1, 16, 100)
    """

    def __init__(
        self, *, vocab_size, context_length, num_layers, num_heads, hidden_dim,
        mlp_dim=None, dropout=0.0, tie_embeddings=True, layer_norm_epsilon=1e-5, **kwargs,
    ):
        for name, value in [
            ("vocab_size", vocab_size), ("context_length", context_length),
            ("num_layers", num_layers), ("num_heads", num_heads), ("hidden_dim", hidden_dim),
        ]:
            check_int(name, value)
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim must be divisible by num_heads={num_heads}; got {hidden_dim!r}"
            )
        if mlp_dim is None:
            mlp_dim = 4 * hidden_dim
        check_int("mlp_dim", mlp_dim)
        check_dropout(dropout)
        if not isinstance(tie_embeddings, bool):
            raise ValueError(f"tie_embeddings must be True or False; got {tie_embeddings!r}")
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.context_length = int(context_length)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.hidden_dim = int(hidden_dim)
        self.mlp_dim = int(mlp_dim)
        self.dropout = float(dropout)
        self.tie_embeddings = tie_embeddings
        self.layer_norm_epsilon = layer_norm_epsilon

        self.token_embedding = keras.layers.Embedding(
            vocab_size, hidden_dim, embeddings_initializer=_normal(0.02), name="token_embedding"
        )
        self.position_embedding = keras.layers.Embedding(
            context_length, hidden_dim, embeddings_initializer=_normal(0.02),
            name="position_embedding",
        )
        self.embed_dropout = keras.layers.Dropout(dropout, name="embed_dropout")
        # GPT-2: scale the init of layers that add into the residual stream by
        # 1/sqrt(2 * num_layers), so its variance does not grow with depth.
        residual_std = 0.02 / math.sqrt(2 * num_layers)
        self.blocks = [
            TransformerBlock(
                hidden_dim, num_heads, self.mlp_dim, dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon, output_init_std=residual_std,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="ln_f")
        self.lm_head = None
        if not tie_embeddings:
            self.lm_head = keras.layers.Dense(
                vocab_size, use_bias=False, kernel_initializer=_normal(0.02), name="lm_head"
            )

    @property
    def head_dim(self):
        return self.hidden_dim // self.num_heads

    def build(self, input_shape):
        x_shape = (input_shape[0], input_shape[1], self.hidden_dim)
        self.token_embedding.build(input_shape)
        self.position_embedding.build((input_shape[1],))
        for block in self.blocks:
            block.build(x_shape)
        self.final_norm.build(x_shape)
        if self.lm_head is not None:
            self.lm_head.build(x_shape)

    def _prepare(self, token_ids, extra=0):
        """Check ``token_ids`` is (B, T) with T (+ extra) <= context_length; build if needed."""
        if not hasattr(token_ids, "shape") or not hasattr(token_ids, "dtype"):
            token_ids = np.asarray(token_ids)
        if isinstance(token_ids, np.ndarray):
            token_ids = token_ids.astype("int32")
        shape = tuple(token_ids.shape)
        if len(shape) != 2:
            raise ValueError(f"token_ids must have shape (batch, length); got shape {shape}")
        # Only a known length can be checked (None or a symbolic JAX dimension
        # while Keras infers output shapes).
        if isinstance(shape[1], int) and shape[1] + extra > self.context_length:
            raise ValueError(
                f"token_ids is longer than context_length={self.context_length}; "
                f"got length {shape[1]}" + (f" at cache_index {extra}" if extra else "")
            )
        if not self.built:
            self.build(shape)
        return token_ids

    def _embed(self, token_ids, positions, training):
        x = self.token_embedding(token_ids)  # (B, T, C)
        x = x + ops.expand_dims(self.position_embedding(positions), 0)  # (1, T, C) broadcast over B
        return self.embed_dropout(x, training=training)

    def _forward(self, token_ids, training):
        token_ids = self._prepare(token_ids)
        x = self._embed(token_ids, ops.arange(ops.shape(token_ids)[1]), training)
        weights = []
        for block in self.blocks:
            x, w, _ = block.forward(x, training=training)
            weights.append(w)
        return self.final_norm(x), weights  # (B, T, C), L x (B, H, T, T)

    def _logits(self, x):
        if self.lm_head is None:
            # Tied: the output layer is the transposed token embedding.
            kernel = ops.cast(self.token_embedding.embeddings, x.dtype)  # (V, C)
            logits = ops.matmul(x, ops.transpose(kernel))  # (B, T, V)
        else:
            logits = self.lm_head(x)
        # float32 logits keep the softmax in the loss accurate under mixed precision.
        return ops.cast(logits, "float32")

    def call(self, token_ids, training=False, return_hidden_states=False):
        hidden, _ = self._forward(token_ids, training)  # (B, T, C)
        return hidden if return_hidden_states else self._logits(hidden)  # (B, T, V)

    def hidden_states(self, token_ids, training=False):
        """Final (post-LayerNorm) hidden states, shape (B, T, hidden_dim).

        Classification heads (``llmft.heads``) sit on these. Goes through
        ``__call__``, so it also works on ``keras.Input`` tensors.
        """
        if isinstance(token_ids, (list, tuple)):
            token_ids = np.asarray(token_ids, dtype="int32")
        return self(token_ids, training=training, return_hidden_states=True)

    def logits_at(self, token_ids, positions):
        """Logits (B, V) at one position per row: row ``b`` at ``positions[b]``.

        Equal to ``self(token_ids)[b, positions[b]]`` (up to float rounding),
        but only those B positions go through the output layer: V x C
        multiply-adds per position, against about 12 C^2 per block (the cpu
        profile's model: 384k against 4 x 197k, so the output layer is about a
        third of a full pass). Batched greedy decoding
        (:func:`llmft.sampling.greedy_batch`) needs nothing else.
        """
        hidden = self.hidden_states(token_ids)  # (B, T, C)
        batch, length = ops.shape(hidden)[0], ops.shape(hidden)[1]
        # One gather from the (B * T, C) rows with int32 indices; take_along_axis would work
        # in int64, for which TensorFlow's oneDNN graph pass logs an error line on some CPUs.
        rows = ops.arange(batch, dtype="int32") * length + ops.cast(positions, "int32")
        picked = ops.take(ops.reshape(hidden, (-1, self.hidden_dim)), rows, axis=0)  # (B, C)
        return self._logits(picked[:, None, :])[:, 0]  # (B, V)

    def attention_weights(self, token_ids):
        """Attention weights of every layer (inference mode), for plots.

        Returns:
            list of ``num_layers`` numpy arrays, each (B, num_heads, T, T);
            row t is how much token t attends to each token <= t.
        """
        _, weights = self._forward(token_ids, training=False)
        return [ops.convert_to_numpy(w) for w in weights]

    def init_cache(self, batch_size, max_length=None):
        """An empty KV cache: zeros of shape (B, num_layers, 2, H, S, D).

        ``max_length`` (S) defaults to ``context_length`` and cannot exceed it:
        the model has no position embedding beyond the context.
        """
        check_int("batch_size", batch_size)
        max_length = self.context_length if max_length is None else max_length
        check_int("max_length", max_length)
        if max_length > self.context_length:
            raise ValueError(
                f"max_length must be <= context_length={self.context_length}; got {max_length}"
            )
        shape = (batch_size, self.num_layers, 2, self.num_heads, max_length, self.head_dim)
        return ops.zeros(shape, dtype=self.compute_dtype)

    def call_with_cache(self, token_ids, cache, cache_index, *, compiled=True):
        """Run ``token_ids`` at positions ``cache_index ...`` using cached keys/values.

        Feed the prompt once (``cache_index=0``), then one token at a time:
        each step costs O(S) instead of recomputing the whole sequence.

        On the TensorFlow backend an integer ``cache_index`` goes through a
        compiled function that is traced once per model and reused: one
        token at a time is XLA-compiled (``jit_compile=True``; one compile
        per cache shape), longer inputs (the prompt) run as a graph with a
        free length. Per-token Python and eager-dispatch overhead would
        otherwise cost more than the small model's arithmetic. On JAX one
        token at a time goes through ``jax.jit`` (``_jax_jit``); the
        traced ``cache_index`` lets the steps of a generation share one compilation.
        Other cases, and symbolic ``cache_index``, run the same code eagerly.

        Args:
            token_ids: (B, T) new tokens.
            cache: from :meth:`init_cache` or a previous call.
            cache_index: position of ``token_ids[:, 0]`` (number of tokens
                already in the cache).
            compiled: ``False`` runs eagerly even on TensorFlow (to compare
                speeds, or to step through the code).

        Returns:
            ``(logits, new_cache)``: logits (B, T, V) equal to the full
            forward pass's logits at these positions (up to float rounding).
        """
        if isinstance(cache_index, (int, np.integer)):
            check_int("cache_index", cache_index, minimum=0)
            token_ids = self._prepare(token_ids, extra=int(cache_index))
            length = int(token_ids.shape[1])
            if len(cache.shape) != 6 or cache.shape[4] is None:
                raise ValueError(f"cache must come from init_cache; got shape {tuple(cache.shape)}")
            if cache_index + length > cache.shape[4]:
                raise ValueError(
                    f"cache_index + length must be <= the cache length {cache.shape[4]}; "
                    f"got cache_index={cache_index}, length={length}"
                )
            function = None
            if compiled:
                function = self._compiled_cached_call(length == 1, cache.dtype, new_sequence=cache_index == 0)
            if function is not None:
                import tensorflow as tf

                return function(tf.convert_to_tensor(token_ids, tf.int32),
                                tf.convert_to_tensor(cache), tf.constant(int(cache_index), tf.int32))
            if compiled and length == 1 and keras.backend.backend() == "jax":
                return self._jax_jit("_cached_forward")(np.asarray(token_ids), cache, int(cache_index))
        else:
            token_ids = self._prepare(token_ids)
        return self._cached_forward(token_ids, cache, cache_index)

    def _cached_forward(self, token_ids, cache, cache_index):
        """The KV-cache pass itself (eager, or traced by :meth:`_compiled_cached_call`)."""
        positions = ops.arange(ops.shape(token_ids)[1]) + cache_index
        x = self._embed(token_ids, positions, training=False)  # (B, T, C)
        new_caches = []
        for i, block in enumerate(self.blocks):
            x, _, layer_cache = block.forward(x, cache=cache[:, i], cache_index=cache_index)
            new_caches.append(layer_cache)  # (B, 2, H, S, D)
        logits = self._logits(self.final_norm(x))  # (B, T, V)
        return logits, ops.stack(new_caches, axis=1)  # (B, L, 2, H, S, D)

    def call_rows_with_cache(self, token_ids, cache, positions, *, compiled=True):
        """One new token per row, row ``b`` at its own position ``positions[b]``: ``(logits (B, V), new_cache)``.

        :meth:`call_with_cache` moves every row to the same position;
        here each row of the cache is its own sequence, as continuous
        batching needs (:func:`llmft.sampling.greedy_batch`: a row that
        finishes takes the next prompt while the others go on). Row ``b``
        attends to its slots ``0 ... positions[b] - 1``, which must hold that
        row's earlier tokens, and to itself; its key and value are then
        written at slot ``positions[b]``. Later slots are never read, so
        whatever an earlier sequence of the row left there does not matter.
        Logits equal the full forward pass's at that position (up to float
        rounding).

        The cache may be updated in place, so use only the returned one. On
        JAX the old cache's buffer is donated to the new one (``jax.jit``
        with ``donate_argnums``) and the write is a scatter in place. On
        TensorFlow the pass and the write are one XLA-compiled function,
        traced once per model (and cache dtype); a compiled function cannot
        take over its input's buffer there, so every step writes a copy of
        the whole cache, which on a 2-core CPU costs more than the pass itself
        (64 rows, 128 slots: about 30 ms a step, 10 without the copy). A
        ``tf.Variable`` updated by a scatter is no way out: the scatter puts
        it in copy-on-read mode, and every later read copies it. Other
        backends run eagerly.

        Args:
            token_ids: (B,) ids, one new token per row.
            cache: (B, num_layers, 2, H, S, D) from :meth:`init_cache` or a previous call.
            positions: (B,) integers in ``[0, S)``.
            compiled: ``False`` runs eagerly (and writes a copy).
        """
        ids = np.asarray(token_ids)
        where = np.asarray(positions)
        shape = tuple(cache.shape)
        if ids.ndim != 1 or not len(ids) or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"token_ids must be a 1-D array of integer ids, one per row; got shape {ids.shape}")
        if len(shape) != 6 or shape[0] != len(ids) or shape[4] is None:
            raise ValueError(f"cache must come from init_cache({len(ids)}, ...); got shape {shape}")
        if where.shape != ids.shape or not np.issubdtype(where.dtype, np.integer) \
                or where.min() < 0 or where.max() >= shape[4]:
            raise ValueError(f"positions must be {len(ids)} integers in [0, {shape[4]}) (the cache length); "
                             f"got {where.tolist()[:8]}")
        if not self.built:
            self.build((len(ids), 1))
        ids, where = ids.astype("int32"), where.astype("int32")
        backend = keras.backend.backend()
        if compiled and backend == "tensorflow":
            import tensorflow as tf

            step = self._concrete_cache_call("_rows_step", (None,), cache.dtype, jit_compile=True)
            return step(tf.constant(ids), tf.convert_to_tensor(cache), tf.constant(where))
        if compiled and backend == "jax":
            logits, new = self._jax_jit("_rows_forward")(ids, cache, where)
            # Where each row's new key and value go: [b, layer, k/v, head, positions[b]].
            grid = np.indices((len(ids), self.num_layers, 2, self.num_heads)).reshape(4, -1)
            index = np.stack([*grid, where[grid[0]]], axis=1).astype("int32")  # (B * L * 2 * H, 5)
            return logits, _jax_donating_scatter()(cache, index, ops.reshape(new, (-1, self.head_dim)))
        return self._rows_step(ids, cache, where)

    def prefill_rows(self, token_ids, cache, rows, *, compiled=True):
        """Start new sequences in some rows of a per-row cache, all their first tokens in one pass: the new cache.

        Row ``rows[i]`` of the cache becomes the sequence ``token_ids[i]``:
        its keys and values at positions ``0 ... T - 1`` fill slots
        ``0 ... T - 1``, the row's later slots become zeros, and the other
        rows are left as they were. Continue a row with
        :meth:`call_rows_with_cache` from its own length: slots at or after a
        row's position are never read, so right padding in ``token_ids``
        (rows of different lengths in one call) does no harm. One pass over
        n x T tokens replaces T steps of one token per row, each of which
        reads (and, on TensorFlow, copies) the whole cache; it is how a
        prompt enters the cache in :func:`llmft.sampling.greedy_batch`.

        The pass is the plain causal one of :meth:`call_with_cache`, so the
        keys and values equal those that one token at a time would write
        (up to float rounding). On TensorFlow it is a graph traced once per
        model (and cache dtype) with free n and T, not XLA, which would
        compile once per shape; on JAX it is ``jax.jit``-compiled and the
        old cache's buffer is donated, as in :meth:`call_rows_with_cache`.
        The cache may be updated in place, so use only the returned one.

        Args:
            token_ids: (n, T) ids, 1 <= T <= the cache length S.
            cache: (B, num_layers, 2, H, S, D) from :meth:`init_cache` or a previous call.
            rows: (n,) distinct rows of the cache, integers in ``[0, B)``.
            compiled: ``False`` runs eagerly (and writes a copy).
        """
        ids = np.asarray(token_ids)
        which = np.asarray(rows)
        shape = tuple(cache.shape)
        if len(shape) != 6 or shape[4] is None:
            raise ValueError(f"cache must come from init_cache; got shape {shape}")
        if ids.ndim != 2 or not ids.size or not np.issubdtype(ids.dtype, np.integer) or ids.shape[1] > shape[4]:
            raise ValueError(f"token_ids must be a 2-D array of integer ids (n, T) with 1 <= T <= {shape[4]} "
                             f"(the cache length); got shape {ids.shape}")
        if which.shape != ids.shape[:1] or not np.issubdtype(which.dtype, np.integer) or which.min() < 0 \
                or which.max() >= shape[0] or len(set(which.tolist())) != len(which):
            raise ValueError(f"rows must be {len(ids)} distinct integers in [0, {shape[0]}) (the cache's rows); "
                             f"got {which.tolist()[:8]}")
        if not self.built:
            self.build(ids.shape)
        ids, which = ids.astype("int32"), which.astype("int32")
        backend = keras.backend.backend()
        if compiled and backend == "tensorflow":
            import tensorflow as tf

            # A graph, not XLA: XLA would compile once per (n, T).
            step = self._concrete_cache_call("_prefill_step", (None, None), cache.dtype)
            return step(tf.constant(ids), tf.convert_to_tensor(cache), tf.constant(which))
        if compiled and backend == "jax":
            empty = ops.zeros((len(ids), 2, self.num_heads, shape[4], self.head_dim), cache.dtype)
            kv = self._jax_jit("_prefill_kv")(ids, empty)
            return _jax_donating_scatter()(cache, which[:, None], kv)
        return self._prefill_step(ids, cache, which)

    def _prefill_kv(self, token_ids, empty):
        """Keys and values of ``token_ids`` (n, T) at positions 0 ... T - 1, in rows shaped like ``empty``.

        ``empty``: zeros (n, 2, H, S, D), one layer's rows. Returns
        (n, num_layers, 2, H, S, D), zeros from slot T on. The last block's
        MLP runs for nothing, but skipping it would fork ``TransformerBlock.forward``.
        """
        x = self._embed(token_ids, ops.arange(ops.shape(token_ids)[1]), training=False)  # (n, T, C)
        kv = []
        for block in self.blocks:
            x, _, layer_kv = block.forward(x, cache=empty, cache_index=0)
            kv.append(layer_kv)
        return ops.stack(kv, axis=1)

    def _prefill_step(self, token_ids, cache, rows):
        """:meth:`_prefill_kv`, written over whole rows of (a copy of) the cache."""
        empty = ops.zeros((ops.shape(token_ids)[0], 2, self.num_heads, ops.shape(cache)[4], self.head_dim),
                          cache.dtype)
        return ops.scatter_update(cache, rows[:, None], self._prefill_kv(token_ids, empty))

    def _rows_step(self, token_ids, cache, positions):
        """:meth:`_rows_forward`, then the new keys and values written into (a copy of) the cache."""
        logits, new = self._rows_forward(token_ids, cache, positions)  # new: (B, L, 2, H, D)
        here = ops.arange(ops.shape(cache)[4])[None, :] == positions[:, None]  # (B, S): the slot of each row
        return logits, ops.where(here[:, None, None, None, :, None], new[:, :, :, :, None, :], cache)

    def _rows_forward(self, token_ids, cache, positions):
        """The pass of :meth:`call_rows_with_cache`: ``(logits (B, V), new keys/values (B, L, 2, H, D))``."""
        x = self.token_embedding(token_ids[:, None]) + self.position_embedding(positions)[:, None, :]  # (B, 1, C)
        new = []
        for i, block in enumerate(self.blocks):
            x, _, kv = block.forward(x, cache=cache[:, i], row_positions=positions)
            new.append(kv)  # (B, 2, H, D)
        logits = self._logits(self.final_norm(x))[:, 0]  # (B, V)
        return logits, ops.stack(new, axis=1)

    def _concrete_cache_call(self, method, token_shape, dtype, jit_compile=False):
        """``getattr(self, method)(token_ids, cache, rows_or_positions)`` as a concrete function.

        Traced once and kept per method, cache dtype and number of weights
        (``enable_lora`` adds weights: a fresh trace then); the batch, cache
        and token lengths are free.
        """
        import tensorflow as tf

        dtype = tf.as_dtype(dtype)
        calls = self.__dict__.setdefault("_llmft_cache_calls", {})
        key = (method, dtype.name, len(self.weights))
        if key not in calls:
            signature = [
                tf.TensorSpec(token_shape, tf.int32),
                tf.TensorSpec((None, self.num_layers, 2, self.num_heads, None, self.head_dim), dtype),
                tf.TensorSpec((None,), tf.int32),
            ]
            calls[key] = tf.function(getattr(self, method), input_signature=signature,
                                     jit_compile=jit_compile).get_concrete_function()
        return calls[key]

    def _jax_jit(self, method):
        """``jax.jit`` of ``getattr(self, method)`` with the weights as arguments, made once per model.

        A ``keras.StatelessScope`` maps each variable to its value inside the
        trace, so training or ``enable_lora`` after the first call is seen.
        Integer arguments become int32 arrays (traced, not constants).
        """
        jitted = self.__dict__.setdefault("_llmft_jax_jit", {})
        if method not in jitted:
            import jax

            def run(trainable, non_trainable, *args):
                mapping = list(zip(self.trainable_variables, trainable)) + \
                    list(zip(self.non_trainable_variables, non_trainable))
                with keras.StatelessScope(state_mapping=mapping):
                    return getattr(self, method)(*args)

            jitted[method] = jax.jit(run)
        import jax.numpy as jnp

        def call(*args):
            args = [jnp.asarray(a, jnp.int32) if isinstance(a, (int, np.integer)) or (
                isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.integer)) else a for a in args]
            return jitted[method]([v.value for v in self.trainable_variables],
                                  [v.value for v in self.non_trainable_variables], *args)

        return call

    def _compiled_cached_call(self, single_token, dtype, new_sequence):
        """A compiled :meth:`_cached_forward`, traced once and kept; None off TensorFlow.

        Returns the concrete function of a ``tf.function`` with a fixed
        input signature: calling it directly skips the per-call argument
        matching of ``tf.function`` (about 0.7 ms a token on a 2-core CPU).
        At the start of each sequence (``new_sequence``) the number of
        weights is checked, so that weights added after a first trace
        (``enable_lora``) make a fresh function instead of reusing a graph
        that does not know them.
        """
        if keras.backend.backend() != "tensorflow":
            return None
        import tensorflow as tf

        state = self.__dict__.setdefault("_llmft_cached_calls", {"weights": None})
        if new_sequence or state["weights"] is None:
            state["weights"] = len(self.weights)  # walks every layer: not once per token
        dtype = tf.as_dtype(dtype)
        key = (bool(single_token), dtype.name, state["weights"])
        if key not in state:
            signature = [
                tf.TensorSpec((None, None), tf.int32),  # token_ids (B, T)
                tf.TensorSpec((None, self.num_layers, 2, self.num_heads, None, self.head_dim), dtype),
                tf.TensorSpec((), tf.int32),  # cache_index: a tensor, so no retrace per step
            ]
            # XLA only for one token at a time: it compiles once per cache
            # shape, while prompts come in many lengths.
            function = tf.function(
                self._cached_forward, input_signature=signature, jit_compile=bool(single_token)
            )
            state[key] = function.get_concrete_function()
        return state[key]

    def get_config(self):
        keys = ("vocab_size", "context_length", "num_layers", "num_heads", "hidden_dim",
                "mlp_dim", "dropout", "tie_embeddings", "layer_norm_epsilon")
        return {**super().get_config(), **{key: getattr(self, key) for key in keys}}


_DONATING_SCATTER = []


def _jax_donating_scatter():
    """``jax.jit`` of ``ops.scatter_update`` that donates its first argument: the update happens in place."""
    if not _DONATING_SCATTER:
        import jax

        _DONATING_SCATTER.append(jax.jit(ops.scatter_update, donate_argnums=0))
    return _DONATING_SCATTER[0]


def from_preset(name, vocab_size, **overrides):
    """Build a :class:`GPT` from ``PRESETS[name]``; ``overrides`` replace preset values.

    Example:
        >>> from_preset("tiny", vocab_size=50).context_length
        32
    """
    if name not in PRESETS:
        raise ValueError(f"name must be one of {sorted(PRESETS)}; got {name!r}")
    return GPT(vocab_size=vocab_size, **{**PRESETS[name], **overrides})

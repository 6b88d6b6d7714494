"""NumPy reference implementations of the book's formulas.

Introduced in chapter 4 (数学模型和公式). Each function is a direct, readable
transcription of one formula; chapter 4 and ``tests/test_reference.py`` check
every one of them against the Keras layer that does the same job, with the
same weights. Everything is computed in float64, so the difference to Keras
(float32) measures Keras' rounding, not ours.

Weight layouts follow Keras 3 so that ``layer.get_weights()`` can be passed in
unchanged:

- ``keras.layers.Embedding``: ``W`` of shape ``(V, D)``.
- ``keras.layers.SimpleRNN`` / ``LSTM``: ``kernel (input_dim, k * units)``,
  ``recurrent_kernel (units, k * units)``, ``bias (k * units,)``; for the LSTM
  the ``k = 4`` column blocks are the gates in the order i, f, c, o.
- ``keras.layers.MultiHeadAttention``: query/key/value kernels
  ``(d_model, heads, head_dim)`` with biases ``(heads, head_dim)``, output
  kernel ``(heads, head_dim, d_model)`` with bias ``(d_model,)``.
"""

from __future__ import annotations

import math

import numpy as np

# What Keras adds to masked attention scores (float32): large, but finite, so
# a fully masked row becomes uniform instead of NaN.
MASK_VALUE = -1e9


def _array(x, name: str, *, ndim_min: int = 1) -> np.ndarray:
    """``x`` as a float64 array with at least ``ndim_min`` axes, else ValueError."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an array of numbers; got {x!r}") from err
    if arr.ndim < ndim_min:
        raise ValueError(f"{name} must have at least {ndim_min} axes; got shape {arr.shape}")
    return arr


def _ids(ids, name: str, depth: int) -> np.ndarray:
    """Integer token ids in ``[0, depth)``, else ValueError."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer ids; got dtype {arr.dtype} ({ids!r})")
    if arr.size and (arr.min() < 0 or arr.max() >= depth):
        raise ValueError(f"{name} must lie in [0, {depth}); got min {arr.min()}, max {arr.max()}")
    return arr


# --- Embedding: e_w = one_hot(w) @ W = W[w] ---


def one_hot(ids, depth: int) -> np.ndarray:
    """One-hot vectors: ``one_hot(ids, V)[..., j] = 1`` if ``ids == j`` else 0.

    Args:
        ids: integer array of any shape, values in ``[0, depth)``.
        depth: vocabulary size ``V``.

    Returns:
        float64 array of shape ``ids.shape + (depth,)``.
    """
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be a positive integer; got {depth!r}")
    arr = _ids(ids, "ids", int(depth))
    return (arr[..., None] == np.arange(depth)).astype(np.float64)


def embedding_lookup_via_onehot(ids, W) -> np.ndarray:
    """Embedding as a matrix product: ``e = one_hot(ids, V) @ W``, which is row ``W[ids]``.

    Args:
        ids: integer token ids of any shape.
        W: embedding matrix of shape ``(V, D)`` (Keras ``Embedding`` weights).

    Returns:
        array of shape ``ids.shape + (D,)``.
    """
    W = _array(W, "W", ndim_min=2)
    if W.ndim != 2:
        raise ValueError(f"W must have shape (V, D); got shape {W.shape}")
    return one_hot(ids, W.shape[0]) @ W  # (..., V) @ (V, D) -> (..., D)


# --- Activations ---


def softmax(x, axis: int = -1) -> np.ndarray:
    """Softmax ``y_i = exp(x_i) / sum_j exp(x_j)`` along ``axis``, numerically stable.

    Uses ``softmax(x) = softmax(x - max(x))``: after the shift the largest
    exponent is ``exp(0) = 1``, so nothing overflows.
    """
    x = _array(x, "x")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must be in [{-x.ndim}, {x.ndim}) for x of shape {x.shape}; got {axis!r}")
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x) -> np.ndarray:
    """Logistic sigmoid ``σ(x) = 1 / (1 + exp(-x))``.

    Written as the identity ``σ(x) = (1 + tanh(x / 2)) / 2``, which never
    overflows for large ``|x|``.
    """
    x = _array(x, "x", ndim_min=0)
    return 0.5 * (1.0 + np.tanh(0.5 * x))


_ACTIVATIONS = {"sigmoid": sigmoid, "tanh": np.tanh}


# --- Plain RNN: the article's h_t = σ(W_h [h_{t-1}; x_t] + b_h) ---


def rnn_cell_step(x_t, h_prev, W_h, b_h, activation: str = "sigmoid") -> np.ndarray:
    """One step of a plain RNN: ``h_t = σ(W_h [h_{t-1}; x_t] + b_h)``.

    This is the formula the source article calls "LSTM"; it has no gates and
    no cell state. With Keras ``SimpleRNN`` weights,
    ``W_h = concatenate([recurrent_kernel, kernel], axis=0).T``.

    Args:
        x_t: input at step t, shape ``(..., input_dim)``.
        h_prev: previous hidden state, shape ``(..., units)``.
        W_h: weight matrix of shape ``(units, units + input_dim)``.
        b_h: bias of shape ``(units,)``.
        activation: ``"sigmoid"`` (the article's σ) or ``"tanh"``.

    Returns:
        h_t of shape ``(..., units)``.
    """
    x_t, h_prev = _array(x_t, "x_t"), _array(h_prev, "h_prev")
    W_h, b_h = _array(W_h, "W_h", ndim_min=2), _array(b_h, "b_h")
    units, input_dim = h_prev.shape[-1], x_t.shape[-1]
    if W_h.shape != (units, units + input_dim):
        raise ValueError(f"W_h must have shape {(units, units + input_dim)}; got shape {W_h.shape}")
    if b_h.shape != (units,):
        raise ValueError(f"b_h must have shape {(units,)}; got shape {b_h.shape}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}; got {activation!r}")
    hx = np.concatenate([h_prev, x_t], axis=-1)  # [h_{t-1}; x_t], (..., units + input_dim)
    return _ACTIVATIONS[activation](hx @ W_h.T + b_h)


def rnn_forward(x, W_h, b_h, activation: str = "sigmoid") -> np.ndarray:
    """Run :func:`rnn_cell_step` over a sequence ``x`` of shape ``(..., T, input_dim)`` from ``h_0 = 0``.

    Returns:
        all hidden states, shape ``(..., T, units)``.
    """
    x, W_h = _array(x, "x", ndim_min=2), _array(W_h, "W_h", ndim_min=2)
    h = np.zeros(x.shape[:-2] + (W_h.shape[0],))
    hs = []
    for t in range(x.shape[-2]):
        h = rnn_cell_step(x[..., t, :], h, W_h, b_h, activation)
        hs.append(h)
    return np.stack(hs, axis=-2)


# --- LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000) ---


def _check_lstm_weights(input_dim: int, kernel, recurrent_kernel, bias):
    kernel = _array(kernel, "kernel", ndim_min=2)
    recurrent_kernel = _array(recurrent_kernel, "recurrent_kernel", ndim_min=2)
    bias = _array(bias, "bias")
    units = recurrent_kernel.shape[0]
    if recurrent_kernel.shape != (units, 4 * units):
        raise ValueError(f"recurrent_kernel must have shape (units, 4 * units); got shape {recurrent_kernel.shape}")
    if kernel.shape != (input_dim, 4 * units):
        raise ValueError(f"kernel must have shape {(input_dim, 4 * units)}; got shape {kernel.shape}")
    if bias.shape != (4 * units,):
        raise ValueError(f"bias must have shape {(4 * units,)}; got shape {bias.shape}")
    return kernel, recurrent_kernel, bias


def lstm_cell_step(x_t, h_prev, c_prev, kernel, recurrent_kernel, bias):
    """One LSTM step with Keras' weight layout (gate blocks i, f, c, o).

    Formulas (⊙ is the element-wise product)::

        i_t = σ(x_t W_i + h_{t-1} U_i + b_i)        input gate
        f_t = σ(x_t W_f + h_{t-1} U_f + b_f)        forget gate
        g_t = tanh(x_t W_c + h_{t-1} U_c + b_c)     candidate cell state
        o_t = σ(x_t W_o + h_{t-1} U_o + b_o)        output gate
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t             cell state
        h_t = o_t ⊙ tanh(c_t)                       hidden state

    Args:
        x_t: input, shape ``(..., input_dim)``.
        h_prev, c_prev: previous hidden and cell state, shape ``(..., units)``.
        kernel: ``(input_dim, 4 * units)``, columns ``[W_i | W_f | W_c | W_o]``.
        recurrent_kernel: ``(units, 4 * units)``, columns ``[U_i | U_f | U_c | U_o]``.
        bias: ``(4 * units,)``.

    Returns:
        ``(h_t, c_t, gates)`` where ``gates`` maps ``"i"``, ``"f"``, ``"g"``
        (candidate) and ``"o"`` to arrays of shape ``(..., units)``.
    """
    x_t, h_prev, c_prev = _array(x_t, "x_t"), _array(h_prev, "h_prev"), _array(c_prev, "c_prev")
    kernel, recurrent_kernel, bias = _check_lstm_weights(x_t.shape[-1], kernel, recurrent_kernel, bias)
    units = recurrent_kernel.shape[0]
    if h_prev.shape[-1] != units or c_prev.shape != h_prev.shape:
        raise ValueError(
            f"h_prev and c_prev must both have shape (..., {units}); got {h_prev.shape} and {c_prev.shape}"
        )
    z = x_t @ kernel + h_prev @ recurrent_kernel + bias  # (..., 4 * units)
    z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)  # Keras' order: i, f, c, o
    i, f, g, o = sigmoid(z_i), sigmoid(z_f), np.tanh(z_c), sigmoid(z_o)
    c_t = f * c_prev + i * g  # forget part of the old memory, write part of the new
    h_t = o * np.tanh(c_t)  # expose part of the memory
    return h_t, c_t, {"i": i, "f": f, "g": g, "o": o}


def lstm_forward(x, kernel, recurrent_kernel, bias):
    """Run :func:`lstm_cell_step` over ``x`` of shape ``(..., T, input_dim)`` from zero states.

    Returns:
        ``(hs, cs, gates)``: hidden states and cell states at every step, each
        ``(..., T, units)``, and a dict of gate values ``"i"``, ``"f"``,
        ``"g"``, ``"o"``, each ``(..., T, units)``. ``hs[..., -1, :]`` is what
        ``keras.layers.LSTM`` returns with ``return_sequences=False``.
    """
    x = _array(x, "x", ndim_min=2)
    units = _array(recurrent_kernel, "recurrent_kernel", ndim_min=2).shape[0]
    h = c = np.zeros(x.shape[:-2] + (units,))
    hs, cs, gates = [], [], {k: [] for k in "ifgo"}
    for t in range(x.shape[-2]):
        h, c, step_gates = lstm_cell_step(x[..., t, :], h, c, kernel, recurrent_kernel, bias)
        hs.append(h)
        cs.append(c)
        for k, v in step_gates.items():
            gates[k].append(v)
    stack = lambda seq: np.stack(seq, axis=-2)  # noqa: E731
    return stack(hs), stack(cs), {k: stack(v) for k, v in gates.items()}


# --- Cross-entropy and perplexity ---


def cross_entropy(probs_or_logits, targets, *, from_logits: bool = False, reduction: str = "mean"):
    """Cross-entropy in nats: ``CE = -(1/N) * sum_t log p(y_t)``.

    Args:
        probs_or_logits: ``(..., V)`` probabilities (each row sums to 1) or,
            with ``from_logits=True``, unnormalised logits.
        targets: integer ids of shape ``(...)`` in ``[0, V)``.
        from_logits: apply a (log-)softmax first.
        reduction: ``"mean"`` (a float) or ``"none"`` (one value per position).
    """
    p = _array(probs_or_logits, "probs_or_logits")
    targets = _ids(targets, "targets", p.shape[-1])
    if targets.shape != p.shape[:-1]:
        raise ValueError(f"targets must have shape {p.shape[:-1]}; got shape {targets.shape}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
    if from_logits:
        z = p - p.max(axis=-1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))  # stable log-softmax
    else:
        if p.min() < 0 or not np.allclose(p.sum(axis=-1), 1.0, atol=1e-3):
            raise ValueError("probs_or_logits must be probabilities (>= 0, rows sum to 1); pass from_logits=True for logits")
        log_p = np.log(np.clip(p, 1e-12, 1.0))
    nll = -np.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
    return float(nll.mean()) if reduction == "mean" else nll


def perplexity(mean_ce) -> float:
    """Perplexity ``PPL = exp(CE)`` of a mean cross-entropy in nats."""
    if isinstance(mean_ce, bool) or not isinstance(mean_ce, (int, float, np.floating, np.integer)):
        raise ValueError(f"mean_ce must be a number; got {mean_ce!r}")
    if not math.isfinite(mean_ce) or mean_ce < 0:
        raise ValueError(f"mean_ce must be a finite, non-negative cross-entropy; got {mean_ce!r}")
    return math.exp(mean_ce)


# --- Attention (Vaswani et al. 2017) ---


def causal_mask(length: int) -> np.ndarray:
    """Boolean ``(length, length)`` mask, True where query i may see key j (j <= i)."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be a positive integer; got {length!r}")
    return np.tril(np.ones((length, length), dtype=bool))


def scaled_dot_product_attention(q, k, v, mask=None):
    """``Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V``.

    Args:
        q: queries ``(..., T_q, d_k)``.
        k: keys ``(..., T_k, d_k)``.
        v: values ``(..., T_k, d_v)``.
        mask: optional boolean array broadcastable to ``(..., T_q, T_k)``;
            True = may attend (Keras' convention). Masked scores get
            :data:`MASK_VALUE` before the softmax.

    Returns:
        ``(out, weights)``: ``(..., T_q, d_v)`` and ``(..., T_q, T_k)``.
    """
    q, k, v = _array(q, "q", ndim_min=2), _array(k, "k", ndim_min=2), _array(v, "v", ndim_min=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last axis d_k; got q {q.shape} and k {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length T_k; got k {k.shape} and v {v.shape}")
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])  # (..., T_q, T_k)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise ValueError(f"mask must be a boolean array; got dtype {mask.dtype}")
        try:
            np.broadcast_shapes(mask.shape, scores.shape)
        except ValueError as err:
            raise ValueError(f"mask of shape {mask.shape} does not broadcast to scores {scores.shape}") from err
        scores = np.where(mask, scores, MASK_VALUE)
    weights = softmax(scores, axis=-1)
    return weights @ v, weights


MHA_WEIGHT_NAMES = (
    "query_kernel", "query_bias", "key_kernel", "key_bias",
    "value_kernel", "value_bias", "output_kernel", "output_bias",
)  # the order of keras.layers.MultiHeadAttention.get_weights()


def multi_head_attention(query, value, key=None, *, weights, use_causal_mask: bool = False):
    """Multi-head attention with ``keras.layers.MultiHeadAttention``'s weights.

    ``head_h = Attention(query W_h^Q, key W_h^K, value W_h^V)`` for each head,
    then ``out = Concat(head_1, ..., head_H) W^O`` (plus biases).

    Args:
        query: ``(..., T_q, d_model)``.
        value: ``(..., T_k, d_model)``.
        key: ``(..., T_k, d_model)``; defaults to ``value`` (as in Keras).
        weights: ``layer.get_weights()`` (8 arrays in :data:`MHA_WEIGHT_NAMES`
            order) or a dict with those names. Kernels ``(d_model, heads,
            head_dim)``, biases ``(heads, head_dim)``, output kernel ``(heads,
            head_dim, d_out)``, output bias ``(d_out,)``.
        use_causal_mask: let query i attend only to keys j <= i.

    Returns:
        ``(out, attention_weights)``: ``(..., T_q, d_out)`` and
        ``(..., heads, T_q, T_k)`` (Keras' ``return_attention_scores`` layout).
    """
    if isinstance(weights, dict):
        missing = [n for n in MHA_WEIGHT_NAMES if n not in weights]
        if missing:
            raise ValueError(f"weights is missing {missing}; got keys {sorted(weights)}")
        w = {n: _array(weights[n], n) for n in MHA_WEIGHT_NAMES}
    elif isinstance(weights, (list, tuple)) and len(weights) == len(MHA_WEIGHT_NAMES):
        w = {n: _array(a, n) for n, a in zip(MHA_WEIGHT_NAMES, weights)}
    else:
        raise ValueError(f"weights must be a dict or a list of 8 arrays (layer.get_weights()); got {type(weights).__name__}")
    query, value = _array(query, "query", ndim_min=2), _array(value, "value", ndim_min=2)
    key = value if key is None else _array(key, "key", ndim_min=2)
    if key.shape[:-1] != value.shape[:-1]:
        raise ValueError(f"key and value must have the same (..., T_k); got key {key.shape} and value {value.shape}")
    for name, x in (("query", query), ("key", key), ("value", value)):
        kernel = w[f"{name}_kernel"]
        if kernel.ndim != 3 or kernel.shape[0] != x.shape[-1]:
            raise ValueError(f"{name}_kernel must have shape ({x.shape[-1]}, heads, head_dim); got shape {kernel.shape}")
        if w[f"{name}_bias"].shape != kernel.shape[1:]:
            raise ValueError(f"{name}_bias must have shape {kernel.shape[1:]}; got shape {w[f'{name}_bias'].shape}")
    # 1. project and split into heads: (..., T, d_model) x (d_model, H, d) -> (..., H, T, d)
    def project(x, name):
        return np.einsum("...tm,mhd->...htd", x, w[f"{name}_kernel"]) + w[f"{name}_bias"][:, None, :]

    q, k, v = project(query, "query"), project(key, "key"), project(value, "value")
    # 2. attention in every head at once
    # Keras' causal mask is lower-triangular in (T_q, T_k): query i sees keys j <= i.
    mask = np.tril(np.ones((query.shape[-2], key.shape[-2]), dtype=bool)) if use_causal_mask else None
    heads, attn = scaled_dot_product_attention(q, k, v, mask=mask)  # (..., H, T_q, d), (..., H, T_q, T_k)
    # 3. concatenate heads and mix them: (..., H, T_q, d) x (H, d, d_out) -> (..., T_q, d_out)
    out_kernel = w["output_kernel"]
    if out_kernel.ndim != 3 or out_kernel.shape[:2] != heads.shape[-3:-2] + heads.shape[-1:]:
        raise ValueError(f"output_kernel must have shape (heads, head_dim, d_out); got shape {out_kernel.shape}")
    if w["output_bias"].shape != out_kernel.shape[-1:]:
        raise ValueError(f"output_bias must have shape {out_kernel.shape[-1:]}; got shape {w['output_bias'].shape}")
    out = np.einsum("...htd,hdo->...to", heads, out_kernel) + w["output_bias"]
    return out, attn

"""Back-of-the-envelope numbers for training: FLOPs, memory, power laws.

Three estimates that every fine-tuning plan starts with, and the two
measurements chapter 8 checks them against:

1. compute: ``training_flops`` is the rule of thumb C = 6 N D (Kaplan et al.,
   2020, "Scaling Laws for Neural Language Models"; Hoffmann et al., 2022,
   "Training Compute-Optimal Large Language Models"); ``gpt_flops_per_token``
   counts the matrix multiplications of :class:`llmft.gpt.GPT` exactly, and
   ``count_train_step_flops`` counts those TensorFlow really runs in one step;
2. memory: ``finetune_memory_bytes`` adds up weights, gradients and optimizer
   states (full fine-tuning or LoRA); ``variable_bytes`` measures the
   variables that exist after a step;
3. scaling: ``fit_power_law`` fits ``loss = a * x**(-b) (+ c)`` in log space.

FLOP convention: one multiply-add is 2 FLOPs; only matrix multiplications
are counted (element-wise work, softmax, LayerNorm, GELU and bias adds are a
few FLOPs per activation, small next to the matmuls of any real model); the
backward pass costs twice the forward pass (one matmul for the gradient of
the input, one for the gradient of the weight), so training = 3 x forward.

Introduced in chapter 8.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from llmft.checks import check_int

# Bytes per element of the dtypes one meets in training.
DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
# Extra float32 values per trainable parameter that each optimizer keeps.
OPTIMIZER_STATES = {"sgd": 0, "sgd_momentum": 1, "adam": 2, "adamw": 2}
_MATMUL_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return value


# ---------------------------------------------------------------------------
# Compute
# ---------------------------------------------------------------------------


def training_flops(num_params, num_tokens):
    """The rule of thumb C = 6 N D: FLOPs to train ``num_params`` on ``num_tokens``.

    2 N per token for the forward pass (a multiply and an add per weight),
    4 N for the backward pass (Kaplan et al., 2020, section 2.1). Kaplan et al.
    take N without the embedding matrices; attention over the context and the
    output layer are left out (see :func:`gpt_flops_per_token` for them).

    Args:
        num_params: number of parameters N (> 0).
        num_tokens: number of training tokens D (> 0).

    Example:
        >>> training_flops(1e6, 1e9)
        6000000000000000.0
    """
    return 6.0 * float(_check_positive("num_params", num_params)) * float(
        _check_positive("num_tokens", num_tokens))


def _gpt_sizes(config):
    """(V, T, L, C, F, tied) from a GPT or its ``get_config()`` dict."""
    if hasattr(config, "get_config") and not isinstance(config, dict):
        config = config.get_config()
    if not isinstance(config, dict):
        raise ValueError(f"config must be a GPT model or its get_config() dict; got {config!r:.80}")
    try:
        hidden = check_int("hidden_dim", config["hidden_dim"])
        mlp = config.get("mlp_dim") or 4 * hidden
        sizes = (check_int("vocab_size", config["vocab_size"]),
                 check_int("context_length", config["context_length"]),
                 check_int("num_layers", config["num_layers"]), hidden, check_int("mlp_dim", mlp))
    except KeyError as err:
        raise ValueError(f"config must have vocab_size, context_length, num_layers and hidden_dim; "
                         f"missing {err}") from None
    return (*sizes, bool(config.get("tie_embeddings", True)))


def gpt_param_counts(config) -> dict:
    """Parameters of :class:`llmft.gpt.GPT` by part, computed from its config.

    Args:
        config: a GPT model or a dict with ``vocab_size``, ``context_length``,
            ``num_layers``, ``hidden_dim`` and optionally ``mlp_dim`` (default
            4 x hidden_dim) and ``tie_embeddings`` (default True).

    Returns:
        dict with ``token_embedding`` (V C), ``position_embedding`` (T C),
        ``blocks`` (all Transformer blocks), ``block_kernels`` (their weight
        matrices only), ``final_norm``, ``lm_head`` (0 when tied), ``total``
        (equals ``model.count_params()``) and ``non_embedding`` (total minus
        the embeddings and the untied output matrix, Kaplan et al.'s N).

    Example:
        >>> gpt_param_counts(dict(vocab_size=100, context_length=16, num_layers=2,
        ...                       hidden_dim=32))["total"]
        29184
    """
    V, T, L, C, F, tied = _gpt_sizes(config)
    kernels = C * 3 * C + C * C + C * F + F * C  # qkv, attn_out, mlp_in, mlp_out
    biases = 3 * C + C + F + C
    norms = 2 * (2 * C)  # ln_1 and ln_2: a scale and an offset each
    parts = {
        "token_embedding": V * C,
        "position_embedding": T * C,
        "blocks": L * (kernels + biases + norms),
        "block_kernels": L * kernels,
        "final_norm": 2 * C,
        "lm_head": 0 if tied else V * C,
    }
    parts["total"] = (parts["token_embedding"] + parts["position_embedding"] + parts["blocks"]
                      + parts["final_norm"] + parts["lm_head"])
    parts["non_embedding"] = parts["blocks"] + parts["final_norm"]
    return parts


def gpt_flops_per_token(config, *, context_length=None) -> dict:
    """Matmul FLOPs per token of :class:`llmft.gpt.GPT`, forward and training.

    Per token and layer, the projections cost 2 x their weights; attention
    computes a full T x T score matrix and masks it afterwards, so ``q k^T``
    and ``weights @ v`` cost 2 T C each; the output layer costs 2 V C.
    Kaplan et al. (2020, table 1) write ``2 N + 2 L T C`` instead (here N is
    the exact non-embedding count, biases and norms included): its attention
    term is half of what this implementation computes (as if only the causal
    half of the score matrix were), and it has no output-layer term.

    Args:
        config: as in :func:`gpt_param_counts`.
        context_length: T of the training windows; default the config's.

    Returns:
        dict with the forward parts ``projections``, ``attention``,
        ``logits``, their sum ``forward``, ``train`` (3 x forward), and
        ``kaplan_forward`` / ``kaplan_train`` (2 N + 2 L T C, times 3).

    Example:
        >>> f = gpt_flops_per_token(dict(vocab_size=100, context_length=16,
        ...                              num_layers=2, hidden_dim=32))
        >>> f["forward"], f["train"]
        (59648, 178944)
    """
    V, T, L, C, F, _ = _gpt_sizes(config)
    if context_length is not None:
        T = check_int("context_length", context_length)
    counts = gpt_param_counts(config)
    out = {
        "projections": 2 * counts["block_kernels"],
        "attention": L * (2 * T * C + 2 * T * C),  # q k^T, then weights @ v
        "logits": 2 * V * C,
    }
    out["forward"] = out["projections"] + out["attention"] + out["logits"]
    out["train"] = 3 * out["forward"]
    out["kaplan_forward"] = 2 * counts["non_embedding"] + 2 * L * T * C
    out["kaplan_train"] = 3 * out["kaplan_forward"]
    return out


def matmul_ops(graph) -> list:
    """Every matrix multiplication in a TensorFlow graph, with its FLOPs (2 per multiply-add).

    Reads the op types and static shapes of ``MatMul`` and ``BatchMatMul*``
    ops, including their transpose/adjoint flags: what TensorFlow will run,
    not what a formula says it should. An op's FLOPs are
    2 x (output elements) x (summed length), the summed length being A's
    last axis, or its second-to-last when A is transposed.

    Args:
        graph: a ``tf.Graph`` (e.g. ``concrete_function.graph``) whose matmul
            shapes are fully known.

    Returns:
        one dict per op, in graph order: ``name``, ``op`` (its type),
        ``a_shape``, ``b_shape``, ``transpose_a``, ``transpose_b``, ``dtype``
        and ``flops``.
    """
    if not hasattr(graph, "get_operations"):
        raise ValueError(f"graph must be a tf.Graph; got {graph!r:.80}")
    rows = []
    for op in graph.get_operations():
        if op.type not in _MATMUL_OPS:
            continue
        a, b, out = op.inputs[0].shape, op.inputs[1].shape, op.outputs[0].shape
        if not all(s.is_fully_defined() for s in (a, b, out)):
            raise ValueError(f"graph has a matmul with unknown shape: {op.name} {a} x {b} -> {out}")
        flags = ("transpose_a", "transpose_b") if op.type == "MatMul" else ("adj_x", "adj_y")
        transpose_a, transpose_b = (bool(op.get_attr(f)) for f in flags)
        summed = a[-2] if transpose_a else a[-1]
        rows.append({"name": op.name, "op": op.type, "a_shape": a.as_list(), "b_shape": b.as_list(),
                     "transpose_a": transpose_a, "transpose_b": transpose_b, "dtype": op.inputs[0].dtype.name,
                     "flops": 2 * int(summed) * int(np.prod(out.as_list()))})
    return rows


def count_matmul_flops(graph) -> int:
    """FLOPs of every matrix multiplication in a TensorFlow graph: the sum over :func:`matmul_ops`.

    Args:
        graph: a ``tf.Graph`` whose matmul shapes are fully known.
    """
    return sum(row["flops"] for row in matmul_ops(graph))


def count_train_step_flops(model, batch_size, context_length=None) -> int:
    """Trace one training step of ``model`` (TensorFlow backend) and count its matmul FLOPs.

    The step is forward pass, cross-entropy, gradients of every trainable
    weight and an AdamW update, on a (batch_size, context_length) batch.
    Nothing is executed: the step is only traced into a graph.

    Args:
        model: a built Keras model mapping ids (B, T) to logits (B, T, V).
        batch_size: B.
        context_length: T; default ``model.context_length``.

    Example:
        >>> count_train_step_flops(gpt_model, 4)  # doctest: +SKIP
    """
    return count_matmul_flops(train_step_graph(model, batch_size, context_length))


def train_step_graph(model, batch_size, context_length=None):
    """The ``tf.Graph`` of one training step of ``model``, traced, not run (TensorFlow backend).

    Forward pass, cross-entropy, gradients of every trainable weight and an
    AdamW update on a (batch_size, context_length) batch; arguments as in
    :func:`count_train_step_flops`, which counts its matmul FLOPs.
    :func:`llmft.bench.step_matmuls` times each of its matmuls on its own.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"backend must be 'tensorflow' to read a graph; got {keras.backend.backend()!r}")
    import tensorflow as tf

    batch_size = check_int("batch_size", batch_size)
    context_length = check_int("context_length", context_length or getattr(model, "context_length", None))
    optimizer = keras.optimizers.AdamW(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    weights = model.trainable_variables

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply(tape.gradient(loss, weights), weights)
        return loss

    spec = tf.TensorSpec((batch_size, context_length), tf.int32)
    return step.get_concrete_function(spec, spec).graph


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------


def _dtype_bytes(name, dtype):
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"{name} must be one of {sorted(DTYPE_BYTES)}; got {dtype!r}")
    return DTYPE_BYTES[dtype]


def finetune_memory_bytes(total_params, trainable_params=None, *, dtype="float32",
                          optimizer="adamw", state_dtype="float32", master_weights=False) -> dict:
    """Bytes of weights, gradients and optimizer states for fine-tuning.

    Full fine-tuning trains every parameter; LoRA keeps the model frozen and
    trains a small subset, so only that subset has gradients and optimizer
    states. Activations (which grow with batch and context) are not included.

    Args:
        total_params: all parameters, frozen ones included (LoRA's A and B too).
        trainable_params: parameters that are trained; default all of them.
        dtype: dtype of the weights and gradients (``float32``, ``bfloat16`` ...).
        optimizer: ``adamw``/``adam`` (2 states per trainable parameter:
            first and second moments), ``sgd_momentum`` (1) or ``sgd`` (0).
        state_dtype: dtype of the optimizer states.
        master_weights: keep a float32 copy of the trainable weights, as mixed
            precision training does (Micikevicius et al., 2018).

    Returns:
        dict of bytes: ``weights``, ``gradients``, ``optimizer``, ``total``.

    Example:
        >>> finetune_memory_bytes(1000)["total"]  # 4 + 4 + 8 bytes per parameter
        16000
    """
    check_int("total_params", total_params)
    trainable = total_params if trainable_params is None else check_int(
        "trainable_params", trainable_params, minimum=0)
    if trainable > total_params:
        raise ValueError(f"trainable_params must be <= total_params={total_params}; got {trainable}")
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_STATES)}; got {optimizer!r}")
    if not isinstance(master_weights, bool):
        raise ValueError(f"master_weights must be True or False; got {master_weights!r}")
    width = _dtype_bytes("dtype", dtype)
    states = OPTIMIZER_STATES[optimizer] + (1 if master_weights else 0)
    out = {
        "weights": total_params * width,
        "gradients": trainable * width,
        "optimizer": trainable * states * _dtype_bytes("state_dtype", state_dtype),
    }
    out["total"] = out["weights"] + out["gradients"] + out["optimizer"]
    return out


def lora_param_count(config, rank, *, targets=("qkv", "attn_out", "mlp_in", "mlp_out")) -> int:
    """Parameters LoRA adds to a GPT: r (d_in + d_out) per adapted Dense layer.

    Args:
        config: as in :func:`gpt_param_counts`.
        rank: LoRA rank r (>= 1).
        targets: which of the block's Dense layers get LoRA (names as in
            :data:`llmft.lora.DEFAULT_TARGETS`).

    Example:
        >>> lora_param_count(dict(vocab_size=100, context_length=16, num_layers=2,
        ...                       hidden_dim=32), rank=4)
        4096
    """
    _, _, L, C, F, _ = _gpt_sizes(config)
    rank = check_int("rank", rank)
    shapes = {"qkv": (C, 3 * C), "attn_out": (C, C), "mlp_in": (C, F), "mlp_out": (F, C)}
    if isinstance(targets, str) or not targets or any(t not in shapes for t in targets):
        raise ValueError(f"targets must be a non-empty list from {sorted(shapes)}; got {targets!r}")
    return L * sum(rank * sum(shapes[t]) for t in set(targets))


def variable_bytes(variables) -> int:
    """Measured bytes of a list of variables (e.g. ``model.weights``, ``optimizer.variables``)."""
    if isinstance(variables, (str, bytes)) or not hasattr(variables, "__iter__"):
        raise ValueError(f"variables must be a list of variables; got {variables!r:.80}")
    total = 0
    for v in variables:
        size = int(np.prod(tuple(v.shape), dtype=np.int64))
        total += size * np.dtype(str(getattr(v.dtype, "name", v.dtype))).itemsize
    return total


# ---------------------------------------------------------------------------
# Power laws
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """``y = a * x**(-b) + c``, fitted by :func:`fit_power_law`.

    Attributes: a, b, c (0 without an offset) and ``rmse_log``, the root mean
    square error of the fit in log(y).
    """

    a: float
    b: float
    c: float
    rmse_log: float

    def __call__(self, x):
        return self.a * np.asarray(x, dtype=float) ** (-self.b) + self.c


def _line_fit(logx, y, c):
    logy = np.log(y - c)
    slope, intercept = np.polyfit(logx, logy, 1)
    rmse = float(np.sqrt(np.mean((np.log(np.exp(intercept) * np.exp(slope * logx) + c)
                                  - np.log(y)) ** 2)))
    return float(np.exp(intercept)), float(-slope), rmse


def fit_power_law(x, y, *, offset=False) -> PowerLaw:
    """Fit ``y = a * x**(-b)`` (or ``+ c`` with ``offset=True``) in log space.

    Without an offset, log y = log a - b log x is a straight line: least
    squares in log-log coordinates (every point counts by its relative
    error). With an offset c (the loss that no model size removes, Hoffmann
    et al.'s E), the line is fitted to log(y - c) for each c on a grid below
    min(y), and the c whose curve is closest to the points in log y wins.

    Args:
        x: positive sizes (parameters, tokens, FLOPs); at least 2 distinct
            values, 3 with ``offset`` (which then fits exactly: more are needed
            for the offset to mean anything).
        y: positive losses, same length.
        offset: fit the constant c too.

    Example:
        >>> law = fit_power_law([1, 10, 100], [2.0, 1.0, 0.5])
        >>> round(law.a, 3), round(law.b, 4)
        (2.0, 0.301)
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of the same length; got shapes {x.shape} and {y.shape}")
    needed = 3 if offset else 2
    if len(np.unique(x)) < needed:
        raise ValueError(f"x must have at least {needed} distinct values; got {x.tolist()}")
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise ValueError(f"x must be positive and finite; got {x.tolist()}")
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ValueError(f"y must be positive and finite; got {y.tolist()}")
    logx = np.log(x)
    if not offset:
        return PowerLaw(*_with_c(logx, y, 0.0))
    # c from 0 up to just below min(y), denser near min(y) where the fit
    # changes fastest; then two finer grids between the best point's neighbours.
    top = float(y.min())
    grid = top * (1.0 - np.geomspace(1.0, 1e-6, 600))
    for _ in range(3):
        errors = [_line_fit(logx, y, c)[2] for c in grid]
        i = int(np.argmin(errors))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        best = grid[i]
        grid = np.linspace(lo, hi, 101)
    return PowerLaw(*_with_c(logx, y, float(best)))


def _with_c(logx, y, c):
    a, b, rmse = _line_fit(logx, y, c)
    return a, b, c, rmse

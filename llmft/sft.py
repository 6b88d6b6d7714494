"""Supervised fine-tuning for chat: template, loss mask, batches, training, replies.

A conversation is a list of ``(role, text)`` messages: an optional
``system`` message, then ``user`` and ``assistant`` turns in alternation,
ending with the assistant when it is a training example. The chat template
turns it into one token sequence the base GPT can read::

    [<|system|> 系统提示 <|end|>] <|user|> 问题 <|end|> <|assistant|> 回答 <|end|> ...

Only what the assistant says is learned: the loss weight is 1 on each
assistant content token and on the ``<|end|>`` that closes its turn (so the
model learns to stop), and 0 on the system and user text, the role tokens
and the padding. Keras receives these weights as ``sample_weight``; the loss
is averaged over the weighted tokens (``mean_with_sample_weight``), which is
:func:`masked_loss` in numpy.

Batching uses length buckets, not packing: the book's GPT has learned
absolute positions and no way to mask attention between examples packed in
one row, so every row holds exactly one conversation starting at position 0,
and rows of similar length share a batch to keep padding small (chapter 6.4
measures how small).

Introduced in chapter 6.4.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from llmft import padding, sampling, tokenizers
from llmft.checks import check_int
from llmft.finetune import batch_indices
from llmft.train import build_before_fit, finetune_optimizer

ROLES = ("system", "user", "assistant")
ROLE_TOKENS = {"system": tokenizers.SYSTEM, "user": tokenizers.USER, "assistant": tokenizers.ASSISTANT}


# ---------------------------------------------------------------------------
# 1. The chat template
# ---------------------------------------------------------------------------

def check_messages(messages, *, for_training=True):
    """Return ``messages`` as a list of ``(role, text)``; raise ``ValueError`` if malformed.

    Rules: not empty; each message a ``(role, text)`` pair with a known role
    and a non-empty string; at most one ``system`` message, and only first;
    then ``user``/``assistant`` alternate starting with ``user``. A training
    example must end with an ``assistant`` turn; a prompt (``for_training=False``)
    must end with a ``user`` turn, which the model is to answer.
    """
    if isinstance(messages, (str, bytes)) or not hasattr(messages, "__len__") or len(messages) == 0:
        raise ValueError(f"messages must be a non-empty list of (role, text) pairs; got {messages!r:.80}")
    out = []
    for i, msg in enumerate(messages):
        if isinstance(msg, dict):
            msg = (msg.get("role"), msg.get("content"))
        if not isinstance(msg, (tuple, list)) or len(msg) != 2:
            raise ValueError(f"messages[{i}] must be a (role, text) pair; got {msg!r:.80}")
        role, text = msg
        if role not in ROLES:
            raise ValueError(f"messages[{i}] role must be one of {ROLES}; got {role!r}")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"messages[{i}] text must be a non-empty string; got {text!r:.80}")
        out.append((role, text))
    body = out[1:] if out[0][0] == "system" else out
    if not body:
        raise ValueError("messages must contain a user turn after the system message; got only a system message")
    for i, (role, _) in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            where = i + (len(out) - len(body))
            raise ValueError(f"messages[{where}] role must be {expected!r} (system first, then user/assistant "
                             f"alternating); got {role!r}")
    last = "assistant" if for_training else "user"
    if body[-1][0] != last:
        raise ValueError(f"messages must end with a {last!r} turn here; got {body[-1][0]!r} last")
    return out


def encode_chat(tokenizer, messages, *, max_length=None, for_training=True):
    """Token ids and loss weights of a conversation under the chat template.

    Args:
        tokenizer: a :class:`~llmft.tokenizers.CharTokenizer` (it has the role tokens).
        messages: ``[(role, text), ...]`` (see :func:`check_messages`).
        max_length: the model's context; a longer conversation raises ``ValueError``
            (it is never cut silently: a cut answer would teach the model to stop early).
        for_training: ``True``: ends with the assistant's turn; ``False``: ends with
            ``<|assistant|>`` after the last user turn, ready for generation.

    Returns:
        ``(ids, weights)``: two 1-D arrays of the same length; ``weights[i]`` is 1
        where ``ids[i]`` is spoken by the assistant (content or its ``<|end|>``).

    Example:
        >>> ids, w = encode_chat(tok, [("user", "你好"), ("assistant", "你好！")])  # doctest: +SKIP
    """
    messages = check_messages(messages, for_training=for_training)
    end = tokenizer.token_to_id(tokenizers.END_OF_TURN)
    ids, weights = [], []
    for role, text in messages:
        content = tokenizer.encode(text)
        ids += [tokenizer.token_to_id(ROLE_TOKENS[role]), *content, end]
        spoken = 1.0 if role == "assistant" else 0.0
        weights += [0.0] + [spoken] * (len(content) + 1)
    if not for_training:
        ids.append(tokenizer.token_to_id(tokenizers.ASSISTANT))
        weights.append(0.0)
    if max_length is not None and len(ids) > check_int("max_length", max_length):
        raise ValueError(f"messages encode to {len(ids)} tokens, more than max_length={max_length}")
    return np.asarray(ids, "int32"), np.asarray(weights, "float32")


def decode_chat(tokenizer, ids):
    """Inverse of :func:`encode_chat` (``for_training=True``): the list of ``(role, text)``."""
    ids = list(ids) if hasattr(ids, "__iter__") and not isinstance(ids, (str, bytes)) else None
    if ids is None or not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool)
                              and 0 <= t < tokenizer.vocab_size for t in ids):
        raise ValueError(f"ids must be token ids in [0, {tokenizer.vocab_size}); got {ids!r:.80}")
    role_of = {tokenizer.token_to_id(t): r for r, t in ROLE_TOKENS.items()}
    end = tokenizer.token_to_id(tokenizers.END_OF_TURN)
    messages, role, content = [], None, []
    for i in (int(t) for t in ids):
        if i == tokenizer.pad_id:
            break
        if i in role_of and role is None:
            role, content = role_of[i], []
        elif i == end and role is not None:
            messages.append((role, tokenizer.decode(content)))
            role = None
        elif role is not None:
            content.append(i)
        else:
            raise ValueError(f"ids must follow the chat template; got token {tokenizer.id_to_token(i)!r} "
                             "outside a turn")
    if role is not None:
        raise ValueError(f"ids must follow the chat template; the last {role!r} turn has no <|end|>")
    return messages


# ---------------------------------------------------------------------------
# 2. Inputs, targets and the loss mask
# ---------------------------------------------------------------------------

def training_arrays(encoded, *, context_length, mask_prompt=True, pad_id=0):
    """Stack encoded conversations into ``(x, y, w)`` for next-token training.

    Row ``i`` is conversation ``i`` shifted by one: ``x = ids[:-1]`` and
    ``y = ids[1:]``, right-padded with ``pad_id`` to ``context_length``. ``w`` weighs each
    target: the assistant's tokens (``mask_prompt=True``) or every real token
    of the conversation (``False``, the unmasked variant); padding always 0.

    Args:
        encoded: list of ``(ids, weights)`` from :func:`encode_chat`.
        context_length: the model's context; each ``ids`` may hold ``context_length + 1``
            tokens at most (inputs and targets are one shorter).
        mask_prompt: ``False`` weighs every real token (the unmasked variant).
        pad_id: the padding id: 0 in the book's tokenizers, a KerasHub family's own
            padding token in :mod:`llmft.hub`. It must not occur inside a
            conversation, since :func:`sft_batches` finds the lengths by comparing with it.
    """
    check_int("context_length", context_length)
    check_int("pad_id", pad_id, minimum=0)
    if not encoded:
        raise ValueError("encoded must not be empty")
    n = len(encoded)
    x = np.full((n, context_length), pad_id, "int32")
    y = np.full((n, context_length), pad_id, "int32")
    w = np.zeros((n, context_length), "float32")
    for i, (ids, weights) in enumerate(encoded):
        if len(ids) < 2 or len(ids) > context_length + 1:
            raise ValueError(f"encoded[{i}] must hold 2..{context_length + 1} tokens; got {len(ids)}")
        t = len(ids) - 1
        x[i, :t], y[i, :t] = ids[:-1], ids[1:]
        w[i, :t] = weights[1:] if mask_prompt else 1.0
    return x, y, w


def masked_loss(logits, targets, weights):
    """Mean cross-entropy over the weighted targets: ``sum(w * nll) / sum(w)`` (numpy).

    The reference for what Keras computes with ``sample_weight`` and
    ``reduction="mean_with_sample_weight"``; chapter 6.4 checks one against the other.
    """
    logits = np.asarray(logits, np.float64)
    targets, weights = np.asarray(targets), np.asarray(weights, np.float64)
    if logits.shape[:-1] != targets.shape or targets.shape != weights.shape:
        raise ValueError(f"logits (B, T, V), targets and weights (B, T) must agree; got "
                         f"{logits.shape}, {targets.shape}, {weights.shape}")
    if not weights.sum() > 0:
        raise ValueError(f"weights must have a positive sum; got {weights.sum()!r}")
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    return float((nll * weights).sum() / weights.sum())


def answer_loss(model, x, y, w, *, batch_size=32, pad_id=0):
    """:func:`masked_loss` of ``model`` over a whole set, computed in batches.

    Every weighted target counts once, so the number does not depend on the
    batching; Keras' ``evaluate`` instead averages the per-batch means (with
    masking, batches with few answer tokens weigh as much as full ones).
    Chapter 6.4 uses it per task on held-out items: how well each model
    predicts the reference answers, even where no reply is exactly right.

    Args:
        model: a language model returning ``(B, T, V)`` logits.
        x, y, w: arrays of :func:`training_arrays`.
        batch_size: rows per forward pass (rows of similar length go together).
        pad_id: the padding id of ``x``.
    """
    check_int("batch_size", batch_size)
    x, y, w = np.asarray(x), np.asarray(y), np.asarray(w, np.float64)
    if x.ndim != 2 or x.shape != y.shape or x.shape != w.shape:
        raise ValueError(f"x, y and w must be 2-D arrays of one shape; got {x.shape}, {y.shape}, {w.shape}")
    if not w.sum() > 0:
        raise ValueError(f"w must have a positive sum; got {w.sum()!r}")
    lengths = padding.lengths(x, pad_id)
    total = 0.0
    for rows in batch_indices(lengths, batch_size=batch_size, shuffle=False):  # similar lengths together
        weight = w[rows].sum()
        if weight == 0:
            continue
        width = padding.width(lengths[rows], 8, x.shape[1])
        logits = model(x[rows, :width], training=False)
        total += masked_loss(logits, y[rows, :width], w[rows, :width]) * weight
    return total / w.sum()


def sft_batches(x, y, w, *, batch_size=32, shuffle=False, seed=0, multiple=8, pad_id=0):
    """A ``tf.data.Dataset`` of ``(x, y, w)`` batches in length buckets.

    Each batch holds conversations of similar length, cut to the longest
    (rounded up to ``multiple``); with ``shuffle`` the order is new every epoch.
    ``pad_id`` is the padding of :func:`training_arrays`.
    """
    import tensorflow as tf

    check_int("batch_size", batch_size)
    check_int("pad_id", pad_id, minimum=0)
    if not (len(x) == len(y) == len(w)) or len(x) == 0:
        raise ValueError(f"x, y and w must be non-empty with the same length; got {len(x)}, {len(y)}, {len(w)}")
    lengths = padding.lengths(x, pad_id)
    epoch = [0]

    def generate():
        groups = batch_indices(lengths, batch_size=batch_size, shuffle=shuffle, seed=seed + epoch[0])
        epoch[0] += 1
        for rows in groups:
            width = padding.width(lengths[rows], multiple, x.shape[1])
            yield x[rows, :width], y[rows, :width], w[rows, :width]

    spec = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((None, None), tf.float32))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=spec)
    return dataset.apply(tf.data.experimental.assert_cardinality(-(-len(x) // batch_size)))


def padding_share(x, *, batch_size=32, multiple=8, bucket=True, pad_id=0):
    """Share of the token slots in the batches that are padding (bucketed or not)."""
    lengths = padding.lengths(x, pad_id)
    groups = batch_indices(lengths, batch_size=batch_size, shuffle=True, seed=0, bucket=bucket)
    slots = sum(len(g) * padding.width(lengths[g], multiple, x.shape[1]) for g in groups)
    return 1.0 - lengths.sum() / slots


# ---------------------------------------------------------------------------
# 3. Training
# ---------------------------------------------------------------------------

def sft_loss():
    """Token cross-entropy averaged over the weighted tokens (see :func:`masked_loss`)."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")


class _Log(keras.callbacks.Callback):
    def __init__(self, name, val_data, verbose):
        super().__init__()
        self.name, self.val_data, self.verbose = name, val_data, verbose
        self.rows, self.start = [], time.perf_counter()

    def _val_loss(self):
        if self.val_data is None:
            return None
        # A dict, so that models compiled with metrics too (KerasHub's CausalLM) give the loss as well.
        return float(self.model.evaluate(self.val_data, verbose=0, return_dict=True)["loss"])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1, "loss": float(logs["loss"]),
               "val_loss": self._val_loss(),
               "seconds": round(time.perf_counter() - self.start, 1)}
        self.rows.append(row)
        if self.verbose:
            val = "-" if row["val_loss"] is None else f"{row['val_loss']:.4f}"
            print(f"{self.name}第 {row['epoch']} 轮  训练损失 {row['loss']:.4f}  验证损失 {val}  {row['seconds']:.0f}s",
                  flush=True)


def fit_sft(model, train_data, val_data=None, *, epochs, learning_rate, steps_per_epoch,
            warmup_fraction=0.05, weight_decay=0.01, clip_norm=1.0, name="", verbose=True, jit_compile="auto"):
    """Fine-tune a language model on :func:`sft_batches` with AdamW and warmup/cosine.

    The same optimiser recipe as pretraining (:mod:`llmft.train`), with the
    loss of :func:`sft_loss`; the validation loss is also masked, so it
    measures the assistant's tokens only.

    ``jit_compile`` goes to ``model.compile``: ``False`` skips XLA, which on a
    CPU can take longer to compile a small model's training step than the
    training itself (the appendix on open models measures this).

    Returns:
        one dict per epoch: ``epoch``, ``loss``, ``val_loss``, ``seconds``.
    """
    check_int("epochs", epochs)
    check_int("steps_per_epoch", steps_per_epoch)
    optimizer = finetune_optimizer(learning_rate, epochs * steps_per_epoch, warmup_fraction=warmup_fraction,
                                   weight_decay=weight_decay, clip_norm=clip_norm, final_ratio=0.1, beta_2=0.99)
    model.compile(optimizer=optimizer, loss=sft_loss(), jit_compile=jit_compile)
    build_before_fit(model, train_data)
    log = _Log(name, val_data, verbose)
    model.fit(train_data, epochs=epochs, callbacks=[log], shuffle=False, verbose=0)
    return log.rows


# ---------------------------------------------------------------------------
# 4. Replies: generation that stops at the end of the assistant's turn
# ---------------------------------------------------------------------------

def generate_replies(model, tokenizer, prompts, *, max_new_tokens, batch_size=64, multiple=16):
    """Greedy replies of a chat model to many prompts, decoded together.

    Each prompt is a conversation ending with a user turn; it is encoded
    with the chat template up to the ``<|assistant|>`` that opens the reply,
    and :func:`llmft.sampling.greedy_batch` continues all of them with
    continuous batching (a finished row takes the next prompt at once) and a
    KV cache per row (a new prompt enters it in one pass), each until
    ``<|end|>``, ``max_new_tokens`` or the context limit. A reply does not depend on which prompts share its steps
    (up to float rounding).

    Returns:
        list of ``(text, finished)``, in the order of ``prompts``: the reply
        and whether it ended with ``<|end|>``.
    """
    encoded = [encode_chat(tokenizer, p, for_training=False)[0] for p in prompts]
    end = tokenizer.token_to_id(tokenizers.END_OF_TURN)
    replies = sampling.greedy_batch(model, encoded, max_new_tokens, stop_ids=[end], batch_size=batch_size,
                                    multiple=multiple)
    return [(tokenizer.decode(ids), finished) for ids, finished in replies]


def reply(model, tokenizer, messages, *, max_new_tokens=64):
    """The model's greedy reply to one conversation (ending with a user turn)."""
    return generate_replies(model, tokenizer, [messages], max_new_tokens=max_new_tokens, batch_size=1)[0][0]

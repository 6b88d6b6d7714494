"""The repeated-random-sequence probe: can a language model copy from its context?

Feed a model a random sequence of tokens followed by the same sequence again.
On the first copy nothing is predictable, so every model's loss is high.
On the second copy a model that can look back for the previous occurrence of
the current token and predict what followed it there (an *induction head*,
Olsson et al. 2022) predicts almost every token; a model without that
mechanism does no better than on the first copy, however well it knows the
language. Random tokens matter: with real text a model could be guessing from
what it learned in pretraining instead of copying.

Chapter 6.4 uses the probe to explain why instruction SFT at the cpu scale does
not learn the tasks whose answer copies the input (word segmentation).

Introduced in chapter 6.4.
"""

from __future__ import annotations

import numpy as np

from llmft.checks import check_int


def repeated_sequences(candidates, *, length, rows=32, seed=0) -> np.ndarray:
    """``rows`` random sequences of ``length`` ids from ``candidates``, each written twice.

    Returns:
        int32 array of shape ``(rows, 2 * length)``; ``out[:, length:] == out[:, :length]``.
    """
    check_int("length", length, minimum=2)
    check_int("rows", rows)
    candidates = np.asarray(list(candidates) if not isinstance(candidates, np.ndarray) else candidates)
    if candidates.ndim != 1 or len(candidates) < 2 or not np.issubdtype(candidates.dtype, np.integer):
        raise ValueError(f"candidates must be a sequence of at least 2 token ids; got {candidates!r:.80}")
    first = np.random.default_rng(seed).choice(candidates, size=(rows, length))
    return np.concatenate([first, first], axis=1).astype("int32")


def repeated_sequence_probe(model, candidates, *, length, rows=32, seed=0) -> dict:
    """Loss and accuracy of ``model`` on the first and the second copy of random sequences.

    Both halves are scored on ``length - 1`` targets: the first copy on tokens
    2..L (token 1 has no context), the second on tokens L+2..2L (token L+1 can
    only be guessed, since nothing says that the sequence will repeat).

    Args:
        model: a language model called on ``(rows, T)`` ids, returning ``(rows, T, V)``
            logits, with a ``context_length`` of at least ``2 * length - 1``.
        candidates: the token ids to draw from, e.g. a tokenizer's ordinary characters
            (no padding or role tokens).
        length: tokens in one copy.
        rows: sequences in the probe.
        seed: the random sequences.

    Returns:
        ``first_loss`` and ``second_loss`` (mean cross-entropy in nats per token),
        ``first_accuracy`` and ``second_accuracy`` (greedy next-token accuracy),
        ``length`` and ``rows``.
    """
    from llmft import sft  # masked_loss: the one reference cross-entropy of the book

    check_int("length", length, minimum=2)
    context = getattr(model, "context_length", None)
    if context is not None and 2 * length - 1 > int(context):
        raise ValueError(f"length={length} needs 2 * length - 1 = {2 * length - 1} positions; "
                         f"the model's context_length is {int(context)}")
    ids = repeated_sequences(candidates, length=length, rows=rows, seed=seed)
    x, y = ids[:, :-1], ids[:, 1:]
    logits = np.asarray(model(x, training=False), np.float64)
    first = np.zeros(y.shape, np.float32)
    first[:, :length - 1] = 1.0
    second = np.zeros(y.shape, np.float32)
    second[:, length:] = 1.0
    hits = logits.argmax(-1) == y
    return {
        "first_loss": sft.masked_loss(logits, y, first),
        "second_loss": sft.masked_loss(logits, y, second),
        "first_accuracy": float(hits[:, :length - 1].mean()),
        "second_accuracy": float(hits[:, length:].mean()),
        "length": int(length),
        "rows": int(rows),
    }

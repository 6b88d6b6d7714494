"""Metrics: cross-entropy and perplexity, n-gram baselines, classification scores.

Cross-entropy, perplexity and the n-gram baselines are introduced in
chapter 4 (and used to judge pretraining in chapter 3); accuracy,
precision/recall/F1 and the confusion matrix in chapter 5. All functions
work on numpy arrays; losses are in nats (natural log) per token.
"""

from __future__ import annotations

import math

import numpy as np

AVERAGES = ("binary", "macro")


def _int_array(name, values, ndim=None):
    array = np.asarray(values)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers; got dtype {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {array.shape}")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be >= 0; got a value {array.min()}")
    return array.astype(np.int64)


def log_softmax(logits, axis=-1):
    """Numerically stable ``log(softmax(logits))`` (subtract the max first)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def cross_entropy(targets, predictions, *, from_logits=True):
    """Mean ``-log p(target)`` in nats over all positions.

    Args:
        targets: integer ids, any shape (...).
        predictions: logits (or probabilities if ``from_logits=False``) of
            shape (..., V).
        from_logits: whether ``predictions`` are logits.

    Example:
        >>> round(cross_entropy([0], [[0.0, 0.0]]), 4)  # log 2
        0.6931
    """
    targets = _int_array("targets", targets)
    predictions = np.asarray(predictions, dtype=np.float64)
    if predictions.shape[:-1] != targets.shape or targets.size == 0:
        raise ValueError(
            "predictions must have shape targets.shape + (V,) with at least one target; "
            f"got predictions {predictions.shape} for targets {targets.shape}"
        )
    vocab = predictions.shape[-1]
    if targets.max() >= vocab:
        raise ValueError(f"targets must be < V={vocab}; got a value {targets.max()}")
    if from_logits:
        log_probs = log_softmax(predictions)
    else:
        if predictions.min() < 0 or not np.allclose(predictions.sum(-1), 1.0, atol=1e-4):
            raise ValueError(
                "predictions must be probabilities (>= 0, summing to 1 on the last axis) "
                "when from_logits=False; got values that are not"
            )
        with np.errstate(divide="ignore"):
            log_probs = np.log(predictions)
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)
    return float(-picked.mean())


def perplexity(loss):
    """``exp(loss)`` for a cross-entropy in nats: the effective number of choices.

    Example:
        >>> round(perplexity(math.log(50)), 6)  # uniform over 50 tokens
        50.0
    """
    if isinstance(loss, bool) or not isinstance(loss, (int, float, np.floating, np.integer)) \
            or math.isnan(loss) or loss < 0:
        raise ValueError(f"loss must be a number >= 0 (nats); got {loss!r}")
    return math.exp(loss) if loss < 700 else math.inf


class _NGram:
    def __init__(self, add_k=1.0, vocab_size=None):
        if isinstance(add_k, bool) or not isinstance(add_k, (int, float)) or not add_k >= 0:
            raise ValueError(f"add_k must be a number >= 0; got {add_k!r}")
        if vocab_size is not None and (
            isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer))
            or vocab_size < 1
        ):
            raise ValueError(f"vocab_size must be an integer >= 1 (or None); got {vocab_size!r}")
        self.add_k = float(add_k)
        self.vocab_size = vocab_size
        self.fitted = False

    def _ids(self, ids, minimum, fitting=False):
        ids = _int_array("ids", ids, ndim=1)
        if ids.size < minimum:
            raise ValueError(f"ids must hold at least {minimum} tokens; got {ids.size}")
        if fitting:
            if self.vocab_size is None:
                self.vocab_size = int(ids.max()) + 1
        elif not self.fitted:
            raise ValueError("call fit(ids) before cross_entropy(ids)")
        if ids.max() >= self.vocab_size:
            raise ValueError(f"ids must be < vocab_size={self.vocab_size}; got a value {ids.max()}")
        return ids

    @staticmethod
    def _mean_nll(probs):
        with np.errstate(divide="ignore"):
            return float(-np.log(probs).mean())


class UnigramLM(_NGram):
    """Add-k smoothed unigram model: ``p(w) = (c(w) + k) / (N + k V)``.

    The baseline that ignores context; with ``k > 0`` a token unseen in
    training still gets a finite loss. Introduced in chapter 4.

    Args:
        add_k: pseudo-count added to every token (0 = maximum likelihood).
        vocab_size: V; default ``max(ids) + 1`` of the training ids.

    Example:
        >>> round(UnigramLM(add_k=1).fit([0, 0, 1]).cross_entropy([0, 1]), 4)  # p = 3/5, 2/5
        0.7136
    """

    def fit(self, ids):
        ids = self._ids(ids, 1, fitting=True)
        self.counts = np.bincount(ids, minlength=self.vocab_size).astype(np.float64)
        self.fitted = True
        return self

    def probabilities(self):
        """p(w) for every token id, shape (V,)."""
        if not self.fitted:
            raise ValueError("call fit(ids) before probabilities()")
        k, vocab = self.add_k, self.vocab_size
        return (self.counts + k) / (self.counts.sum() + k * vocab)

    def cross_entropy(self, ids):
        """Mean nats per token of ``ids``."""
        ids = self._ids(ids, 1)
        return self._mean_nll(self.probabilities()[ids])


class BigramLM(_NGram):
    """Add-k smoothed bigram model: ``p(w | u) = (c(u, w) + k) / (c(u, .) + k V)``.

    Counts are kept sparse (pairs that occur), so a 5000-token vocabulary
    does not need a 5000 x 5000 table. Introduced in chapter 4.

    Args:
        add_k: pseudo-count added to every pair (0 = maximum likelihood; an
            unseen pair then costs infinitely many nats).
        vocab_size: V; default ``max(ids) + 1`` of the training ids.

    Example:
        >>> round(BigramLM(add_k=1).fit([0, 1, 0, 1]).cross_entropy([0, 1]), 4)  # p(1|0) = 3/4
        0.2877
    """

    def fit(self, ids):
        ids = self._ids(ids, 2, fitting=True)
        vocab = self.vocab_size
        pairs = ids[:-1] * vocab + ids[1:]  # one integer code per (u, w)
        self.pair_codes, self.pair_counts = np.unique(pairs, return_counts=True)
        # c(u, .): how often u is followed by anything (the last token is not).
        self.context_counts = np.bincount(ids[:-1], minlength=vocab).astype(np.float64)
        self.fitted = True
        return self

    def pair_count(self, prev, nxt):
        """c(prev, nxt) for arrays of ids (0 where the pair never occurred)."""
        codes = np.asarray(prev, dtype=np.int64) * self.vocab_size + np.asarray(nxt)
        where = np.searchsorted(self.pair_codes, codes)
        where = np.minimum(where, len(self.pair_codes) - 1)
        found = self.pair_codes[where] == codes
        return np.where(found, self.pair_counts[where], 0).astype(np.float64)

    def cross_entropy(self, ids):
        """Mean nats per predicted token: every token of ``ids`` but the first
        (which has no previous token) is predicted from the one before it."""
        ids = self._ids(ids, 2)
        prev, nxt = ids[:-1], ids[1:]
        k, vocab = self.add_k, self.vocab_size
        denominator = self.context_counts[prev] + k * vocab
        with np.errstate(invalid="ignore", divide="ignore"):
            probs = (self.pair_count(prev, nxt) + k) / denominator
        # k = 0 and a context never seen in training: 0/0; count it as p = 0.
        return self._mean_nll(np.nan_to_num(probs, nan=0.0))


def evaluated_length(num_ids, context_length, stride=None):
    """How many target positions :func:`model_cross_entropy` scores.

    The scored targets are ``ids[1 : 1 + n]``; evaluate a baseline on
    ``ids[: 1 + n]`` to compare on exactly the same positions.
    """
    stride = context_length if stride is None else stride
    windows = (num_ids - 1 - context_length) // stride + 1
    if windows < 1:
        return 0
    return context_length + (windows - 1) * stride


def model_cross_entropy(model, ids, context_length, batch_size=32, stride=None):
    """Held-out cross-entropy (nats per token) of a Keras language model.

    Windows of ``context_length`` inputs start every ``stride`` tokens
    (default: ``context_length``, i.e. non-overlapping). The first window
    scores all its positions; each later window scores only its last
    ``stride`` positions, so every target is scored once and, with a small
    stride, with at least ``context_length - stride`` tokens of context.
    Non-overlapping windows give early positions little context and read
    higher; ``stride=context_length // 2`` is the usual compromise. A tail
    that does not fill a window is left out (see :func:`evaluated_length`).

    Args:
        model: ``model(x)`` maps ids (B, T) to logits (B, T, V).
        ids: 1-D held-out token ids (at least ``context_length + 1``).
        context_length: window length T.
        batch_size: windows per forward pass.
        stride: distance between window starts, in [1, context_length].
    """
    ids = _int_array("ids", ids, ndim=1)
    for name, value in (("context_length", context_length), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if stride is None:
        stride = context_length
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride <= context_length:
        raise ValueError(f"stride must be an integer in [1, context_length={context_length}]; got {stride!r}")
    scored = evaluated_length(ids.size, context_length, stride)
    if scored < 1:
        raise ValueError(
            f"ids must hold at least context_length + 1 = {context_length + 1} tokens; "
            f"got {ids.size}"
        )
    starts = np.arange(0, scored - context_length + 1, stride)
    offsets = np.arange(context_length)
    inputs = ids[starts[:, None] + offsets].astype("int32")  # (N, T)
    targets = ids[starts[:, None] + offsets + 1]  # (N, T)
    # Which positions count: all of the first window, the last `stride` of the others.
    weight = np.zeros_like(targets, dtype=np.float64)
    weight[:, context_length - stride:] = 1.0
    weight[0, :] = 1.0
    total = 0.0
    for start in range(0, len(starts), batch_size):
        x = inputs[start : start + batch_size]
        # predict_on_batch runs the compiled predict function (fast), batch by
        # batch, so the full (N, T, V) logits never sit in memory at once.
        logp = log_softmax(np.asarray(model.predict_on_batch(x), dtype=np.float64))
        picked = np.take_along_axis(logp, targets[start : start + batch_size][..., None], axis=-1)[..., 0]
        total -= float((picked * weight[start : start + batch_size]).sum())
    return total / scored


def _labels(y_true, y_pred):
    y_true = _int_array("y_true", y_true, ndim=1)
    y_pred = _int_array("y_pred", y_pred, ndim=1)
    if y_true.size != y_pred.size or y_true.size == 0:
        raise ValueError(
            f"y_true and y_pred must have the same non-zero length; got {y_true.size} "
            f"and {y_pred.size}"
        )
    return y_true, y_pred


def accuracy(y_true, y_pred):
    """Fraction of predictions equal to the labels."""
    y_true, y_pred = _labels(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true, y_pred, num_classes=None):
    """Counts ``m[i, j]`` of examples with label i predicted as j.

    Labels are integers 0..num_classes-1; ``num_classes`` defaults to
    ``max(label) + 1`` over both arrays.
    """
    y_true, y_pred = _labels(y_true, y_pred)
    largest = int(max(y_true.max(), y_pred.max()))
    if num_classes is None:
        num_classes = largest + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes <= largest:
        raise ValueError(
            f"num_classes must be an integer > every label ({largest}); got {num_classes!r}"
        )
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _prf(tp, fp, fn):
    # 0/0 counts as 0, as scikit-learn does with zero_division=0.
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def precision_recall_f1(y_true, y_pred, *, average="binary", pos_label=1, num_classes=None):
    """Precision, recall and F1 as a tuple of floats.

    Args:
        y_true, y_pred: integer labels, 1-D.
        average: ``"binary"`` scores only ``pos_label``; ``"macro"`` averages
            the per-class scores with equal weight (F1 is the mean of the
            per-class F1s, as in scikit-learn).
        pos_label: the positive class for ``average="binary"``.
        num_classes: for ``"macro"``, the classes 0..num_classes-1; default
            the labels that occur in either array (scikit-learn's rule).
    """
    y_true, y_pred = _labels(y_true, y_pred)
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}; got {average!r}")
    if average == "binary":
        if isinstance(pos_label, bool) or not isinstance(pos_label, (int, np.integer)):
            raise ValueError(f"pos_label must be an integer label; got {pos_label!r}")
        tp = int(np.sum((y_pred == pos_label) & (y_true == pos_label)))
        fp = int(np.sum((y_pred == pos_label) & (y_true != pos_label)))
        fn = int(np.sum((y_pred != pos_label) & (y_true == pos_label)))
        return _prf(tp, fp, fn)
    # confusion_matrix validates num_classes; without it the matrix covers
    # every label that occurs, and only those labels are averaged.
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    classes = np.union1d(y_true, y_pred) if num_classes is None else range(num_classes)
    scores = []
    for c in classes:
        tp = matrix[c, c]
        scores.append(_prf(tp, matrix[:, c].sum() - tp, matrix[c].sum() - tp))
    return tuple(float(np.mean(column)) for column in zip(*scores))


def mcnemar_exact(correct_a, correct_b):
    """Exact McNemar test: do two models scored on the same items differ in accuracy?

    Items that both models get right, or both wrong, say nothing about which
    is better. The rest are ``a_only`` (only model a right) and ``b_only``.
    If the models were equally good, each of those ``n = a_only + b_only``
    items would fall either way with probability 1/2, so ``a_only`` follows
    Binomial(n, 1/2). The two-sided p-value is twice the smaller tail, capped
    at 1 (McNemar 1947, exact form); 1.0 when ``n == 0``.

    Args:
        correct_a, correct_b: per-item correctness (bools or 0/1) of the two
            models on the same items, in the same order.

    Returns:
        dict with ``a_only``, ``b_only`` and ``p_value``.

    Example:
        >>> mcnemar_exact([1, 1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0])["p_value"]
        0.03125
    """
    a, b = (np.asarray(v) for v in (correct_a, correct_b))
    for name, v in (("correct_a", a), ("correct_b", b)):
        if v.ndim != 1 or v.size == 0 or not np.isin(v, (0, 1)).all():
            raise ValueError(f"{name} must be a non-empty 1-D sequence of bools or 0/1; got {v!r:.80}")
    if a.size != b.size:
        raise ValueError(f"correct_a and correct_b must score the same items; got lengths {a.size} and {b.size}")
    a_only, b_only = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    n, k = a_only + b_only, min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return {"a_only": a_only, "b_only": b_only, "p_value": min(1.0, 2 * tail)}


# --------------------------------------------------------------------------
# Generated text: diversity and repetition (introduced in chapter 6.6)
# --------------------------------------------------------------------------


def _sequences(sequences):
    """A list of 1-D sequences (lists of ids or strings); one flat sequence is wrapped."""
    if isinstance(sequences, str) or (
        isinstance(sequences, (list, tuple, np.ndarray)) and len(sequences)
        and not isinstance(sequences[0], (list, tuple, str, np.ndarray))
    ):
        sequences = [sequences]
    if not isinstance(sequences, (list, tuple)) or not sequences:
        raise ValueError(f"sequences must be a non-empty list of token sequences; got {sequences!r}")
    return [list(s) for s in sequences]


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1; got {n!r}")
    return int(n)


def _ngrams(sequence, n):
    return [tuple(sequence[i : i + n]) for i in range(len(sequence) - n + 1)]


def distinct_n(sequences, n):
    """Distinct-n: distinct n-grams / all n-grams, pooled over ``sequences``.

    A measure of diversity (Li et al., 2016): 1 means no n-gram occurs
    twice, values near 0 mean the text keeps repeating itself. n-grams do
    not cross sequence boundaries. Introduced in chapter 6.6.

    Args:
        sequences: a list of sequences (lists of token ids, or strings for
            characters), or one sequence.
        n: n-gram length (1 = distinct tokens).

    Example:
        >>> distinct_n(["abab"], 2)  # ab, ba, ab: 2 distinct of 3
        0.6666666666666666
    """
    n = _check_n(n)
    grams = [g for s in _sequences(sequences) for g in _ngrams(s, n)]
    if not grams:
        raise ValueError(f"sequences must hold at least one {n}-gram; got none that long")
    return len(set(grams)) / len(grams)


def repetition_rate(sequences, n=4):
    """Share of n-grams that repeat an n-gram seen earlier in the same sequence.

    The mean over sequences of ``1 - distinct n-grams / n-grams`` within
    each sequence (seq-rep-n of Welleck et al., 2020); sequences shorter
    than n are skipped. 0: nothing repeats; near 1: a loop.
    Introduced in chapter 6.6.

    Args:
        sequences: a list of sequences (token ids or strings), or one sequence.
        n: n-gram length (default 4).

    Example:
        >>> repetition_rate(["很好很好很好"], 2)  # 很好 好很 很好 好很 很好: 3 of 5 repeat
        0.6
    """
    n = _check_n(n)
    rates = []
    for sequence in _sequences(sequences):
        grams = _ngrams(sequence, n)
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    if not rates:
        raise ValueError(f"sequences must hold at least one sequence of >= {n} tokens; got none")
    return float(np.mean(rates))


def continuation_cross_entropy(model, prompt_ids, continuation_ids):
    """Mean nats per token of ``continuation_ids`` given ``prompt_ids``, under ``model``.

    One forward pass over prompt + continuation; only the continuation's
    tokens are scored, each given everything before it. ``exp`` of the
    result is the perplexity of that text under the model. Introduced in
    chapter 6.6.

    Args:
        model: ``model(ids)`` maps (1, T) ids to logits (1, T, V); if it has
            ``context_length``, prompt + continuation must fit in it.
        prompt_ids: at least one token id.
        continuation_ids: at least one token id.

    Returns:
        ``(total_nats, num_tokens)``: sum them over texts before dividing,
        so that long texts weigh more than short ones.
    """
    prompt = _int_array("prompt_ids", prompt_ids, ndim=1)
    continuation = _int_array("continuation_ids", continuation_ids, ndim=1)
    if prompt.size == 0 or continuation.size == 0:
        raise ValueError(
            f"prompt_ids and continuation_ids must be non-empty; got {prompt.size} and "
            f"{continuation.size} tokens"
        )
    ids = np.concatenate([prompt, continuation])
    context = getattr(model, "context_length", None)
    if context is not None and ids.size > context:
        raise ValueError(
            f"prompt_ids + continuation_ids must fit in context_length={context}; got {ids.size} tokens"
        )
    inputs = ids[None, :-1].astype("int32")  # (1, T - 1): the last token predicts nothing
    # predict_on_batch runs Keras' compiled predict function when there is one.
    forward = getattr(model, "predict_on_batch", model)
    logits = np.asarray(forward(inputs), np.float64)[0]  # (T - 1, V)
    scored = log_softmax(logits[prompt.size - 1 :])  # rows predicting the continuation
    picked = np.take_along_axis(scored, continuation[:, None], axis=-1)[:, 0]
    return float(-picked.sum()), int(continuation.size)

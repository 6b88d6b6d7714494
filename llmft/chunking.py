"""Long texts: truncation, sliding-window chunking of token ids, and aggregation.

A model with a context of ``max_length`` tokens cannot read a longer text in
one pass. Three ways around it, all on token ids (the text is tokenized
first; chunking is what happens *after* tokenization, not a kind of it):

1. :func:`truncate` keeps the first (``"head"``) or last (``"tail"``)
   ``max_length`` ids and drops the rest;
2. :func:`window_starts` / :func:`chunk_ids` cut the ids into windows of at
   most ``max_length`` ids that start every ``stride`` ids, so consecutive
   windows overlap by ``max_length - stride`` ids and every id is in at
   least one window; :func:`chunk_batch` does this for many texts at once
   and pads the windows into one matrix;
3. :func:`aggregate` turns the per-window class probabilities back into one
   row per text: the mean over windows, the element-wise max (renormalised),
   or the mean weighted by each window's length.

Example:
    >>> window_starts(100, max_length=64, stride=32)
    [0, 32, 64]
    >>> [len(c) for c in chunk_ids(list(range(100)), max_length=64, stride=32)]
    [64, 64, 36]

Introduced in chapter 9.
"""

from __future__ import annotations

import numpy as np

from llmft.checks import check_int

SIDES = ("head", "tail")
METHODS = ("mean", "max", "weighted")


def _ids(name, ids):
    array = np.asarray(ids)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D sequence of integer token ids; got shape {array.shape} "
                         f"dtype {array.dtype}")
    return array.astype(np.int32)


def _check_stride(max_length, stride):
    max_length = check_int("max_length", max_length)
    stride = check_int("stride", stride)
    if stride > max_length:
        # Larger steps than the window would skip the ids between two windows.
        raise ValueError(f"stride must be <= max_length={max_length} (or ids are skipped); got {stride!r}")
    return max_length, stride


def truncate(ids, *, max_length, side="head"):
    """The first (``side="head"``) or last (``"tail"``) ``max_length`` ids of ``ids``.

    Example:
        >>> truncate([1, 2, 3, 4, 5], max_length=2, side="tail").tolist()
        [4, 5]
    """
    ids = _ids("ids", ids)
    max_length = check_int("max_length", max_length)
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}; got {side!r}")
    return ids[:max_length] if side == "head" else ids[-max_length:]


def window_starts(num_tokens, *, max_length, stride):
    """Start positions of the windows that cover ``num_tokens`` ids.

    Windows start at ``0, stride, 2 * stride, ...`` and end at
    ``min(start + max_length, num_tokens)``; the last window is the first
    one that reaches the end. A text of at most ``max_length`` ids is one
    window.

    Args:
        num_tokens: length of the id sequence (>= 1).
        max_length: the longest window (the model's input length).
        stride: distance between consecutive starts, 1 <= stride <= max_length.

    Example:
        >>> window_starts(64, max_length=64, stride=16)
        [0]
        >>> window_starts(65, max_length=64, stride=16)
        [0, 16]
    """
    num_tokens = check_int("num_tokens", num_tokens)
    max_length, stride = _check_stride(max_length, stride)
    starts = [0]
    while starts[-1] + max_length < num_tokens:
        starts.append(starts[-1] + stride)
    return starts


def chunk_ids(ids, *, max_length, stride):
    """Overlapping windows of ``ids``: a list of 1-D int32 arrays (see :func:`window_starts`).

    Example:
        >>> [c.tolist() for c in chunk_ids([1, 2, 3, 4, 5], max_length=3, stride=2)]
        [[1, 2, 3], [3, 4, 5]]
    """
    ids = _ids("ids", ids)
    if ids.size == 0:
        raise ValueError("ids must hold at least one token id; got an empty sequence")
    return [ids[s:s + max_length] for s in window_starts(ids.size, max_length=max_length, stride=stride)]


def chunk_batch(id_lists, *, max_length, stride, pad_id=0):
    """Chunk many texts' ids into one padded matrix of windows.

    Args:
        id_lists: one id sequence per text (e.g. ``tokenizer.encode(text)``).
        max_length, stride: as in :func:`window_starts`.
        pad_id: id written after a window's last id (right padding).

    Returns:
        ``(windows, owner, lengths)``: ``windows`` (W, max_length) int32,
        ``owner`` (W,) the index of the text each window comes from, in
        order, and ``lengths`` (W,) the real (non-pad) ids per window.

    Example:
        >>> w, owner, lengths = chunk_batch([[5, 6, 7], [8]], max_length=2, stride=1)
        >>> w.tolist(), owner.tolist(), lengths.tolist()
        ([[5, 6], [6, 7], [8, 0]], [0, 0, 1], [2, 2, 1])
    """
    max_length, stride = _check_stride(max_length, stride)
    check_int("pad_id", pad_id, minimum=0)
    if isinstance(id_lists, (str, np.ndarray)) or not hasattr(id_lists, "__len__") or len(id_lists) == 0:
        raise ValueError(f"id_lists must be a non-empty list of id sequences; got {id_lists!r:.80}")
    rows, owner = [], []
    for i, ids in enumerate(id_lists):
        ids = _ids(f"id_lists[{i}]", ids)
        if ids.size == 0:
            raise ValueError(f"id_lists[{i}] must hold at least one token id; got an empty sequence")
        for chunk in chunk_ids(ids, max_length=max_length, stride=stride):
            rows.append(chunk)
            owner.append(i)
    windows = np.full((len(rows), max_length), pad_id, dtype=np.int32)
    for r, chunk in enumerate(rows):
        windows[r, :len(chunk)] = chunk
    lengths = np.array([len(chunk) for chunk in rows], dtype=np.int32)
    return windows, np.array(owner, dtype=np.int64), lengths


def aggregate(probs, owner, *, method="mean", lengths=None, num_texts=None):
    """Combine per-window class probabilities into one row per text.

    Args:
        probs: (W, C) probabilities, each row summing to 1.
        owner: (W,) text index of each window (from :func:`chunk_batch`).
        method: ``"mean"`` (average over the text's windows), ``"max"``
            (per-class maximum over windows, renormalised to sum to 1: the
            most confident window decides) or ``"weighted"`` (average
            weighted by ``lengths``, so a short last window counts less).
        lengths: (W,) window lengths; required for ``"weighted"``.
        num_texts: number of texts; default ``max(owner) + 1``. Every text
            must own at least one window.

    Returns:
        (num_texts, C) float64 probabilities.

    Example:
        >>> aggregate([[0.9, 0.1], [0.3, 0.7]], [0, 0]).round(2).tolist()
        [[0.6, 0.4]]
        >>> aggregate([[0.9, 0.1], [0.3, 0.7]], [0, 0], method="weighted", lengths=[1, 3]).round(2).tolist()
        [[0.45, 0.55]]
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (windows, classes) with >= 1 window and >= 2 classes; "
                         f"got {probs.shape}")
    if probs.min() < 0 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("probs must be probabilities (>= 0, each row summing to 1); got rows that are not")
    owner = np.asarray(owner)
    if owner.shape != (probs.shape[0],) or not np.issubdtype(owner.dtype, np.integer) or owner.min() < 0:
        raise ValueError(f"owner must be {probs.shape[0]} integer text indices >= 0; got {owner!r:.80}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if num_texts is None:
        num_texts = int(owner.max()) + 1
    num_texts = check_int("num_texts", num_texts)
    counts = np.bincount(owner, minlength=num_texts)
    if len(counts) > num_texts or (counts == 0).any():
        missing = np.flatnonzero(counts[:num_texts] == 0)[:5].tolist()
        raise ValueError(f"owner must give every text 0..{num_texts - 1} at least one window and no other; "
                         f"got owner {owner!r:.80} (texts without a window: {missing})")
    if method == "max":
        out = np.zeros((num_texts, probs.shape[1]))
        np.maximum.at(out, owner, probs)
        return out / out.sum(axis=1, keepdims=True)
    if method == "weighted":
        if lengths is None:
            raise ValueError("lengths must be given for method='weighted'; got None")
        weights = np.asarray(lengths, dtype=np.float64)
        if weights.shape != owner.shape or not (weights > 0).all():
            raise ValueError(f"lengths must be {owner.size} positive window lengths; got {lengths!r:.80}")
    else:
        weights = np.ones(owner.size)
    out = np.zeros((num_texts, probs.shape[1]))
    np.add.at(out, owner, probs * weights[:, None])
    return out / np.bincount(owner, weights=weights, minlength=num_texts)[:, None]

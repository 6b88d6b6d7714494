"""Right-padded rows of token ids: their lengths and the width a batch of them needs.

Every batching helper in llmft (classification and feature extraction in
:mod:`llmft.finetune`, tagging, translation, SFT, batched generation) cuts a
batch of right-padded rows to its longest row, rounded up to a multiple so
that only a few distinct shapes get traced. The rows stay right-padded, so
the causal or padding masks of the models keep the padding out of the
results.
"""

from __future__ import annotations

import numpy as np


def lengths(ids, pad_id=0):
    """Non-padding tokens in each row of ``ids`` (N, T).

    Example:
        >>> lengths(np.array([[5, 6, 0, 0], [7, 0, 0, 0]])).tolist()
        [2, 1]
    """
    return (np.asarray(ids) != pad_id).sum(axis=1)


def width(row_lengths, multiple, cap):
    """The longest of ``row_lengths`` (at least 1) rounded up to ``multiple``, at most ``cap``.

    Example:
        >>> width(np.array([3, 17, 9]), 8, 128), width(np.array([120]), 16, 128)
        (24, 128)
    """
    return min(-(-max(int(np.max(row_lengths)), 1) // multiple) * multiple, cap)


def batch_width(ids, multiple=8, pad_id=0):
    """:func:`width` of the rows of ``ids`` (N, T), at most T."""
    ids = np.asarray(ids)
    return width(lengths(ids, pad_id), multiple, ids.shape[1])

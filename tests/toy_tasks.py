"""Tiny synthetic tasks shared by the classifier tests (heads, LoRA)."""

import numpy as np


def contains_token_task(n, *, vocab, length=12, seed=0, marker=5):
    """Rows of random ids (right-padded with 0); label 1 if ``marker`` appears.

    Balanced and linearly separable after pooling, so a classifier on a
    tiny backbone must learn it within a few dozen steps.
    """
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, length), "int32")
    labels = rng.integers(0, 2, n)
    for i in range(n):
        k = rng.integers(3, length + 1)
        ids[i, :k] = rng.integers(marker + 1, vocab, k)
        if labels[i]:
            ids[i, rng.integers(0, k)] = marker
    return ids, labels

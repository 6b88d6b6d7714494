"""Tests for llmft.padding: row lengths and batch widths of right-padded token ids."""

import numpy as np
import pytest

from llmft import padding


def test_lengths_count_the_tokens_that_are_not_padding():
    ids = np.array([[4, 5, 6, 0], [7, 0, 0, 0], [0, 0, 0, 0]])
    assert padding.lengths(ids).tolist() == [3, 1, 0]
    assert padding.lengths([[9, 9, 1], [2, 1, 1]], pad_id=1).tolist() == [2, 1]


@pytest.mark.parametrize("row_lengths, multiple, cap, expected", [
    ([3, 17, 9], 8, 128, 24),   # the longest row, rounded up
    ([16], 8, 128, 16),         # already a multiple
    ([120], 16, 128, 128),      # rounded up past the cap: the cap
    ([0, 0], 8, 128, 8),        # an all-padding batch still gets one multiple
    ([5], 1, 128, 5),
])
def test_width_rounds_the_longest_row_up_within_the_cap(row_lengths, multiple, cap, expected):
    assert padding.width(np.array(row_lengths), multiple, cap) == expected


def test_batch_width_never_exceeds_the_rows():
    ids = np.zeros((2, 12), "int32")
    ids[0, :11] = 3
    assert padding.batch_width(ids, 8) == 12
    assert padding.batch_width(ids[:, :12], 4) == 12
    ids[0, 5:] = 0
    assert padding.batch_width(ids, 4) == 8

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmft import chunking


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), max_length=st.integers(1, 70), data=st.data())
def test_windows_cover_every_token_and_overlap_by_max_length_minus_stride(n, max_length, data):
    stride = data.draw(st.integers(1, max_length))
    ids = np.arange(n) + 3
    chunks = chunking.chunk_ids(ids, max_length=max_length, stride=stride)
    starts = chunking.window_starts(n, max_length=max_length, stride=stride)
    assert len(chunks) == len(starts) and starts[0] == 0
    assert all(1 <= len(c) <= max_length for c in chunks)
    for start, chunk in zip(starts, chunks):
        np.testing.assert_array_equal(chunk, ids[start:start + len(chunk)])  # contiguous slices, in order
    covered = np.zeros(n, bool)
    for start, chunk in zip(starts, chunks):
        covered[start:start + len(chunk)] = True
    assert covered.all()
    assert starts[-1] + len(chunks[-1]) == n  # the last window reaches the end ...
    if len(starts) > 1:
        assert starts[-2] + max_length < n  # ... and is needed: the one before it does not
    for (a, ca), b in zip(zip(starts, chunks), starts[1:]):
        assert a + len(ca) - b == max_length - stride  # consecutive windows overlap by max_length - stride


def test_known_windows():
    assert chunking.window_starts(100, max_length=64, stride=32) == [0, 32, 64]
    assert chunking.window_starts(64, max_length=64, stride=1) == [0]
    assert chunking.window_starts(130, max_length=64, stride=64) == [0, 64, 128]  # no overlap
    assert [c.tolist() for c in chunking.chunk_ids([1, 2, 3, 4, 5], max_length=3, stride=2)] == [[1, 2, 3], [3, 4, 5]]


def test_chunk_batch_pads_on_the_right_and_records_owner_and_lengths():
    windows, owner, lengths = chunking.chunk_batch([[5, 6, 7], [8]], max_length=2, stride=1, pad_id=0)
    assert windows.dtype == np.int32 and windows.tolist() == [[5, 6], [6, 7], [8, 0]]
    assert owner.tolist() == [0, 0, 1] and lengths.tolist() == [2, 2, 1]
    windows, _, _ = chunking.chunk_batch([[5]], max_length=3, stride=3, pad_id=9)
    assert windows.tolist() == [[5, 9, 9]]


def test_truncate_head_and_tail():
    ids = list(range(1, 11))
    assert chunking.truncate(ids, max_length=3).tolist() == [1, 2, 3]
    assert chunking.truncate(ids, max_length=3, side="tail").tolist() == [8, 9, 10]
    assert chunking.truncate(ids, max_length=30, side="tail").tolist() == ids  # short texts are unchanged


def test_aggregate_mean_max_weighted_by_hand():
    probs = [[0.9, 0.1], [0.3, 0.7], [0.2, 0.8]]
    owner = [0, 0, 1]
    np.testing.assert_allclose(chunking.aggregate(probs, owner), [[0.6, 0.4], [0.2, 0.8]])
    # max: per class 0.9 and 0.7, renormalised by 1.6
    np.testing.assert_allclose(chunking.aggregate(probs, owner, method="max"), [[0.9 / 1.6, 0.7 / 1.6], [0.2, 0.8]])
    weighted = chunking.aggregate(probs, owner, method="weighted", lengths=[1, 3, 5])
    np.testing.assert_allclose(weighted, [[(0.9 + 3 * 0.3) / 4, (0.1 + 3 * 0.7) / 4], [0.2, 0.8]])
    for method in chunking.METHODS:
        out = chunking.aggregate(probs, owner, method=method, lengths=[1, 3, 5])
        np.testing.assert_allclose(out.sum(axis=1), 1.0)


def test_aggregate_of_one_window_per_text_is_the_identity():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=6)
    for method in chunking.METHODS:
        np.testing.assert_allclose(chunking.aggregate(probs, np.arange(6), method=method, lengths=np.full(6, 4)), probs)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: chunking.window_starts(10, max_length=4, stride=5), "stride must be <= max_length"),
        (lambda: chunking.window_starts(10, max_length=0, stride=1), "max_length"),
        (lambda: chunking.window_starts(10, max_length=4, stride=0), "stride"),
        (lambda: chunking.window_starts(0, max_length=4, stride=2), "num_tokens"),
        (lambda: chunking.chunk_ids([], max_length=4, stride=2), "at least one token"),
        (lambda: chunking.chunk_ids([[1, 2]], max_length=4, stride=2), "1-D"),
        (lambda: chunking.chunk_ids([1.5, 2.0], max_length=4, stride=2), "integer"),
        (lambda: chunking.chunk_batch([], max_length=4, stride=2), "id_lists"),
        (lambda: chunking.chunk_batch([[1], []], max_length=4, stride=2), r"id_lists\[1\]"),
        (lambda: chunking.truncate([1, 2], max_length=1, side="middle"), "side"),
        (lambda: chunking.aggregate([[0.5, 0.5]], [0], method="median"), "method"),
        (lambda: chunking.aggregate([[0.5, 0.6]], [0]), "probs must be probabilities"),
        (lambda: chunking.aggregate([0.5, 0.5], [0]), "probs must have shape"),
        (lambda: chunking.aggregate([[0.5, 0.5]], [0, 1]), "owner"),
        (lambda: chunking.aggregate([[0.5, 0.5], [0.5, 0.5]], [0, 2]), "at least one window"),
        (lambda: chunking.aggregate([[0.5, 0.5]], [1], num_texts=1), "no other"),
        (lambda: chunking.aggregate([[0.5, 0.5]], [0], method="weighted"), "lengths must be given"),
        (lambda: chunking.aggregate([[0.5, 0.5]], [0], method="weighted", lengths=[0]), "lengths must be"),
    ],
)
def test_bad_arguments_are_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()

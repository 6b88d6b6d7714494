"""Tests for llmft.seq2seq: the encoder-decoder Transformer and its decoders (tiny configs)."""

import keras
import numpy as np
import pytest

from llmft import seq2seq

SRC_V, TGT_V, BOS, EOS = 20, 24, 2, 3
to_numpy = keras.ops.convert_to_numpy


def _model(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    return seq2seq.from_preset("tiny", source_vocab_size=SRC_V, target_vocab_size=TGT_V,
                               max_source_length=10, max_target_length=12, **overrides)


def _source(n=4, length=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, length), "int32")
    for i in range(n):
        k = rng.integers(2, length + 1)
        ids[i, :k] = rng.integers(4, SRC_V, k)
    return ids


@pytest.fixture(scope="module")
def model():
    return _model()


def test_output_shapes(model):
    src, tgt = _source(), np.full((4, 5), BOS, "int32")
    assert tuple(model((src, tgt)).shape) == (4, 5, TGT_V)
    assert tuple(model.encode(src).shape) == (4, 8, 32)
    assert model.count_params() > 0


def test_extra_padding_changes_nothing(model):
    src = _source()
    tgt = np.random.default_rng(1).integers(4, TGT_V, (4, 6)).astype("int32")
    base = to_numpy(model((src, tgt)))
    longer = np.concatenate([src, np.zeros((4, 2), "int32")], axis=1)  # more padding on the right
    np.testing.assert_allclose(to_numpy(model((longer, tgt))), base, atol=1e-5)
    real = src != 0
    np.testing.assert_allclose(to_numpy(model.encode(longer))[:, :8][real], to_numpy(model.encode(src))[real],
                               atol=1e-5)
    # Changing a real token does change the output (the mask does not hide everything).
    changed = src.copy()
    changed[:, 0] = np.where(src[:, 0] == 4, 5, 4)
    assert np.abs(to_numpy(model((changed, tgt))) - base).max() > 1e-4


def test_changing_padded_source_tokens_leaves_outputs_unchanged():
    # Two models with the same weights, pad ids 1 and 0: the padded slots hold different ids
    # (1 is an ordinary embedding row for the second model), yet the outputs are identical.
    m = _model(seed=3, pad_id=1)
    src = _source()
    src[src == 0] = 1
    tgt = np.random.default_rng(2).integers(4, TGT_V, (4, 6)).astype("int32")
    base = to_numpy(m((src, tgt)))
    m0 = seq2seq.Seq2SeqTransformer(**{**m.get_config(), "pad_id": 0})
    m0((src, tgt))
    m0.set_weights(m.get_weights())
    np.testing.assert_allclose(to_numpy(m0((np.where(src == 1, 0, src), tgt))), base, atol=1e-5)
    # Without the mask the padded slots would matter: the same ids read as real tokens by m0 change it.
    assert np.abs(to_numpy(m0((src, tgt))) - base).max() > 1e-4


def test_encoder_output_at_padded_positions_never_reaches_the_decoder(model):
    src = _source()
    tgt = np.random.default_rng(3).integers(4, TGT_V, (4, 6)).astype("int32")
    memory = to_numpy(model.encode(src))
    noisy = memory.copy()
    noisy[src == 0] += np.random.default_rng(4).normal(size=noisy[src == 0].shape) * 10
    assert (src == 0).any()
    np.testing.assert_allclose(to_numpy(model.decode(noisy, src, tgt)), to_numpy(model.decode(memory, src, tgt)),
                               atol=1e-5)


def test_causal_mask(model):
    src = _source()
    tgt = np.random.default_rng(5).integers(4, TGT_V, (4, 8)).astype("int32")
    changed = tgt.copy()
    changed[:, 5:] = 9
    a, b = to_numpy(model((src, tgt))), to_numpy(model((src, changed)))
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-5)
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-4


def test_get_config_and_save_load_round_trip(model, tmp_path):
    src, tgt = _source(), np.full((4, 3), BOS, "int32")
    clone = seq2seq.Seq2SeqTransformer.from_config(model.get_config())
    clone((src, tgt))
    assert clone.get_config() == model.get_config()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded((src, tgt))), to_numpy(model((src, tgt))))


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="hidden_dim"):
        seq2seq.from_preset("tiny", source_vocab_size=5, target_vocab_size=5, hidden_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="source_vocab_size"):
        seq2seq.from_preset("tiny", source_vocab_size=0, target_vocab_size=5)
    with pytest.raises(ValueError, match="dropout"):
        seq2seq.from_preset("tiny", source_vocab_size=5, target_vocab_size=5, dropout=1.5)
    with pytest.raises(ValueError, match="name"):
        seq2seq.from_preset("huge", source_vocab_size=5, target_vocab_size=5)
    m = _model()
    with pytest.raises(ValueError, match="source_ids"):
        m.encode(np.ones((2, 11), "int32"))  # longer than max_source_length=10
    with pytest.raises(ValueError, match="source_ids"):
        m.encode(np.ones(3, "int32"))
    src = _source()
    with pytest.raises(ValueError, match="beam_size"):
        seq2seq.beam_search(m, src, bos_id=BOS, eos_id=EOS, max_length=5, beam_size=0)
    with pytest.raises(ValueError, match="beam_size"):
        seq2seq.beam_search(m, src, bos_id=BOS, eos_id=EOS, max_length=5, beam_size=TGT_V + 1)
    with pytest.raises(ValueError, match="length_penalty"):
        seq2seq.beam_search(m, src, bos_id=BOS, eos_id=EOS, max_length=5, length_penalty=-1)
    with pytest.raises(ValueError, match="max_length"):
        seq2seq.greedy_decode(m, src, bos_id=BOS, eos_id=EOS, max_length=13)
    with pytest.raises(ValueError, match="eos_id"):
        seq2seq.greedy_decode(m, src, bos_id=BOS, eos_id=TGT_V, max_length=5)
    with pytest.raises(ValueError, match="source_ids"):
        seq2seq.greedy_decode(m, np.zeros((0, 4), "int32"), bos_id=BOS, eos_id=EOS, max_length=5)
    with pytest.raises(ValueError, match="steps"):
        seq2seq.fit_seq2seq(m, (src, src), (src, src), steps=150, eval_every=100)
    with pytest.raises(ValueError, match="train"):
        seq2seq.fit_seq2seq(m, src, (src, src), steps=100, eval_every=100)
    with pytest.raises(ValueError, match="target_ids"):
        seq2seq.teacher_forcing(np.ones((2, 1), "int32"))


def test_teacher_forcing_shifts_and_weights():
    dec_in, labels, weights = seq2seq.teacher_forcing(np.array([[BOS, 7, 8, EOS, 0, 0]]))
    assert dec_in.tolist() == [[BOS, 7, 8, EOS, 0]]
    assert labels.tolist() == [[7, 8, EOS, 0, 0]]
    assert weights.tolist() == [[1, 1, 1, 0, 0]]


def _reverse_task(n, seed):
    """Source: 3-6 random ids; target: the same ids reversed (+ offset into the target vocabulary)."""
    rng = np.random.default_rng(seed)
    src = np.zeros((n, 6), "int32")
    tgt = np.zeros((n, 8), "int32")
    for i in range(n):
        k = rng.integers(3, 7)
        toks = rng.integers(4, 14, k)
        src[i, :k] = toks
        tgt[i, :k + 2] = [BOS, *(toks[::-1] + 4), EOS]
    return src, tgt


@pytest.fixture(scope="module")
def trained():
    m = _model(seed=1, dropout=0.0)
    train, val = _reverse_task(512, 0), _reverse_task(64, 1)
    history = seq2seq.fit_seq2seq(m, train, val, steps=300, eval_every=100, batch_size=32,
                                  learning_rate=3e-3, verbose=False)
    return m, history, val


def test_loss_goes_down_on_a_reverse_task(trained):
    _, history, _ = trained
    assert [r["step"] for r in history] == [100, 200, 300]
    assert set(history[0]) == {"step", "tokens", "train_loss", "val_loss", "seconds"}
    # Uniform guessing over 24 targets is ln 24 = 3.18 nats; the model must do far better.
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert history[-1]["val_loss"] < 0.6 * np.log(TGT_V)


def test_sequence_log_probs_match_a_manual_sum(trained):
    m, _, (src, tgt) = trained
    got = seq2seq.sequence_log_probs(m, src[:3], tgt[:3])
    logits = to_numpy(m((src[:3], tgt[:3, :-1])))
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    for i in range(3):
        n = int((tgt[i] != 0).sum()) - 1  # tokens after <bos>
        expected = sum(logp[i, t, tgt[i, t + 1]] for t in range(n))
        assert got[i] == pytest.approx(expected, abs=1e-4)


def test_beam_one_equals_greedy(trained):
    m, _, (src, _) = trained
    # The untrained model's logits are nearly tied: splitting the batch
    # differently changes the float summation order and can flip an argmax,
    # so it is compared on the same batch; the trained one also across batch sizes.
    for model, batch_size in ((m, 5), (_model(seed=7), 16)):
        g_seq, g_lp = seq2seq.greedy_decode(model, src[:16], bos_id=BOS, eos_id=EOS, max_length=9)
        b_seq, b_lp = seq2seq.beam_search(model, src[:16], bos_id=BOS, eos_id=EOS, max_length=9, beam_size=1,
                                          batch_size=batch_size)
        assert b_seq == g_seq
        # Sums of up to 10 float32 log-probabilities, batched differently: ~1e-6 apart (measured 1.7e-6).
        np.testing.assert_allclose(b_lp, g_lp, atol=1e-5)


def _score(model, src, seqs, max_length=9):
    # Teacher-forced log-probability of each decoded sequence; <eos> counts only if it was generated
    # (a sequence of max_length tokens without <eos> was cut off).
    tgt = np.zeros((len(seqs), max_length + 2), "int32")
    for i, s in enumerate(seqs):
        row = [BOS, *s] + ([EOS] if len(s) < max_length else [])
        tgt[i, :len(row)] = row
    return seq2seq.sequence_log_probs(model, src, tgt)


def test_beam_search_finds_sequences_at_least_as_likely_as_greedy(trained):
    m, _, (src, _) = trained
    for model in (m, _model(seed=7)):  # trained (stops at <eos>) and untrained (runs to max_length)
        g_seq, g_lp = seq2seq.greedy_decode(model, src[:32], bos_id=BOS, eos_id=EOS, max_length=9)
        b_seq, b_lp = seq2seq.beam_search(model, src[:32], bos_id=BOS, eos_id=EOS, max_length=9, beam_size=4,
                                          length_penalty=0.0)
        g_model, b_model = _score(model, src[:32], g_seq), _score(model, src[:32], b_seq)
        # The decoders' own scores agree with an independent teacher-forced scoring ...
        np.testing.assert_allclose(g_model, g_lp, atol=1e-4)
        np.testing.assert_allclose(b_model, b_lp, atol=1e-4)
        # ... and beam search never returns a less likely sequence than greedy here.
        assert np.all(b_model >= g_model - 1e-5)
        assert np.mean(b_model) > np.mean(g_model) or b_seq == g_seq


def test_trained_model_reverses(trained):
    m, _, (src, tgt) = trained
    seqs, _ = seq2seq.beam_search(m, src, bos_id=BOS, eos_id=EOS, max_length=9, beam_size=3)
    gold = [[int(t) for t in row[1:] if t not in (0, EOS)] for row in tgt]
    assert np.mean([s == g for s, g in zip(seqs, gold)]) > 0.25  # 0.48 when written; chance is ~0

"""Cross-domain transfer (chapter 6.7): equal budgets, no eval leakage, cache, loop."""

import dataclasses

import numpy as np
import pytest

from llmft import data, transfer
from llmft.tokenizers import CharTokenizer


@pytest.fixture(scope="module")
def tok():
    docs = transfer.domain_documents("news")[:300] + transfer.domain_documents("reviews")[:300]
    return CharTokenizer.train(docs, min_freq=1, max_vocab=400)


TINY = dataclasses.replace(
    transfer.CONFIGS["smoke"], model=dict(preset="tiny", context_length=16, hidden_dim=16, dropout=0.0),
    budget_tokens=600, val_tokens=200, steps=4, batch_size=4, min_finetune_steps=3, max_finetune_epochs=2,
    max_length=16, evaluations=2,
)


def test_streams_have_exactly_the_budget(tok):
    streams = transfer.domain_streams(tok, budget_tokens=1001)
    assert set(streams) == set(transfer.CORPORA)
    assert {k: len(v) for k, v in streams.items()} == {"news": 1001, "reviews": 1001, "both": 1001}
    # "both": the first half is news, the second half reviews
    assert np.array_equal(streams["both"][:500], streams["news"][:500])
    assert np.array_equal(streams["both"][500:], streams["reviews"][:501])
    expected = transfer.train.token_stream(transfer.domain_documents("reviews"), tok)[:1001]
    assert np.array_equal(streams["reviews"], expected)


def test_no_evaluation_review_reaches_any_pretraining_stream():
    train_docs = set(transfer.domain_documents("reviews")) | set(transfer.domain_documents("news"))
    for split in ("val", "test"):
        held_out = {ex.text for ex in data.load_reviews(split)}
        assert held_out and not held_out & train_docs
    assert set(transfer.domain_documents("reviews")) == {ex.text for ex in data.load_reviews("train")}


def test_documents_are_seeded_and_stable():
    a = transfer.domain_documents("news", "val")
    assert a == transfer.domain_documents("news", "val")
    assert sorted(a) == sorted("".join(w for w, _ in s) for s in data.load_peoples_daily("val"))


def test_pretrain_cache_and_finetune(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMFT_HOME", str(tmp_path))
    streams = transfer.domain_streams(tok, budget_tokens=TINY.budget_tokens, corpora=("reviews",))
    val = transfer.domain_streams(tok, budget_tokens=TINY.val_tokens, split="val", corpora=("news", "reviews"))
    first = transfer.pretrained_transfer_model("reviews", streams, tok, TINY, profile_name="test",
                                               val_ids=val["reviews"], verbose=False)
    assert not first.from_cache and (first.directory / "meta.json").exists()
    assert first.directory.parent == tmp_path / "models" and [r["step"] for r in first.history] == [2, 4]
    again = transfer.pretrained_transfer_model("reviews", streams, tok, TINY, profile_name="test", verbose=False)
    assert again.from_cache and again.directory == first.directory
    m1, m2 = first.load(), again.load()
    assert all(np.array_equal(a, b) for a, b in zip(m1.get_weights(), m2.get_weights()))
    other = dataclasses.replace(TINY, steps=8)
    assert transfer.model_directory("reviews", other, tok, "test") != first.directory

    ce = transfer.domain_cross_entropy(m1, val, TINY.context_length)
    assert set(ce) == {"news", "reviews"} and all(0 < v < 2 * np.log(tok.vocab_size) for v in ce.values())

    reviews = data.load_reviews("train", limit=24)
    out = transfer.finetune_on_reviews(m1, tok, reviews[:16], reviews[16:20], reviews[20:], config=TINY, seed=0)
    assert 0.0 <= out["test_accuracy"] <= 1.0 and out["epochs"] == transfer.finetune_epochs(16, TINY)
    assert 1 <= out["best_epoch"] <= out["epochs"]


def test_same_seed_same_initial_model(tok):
    a = transfer.build_model(TINY, tok.vocab_size, seed=3)
    b = transfer.build_model(TINY, tok.vocab_size, seed=3)
    ids = np.ones((1, 8), "int32")
    assert np.allclose(a(ids), b(ids))


def test_finetune_epochs_rule():
    cfg = transfer.CONFIGS["cpu"]
    assert transfer.finetune_epochs(300, cfg) == 5  # 10 steps per epoch, at least 48 steps
    assert transfer.finetune_epochs(1000, cfg) == 2
    assert transfer.finetune_epochs(10, cfg) == cfg.max_finetune_epochs
    assert cfg.tokens_seen == cfg.steps * cfg.batch_size * cfg.context_length


def test_bad_arguments(tok):
    with pytest.raises(ValueError, match="budget_tokens"):
        transfer.domain_streams(tok, budget_tokens=10**9)
    with pytest.raises(ValueError, match="budget_tokens"):
        transfer.domain_streams(tok, budget_tokens=1)
    with pytest.raises(ValueError, match="corpora"):
        transfer.domain_streams(tok, budget_tokens=10, corpora=("wiki",))
    with pytest.raises(ValueError, match="domain"):
        transfer.domain_documents("both")
    with pytest.raises(ValueError, match="split"):
        transfer.domain_documents("news", "dev")
    with pytest.raises(ValueError, match="profile"):
        transfer.transfer_config("laptop")
    with pytest.raises(ValueError, match="num_labels"):
        transfer.finetune_epochs(0, TINY)
    streams = {"news": np.zeros(5, "int32")}
    with pytest.raises(ValueError, match="budget_tokens"):
        transfer.pretrained_transfer_model("news", streams, tok, TINY, profile_name="test")
    with pytest.raises(ValueError, match="streams"):
        transfer.pretrained_transfer_model("both", streams, tok, TINY, profile_name="test")
    with pytest.raises(ValueError, match="corpus"):
        transfer.model_directory("wiki", TINY, tok, "test")
    with pytest.raises(ValueError, match="val_streams"):
        transfer.domain_cross_entropy(None, {}, 16)
    with pytest.raises(ValueError, match="train_examples"):
        transfer.finetune_on_reviews(None, tok, [], [1], [1], config=TINY)

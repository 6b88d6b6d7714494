from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from llmft import base_models, data, profiles


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMFT_HOME", str(tmp_path))
    return tmp_path


def test_gpt_is_trained_once_then_loaded_from_cache(home, capsys, monkeypatch):
    trainings = []
    real_pretrain = base_models.train.pretrain
    monkeypatch.setattr(base_models.train, "pretrain", lambda *a, **k: trainings.append(1) or real_pretrain(*a, **k))
    # Two callers at once on an empty cache (two notebooks, or make test's nbval and papermill runs):
    # one trains, the other waits for it and loads the result.
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: base_models.pretrained_gpt("smoke"), range(2)))
    assert len(trainings) == 1 and sorted(m.from_cache for m in both) == [False, True]
    first = next(m for m in both if not m.from_cache)
    assert len(first.history) == 10
    assert (first.directory / "meta.json").exists() and (first.directory / "model.keras").exists()
    second = base_models.pretrained_gpt("smoke")
    assert second.from_cache and second.history == first.history
    ids = np.array([first.tokenizer.encode("人民日报社论")], dtype=np.int32)
    np.testing.assert_allclose(np.asarray(first.model(ids)), np.asarray(second.model(ids)), atol=1e-6)
    assert "loaded gpt (smoke) from cache" in capsys.readouterr().out


def test_lstm_uses_the_same_tokenizer_and_data(home):
    g = base_models.pretrained_gpt("smoke", verbose=False)
    m = base_models.pretrained_lstm("smoke", verbose=False)
    assert m.tokenizer.fingerprint == g.tokenizer.fingerprint
    assert m.directory != g.directory
    assert np.isfinite(m.val_loss) and m.val_loss < np.log(m.tokenizer.vocab_size) + 0.5


def test_validation_stream_comes_from_the_validation_split(home):
    prof = profiles.get_profile("smoke")
    tok = base_models.base_tokenizer(prof)
    _, val_ids = base_models.pretraining_streams(prof, tok)
    first_doc = data.pretraining_documents("val")[0]
    expected = tok.encode(first_doc, add_eos=True)
    assert val_ids[: len(expected)].tolist() == expected
    assert first_doc not in set(data.pretraining_documents("train"))


def test_unknown_kind_and_profile():
    with pytest.raises(ValueError, match="kind"):
        base_models._pretrained("rnn", "smoke", False)
    with pytest.raises(ValueError, match="profile"):
        base_models.pretrained_gpt("laptop")

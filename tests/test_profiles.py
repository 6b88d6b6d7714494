import pytest

from llmft import profiles


def test_named_profiles_resolve():
    for name in ("smoke", "cpu", "gpu", "tpu"):
        assert profiles.get_profile(name).name == name


def test_env_var_overrides_auto(monkeypatch):
    monkeypatch.setenv("LLMFT_PROFILE", "smoke")
    assert profiles.get_profile("auto").name == "smoke"
    assert profiles.get_profile(None).name == "smoke"


def test_explicit_name_beats_env_var(monkeypatch):
    monkeypatch.setenv("LLMFT_PROFILE", "smoke")
    assert profiles.get_profile("cpu").name == "cpu"


def test_auto_without_accelerator_is_cpu(monkeypatch):
    monkeypatch.delenv("LLMFT_PROFILE", raising=False)
    from llmft import env

    monkeypatch.setattr(env, "detect_accelerator", lambda: "cpu")
    assert profiles.get_profile("auto").name == "cpu"
    monkeypatch.setattr(env, "detect_accelerator", lambda: "gpu")
    assert profiles.get_profile("auto").name == "gpu"


@pytest.mark.parametrize("bad", ["laptop", "", "CPU", 3])
def test_unknown_profile_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="profile must be one of"):
        profiles.get_profile(bad)


def test_unknown_profile_in_env_var(monkeypatch):
    monkeypatch.setenv("LLMFT_PROFILE", "huge")
    with pytest.raises(ValueError, match="'huge'.*LLMFT_PROFILE"):
        profiles.get_profile()


def test_profiles_grow_from_smoke_to_gpu():
    s, c, g = (profiles.get_profile(n) for n in ("smoke", "cpu", "gpu"))
    assert s.pretrain_steps < c.pretrain_steps < g.pretrain_steps
    assert s.context_length <= c.context_length <= g.context_length
    assert "profile=smoke" in s.describe()

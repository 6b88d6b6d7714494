import numpy as np
import pytest

from llmft import env


def test_set_seed_makes_numpy_and_keras_repeatable():
    import keras

    def draw():
        return np.random.rand(3), keras.ops.convert_to_numpy(keras.random.uniform((3,)))

    env.set_seed(3)
    a = draw()
    env.set_seed(3)
    b = draw()
    env.set_seed(4)
    c = draw()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True, None])
def test_set_seed_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        env.set_seed(bad)


def test_environment_report_lists_versions_and_devices():
    report = env.environment_report()
    assert report["keras_backend"] == env.backend()
    assert report["accelerator"] in {"cpu", "gpu", "tpu"}
    assert report["packages"]["llmft"] != "未安装"
    assert set(env.REPORTED_PACKAGES) == set(report["packages"])


def test_tpu_is_detected_from_colab_variable(monkeypatch):
    monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    assert env.detect_accelerator() == "tpu"


def test_start_chapter_prints_one_line(capsys, monkeypatch):
    monkeypatch.delenv("LLMFT_PROFILE", raising=False)
    prof = env.start_chapter("smoke", seed=1)
    out = capsys.readouterr().out.strip().splitlines()
    assert prof.name == "smoke" and len(out) == 1 and out[0].startswith("profile=smoke")

"""The Colab set-up: one cell per chapter, and llmft.colab.setup (with a fake Colab)."""

import importlib.util
import os
import sys
import types
from pathlib import Path

import nbformat
import pytest

from llmft import colab, paths

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = paths.chapter_notebooks(ROOT)


def _tool():
    spec = importlib.util.spec_from_file_location("colab_cell", ROOT / "tools" / "colab_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_chapter_has_the_setup_cell_right_after_parameters(path):
    tool = _tool()
    nb = nbformat.read(path, as_version=4)
    index = tool.setup_cell_index(nb)
    assert index == tool.parameters_index(nb) + 1, "run: python tools/colab_cell.py --write"
    source = nb.cells[index].source
    assert source == tool.cell_source(path.name)
    assert f"git+{tool.repository_url()}" in source  # the URL of _config.yml, its only home
    assert ("llmft[hub] @" in source) == ("open_models" in path.name)


def test_setup_cell_does_nothing_outside_colab():
    tool = _tool()
    namespace = {}
    exec(compile(tool.cell_source("x.ipynb"), "<setup>", "exec"), namespace)  # noqa: S102 - our own cell
    assert namespace["USE_DRIVE"] is False and "colab" not in namespace


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    for name in ("KERAS_BACKEND", "LLMFT_RESULTS_DIR", "LLMFT_HOME", "COLAB_TPU_ADDR", "TPU_NAME"):
        # setenv first, so that teardown restores the variable even where it
        # was unset: setup() sets some of them, and nothing may leak into
        # later tests or the notebook kernels they start.
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(colab, "DRIVE_MOUNT", str(tmp_path / "drive"))
    return tmp_path


def test_setup_outside_colab_changes_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for name in ("COLAB_RELEASE_TAG", "COLAB_GPU"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    assert colab.setup(use_drive=True) == {"colab": False}
    assert dict(os.environ) == before


def test_no_setting_leaks_out_of_the_fake_colab_tests():
    # Runs after the tests below in file order would be fragile; instead check
    # the fixture's contract directly on a throwaway MonkeyPatch.
    mp = pytest.MonkeyPatch()
    had = os.environ.get("KERAS_BACKEND")
    mp.setenv("KERAS_BACKEND", "unset")
    mp.delenv("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = "jax"
    mp.undo()
    assert os.environ.get("KERAS_BACKEND") == had


def test_setup_in_colab_keeps_caches_on_drive_only_when_asked(fake_colab, monkeypatch):
    mounted = []
    settings = colab.setup(mount=mounted.append)
    assert settings["results_dir"] == colab.LOCAL_RESULTS and mounted == []
    assert "LLMFT_HOME" not in os.environ
    settings = colab.setup(use_drive=True, mount=mounted.append)
    assert mounted == [str(fake_colab / "drive")]
    home = Path(settings["llmft_home"])
    assert home == fake_colab / "drive" / colab.DRIVE_FOLDER and home.is_dir()
    assert paths.llmft_home() == home  # caches and checkpoints now live on Drive


def test_setup_leaves_the_backend_alone_once_keras_is_imported(fake_colab, monkeypatch):
    monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    assert "keras" in sys.modules  # this test process imported it already
    assert colab.setup(mount=None)["backend"] == "tensorflow"


def test_setup_picks_jax_on_a_tpu_before_keras_is_imported(fake_colab, monkeypatch):
    monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    monkeypatch.delitem(sys.modules, "keras")
    assert colab.setup()["backend"] == "jax"


@pytest.mark.parametrize("kwargs, match", [
    (dict(use_drive="yes"), "use_drive must be True or False; got 'yes'"),
    (dict(drive_folder="/abs"), "drive_folder must be a relative folder"),
    (dict(drive_folder=""), "drive_folder must be a relative folder"),
])
def test_setup_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        colab.setup(**kwargs)

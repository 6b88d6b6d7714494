"""Reliability with real processes: determinism, SIGKILL and resume, safe loading.

``tools/tiny_pretrain.py`` trains a tiny GPT (with dropout) for 40 steps,
evaluating and checkpointing every 2 steps. Each run here is a separate
Python process, so "the same" means the same across fresh interpreters, and
a kill is a real ``SIGKILL``: no ``finally`` block, no atexit handler runs.
Equality is exact (bit-identical weights and loss history); only the wall
time in the history (``seconds``) differs between runs.
"""

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from llmft import gpt, train

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tools" / "tiny_pretrain.py"
STEPS = 40


def start(out, *args):
    return subprocess.Popen([sys.executable, str(WORKER), str(out), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=600):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def result(out):
    """(weights, history without wall times) written by the worker."""
    with np.load(out / "weights.npz") as npz:
        weights = [npz[k] for k in sorted(npz.files)]
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    return weights, [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def assert_identical(a, b):
    (wa, ha), (wb, hb) = a, b
    assert len(wa) == len(wb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(wa, wb))
    assert ha == hb


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    finish(start(out))
    return result(out)


# ---------------------------------------------------------------------------
# 1. Determinism
# ---------------------------------------------------------------------------

def test_two_fresh_processes_train_bit_identical_models(uninterrupted, tmp_path):
    finish(start(tmp_path))
    again = result(tmp_path)
    assert [row["step"] for row in again[1]] == list(range(2, STEPS + 1, 2))
    assert_identical(uninterrupted, again)


# ---------------------------------------------------------------------------
# 2. SIGKILL (during a checkpoint write) and resume
# ---------------------------------------------------------------------------

def _latest_step(ckpt):
    try:
        return json.loads((ckpt / train.LATEST).read_text(encoding="utf-8"))["step"]
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet (never half-written: atomic)
        return None


def kill_while_writing(proc, ckpt, after_step, timeout=300):
    """SIGKILL ``proc`` while it writes a checkpoint newer than ``after_step``.

    Polls the folder until ``latest.json`` is past ``after_step`` and a
    temporary ``.step-*.tmp.keras`` file exists (``model.save`` is under
    way), then kills. Returns whether the temporary file was still there
    after the kill (it almost always is: the kill landed mid-write).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()[-3000:]
        step = _latest_step(ckpt)
        if step is not None and step > after_step and any(p.name.endswith(".tmp.keras") for p in os.scandir(ckpt)):
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            assert proc.returncode == -signal.SIGKILL
            return any(ckpt.glob(".step-*.tmp.keras"))
        time.sleep(0.001)
    proc.kill()
    raise AssertionError("no checkpoint write seen before the timeout")


def assert_latest_checkpoint_is_sound(ckpt):
    path, step, history = train.latest_checkpoint(ckpt)
    assert 0 < step < STEPS and [row["step"] for row in history] == list(range(2, step + 1, 2))
    model = keras.saving.load_model(path, safe_mode=True)  # a complete, loadable file
    assert int(model.optimizer.iterations.numpy()) == step
    return step


def test_sigkill_mid_checkpoint_then_resume_equals_uninterrupted_run(uninterrupted, tmp_path):
    ckpt = tmp_path / "checkpoints"
    out = tmp_path / "out"
    # The pause after each evaluation only slows the run down so that it is
    # still running when the test gets to kill it; it changes no number.
    first = start(out, "--checkpoint-dir", str(ckpt), "--pause", "0.1")
    mid_write = [kill_while_writing(first, ckpt, after_step=0)]
    step1 = assert_latest_checkpoint_is_sound(ckpt)

    second = start(out, "--checkpoint-dir", str(ckpt), "--pause", "0.1")
    mid_write.append(kill_while_writing(second, ckpt, after_step=step1 + 4))
    step2 = assert_latest_checkpoint_is_sound(ckpt)
    assert step2 > step1

    log = finish(start(out, "--checkpoint-dir", str(ckpt)))
    assert f"resumed from step-{step2:07d}.keras at step {step2}" in log
    assert_identical(uninterrupted, result(out))
    # Evidence that the kills hit a checkpoint write (a leftover temporary
    # file); the comparison above holds either way.
    assert any(mid_write), "neither kill landed during model.save"


def test_checkpoint_keeps_the_dropout_random_state(tmp_path):
    keras.utils.set_random_seed(0)
    model = gpt.from_preset("tiny", vocab_size=20, context_length=8, dropout=0.1)
    model(np.zeros((1, 8), "int32"), training=True)
    model(np.zeros((1, 8), "int32"), training=True)  # advance the dropout counters
    model.compile(optimizer="sgd", loss="mse")
    train.save_checkpoint(model, tmp_path, 1, [])
    saved = json.loads((tmp_path / train.LATEST).read_text())["rng"]
    assert saved == train.seed_states(model) and len(saved) == 1 + 3 * 2  # embeddings + 3 per block
    assert all(counter >= 2 for _, counter in saved)
    fresh = keras.saving.load_model(tmp_path / "step-0000001.keras", safe_mode=True)
    assert train.seed_states(fresh) != saved  # Keras does not save them ...
    train.restore_seed_states(fresh, saved)
    assert train.seed_states(fresh) == saved  # ... the book puts them back
    with pytest.raises(ValueError, match="states must list 7"):
        train.restore_seed_states(fresh, saved[:2])


# ---------------------------------------------------------------------------
# 5. Safety: no pickle, no eval/exec, safe YAML, safe_mode=True on every load
# ---------------------------------------------------------------------------

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _python_files():
    files = sorted((ROOT / "llmft").glob("*.py")) + sorted((ROOT / "tools").glob("*.py"))
    assert len(files) > 10
    return files


def _call_name(node):
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        parts = [func.attr]
        value = func.value
        while isinstance(value, ast.Attribute):
            parts.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name):
            parts.append(value.id)
        return ".".join(reversed(parts))
    return ""


def unsafe_uses(source, filename="<source>"):
    """Lines of ``source`` that load code or objects unsafely (see the test below)."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            bad = [n for n in names if n.split(".")[0] in UNSAFE_MODULES]
            if bad:
                problems.append((node.lineno, f"imports {bad[0]}"))
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            keywords = {k.arg: k.value for k in node.keywords}
            if name in ("eval", "exec", "compile", "__import__"):
                problems.append((node.lineno, f"calls {name}()"))
            elif name.endswith(("yaml.load", "yaml.unsafe_load", "yaml.full_load")):
                problems.append((node.lineno, f"calls {name}() (use yaml.safe_load)"))
            elif name.split(".")[-1] == "load_model":
                safe = keywords.get("safe_mode")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    problems.append((node.lineno, f"calls {name}() without safe_mode=True"))
            allow = keywords.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                problems.append((node.lineno, f"calls {name}() with allow_pickle"))
    return problems


def test_the_safety_check_catches_what_it_should():
    bad = ("import pickle\nimport yaml\nyaml.load(s)\neval('1')\nkeras.saving.load_model(p)\n"
           "np.load(f, allow_pickle=True)\n")
    assert [line for line, _ in unsafe_uses(bad)] == [1, 3, 4, 5, 6]
    good = "import yaml\nyaml.safe_load(s)\nkeras.saving.load_model(p, safe_mode=True)\nmodel.evaluate(x)\n"
    assert unsafe_uses(good) == []


def test_llmft_never_unpickles_evals_or_loads_models_unsafely():
    problems = [f"{path.relative_to(ROOT)}:{line}: {what}" for path in _python_files()
                for line, what in unsafe_uses(path.read_text(encoding="utf-8"), str(path))]
    assert not problems, "\n".join(problems)
    load_calls = sum(src.count("load_model(") for src in (p.read_text(encoding="utf-8") for p in _python_files()))
    assert load_calls >= 2  # base_models and train resume: both checked above


def test_a_checkpoint_with_code_in_it_is_refused(tmp_path):
    # A Lambda layer carries Python bytecode; safe_mode=True refuses to run it.
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    model.save(tmp_path / "step-0000002.keras")
    (tmp_path / train.LATEST).write_text(json.dumps({"checkpoint": "step-0000002.keras", "step": 2, "history": []}))
    ids = np.arange(200, dtype=np.int32) % 7
    with pytest.raises(ValueError, match="[Ll]ambda|unsafe|safe_mode"):
        train.pretrain(gpt.from_preset("tiny", vocab_size=8), ids, steps=4, eval_every=2, warmup_steps=1,
                       checkpoint_dir=tmp_path, verbose=False)


# ---------------------------------------------------------------------------
# 4. A tokenizer that does not match the model
# ---------------------------------------------------------------------------

def test_a_cached_base_model_trained_with_another_tokenizer_is_refused(tmp_path, monkeypatch):
    from llmft import base_models, paths, profiles

    # Models go to a fresh home; the parsed corpora are shared with the session.
    session_data = paths.llmft_home() / "data"
    session_data.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("LLMFT_HOME", str(tmp_path))
    (tmp_path / "data").symlink_to(session_data, target_is_directory=True)
    prof = profiles.get_profile("smoke")
    tokenizer = base_models.base_tokenizer(prof)
    directory = base_models.model_directory("gpt", prof, tokenizer)
    directory.mkdir(parents=True)
    history = [{"step": 20, "tokens": 0, "train_loss": 1.0, "val_loss": 1.0, "seconds": 1.0}]
    (directory / "meta.json").write_text(json.dumps({"tokenizer": "0" * 64, "history": history}))
    with pytest.raises(ValueError, match="another tokenizer"):
        base_models.pretrained_gpt(prof, verbose=False)


def test_generate_refuses_ids_the_model_does_not_have():
    from llmft import sampling
    from llmft.tokenizers import CharTokenizer

    big = CharTokenizer.train(["".join(chr(0x4E00 + i) for i in range(40))])  # 48 ids
    model = gpt.from_preset("tiny", vocab_size=20, context_length=8)
    with pytest.raises(ValueError, match=r"prompt_ids must be ids in \[0, vocab_size=20\)"):
        sampling.generate(model, big.encode(chr(0x4E00 + 39)), 2)


class _FakeModel:
    """Stands in for a Keras model: ``save`` writes bytes, optionally calling back mid-write."""

    def __init__(self, data, during_save=None, fail=False):
        self.data, self.during_save, self.fail = data, during_save, fail

    def save(self, path):
        with open(path, "wb") as fh:  # one handle, as Keras' zip writer keeps one
            fh.write(self.data[:1])
            fh.flush()
            if self.during_save is not None:
                self.during_save()
            if self.fail:
                raise OSError("disk full")
            fh.write(self.data[1:])


def test_two_writers_of_the_same_model_file_do_not_collide(tmp_path):
    # Two test workers once pretrained the same smoke base model at the same time: both wrote
    # ".model.tmp.keras", and one moved the other's half-written file away (FileNotFoundError).
    from llmft import paths

    target = tmp_path / "models" / "model.keras"
    inner = _FakeModel(b"inner")
    outer = _FakeModel(b"outer", during_save=lambda: paths.atomic_save_model(inner, target))
    paths.atomic_save_model(outer, target)  # the inner save finishes while the outer one is half-written
    assert target.read_bytes() == b"outer"
    assert [p.name for p in target.parent.iterdir()] == ["model.keras"]  # no temporary file left


def test_a_second_user_of_a_cache_lock_waits_for_the_first(tmp_path, capsys):
    # Two processes that need the same uncached model: the second waits, then loads the first's.
    import threading

    from llmft import paths

    target = tmp_path / "models" / "gpt-smoke-0123456789ab"
    inside, release = threading.Event(), threading.Event()

    def first():
        with paths.exclusive(target):
            inside.set()
            release.wait(30)

    holder = threading.Thread(target=first)
    holder.start()
    assert inside.wait(30)
    threading.Timer(0.5, release.set).start()
    start = time.monotonic()
    with paths.exclusive(target, waiting_message="waiting for the first one"):
        waited = time.monotonic() - start
        assert release.is_set()
    holder.join()
    assert waited >= 0.4 and capsys.readouterr().out == "waiting for the first one\n"
    with paths.exclusive(target, waiting_message="not printed: the lock is free"):
        pass
    assert capsys.readouterr().out == ""


def test_load_or_build_builds_once_and_builds_again_after_a_failed_build(tmp_path):
    from llmft import paths

    folder, calls = tmp_path / "models" / "thing", []

    def build(fail=False):
        calls.append("build")
        folder.mkdir(exist_ok=True)
        if fail:
            raise OSError("disk full")
        paths.atomic_write_json(folder / "meta.json", {"complete": True})  # last, as the builders do
        return "built"

    def load():
        calls.append("load")
        return "loaded"

    with pytest.raises(OSError, match="disk full"):
        paths.load_or_build(folder, load, lambda: build(fail=True))
    assert paths.load_or_build(folder, load, build) == "built"  # no meta.json: not taken as complete
    assert paths.load_or_build(folder, load, build) == "loaded"
    assert calls == ["build", "build", "load"]


def test_a_failed_model_save_leaves_the_old_file_and_no_temporary(tmp_path):
    from llmft import paths

    target = tmp_path / "model.keras"
    paths.atomic_save_model(_FakeModel(b"old"), target)
    with pytest.raises(OSError, match="disk full"):
        paths.atomic_save_model(_FakeModel(b"new", fail=True), target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_a_saved_model_file_gets_the_usual_mode(tmp_path):
    from llmft import paths

    umask = os.umask(0)
    os.umask(umask)
    target = paths.atomic_save_model(_FakeModel(b"data"), tmp_path / "model.keras")
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_byte_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from llmft import paths

    target = paths.atomic_write_bytes(tmp_path / "cache.json", b"old")
    with pytest.raises(TypeError):
        paths.atomic_write_bytes(target, "not bytes")  # fails inside the write, after the temporary exists
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["cache.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask

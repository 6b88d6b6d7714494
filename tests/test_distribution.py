"""Data-parallel training: ``env.strategy()`` and MirroredStrategy on two logical CPUs.

The equality test runs in a subprocess because the CPU can be split into
logical devices only before TensorFlow initialises them, which the test
session has long done.

Tolerance: data-parallel and single-device training compute the same
mathematical update, but each replica sums its half of the batch and the
halves are then added, so float32 results differ in the last bits; Adam
divides by the root of the squared gradients and can amplify such
differences a little. After 6 steps the weights (which move by about 0.04)
agree within ``WEIGHT_ATOL = 1e-5`` and the losses within ``LOSS_RTOL = 1e-5``
(measured: about 2e-6 and 1e-7). Plain Keras AdamW, which clips each
replica's gradient before the all-reduce, misses them by more than 1e-3:
that is why :class:`llmft.train.ReplicaAdamW` exists.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmft import env

ROOT = Path(__file__).resolve().parent.parent
WEIGHT_ATOL = 1e-5
LOSS_RTOL = 1e-5

SCRIPT = r'''
import json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
from llmft import env, gpt, train
sys.path.insert(0, sys.argv[1])
from tiny_pretrain import CONTEXT, VOCAB, token_stream

ids = token_stream()


def run(strategy):
    env.set_seed(0)
    with strategy.scope():
        # No dropout: each replica would draw its own masks for its half of the batch.
        model = gpt.from_preset("tiny", vocab_size=VOCAB, context_length=CONTEXT, dropout=0.0)
        model(np.zeros((1, CONTEXT), "int32"))
        start = [np.asarray(w) for w in model.get_weights()]
        model, history = train.pretrain(model, ids[:3000], ids[3000:], steps=6, eval_every=2, batch_size=8,
                                        warmup_steps=1, learning_rate=1e-2, eval_batches=2, verbose=False)
    losses = [[row["train_loss"], row["val_loss"]] for row in history]
    return start, [np.asarray(w) for w in model.get_weights()], losses, type(model.optimizer).__name__


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
single = run(env.strategy())
parallel = run(mirrored)
train.ReplicaAdamW = keras.optimizers.AdamW  # what plain Keras does
plain = run(mirrored)


def diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


print(json.dumps({
    "default_replicas": env.strategy().num_replicas_in_sync,
    "mirrored_replicas": mirrored.num_replicas_in_sync,
    "same_start": diff(single[0], parallel[0]) == 0.0,
    "moved": diff(single[0], single[1]),
    "weight_diff": diff(single[1], parallel[1]),
    "plain_weight_diff": diff(single[1], plain[1]),
    "losses": single[2], "parallel_losses": parallel[2],
    "optimizers": [single[3], parallel[3], plain[3]],
}))
'''


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    script = tmp_path_factory.mktemp("distribution") / "compare.py"
    script.write_text(SCRIPT, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script), str(ROOT / "tools")], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_mirrored_training_on_two_cpus_equals_one_device(comparison):
    assert comparison["mirrored_replicas"] == 2 and comparison["default_replicas"] == 1
    assert comparison["optimizers"][:2] == ["AdamW", "ReplicaAdamW"]
    assert comparison["same_start"]
    assert comparison["moved"] > 100 * WEIGHT_ATOL  # training did change the weights
    assert comparison["weight_diff"] < WEIGHT_ATOL, comparison
    for (t1, v1), (t2, v2) in zip(comparison["losses"], comparison["parallel_losses"]):
        assert t2 == pytest.approx(t1, rel=LOSS_RTOL) and v2 == pytest.approx(v1, rel=LOSS_RTOL)


def test_plain_keras_clipping_under_mirrored_is_not_single_device(comparison):
    # Keras clips each replica's gradient before the all-reduce; the book's
    # ReplicaAdamW clips the sum. The difference is far above the tolerance.
    assert comparison["plain_weight_diff"] > 100 * WEIGHT_ATOL, comparison


def test_strategy_on_this_machine_is_one_device():
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    strat = env.strategy()
    assert strat.num_replicas_in_sync == 1
    assert type(strat) is type(tf.distribute.get_strategy())  # the default strategy


class _Device:
    def __init__(self, name):
        self.name = name


def test_strategy_mirrors_several_gpus(monkeypatch):
    import tensorflow as tf

    seen = {}

    class FakeMirrored:
        def __init__(self, devices):
            seen["devices"] = devices

    monkeypatch.setattr(env, "detect_accelerator", lambda: "gpu")
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: [_Device("/device:GPU:0"), _Device("/device:GPU:1")])
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", FakeMirrored)
    assert isinstance(env.strategy(), FakeMirrored)
    assert seen["devices"] == ["/device:GPU:0", "/device:GPU:1"]


def test_strategy_uses_a_tpu_when_its_resolver_connects(monkeypatch):
    import tensorflow as tf

    class FakeTPUStrategy:
        def __init__(self, resolver):
            self.resolver = resolver

    monkeypatch.setattr(env, "detect_accelerator", lambda: "tpu")
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", lambda: "resolver")
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda resolver: None)
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", lambda resolver: None)
    monkeypatch.setattr(tf.distribute, "TPUStrategy", FakeTPUStrategy)
    assert env.strategy().resolver == "resolver"


def test_strategy_falls_back_when_the_tpu_resolver_fails(monkeypatch, capsys):
    import tensorflow as tf

    def no_tpu():
        raise ValueError("Please provide a TPU Name to connect to.")

    monkeypatch.setattr(env, "detect_accelerator", lambda: "tpu")
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", no_tpu)
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])
    assert env.strategy().num_replicas_in_sync == 1
    assert "TPU found but not usable" in capsys.readouterr().err


def test_strategy_needs_the_tensorflow_backend(monkeypatch):
    monkeypatch.setattr(env, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="backend must be 'tensorflow'.*'jax'.*DataParallel"):
        env.strategy()


JAX_SCRIPT = r"""
import json, os, sys
os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import numpy as np
import jax, keras
from llmft import env, gpt, train
sys.path.insert(0, sys.argv[1])
from tiny_pretrain import CONTEXT, VOCAB, token_stream

ids = token_stream()


def run():
    env.set_seed(0)
    model = gpt.from_preset("tiny", vocab_size=VOCAB, context_length=CONTEXT, dropout=0.0)
    model(np.zeros((1, CONTEXT), "int32"))
    start = [np.asarray(w) for w in model.get_weights()]
    model, history = train.pretrain(model, ids[:3000], ids[3000:], steps=6, eval_every=2, batch_size=8,
                                    warmup_steps=1, learning_rate=1e-2, eval_batches=2, verbose=False)
    return start, [np.asarray(w) for w in model.get_weights()], [[r["train_loss"], r["val_loss"]] for r in history]


single = run()
parallel_distribution = env.distribution()
keras.distribution.set_distribution(parallel_distribution)
parallel = run()
diff = lambda a, b: max(float(np.abs(x - y).max()) for x, y in zip(a, b))
print(json.dumps({
    "devices": len(jax.devices()), "kind": type(parallel_distribution).__name__,
    "same_start": diff(single[0], parallel[0]) == 0.0, "moved": diff(single[0], single[1]),
    "weight_diff": diff(single[1], parallel[1]), "losses": single[2], "parallel_losses": parallel[2],
}))
"""


def test_jax_data_parallel_on_two_cpus_equals_one_device(tmp_path):
    """Issue 9: on the JAX backend, ``keras.distribution.DataParallel`` (``env.distribution``).

    Same tolerances as MirroredStrategy above: the two halves of the batch are
    reduced in another order. No special optimizer is needed here: the
    gradient is averaged inside one compiled step before clipping.
    """
    pytest.importorskip("jax", reason="jax is not installed (pip install -e .[test])")
    script = tmp_path / "jax_compare.py"
    script.write_text(JAX_SCRIPT, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script), str(ROOT / "tools")], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2 and result["kind"] == "DataParallel"
    assert result["same_start"] and result["moved"] > 100 * WEIGHT_ATOL
    assert result["weight_diff"] < WEIGHT_ATOL, result
    for (t1, v1), (t2, v2) in zip(result["losses"], result["parallel_losses"]):
        assert t2 == pytest.approx(t1, rel=LOSS_RTOL) and v2 == pytest.approx(v1, rel=LOSS_RTOL)


def test_distribution_needs_the_jax_backend():
    with pytest.raises(ValueError, match="backend must be 'jax'.*'tensorflow'.*strategy"):
        env.distribution()

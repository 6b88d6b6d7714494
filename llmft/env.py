"""The machine a chapter runs on: devices, seeds, determinism, a report.

Introduced in chapter 1; every chapter calls :func:`start_chapter` right after
its ``parameters`` cell.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import random
import sys

import numpy as np

from llmft import profiles


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence C++ log lines written straight to file descriptor 2.

    TensorFlow 2.21 prints oneDNN/CUDA start-up notices through absl before
    ``TF_CPP_MIN_LOG_LEVEL`` is read, so the variable cannot stop them; in a
    notebook they would bury the first output. Only the backend import and
    the device query run inside this block, so real errors later still show.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_backend() -> None:
    """Import Keras and its backend and query devices once, without log noise."""
    with _quiet_native_stderr():
        import keras  # noqa: F401  (imports the backend: TensorFlow by default)

        detect_accelerator()


def backend() -> str:
    """The active Keras backend name (``tensorflow``, ``jax`` or ``torch``)."""
    import keras

    return keras.backend.backend()


def detect_accelerator() -> str:
    """Return ``"tpu"``, ``"gpu"`` or ``"cpu"`` for the first accelerator found.

    A TPU is recognised by Colab/Cloud TPU environment variables or the
    ``/dev/accel*`` / ``/dev/vfio`` devices, a GPU through the active Keras
    backend, so the answer does not depend on which backend is installed.
    """
    from llmft import colab

    if colab.tpu_present():
        return "tpu"
    name = backend()
    try:
        if name == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return "gpu"
        elif name == "jax":
            import jax

            kinds = {d.platform for d in jax.devices()}
            if "tpu" in kinds:
                return "tpu"
            if "gpu" in kinds or "cuda" in kinds:
                return "gpu"
        elif name == "torch":
            import torch

            if torch.cuda.is_available():
                return "gpu"
    except RuntimeError:  # a backend that finds no usable device raises; treat as CPU
        pass
    return "cpu"


def strategy():
    """The ``tf.distribute`` strategy for this machine: TPU, several GPUs, or one device.

    - a TPU (see :func:`detect_accelerator`) whose ``TPUClusterResolver``
      connects: ``tf.distribute.TPUStrategy``;
    - more than one GPU: ``tf.distribute.MirroredStrategy`` over all of them
      (data parallel: every GPU holds a copy of the weights and gets a
      slice of each batch; the gradients are summed before the update);
    - otherwise the default strategy: one device, and its ``scope()``
      changes nothing, so the same code runs everywhere.

    Build and compile the model inside ``strategy().scope()``; the batch
    size you give is the global batch, split across the replicas. Several
    machines need ``tf.distribute.MultiWorkerMirroredStrategy`` and a
    ``TF_CONFIG`` on every worker, which this function does not guess.

    Example::

        strat = env.strategy()
        with strat.scope():
            model = gpt.from_preset("tiny", vocab_size=tok.vocab_size)
            model, history = train.pretrain(model, ids, steps=100, eval_every=50)

    Raises:
        ValueError: the Keras backend is not TensorFlow (on JAX, use
            ``keras.distribution.set_distribution(keras.distribution.DataParallel())``).

    Introduced in chapter 7.
    """
    name = backend()
    if name != "tensorflow":
        raise ValueError(
            f"backend must be 'tensorflow' for tf.distribute; got {name!r} "
            "(on JAX use keras.distribution.DataParallel)"
        )
    import tensorflow as tf

    if detect_accelerator() == "tpu":
        # Only where a TPU is announced: elsewhere the resolver would query
        # the cloud metadata server over the network.
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as err:
            print(f"TPU found but not usable from TensorFlow ({type(err).__name__}: {err}); "
                  "using the devices below", file=sys.stderr)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return tf.distribute.get_strategy()


def distribution():
    """The ``keras.distribution`` for JAX: data parallel over all devices, or ``None`` for one device.

    On JAX (the ``tpu`` profile, and GPU machines without TensorFlow) Keras
    distributes training itself: ``keras.distribution.DataParallel`` keeps a
    copy of the weights on every device and splits each batch between them;
    gradients are averaged over the whole batch inside one compiled step, so
    clipping sees the global gradient. :func:`start_chapter` sets it when
    more than one device is visible. On TensorFlow use :func:`strategy`.

    Raises:
        ValueError: the Keras backend is not JAX.

    Introduced in chapter 7.
    """
    name = backend()
    if name != "jax":
        raise ValueError(f"backend must be 'jax' for keras.distribution; got {name!r} "
                         "(on TensorFlow use llmft.env.strategy())")
    import jax
    import keras

    devices = jax.devices()
    if len(devices) < 2:
        return None
    return keras.distribution.DataParallel(devices=devices)


def set_seed(seed: int = 0, *, deterministic: bool = True) -> int:
    """Seed Python, NumPy and the Keras backend; optionally make TF ops deterministic.

    Args:
        seed: a non-negative integer.
        deterministic: on TensorFlow, also call
            ``tf.config.experimental.enable_op_determinism()`` so that the
            same run gives the same numbers (at some speed cost on GPU).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    import keras

    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic and backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    return seed


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "未安装"


REPORTED_PACKAGES = (
    "llmft",
    "keras",
    "tensorflow",
    "numpy",
    "matplotlib",
    "scikit-learn",
    "snownlp",
    "chatterbot-corpus",
    "jupyter-book",
)


def environment_report() -> dict:
    """Python, platform, library versions, devices and CPU count, as a dict."""
    report = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "keras_backend": backend(),
        "accelerator": detect_accelerator(),
        "in_colab": in_colab(),
    }
    report["packages"] = {name: _version(name) for name in REPORTED_PACKAGES}
    return report


def in_colab() -> bool:
    """True inside Google Colab (see :func:`llmft.colab.in_colab`)."""
    from llmft import colab

    return colab.in_colab()


def start_chapter(profile: str | None = "auto", *, seed: int = 0) -> profiles.Profile:
    """What every chapter does first: resolve the profile, seed, print one line.

    Args:
        profile: a profile name or ``"auto"`` (see :mod:`llmft.profiles`).
        seed: passed to :func:`set_seed`.

    Returns:
        The resolved :class:`~llmft.profiles.Profile`.
    """
    import_backend()
    prof = profiles.get_profile(profile)
    set_seed(seed)
    from llmft import plotting

    plotting.use_cjk_font()
    devices = ""
    if backend() == "jax":
        import keras

        parallel = distribution()
        if parallel is not None:  # a TPU's 8 cores, or several GPUs
            keras.distribution.set_distribution(parallel)
            devices = f" data_parallel={len(parallel.device_mesh.devices.ravel())}"
    print(f"{prof.describe()} backend={backend()} accelerator={detect_accelerator()} seed={seed}{devices}")
    return prof


# Importing this module loads the backend quietly, so that a chapter's later
# `import keras` / `import tensorflow` prints nothing either.
import_backend()

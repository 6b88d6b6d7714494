"""The model, training and sampling tests again on the other Keras backends.

Keras picks its backend once per process, so each backend runs the subset
below in a pytest subprocess with ``KERAS_BACKEND`` set. ``make test`` runs
it on JAX (CPU jaxlib from the test extra); ``make test-backends`` adds
PyTorch (``LLMFT_BACKENDS=jax,torch``). A backend whose package is not
installed is skipped with the reason shown in pytest's summary. Tests in the
subset that are about TensorFlow itself (``tf.function`` traces,
``tf.distribute``, op determinism) skip themselves off TensorFlow.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ["tests/test_gpt.py", "tests/test_lstm.py", "tests/test_sampling.py", "tests/test_train.py"]
ALL_BACKENDS = ("jax", "torch")
WANTED = [b.strip() for b in os.environ.get("LLMFT_BACKENDS", "jax").split(",") if b.strip()]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_subset_passes_on_backend(backend):
    if backend not in WANTED:
        pytest.skip(f"{backend}: not in LLMFT_BACKENDS={','.join(WANTED)} (make test-backends adds it)")
    if importlib.util.find_spec(backend) is None:
        hint = {"torch": "install a CPU build of PyTorch", "jax": "pip install -e .[test]"}[backend]
        pytest.skip(f"{backend} is not installed ({hint})")
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *SUBSET, "-q", "-p", "no:cacheprovider", "-rs"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(f"{backend}: {summary}")  # shown with -rP; the skip reasons are in the subprocess output
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in summary and "failed" not in summary, summary

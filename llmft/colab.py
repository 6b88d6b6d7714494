"""Running a chapter in Google Colab: backend for a TPU, caches on Drive when asked.

The first cell after each chapter's parameters installs ``llmft`` in Colab
(the package is not on PyPI; ``tools/colab_cell.py`` writes that cell from
``_config.yml``) and then calls :func:`setup`. Outside Colab the cell does
nothing. The profile then follows the hardware as everywhere else
(``PROFILE = "auto"``: ``gpu`` or ``tpu`` when one is present).

This module imports neither Keras nor TensorFlow: :func:`setup` must choose
the Keras backend before anything imports Keras. Introduced in chapter 1.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

DRIVE_MOUNT = "/content/drive"
"""Where Colab mounts Google Drive."""

DRIVE_FOLDER = "MyDrive/llmft"
"""Folder in Drive for caches and checkpoints (``LLMFT_HOME``) when ``use_drive=True``."""

LOCAL_RESULTS = "/content/llmft_results"
"""Where a Colab run writes ``results/*.json`` (the installed package has no repository folder)."""


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ


def tpu_present() -> bool:
    """True when a TPU is announced (Colab/Cloud TPU variables or ``/dev/accel*``)."""
    return bool(os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME") or glob.glob("/dev/accel*"))


def setup(use_drive: bool = False, *, drive_folder: str = DRIVE_FOLDER, mount=None) -> dict:
    """Prepare a Colab runtime for a chapter; outside Colab return ``{"colab": False}`` and do nothing.

    In Colab:

    - on a TPU runtime, and only if Keras is not imported yet and
      ``KERAS_BACKEND`` is not set, choose the JAX backend (the ``tpu``
      profile trains with ``keras.distribution`` on JAX);
    - send ``results/*.json`` to :data:`LOCAL_RESULTS` unless
      ``LLMFT_RESULTS_DIR`` is set;
    - with ``use_drive=True``, mount Google Drive and put ``LLMFT_HOME``
      (pretrained base models, their checkpoints, data caches) in
      ``drive_folder``: a session that disconnects resumes pretraining from
      the last checkpoint instead of starting again. Off by default, since
      mounting asks for the user's permission.

    Args:
        use_drive: keep caches and checkpoints on Google Drive.
        drive_folder: folder under the Drive mount, e.g. ``"MyDrive/llmft"``.
        mount: ``mount(path)``; default ``google.colab.drive.mount`` (tests pass a fake).

    Returns:
        A dict of what was set: ``colab``, and in Colab ``backend``,
        ``results_dir`` and ``llmft_home``.
    """
    if not isinstance(use_drive, bool):
        raise ValueError(f"use_drive must be True or False; got {use_drive!r}")
    if not isinstance(drive_folder, str) or not drive_folder.strip() or drive_folder.startswith("/"):
        raise ValueError(f"drive_folder must be a relative folder name under the Drive mount; got {drive_folder!r}")
    if not in_colab():
        return {"colab": False}
    if tpu_present() and "KERAS_BACKEND" not in os.environ and "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"
    os.environ.setdefault("LLMFT_RESULTS_DIR", LOCAL_RESULTS)
    if use_drive:
        if mount is None:
            from google.colab import drive  # only importable inside Colab

            mount = drive.mount
        mount(DRIVE_MOUNT)
        home = Path(DRIVE_MOUNT) / drive_folder
        home.mkdir(parents=True, exist_ok=True)
        os.environ["LLMFT_HOME"] = str(home)
    settings = {
        "colab": True,
        "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "results_dir": os.environ["LLMFT_RESULTS_DIR"],
        "llmft_home": os.environ.get("LLMFT_HOME", "~/.cache/llmft"),
    }
    print("Colab: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "colab"))
    return settings

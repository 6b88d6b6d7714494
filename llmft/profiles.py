"""Run profiles: how big the models are and how long each chapter trains.

Every chapter starts with ``PROFILE = os.environ.get("LLMFT_PROFILE", "auto")``
in a cell tagged ``parameters`` and resolves it with :func:`get_profile`.
Introduced in chapter 1.

- ``smoke``: tiny sizes, seconds per chapter; what CI runs.
- ``cpu``: the default on a laptop; the committed outputs come from it.
- ``gpu`` / ``tpu``: larger models and full data for Colab and GPU machines.
- ``auto``: ``gpu`` or ``tpu`` when one is present, else ``cpu``.
"""

from __future__ import annotations

import dataclasses
import os

ENV_VAR = "LLMFT_PROFILE"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes and budgets for one way of running the book.

    Args:
        name: profile name (``smoke``, ``cpu``, ``gpu`` or ``tpu``).
        max_examples: cap on labelled examples per split (``None``: all).
        max_pretrain_chars: cap on characters of pretraining text.
        model_preset: name of the GPT preset used as the base model.
        context_length: tokens per training window.
        batch_size: sequences per step.
        pretrain_steps: optimisation steps for the base language models.
        finetune_epochs: passes over the labelled data when fine-tuning.
        backend: Keras backend the profile expects (``tensorflow`` or ``jax``).

    Example:
        >>> get_profile("smoke").pretrain_steps
        20
    """

    name: str
    max_examples: int | None
    max_pretrain_chars: int | None
    model_preset: str
    context_length: int
    batch_size: int
    pretrain_steps: int
    finetune_epochs: int
    backend: str = "tensorflow"

    def describe(self) -> str:
        """One line for a chapter's first output."""
        cap = "全部" if self.max_examples is None else str(self.max_examples)
        return (
            f"profile={self.name} model={self.model_preset} context={self.context_length} "
            f"batch={self.batch_size} pretrain_steps={self.pretrain_steps} "
            f"finetune_epochs={self.finetune_epochs} max_examples={cap}"
        )


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        max_examples=200,
        max_pretrain_chars=20_000,
        model_preset="tiny",
        context_length=32,
        batch_size=8,
        pretrain_steps=20,
        finetune_epochs=1,
    ),
    "cpu": Profile(
        name="cpu",
        max_examples=None,
        max_pretrain_chars=None,
        model_preset="small",
        context_length=128,
        batch_size=32,
        # 36.9M tokens, about 15 passes over the 2.5M-character corpus; about
        # 0.33 s per step for the small GPT on a 2-core CPU with AVX-512 (49 min,
        # once: the model is cached; 0.5-0.9 s per step on one without).
        # Validation loss is still falling at the end and train and validation
        # stay close (3.90 and 3.96). Longer pretraining pays off in the
        # fine-tuning chapters: 1500 steps (val loss 4.42) was too weak for
        # fine-tuning from the base to beat training from scratch; 4500 steps
        # (4.09) gave +3.4 points at 100 and 300 labels in chapter 5, and 9000
        # steps (3.96) +5.1 and +5.7 (chapters 5 and 6.4 show the rest).
        pretrain_steps=9000,
        finetune_epochs=3,
    ),
    "gpu": Profile(
        name="gpu",
        max_examples=None,
        max_pretrain_chars=None,
        model_preset="base",
        context_length=256,
        batch_size=64,
        pretrain_steps=20_000,
        finetune_epochs=4,
    ),
    "tpu": Profile(
        name="tpu",
        max_examples=None,
        max_pretrain_chars=None,
        model_preset="base",
        context_length=256,
        batch_size=128,
        pretrain_steps=20_000,
        finetune_epochs=4,
        backend="jax",
    ),
}

CHOICES = (*PROFILES, "auto")


def resolve_name(name: str | None = None) -> str:
    """Turn ``None``/``"auto"``/an explicit name into a concrete profile name.

    ``LLMFT_PROFILE`` overrides ``None`` and ``"auto"``; ``"auto"`` picks
    ``tpu`` or ``gpu`` when such a device is visible, else ``cpu``.
    """
    if name is None or name == "auto":
        name = os.environ.get(ENV_VAR, "auto") or "auto"
    if not isinstance(name, str) or name not in CHOICES:
        raise ValueError(
            f"profile must be one of {', '.join(CHOICES)}; got {name!r}"
            f" (check the {ENV_VAR} environment variable)"
        )
    if name == "auto":
        from llmft import env  # late import: device detection imports the backend

        accel = env.detect_accelerator()
        name = accel if accel in PROFILES else "cpu"
    return name


def get_profile(name: str | None = None) -> Profile:
    """Return the :class:`Profile` for ``name`` (see :func:`resolve_name`).

    Raises:
        ValueError: if ``name`` (or ``LLMFT_PROFILE``) is not a known profile.
    """
    return PROFILES[resolve_name(name)]

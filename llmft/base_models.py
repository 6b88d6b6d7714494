"""The book's pretrained base models: trained once per profile, then cached.

``pretrained_gpt(profile)`` returns the character-level GPT that chapters 5
and 6 fine-tune; ``pretrained_lstm(profile)`` the LSTM language model that
chapter 3 compares it with. The first call trains deterministically on the
pretraining corpus (People's Daily + review texts, train split only, see
:func:`llmft.data.pretraining_documents`); later calls load the result from
``LLMFT_HOME/models`` (default ``~/.cache/llmft/models``). An interrupted
first run resumes from its last checkpoint. Introduced in chapter 3.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from llmft import data, env, gpt, lstm, paths, profiles, train
from llmft.tokenizers import CharTokenizer

# Bump when training code or recipe changes so that stale caches are not reused.
RECIPE_VERSION = 1
TOKENIZER_MIN_FREQ = 2
# 3000 characters cover 99.5% of the validation text; the output layer's
# cost grows with the vocabulary, and rarer characters teach little anyway.
TOKENIZER_MAX_VOCAB = 3000
VAL_CHARS = 200_000
SEED = 0

# Per-kind training recipe; sizes come from the profile.
LEARNING_RATE = {"gpt": 2e-3, "lstm": 2e-3}


@dataclasses.dataclass
class BaseModel:
    """A pretrained model with everything needed to use it.

    Attributes:
        model: the Keras model (ids -> next-token logits).
        tokenizer: the :class:`~llmft.tokenizers.CharTokenizer` it was trained with.
        history: evaluation rows of :func:`llmft.train.pretrain`.
        train_seconds: wall time of the training run (from the history).
        directory: cache folder of this model.
        from_cache: True when loaded instead of trained by this call.
    """

    model: keras.Model
    tokenizer: CharTokenizer
    history: list
    train_seconds: float
    directory: Path
    from_cache: bool

    @property
    def val_loss(self) -> float:
        return self.history[-1]["val_loss"]


def _cap(profile: profiles.Profile) -> int | None:
    return profile.max_pretrain_chars


def base_tokenizer(profile: profiles.Profile) -> CharTokenizer:
    """The character tokenizer of the profile's pretraining corpus (cached)."""
    key = digest({"kind": "tokenizer", "cap": _cap(profile), "min_freq": TOKENIZER_MIN_FREQ,
                   "max_vocab": TOKENIZER_MAX_VOCAB,
                   "sources": {n: s.sha256 for n, s in data.SOURCES.items()}})
    path = paths.llmft_home() / "models" / f"tokenizer-{profile.name}-{key}.json"
    if path.exists():
        return CharTokenizer.load(path)
    docs = data.pretraining_documents("train", max_chars=_cap(profile))
    tok = CharTokenizer.train(docs, min_freq=TOKENIZER_MIN_FREQ, max_vocab=TOKENIZER_MAX_VOCAB)
    tok.save(path)
    return tok


def pretraining_streams(profile: profiles.Profile, tokenizer: CharTokenizer) -> tuple[np.ndarray, np.ndarray]:
    """``(train_ids, val_ids)``: token streams of the train and validation documents."""
    train_docs = data.pretraining_documents("train", max_chars=_cap(profile))
    val_cap = VAL_CHARS if _cap(profile) is None else min(VAL_CHARS, max(_cap(profile) // 5, 2000))
    val_docs = data.pretraining_documents("val", max_chars=val_cap)
    return train.token_stream(train_docs, tokenizer), train.token_stream(val_docs, tokenizer)


def train_config(kind: str, profile: profiles.Profile) -> train.TrainConfig:
    """The recipe: the profile's steps and batch, ten evaluations, 5% warmup."""
    steps = profile.pretrain_steps
    eval_every = max(steps // 10, 1)
    return train.TrainConfig(
        steps=steps,
        batch_size=profile.batch_size,
        learning_rate=LEARNING_RATE[kind],
        warmup_steps=max(steps // 20, 1),
        eval_every=eval_every,
        eval_batches=20,
        seed=SEED,
    )


def _build(kind: str, profile: profiles.Profile, vocab_size: int) -> keras.Model:
    if kind == "gpt":
        return gpt.from_preset(profile.model_preset, vocab_size=vocab_size, context_length=profile.context_length)
    return lstm.from_preset(profile.model_preset, vocab_size=vocab_size)


def digest(obj) -> str:
    """12 hex digits of the sha256 of ``obj`` as sorted JSON: the cache keys of pretrained models."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def model_directory(kind: str, profile: profiles.Profile, tokenizer: CharTokenizer) -> Path:
    """Cache folder: the key covers the recipe, sizes, tokenizer and data checksums."""
    key = digest({
        "kind": kind, "recipe": RECIPE_VERSION, "profile": dataclasses.asdict(profile),
        "config": dataclasses.asdict(train_config(kind, profile)),
        "preset": (gpt.PRESETS if kind == "gpt" else lstm.PRESETS)[profile.model_preset],
        "tokenizer": tokenizer.fingerprint, "keras": keras.__version__, "backend": env.backend(),
    })
    return paths.llmft_home() / "models" / f"{kind}-{profile.name}-{key}"


def _pretrained(kind: str, profile, verbose: bool) -> BaseModel:
    if kind not in LEARNING_RATE:
        raise ValueError(f"kind must be one of {sorted(LEARNING_RATE)}; got {kind!r}")
    prof = profile if isinstance(profile, profiles.Profile) else profiles.get_profile(profile)
    tokenizer = base_tokenizer(prof)
    directory = model_directory(kind, prof, tokenizer)
    return paths.load_or_build(
        directory, lambda: _load_cached(kind, prof, tokenizer, directory, verbose),
        lambda: _pretrain_and_save(kind, prof, tokenizer, directory, verbose),
        waiting_message=f"waiting for another process that is pretraining {kind} ({prof.name})" if verbose else None)


def _load_cached(kind, prof, tokenizer, directory, verbose) -> BaseModel:
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    if meta.get("tokenizer") != tokenizer.fingerprint:
        raise ValueError(f"directory {str(directory)!r}: the cached model was trained with another tokenizer")
    model = keras.saving.load_model(directory / "model.keras", safe_mode=True)
    if verbose:
        print(f"loaded {kind} ({prof.name}) from cache: {directory.name}")
    return BaseModel(model, tokenizer, meta["history"], meta["history"][-1]["seconds"], directory, True)


def _pretrain_and_save(kind, prof, tokenizer, directory, verbose) -> BaseModel:
    meta_path = directory / "meta.json"
    train_ids, val_ids = pretraining_streams(prof, tokenizer)
    env.set_seed(SEED)
    model = _build(kind, prof, tokenizer.vocab_size)
    if verbose:
        print(f"pretraining {kind} ({prof.name}, preset {prof.model_preset}) on {len(train_ids):,} tokens")
    model, history = train.pretrain(
        model, train_ids, val_ids, config=train_config(kind, prof),
        context_length=prof.context_length, checkpoint_dir=directory / "checkpoints", verbose=verbose,
    )
    paths.atomic_save_model(model, directory / "model.keras")
    paths.atomic_write_json(meta_path, {
        "kind": kind, "profile": prof.name, "history": history, "tokenizer": tokenizer.fingerprint,
        "params": int(model.count_params()), "train_tokens": int(len(train_ids)), "val_tokens": int(len(val_ids)),
    })
    return BaseModel(model, tokenizer, history, history[-1]["seconds"], directory, False)


def pretrained_gpt(profile=None, *, verbose: bool = True) -> BaseModel:
    """The book's base GPT for ``profile`` (a name, a Profile, or None for auto)."""
    return _pretrained("gpt", profile, verbose)


def pretrained_lstm(profile=None, *, verbose: bool = True) -> BaseModel:
    """The LSTM language model for ``profile``, same data and budget as the GPT."""
    return _pretrained("lstm", profile, verbose)

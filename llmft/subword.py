"""Subword (BPE) and word tokenization of Chinese, for comparison with characters.

Byte-pair encoding (Sennrich, Haddow and Birch, 2016, "Neural Machine
Translation of Rare Words with Subword Units") starts from single characters
and repeatedly merges the most frequent adjacent pair into a new token, until
the vocabulary has the requested size. Frequent words become one token, rare
words fall apart into smaller pieces, and any text made of known characters
can be encoded: a middle ground between one token per character (the book's
:class:`~llmft.tokenizers.CharTokenizer`) and one token per word.

This module is a thin, documented wrapper around the HuggingFace
``tokenizers`` library (its Rust BPE trainer is fast enough for the whole
corpus in seconds), plus :func:`word_tokenize` (jieba or whitespace) and
:func:`vocabulary_coverage`, the measures that chapter 2 compares the three
ways of tokenizing with. Introduced in chapter 2.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import Container, Iterable, Sequence
from pathlib import Path

import numpy as np

from llmft import paths
from llmft.tokenizers import PAD, UNK

# Pre-tokenization: runs of letters/digits/CJK characters (\w+) are kept
# together and everything else (punctuation, spaces) becomes its own piece,
# so merges never cross punctuation. Nothing is dropped: the pieces of a
# text concatenate back to the text.
_PIECE_PATTERN = r"\w+"
WORD_METHODS = ("jieba", "whitespace", "char")


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Iterable):
        raise ValueError(f"texts must be an iterable of strings, not {type(texts).__name__}; wrap a single string in a list")
    texts = list(texts)
    if not texts:
        raise ValueError("texts must not be empty; got an empty iterable")
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"texts must contain strings; got {text!r}")
    return texts


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


class BPETokenizer:
    """A trained BPE tokenizer: text -> subword pieces -> ids.

    Build one with :func:`train_bpe`; wrap an existing
    ``tokenizers.Tokenizer`` (with a BPE model and an unknown token) directly.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` whose model is ``models.BPE``.

    Example:
        >>> bpe = train_bpe(["今天天气很好", "今天天气不好", "天气预报"] * 3, vocab_size=12)
        >>> bpe.tokenize("今天天气很好")  # two merges learned: 天+气, 今+天
        ['今天', '天气', '很', '好']
        >>> bpe.decode(bpe.encode("天气很好"))
        '天气很好'
        >>> bpe.encode("明天")[0] == bpe.unk_id  # 明 was never seen
        True
    """

    def __init__(self, tokenizer):
        from tokenizers import models

        if not isinstance(getattr(tokenizer, "model", None), models.BPE):
            raise ValueError(f"tokenizer must be a tokenizers.Tokenizer with a BPE model; got {tokenizer!r:.80}")
        unk = tokenizer.model.unk_token
        if unk is None or tokenizer.token_to_id(unk) is None:
            raise ValueError(f"tokenizer must have an unknown token in its vocabulary; got unk_token={unk!r}")
        self._tok = tokenizer
        self._unk = unk
        self._vocab = tokenizer.get_vocab(with_added_tokens=True)
        self._special = frozenset(
            i for t, i in self._vocab.items() if t == unk or t in {a.content for a in tokenizer.get_added_tokens_decoder().values()}
        )

    # -- vocabulary ---------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def __len__(self) -> int:
        return len(self._vocab)

    @property
    def vocab(self) -> dict[str, int]:
        """``{token: id}`` (a copy)."""
        return dict(self._vocab)

    @property
    def unk_id(self) -> int:
        return self._vocab[self._unk]

    def token_to_id(self, token: str) -> int:
        """Id of ``token``, or the ``<unk>`` id if it is not in the vocabulary."""
        return self._vocab.get(token, self.unk_id)

    def id_to_token(self, token_id: int) -> str:
        token = None
        if not isinstance(token_id, bool) and isinstance(token_id, (int, np.integer)):
            token = self._tok.id_to_token(int(token_id))
        if token is None:
            raise ValueError(f"token_id must be in [0, {self.vocab_size}); got {token_id!r}")
        return token

    # -- encoding -----------------------------------------------------------

    def _encoding(self, text: str):
        if not isinstance(text, str):
            raise ValueError(f"text must be a string; got {type(text).__name__} {text!r:.80}")
        return self._tok.encode(text, add_special_tokens=False)

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text``, one per token, as they appear in the text.

        A character outside the vocabulary stays itself here (``encode``
        maps it to ``<unk>``), so ``"".join(tokenize(text)) == text`` always.
        """
        return [text[a:b] for a, b in self._encoding(text).offsets]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; unknown characters get the ``<unk>`` id."""
        return list(self._encoding(text).ids)

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Concatenate the tokens of ``ids``; special tokens (and ``<unk>``) are dropped unless ``skip_special=False``."""
        out = []
        for i in ids:
            token = self.id_to_token(i)
            if skip_special and int(i) in self._special:
                continue
            out.append(token)
        return "".join(out)

    def unknown_rate(self, text: str) -> float:
        """Share of the characters of ``text`` that end up in an ``<unk>`` token."""
        enc = self._encoding(text)
        if not text:
            return 0.0
        unk = self.unk_id
        return sum(b - a for i, (a, b) in zip(enc.ids, enc.offsets) if i == unk) / len(text)

    # -- persistence ----------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer (HuggingFace ``tokenizer.json`` format), atomically."""
        return paths.atomic_write_json(path, json.loads(self._tok.to_str()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"path {str(path)!r} does not exist")
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as err:  # the Rust side raises a generic Exception
            raise ValueError(f"path {str(path)!r} is not a saved tokenizer: {err}") from None

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    limit_alphabet: int | None = None,
    special_tokens: Sequence[str] = (PAD, UNK),
) -> BPETokenizer:
    """Train a character-level BPE tokenizer on ``texts``.

    Args:
        texts: training text, e.g. the pretraining documents.
        vocab_size: size of the final vocabulary: special tokens, the
            characters of the alphabet, then one token per merge. If the
            alphabet alone is larger, there are no merges.
        min_frequency: a pair is merged only if it occurs at least this often.
        limit_alphabet: keep only this many of the most frequent characters
            (the rest become ``<unk>``); ``None`` keeps every character seen.
        special_tokens: tokens that get the first ids; must include ``<unk>``.

    Returns:
        A :class:`BPETokenizer`. Training is deterministic for the same text.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    texts = _check_texts(texts)
    vocab_size = _check_positive_int("vocab_size", vocab_size)
    min_frequency = _check_positive_int("min_frequency", min_frequency)
    if limit_alphabet is not None:
        limit_alphabet = _check_positive_int("limit_alphabet", limit_alphabet)
    if isinstance(special_tokens, str) or not all(isinstance(t, str) and t for t in special_tokens):
        raise ValueError(f"special_tokens must be a list of non-empty strings; got {special_tokens!r}")
    special_tokens = list(special_tokens)
    if UNK not in special_tokens:
        raise ValueError(f"special_tokens must include {UNK!r}; got {special_tokens!r}")
    if vocab_size <= len(special_tokens):
        raise ValueError(f"vocab_size must be larger than the {len(special_tokens)} special tokens; got {vocab_size!r}")

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(_PIECE_PATTERN), behavior="isolated")
    options = {}
    if limit_alphabet is not None:
        # The trainer breaks frequency ties in its alphabet cut in hash order,
        # which changes from run to run; choosing the characters here (by
        # count, then code point) keeps training deterministic.
        counts = collections.Counter(ch for text in texts for ch in text)
        alphabet = sorted(counts, key=lambda ch: (-counts[ch], ch))[:limit_alphabet]
        options = {"initial_alphabet": alphabet, "limit_alphabet": len(alphabet)}
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special_tokens,
        show_progress=False, **options,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tokenizer)


# --------------------------------------------------------------------------
# Words, and how well a vocabulary covers held-out text
# --------------------------------------------------------------------------


def word_tokenize(text: str, method: str = "jieba") -> list[str]:
    """Cut ``text`` into words.

    Args:
        text: the text.
        method: ``"jieba"`` (jieba's default "accurate" mode with its HMM for
            unseen words), ``"whitespace"`` (``str.split()``: what a
            whitespace tokenizer does; an unsegmented Chinese sentence stays
            one piece) or ``"char"`` (one piece per character).

    Example:
        >>> word_tokenize("今天天气很好", method="whitespace")
        ['今天天气很好']
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string; got {type(text).__name__} {text!r:.80}")
    if method == "whitespace":
        return text.split()
    if method == "char":
        return list(text)
    if method == "jieba":
        return _jieba().lcut(text)
    raise ValueError(f"method must be one of {WORD_METHODS}; got {method!r}")


def _jieba():
    import jieba

    # jieba logs "Building prefix dict ..." lines to stderr at start-up.
    jieba.setLogLevel(logging.WARNING)
    return jieba


def word_vocabulary(token_lists: Iterable[Sequence[str]], *, min_freq: int = 2) -> set[str]:
    """The tokens that occur at least ``min_freq`` times in ``token_lists``."""
    min_freq = _check_positive_int("min_freq", min_freq)
    if isinstance(token_lists, str):
        raise ValueError("token_lists must be a list of token lists; got a single string")
    counts: collections.Counter[str] = collections.Counter()
    for tokens in token_lists:
        if isinstance(tokens, str):
            raise ValueError(f"token_lists must contain lists of tokens, not strings; got {tokens!r:.40}")
        counts.update(tokens)
    return {t for t, n in counts.items() if n >= min_freq}


def vocabulary_coverage(token_lists: Sequence[Sequence[str]], vocabulary: Container[str]) -> dict[str, float]:
    """How a vocabulary covers tokenized held-out text.

    Args:
        token_lists: one list of tokens (strings) per text.
        vocabulary: anything supporting ``token in vocabulary``.

    Returns:
        ``tokens_per_text`` (mean), ``chars_per_token``,
        ``unknown_token_rate`` (share of tokens not in the vocabulary: the
        usual OOV rate) and ``unknown_char_rate`` (share of characters inside
        such tokens, comparable across ways of cutting the same text).

    Example:
        >>> vocabulary_coverage([["今天", "天气"], ["好"]], {"今天", "好"})["unknown_token_rate"]
        0.3333333333333333
    """
    if isinstance(token_lists, str) or not isinstance(token_lists, Sequence) or not token_lists:
        raise ValueError(f"token_lists must be a non-empty list of token lists; got {token_lists!r:.80}")
    n_tokens = n_chars = unk_tokens = unk_chars = 0
    for tokens in token_lists:
        if isinstance(tokens, str):
            raise ValueError(f"token_lists must contain lists of tokens, not strings; got {tokens!r:.40}")
        for token in tokens:
            n_tokens += 1
            n_chars += len(token)
            if token not in vocabulary:
                unk_tokens += 1
                unk_chars += len(token)
    if n_tokens == 0:
        raise ValueError("token_lists must contain at least one token; got only empty lists")
    return {
        "tokens_per_text": n_tokens / len(token_lists),
        "chars_per_token": n_chars / n_tokens,
        "unknown_token_rate": unk_tokens / n_tokens,
        "unknown_char_rate": unk_chars / n_chars,
    }

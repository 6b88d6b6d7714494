"""Character-level tokenizer for Chinese, with special tokens.

Written Chinese has no spaces between words, so a whitespace tokenizer (the
source article's ``keras.preprocessing.text.Tokenizer``) turns a whole
sentence into one "word". One token per character is the simplest correct
alternative: a few thousand characters cover almost all text, and nothing
needs a word segmenter. Chapter 2 compares it with word and subword
tokenization. Introduced in chapter 1.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from llmft import paths

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
# Reserved now so that ids stay stable when chapter 6 adds chat fine-tuning.
SYSTEM, USER, ASSISTANT, END_OF_TURN = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, SYSTEM, USER, ASSISTANT, END_OF_TURN)

_FORMAT = "llmft.CharTokenizer"
_FORMAT_VERSION = 1


class CharTokenizer:
    """Maps each character to an id; special tokens come first (``<pad>`` is 0).

    Args:
        chars: the ordinary characters of the vocabulary, in id order.

    Use :meth:`train` to build one from text.

    Example:
        >>> tok = CharTokenizer.train(["你好，世界", "你们好"])
        >>> tok.decode(tok.encode("你好"))
        '你好'
        >>> tok.encode("你好", add_bos=True)[0] == tok.bos_id
        True
    """

    def __init__(self, chars: Sequence[str]):
        if not isinstance(chars, Iterable):
            raise ValueError(f"chars must be a sequence of single characters; got {chars!r:.80}")
        chars = list(chars)
        for ch in chars:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"chars must be single characters; got {ch!r}")
        if len(set(chars)) != len(chars):
            dup = [c for c, n in collections.Counter(chars).items() if n > 1][:5]
            raise ValueError(f"chars must be unique; got duplicates {dup!r}")
        self.tokens: list[str] = [*SPECIAL_TOKENS, *chars]
        self._index = {tok: i for i, tok in enumerate(self.tokens)}

    # -- construction -------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], *, min_freq: int = 1, max_vocab: int | None = None) -> CharTokenizer:
        """Build the vocabulary from ``texts``.

        Args:
            texts: an iterable of strings (e.g. the pretraining documents).
            min_freq: drop characters seen fewer times (they become ``<unk>``).
            max_vocab: keep at most this many ids in total, specials included.

        Characters are ordered by frequency (ties by code point), so ids are
        deterministic for the same text.
        """
        if isinstance(texts, str):
            raise ValueError("texts must be an iterable of strings, not a single string; wrap it in a list")
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be a positive integer; got {min_freq!r}")
        if max_vocab is not None and (
            isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab <= len(SPECIAL_TOKENS)
        ):
            raise ValueError(f"max_vocab must be an integer > {len(SPECIAL_TOKENS)} or None; got {max_vocab!r}")
        if not isinstance(texts, Iterable):
            raise ValueError(f"texts must be an iterable of strings; got {texts!r:.80}")
        counts: collections.Counter[str] = collections.Counter()
        n_texts = 0
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(f"texts must contain strings; got {text!r}")
            counts.update(text)
            n_texts += 1
        if n_texts == 0:
            raise ValueError("texts must not be empty")
        chars = sorted((c for c, n in counts.items() if n >= min_freq), key=lambda c: (-counts[c], c))
        if max_vocab is not None:
            chars = chars[: max_vocab - len(SPECIAL_TOKENS)]
        return cls(chars)

    # -- vocabulary ---------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def token_to_id(self, token: str) -> int:
        """Id of a character or special token (``<unk>`` id if unknown)."""
        return self._index.get(token, self.unk_id)

    def id_to_token(self, token_id: int) -> str:
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)) or not (
            0 <= token_id < len(self.tokens)
        ):
            raise ValueError(f"token_id must be in [0, {len(self.tokens)}); got {token_id!r}")
        return self.tokens[int(token_id)]

    pad_id = property(lambda self: self._index[PAD])
    unk_id = property(lambda self: self._index[UNK])
    bos_id = property(lambda self: self._index[BOS])
    eos_id = property(lambda self: self._index[EOS])

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(self._index[t] for t in SPECIAL_TOKENS)

    @property
    def fingerprint(self) -> str:
        """sha256 of the vocabulary: a model trained with this tokenizer stores it."""
        return hashlib.sha256("\n".join(self.tokens).encode("utf-8")).hexdigest()

    # -- encoding -----------------------------------------------------------

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of the characters of ``text`` (unknown characters -> ``<unk>``).

        Special-token strings inside ``text`` are ordinary characters here
        (``"<pad>"`` is five ids), so user text can never forge a control token.
        """
        if not isinstance(text, str):
            raise ValueError(f"text must be a string; got {type(text).__name__} {text!r}")
        unk = self.unk_id
        ids = [self._index.get(ch, unk) for ch in text]
        if add_bos:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Text of ``ids``; special tokens are dropped (or kept as ``<name>``)."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise ValueError(f"ids must be an iterable of integer ids; got {ids!r:.80}")
        out = []
        n = len(self.tokens)
        special = self.special_ids
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
                raise ValueError(f"ids must be integers in [0, {n}); got {i!r}")
            if skip_special and int(i) in special:
                continue
            out.append(self.tokens[int(i)])
        return "".join(out)

    def unknown_rate(self, text: str) -> float:
        """Share of characters of ``text`` that map to ``<unk>``."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a string; got {type(text).__name__} {text!r:.80}")
        if not text:
            return 0.0
        return sum(ch not in self._index for ch in text) / len(text)

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        max_length: int | None = None,
        padding: str = "longest",
        truncation: bool = True,
        add_bos: bool = False,
        add_eos: bool = False,
    ) -> dict[str, np.ndarray]:
        """Encode several texts into one padded ``int32`` matrix.

        Args:
            texts: strings to encode.
            max_length: the length limit (required for ``padding="max_length"``).
            padding: ``"longest"`` (pad to the longest row) or ``"max_length"``.
            truncation: cut rows longer than ``max_length`` (keeping the start);
                if False, a longer row raises ``ValueError``.

        Returns:
            ``{"input_ids": (B, T) int32, "attention_mask": (B, T) int32}``;
            padding goes on the right and has mask 0.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
            raise ValueError(f"texts must be a non-empty list of strings; got {texts!r}")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length'; got {padding!r}")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length must be a positive integer or None; got {max_length!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("max_length must be given when padding='max_length'; got None")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"texts[{bad[0]}] must be a string; got {texts[bad[0]]!r:.80}")
        rows = [self.encode(t, add_bos=add_bos, add_eos=add_eos) for t in texts]
        if max_length is not None:
            too_long = [i for i, r in enumerate(rows) if len(r) > max_length]
            if too_long and not truncation:
                i = too_long[0]
                raise ValueError(
                    f"texts[{i}] has {len(rows[i])} tokens, more than max_length={max_length}; "
                    "pass truncation=True to cut it"
                )
            rows = [r[:max_length] for r in rows]
        width = max_length if padding == "max_length" else max(len(r) for r in rows)
        width = max(width, 1)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(rows), width), dtype=np.int32)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    # -- persistence ----------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "special_tokens": list(SPECIAL_TOKENS),
            "chars": self.tokens[len(SPECIAL_TOKENS):],
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"data is not a saved {_FORMAT}; got format {data.get('format') if isinstance(data, dict) else data!r}")
        if data.get("version") != _FORMAT_VERSION:
            raise ValueError(f"version {data.get('version')!r} is not supported (expected {_FORMAT_VERSION})")
        if data.get("special_tokens") != list(SPECIAL_TOKENS):
            raise ValueError(f"special_tokens differ from this llmft's: {data.get('special_tokens')!r}")
        if not isinstance(data.get("chars"), list):
            raise ValueError(f"chars must be a list of characters; got {data.get('chars')!r:.80}")
        tok = cls(data["chars"])
        if data.get("fingerprint") not in (None, tok.fingerprint):
            raise ValueError("fingerprint does not match the vocabulary: the file was altered")
        return tok

    def save(self, path: str | os.PathLike) -> Path:
        """Write the vocabulary as JSON, atomically."""
        return paths.atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"path {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"path {str(path)!r} is not valid UTF-8 JSON: {err}") from None
        return cls.from_dict(data)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

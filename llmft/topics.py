"""Topic classification of the chatterbot-corpus Chinese dialog lines.

Every ``data/chinese/<topic>.yml`` file of chatterbot-corpus holds the dialogs
of one topic (ai, emotion, money, sports, ...). Each line of a dialog (a
question or an answer) becomes one labelled example whose label is the topic
of its file: a multi-class task with a few hundred examples, the small-data
regime where pretraining should help most. Introduced in chapter 6.1.

How the dataset is built (:func:`build_topic_dataset`):

1. read every line of every topic file (stripped; empty lines dropped);
2. merge topics that are the same kind of talk (``MERGES``: greetings are
   chit-chat, like the ``conversations`` file);
3. deduplicate: a line that occurs twice in one topic is kept once; a line that
   occurs under two topics (after merging) is ambiguous and is dropped;
4. drop topics with fewer than ``min_lines`` unique lines (too few to learn or
   to evaluate);
5. split by a seeded hash of the text (:func:`topic_split`), so a line is in
   the same split on every run and in every order of the files.
"""

from __future__ import annotations

import dataclasses
import hashlib

from llmft import data

# Source topic -> the topic it is merged into.
MERGES = {"greetings": "conversations"}
MIN_LINES = 30
# Train/val/test fractions. 60/20/20 rather than the book's 80/10/10: with a
# few hundred lines, a 10% test split would hold only a handful per topic.
FRACTIONS = (0.6, 0.2, 0.2)

# Chinese display names of the topics (the file names are English).
TOPIC_NAMES = {
    "ai": "人工智能", "botprofile": "机器人自述", "conversations": "寒暄闲聊", "emotion": "情感",
    "food": "饮食", "gossip": "八卦", "greetings": "问候", "history": "历史", "humor": "幽默",
    "literature": "文学", "money": "金钱", "movies": "电影", "politics": "政治", "psychology": "心理",
    "science": "科学", "sports": "体育", "trivia": "常识问答",
}


@dataclasses.dataclass(frozen=True)
class TopicDataset:
    """The topic classification data: labels, splits and what was dropped.

    Attributes:
        labels: topic names in label order (``Example.label`` indexes it).
        splits: ``{"train" | "val" | "test": [data.Example, ...]}``.
        stats: counts per step of :func:`build_topic_dataset` (raw lines,
            unique lines, conflicting lines, dropped topics, merges).
    """

    labels: tuple[str, ...]
    splits: dict
    stats: dict

    @property
    def display_labels(self) -> list[str]:
        """The labels in Chinese (``TOPIC_NAMES``), for tables and figures."""
        return [TOPIC_NAMES.get(label, label) for label in self.labels]


def _check_fractions(fractions):
    if (not isinstance(fractions, (tuple, list)) or len(fractions) != 3
            or not all(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in fractions)
            or abs(sum(fractions) - 1.0) > 1e-9):
        raise ValueError(f"fractions must be three positive numbers (train, val, test) summing to 1; got {fractions!r}")
    return tuple(float(f) for f in fractions)


def topic_split(text: str, *, seed: int = data.DEFAULT_SEED, fractions=FRACTIONS) -> str:
    """The split (``train``/``val``/``test``) of a dialog line: a seeded hash of its text.

    Args:
        text: The line.
        seed: Split seed; the default is the book's.
        fractions: Train, validation and test fractions (they must sum to 1).
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string; got {text!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    train, val, _ = _check_fractions(fractions)
    digest = hashlib.sha256(f"{seed}\x00topics\x00{text}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 10_000 / 10_000
    if bucket < train:
        return "train"
    return "val" if bucket < train + val else "test"


def topic_lines() -> dict[str, list[str]]:
    """Every non-empty line of every chatterbot topic file, ``{topic: [line, ...]}``, in file order.

    The files are checked by sha256 (:func:`llmft.data.source_path`) and read
    with ``yaml.safe_load``.
    """
    import yaml  # safe_load only: the files are data, never code

    out = {}
    for name in sorted(n for n in data.SOURCES if n.startswith("dialogs_")):
        doc = yaml.safe_load(data.source_path(name).read_text(encoding="utf-8"))
        lines = [str(turn).strip() for conv in doc.get("conversations", []) for turn in conv]
        out[name.removeprefix("dialogs_")] = [line for line in lines if line]
    return out


def build_topic_dataset(lines_by_topic: dict | None = None, *, min_lines: int = MIN_LINES, merges: dict | None = None,
                        seed: int = data.DEFAULT_SEED, fractions=FRACTIONS) -> TopicDataset:
    """Deduplicated, conflict-free topic classification data with fixed splits.

    Args:
        lines_by_topic: ``{topic: [line, ...]}``; ``None`` reads the bundled corpus (:func:`topic_lines`).
        min_lines: Topics with fewer unique, unambiguous lines (after merging) are dropped.
        merges: ``{source_topic: target_topic}``; ``None`` means ``MERGES``.
        seed: Split seed (see :func:`topic_split`).
        fractions: Train, validation and test fractions.

    Returns:
        A :class:`TopicDataset`. Labels are the kept topics in alphabetical
        order; each split is sorted by text, then shuffled with ``seed`` (so a
        prefix is a random sample).

    Example:
        >>> ds = build_topic_dataset({"a": ["x", "y", "z"], "b": ["u", "v", "x"]}, min_lines=2)
        >>> ds.labels, ds.stats["conflicting"]
        (('a', 'b'), 1)
    """
    if lines_by_topic is None:
        lines_by_topic = topic_lines()
    if not isinstance(lines_by_topic, dict) or not lines_by_topic:
        raise ValueError(f"lines_by_topic must be a non-empty dict of topic -> list of lines; got {lines_by_topic!r:.80}")
    if isinstance(min_lines, bool) or not isinstance(min_lines, int) or min_lines < 1:
        raise ValueError(f"min_lines must be a positive integer; got {min_lines!r}")
    merges = dict(MERGES if merges is None else merges)
    if not isinstance(merges, dict) or any(target in merges for target in merges.values()):
        raise ValueError(f"merges must map source topics to target topics that are not merged themselves; got {merges!r}")
    fractions = _check_fractions(fractions)
    topic_split("", seed=seed)  # validates the seed

    raw, topics_of = {}, {}
    for topic, lines in lines_by_topic.items():
        if isinstance(lines, str) or not all(isinstance(line, str) for line in lines): raise ValueError(f"lines_by_topic[{topic!r}] must be a list of strings; got {lines!r:.80}")
        target = merges.get(topic, topic)
        raw[topic] = len(lines)
        for line in lines:
            text = line.strip()
            if text:
                topics_of.setdefault(text, set()).add(target)
    conflicting = sorted(t for t, ts in topics_of.items() if len(ts) > 1)
    unique = {}
    for text, ts in topics_of.items():
        if len(ts) == 1:
            topic = next(iter(ts))
            unique[topic] = unique.get(topic, 0) + 1
    kept = sorted(t for t, n in unique.items() if n >= min_lines)
    if len(kept) < 2:
        raise ValueError(f"min_lines={min_lines} leaves {len(kept)} topic(s) {kept}; at least 2 are needed")
    index = {topic: i for i, topic in enumerate(kept)}

    import random

    splits = {s: [] for s in data.SPLITS}
    for text in sorted(topics_of):  # sorted: independent of the order of the files
        ts = topics_of[text]
        if len(ts) == 1 and next(iter(ts)) in index:
            splits[topic_split(text, seed=seed, fractions=fractions)].append(data.Example(text, index[next(iter(ts))]))
    for split, rows in splits.items():
        random.Random(f"{seed}-topics-{split}").shuffle(rows)
    stats = {
        "raw_lines": raw,
        "merges": merges,
        "unique_lines": dict(sorted(unique.items())),
        "conflicting": len(conflicting),
        "conflicting_examples": conflicting[:5],
        "dropped_topics": {t: n for t, n in sorted(unique.items()) if t not in index},
        "split_sizes": {s: len(rows) for s, rows in splits.items()},
    }
    return TopicDataset(tuple(kept), splits, stats)


def label_counts(examples, num_classes: int) -> list[int]:
    """How many of ``examples`` carry each label ``0 .. num_classes - 1``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    counts = [0] * num_classes
    for ex in examples:
        if not 0 <= ex.label < num_classes:
            raise ValueError(f"examples must have labels in [0, {num_classes}); got {ex.label!r}")
        counts[ex.label] += 1
    return counts

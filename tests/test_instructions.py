"""Tests for llmft.instructions: answers from annotations, phrasings, splits, scoring."""

import collections

import pytest

from llmft import instructions as ins

TAGGED = [("江泽民", "nr"), ("在", "p"), ("北京", "ns"), ("会见", "v"), ("新华社", "nt"), ("记者", "n"), ("。", "w")]


def test_entities_answer_and_parse_round_trip():
    answer = ins.entities_answer(TAGGED)
    assert answer == "人名：江泽民；地名：北京；机构名：新华社"
    assert ins.parse_entities(answer) == {"PER": ["江泽民"], "LOC": ["北京"], "ORG": ["新华社"]}
    assert ins.entities_answer([("今天", "t"), ("好", "a")]) == "人名：无；地名：无；机构名：无"
    assert ins.parse_entities("人名：江泽民") is None and ins.parse_entities("地名：无；人名：无；机构名：无") is None


def test_clauses_split_after_sentence_punctuation():
    parts = ins.clauses(TAGGED + [("好", "a"), ("！", "w"), ("是", "v")])
    assert ["".join(w for w, _ in p) for p in parts] == ["江泽民在北京会见新华社记者。", "好！", "是"]


@pytest.fixture(scope="module")
def items():
    return {split: ins.build(split, per_task=300, seed=0) for split in ("train", "test")}


def test_every_task_is_built_with_answers_in_the_right_format(items):
    counts = collections.Counter(i.task for i in items["train"])
    assert set(counts) == set(ins.TASKS) and all(n > 0 for n in counts.values())
    for item in items["train"]:
        assert ins.valid_format(item.task, item.answer, item.source), item
        assert ins.score([item], [(item.answer, True)])[item.task]["exact_match"] == 1.0


def test_held_out_phrasings_never_appear_in_training(items):
    for task in ("sentiment", "entities", "segmentation"):
        held = ins.phrasings(task, "held_out")
        assert held and not set(held) & set(ins.phrasings(task, "train"))
        prefixes = [h.split("{text}")[0] for h in held]
        for item in items["train"]:
            if item.task == task:
                assert not any(p and item.messages[0][1].startswith(p) for p in prefixes)
    unseen = ins.build("test", per_task=20, which_phrasings="held_out", tasks=("sentiment",))
    assert all(i.messages[0][1] == ins.PHRASINGS["sentiment"][-1].format(text=i.source) for i in unseen)


def test_test_items_are_not_in_the_training_items(items):
    train_sources = {i.source for i in ins.build("train")}
    assert not {i.source for i in items["test"]} & train_sources


def test_build_is_deterministic_and_validates():
    a = ins.build("val", per_task=5, seed=3)
    assert a == ins.build("val", per_task=5, seed=3) and a != ins.build("val", per_task=5, seed=4)
    with pytest.raises(ValueError, match="split must be one of"):
        ins.build("dev")
    with pytest.raises(ValueError, match="per_task must be an integer"):
        ins.build("val", per_task=0)
    with pytest.raises(ValueError, match="tasks must be a non-empty subset"):
        ins.build("val", tasks=("poetry",))
    with pytest.raises(ValueError, match="which must be"):
        ins.phrasings("sentiment", "some")


def test_token_f1_counts_task_units():
    assert ins.token_f1("segmentation", "今天/天气/很好", "今天/天气/很/好") == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert ins.token_f1("entities", "人名：无；地名：北京；机构名：无", "人名：无；地名：北京；机构名：新华社") == pytest.approx(2 / 3)
    assert ins.token_f1("entities", "人名：无；地名：无；机构名：无", "人名：无；地名：无；机构名：无") == 1.0
    assert ins.token_f1("sentiment", "正面", "负面") == 0.0
    assert ins.token_f1("dialog", "你好", "你好吗") == pytest.approx(0.8)


def test_format_validity():
    assert ins.valid_format("segmentation", "今天/天气", "今天天气")
    assert not ins.valid_format("segmentation", "今天/天", "今天天气")  # dropped a character
    assert not ins.valid_format("sentiment", "还行", "x")
    assert not ins.valid_format("dialog", "你好", "x", finished=False)  # ran into the length cap


def test_score_means_and_lengths():
    got = ins.score([ins.Item("sentiment", "a", (("user", "a"), ("assistant", "正面")))] * 2,
                    [("正面", True), ("负面", True)])
    assert got["sentiment"] == {"exact_match": 0.5, "token_f1": 0.5, "format_valid": 1.0, "n": 2}
    assert got["mean"]["exact_match"] == 0.5
    with pytest.raises(ValueError, match="same length"):
        ins.score([], [("x", True)])


def test_exact_matches_per_item_ignore_whitespace_only():
    item = ins.Item("entities", "a", (("user", "a"), ("assistant", "人名：无；地名：北京；机构名：无")))
    replies = [("人名：无；地名： 北京；机构名：无", True), ("人名：无；地名：北；机构名：无", True)]
    assert ins.exact_matches([item, item], replies) == [True, False]
    with pytest.raises(ValueError, match="same length"):
        ins.exact_matches([item], replies)


def test_baselines_answer_by_rule_and_entities_are_mostly_named(items):
    test = items["test"]
    replies = ins.baseline_replies(items["train"], test)
    for item, (text, finished) in zip(test, replies):
        assert finished and ins.valid_format(item.task, text, item.source) or item.task == "dialog"
        if item.task == "segmentation":
            assert text.split("/") == list(item.source)
        if item.task == "entities":
            assert text == "人名：无；地名：无；机构名：无"
    majority = collections.Counter(i.answer for i in items["train"] if i.task == "sentiment").most_common(1)[0][0]
    assert {t for i, (t, _) in zip(test, replies) if i.task == "sentiment"} == {majority}
    # Sentences without names are subsampled, so "无" everywhere is right for a minority only.
    entity_items = [i for i in test if i.task == "entities"]
    none_share = sum(i.answer == "人名：无；地名：无；机构名：无" for i in entity_items) / len(entity_items)
    assert 0.1 < none_share < 0.5

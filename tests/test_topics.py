"""Topic classification data (chapter 6.1): dedup, conflicts, merges, splits."""

import pytest

from llmft import data, topics


def test_bundled_dataset_is_deduplicated_and_conflict_free():
    ds = topics.build_topic_dataset()
    texts = [ex.text for s in data.SPLITS for ex in ds.splits[s]]
    assert len(texts) == len(set(texts))  # no line twice, not even across splits
    assert ds.stats["conflicting"] >= 1 and "你疯了" in ds.stats["conflicting_examples"]
    assert "你疯了" not in set(texts)
    assert sum(ds.stats["split_sizes"].values()) == len(texts)
    # greetings are merged into conversations, tiny topics dropped
    assert "greetings" not in ds.labels and "conversations" in ds.labels
    assert set(ds.stats["dropped_topics"]) >= {"food", "history"}
    assert all(n < topics.MIN_LINES for n in ds.stats["dropped_topics"].values())
    for s in data.SPLITS:
        counts = topics.label_counts(ds.splits[s], len(ds.labels))
        assert all(c > 0 for c in counts), (s, counts)
    assert len(ds.display_labels) == len(ds.labels) and "人工智能" in ds.display_labels


def test_every_line_keeps_its_topic_label():
    lines = topics.topic_lines()
    ds = topics.build_topic_dataset(lines)
    source_topics = {}
    for topic, rows in lines.items():
        for line in rows:
            source_topics.setdefault(line, set()).add(topics.MERGES.get(topic, topic))
    for ex in ds.splits["test"]:
        assert source_topics[ex.text] == {ds.labels[ex.label]}


def test_split_is_by_text_hash_and_stable():
    ds = topics.build_topic_dataset()
    for s in data.SPLITS:
        assert all(topics.topic_split(ex.text) == s for ex in ds.splits[s])
    again = topics.build_topic_dataset({k: v[::-1] for k, v in reversed(topics.topic_lines().items())})
    assert again.splits == ds.splits  # file and line order do not matter
    sizes = ds.stats["split_sizes"]
    assert 0.5 < sizes["train"] / sum(sizes.values()) < 0.7
    other = topics.build_topic_dataset(seed=7)
    assert {e.text for e in other.splits["test"]} != {e.text for e in ds.splits["test"]}


def test_tiny_synthetic_corpus():
    lines = {"a": ["x", "y", "z", "z ", ""], "b": ["u", "v", "x"], "c": ["w"], "d": ["p", "q"]}
    ds = topics.build_topic_dataset(lines, min_lines=2, merges={"d": "b"})
    assert ds.labels == ("a", "b")
    assert ds.stats["unique_lines"] == {"a": 2, "b": 4, "c": 1}  # "x" is in a and b: dropped
    assert ds.stats["conflicting"] == 1 and ds.stats["dropped_topics"] == {"c": 1}
    got = sorted((ex.text, ds.labels[ex.label]) for s in data.SPLITS for ex in ds.splits[s])
    assert got == [("p", "b"), ("q", "b"), ("u", "b"), ("v", "b"), ("y", "a"), ("z", "a")]


@pytest.mark.parametrize("kwargs, match", [
    ({"lines_by_topic": {}}, "lines_by_topic"),
    ({"lines_by_topic": {"a": "xyz"}}, "lines_by_topic"),
    ({"min_lines": 0}, "min_lines"),
    ({"min_lines": 10_000}, "min_lines"),
    ({"merges": {"a": "b", "b": "c"}}, "merges"),
    ({"fractions": (0.5, 0.5)}, "fractions"),
    ({"fractions": (0.5, 0.3, 0.3)}, "fractions"),
    ({"seed": -1}, "seed"),
])
def test_bad_arguments(kwargs, match):
    kwargs.setdefault("lines_by_topic", {"a": ["x", "y"], "b": ["u", "v"]})
    kwargs.setdefault("min_lines", 1)
    with pytest.raises(ValueError, match=match):
        topics.build_topic_dataset(**kwargs)


def test_topic_split_and_label_counts_validate():
    with pytest.raises(ValueError, match="text"):
        topics.topic_split(3)
    with pytest.raises(ValueError, match="num_classes"):
        topics.label_counts([], 0)
    with pytest.raises(ValueError, match="labels"):
        topics.label_counts([data.Example("x", 3)], 2)
    assert topics.label_counts([data.Example("x", 1), data.Example("y", 1)], 3) == [0, 2, 0]

"""Tests for llmft.sft: template, loss mask, batches, training, replies."""

import keras
import numpy as np
import pytest

from llmft import gpt, sft, tokenizers
from llmft.tokenizers import CharTokenizer

TOK = CharTokenizer.train(["你好今天天气很好。谢谢再见！是吗正面负面"])
END = TOK.token_to_id(tokenizers.END_OF_TURN)
ROLE_IDS = {TOK.token_to_id(t) for t in sft.ROLE_TOKENS.values()}
CONVERSATION = [("system", "你好"), ("user", "今天天气"), ("assistant", "很好。"), ("user", "是吗"),
                ("assistant", "是！")]


def _tiny_model(context_length=32, seed=0):
    keras.utils.set_random_seed(seed)
    return gpt.GPT(vocab_size=TOK.vocab_size, context_length=context_length, num_layers=1, num_heads=2,
                   hidden_dim=16)


def test_template_round_trip():
    ids, weights = sft.encode_chat(TOK, CONVERSATION)
    assert sft.decode_chat(TOK, ids) == CONVERSATION
    assert len(ids) == len(weights)
    # Layout: role token, content, <|end|> for every message.
    assert ids[0] == TOK.token_to_id(tokenizers.SYSTEM) and ids[3] == END


def test_mask_covers_exactly_the_assistant_tokens():
    ids, weights = sft.encode_chat(TOK, CONVERSATION)
    expected = []
    for role, text in CONVERSATION:
        expected += [0.0] + [float(role == "assistant")] * (len(text) + 1)
    np.testing.assert_array_equal(weights, expected)
    # No role token ever counts; every assistant <|end|> does (the model learns to stop).
    assert all(weights[i] == 0 for i, t in enumerate(ids) if t in ROLE_IDS)
    ends = [i for i, t in enumerate(ids) if t == END]
    assert [weights[i] for i in ends] == [0.0, 0.0, 1.0, 0.0, 1.0]


def test_prompt_for_generation_ends_with_the_assistant_role():
    ids, weights = sft.encode_chat(TOK, CONVERSATION[:2], for_training=False)
    assert ids[-1] == TOK.token_to_id(tokenizers.ASSISTANT) and weights.sum() == 0


@pytest.mark.parametrize("messages, match", [
    ([], "non-empty"),
    ("你好", "non-empty"),
    ([("user", "你好")], "end with a 'assistant'"),
    ([("assistant", "你好")], r"messages\[0\] role must be 'user'"),
    ([("user", "a"), ("user", "b")], r"messages\[1\] role must be 'assistant'"),
    ([("user", "a"), ("assistant", "b"), ("system", "c")], r"messages\[2\] role must be 'user'"),
    ([("system", "你好")], "only a system"),
    ([("robot", "你好")], "role must be one of"),
    ([("user", "")], "non-empty string"),
    ([("user",)], r"\(role, text\) pair"),
])
def test_malformed_conversations_are_rejected(messages, match):
    with pytest.raises(ValueError, match=match):
        sft.encode_chat(TOK, messages)


def test_too_long_for_the_context_is_rejected_not_cut():
    with pytest.raises(ValueError, match="more than max_length=8"):
        sft.encode_chat(TOK, CONVERSATION, max_length=8)
    with pytest.raises(ValueError, match=r"encoded\[0\] must hold"):
        sft.training_arrays([sft.encode_chat(TOK, CONVERSATION)], context_length=8)


def test_training_arrays_shift_and_weigh_targets():
    encoded = [sft.encode_chat(TOK, CONVERSATION[1:3]), sft.encode_chat(TOK, CONVERSATION[1:])]
    x, y, w = sft.training_arrays(encoded, context_length=24)
    for i, (ids, weights) in enumerate(encoded):
        t = len(ids) - 1
        np.testing.assert_array_equal(x[i, :t], ids[:-1])
        np.testing.assert_array_equal(y[i, :t], ids[1:])
        np.testing.assert_array_equal(w[i, :t], weights[1:])
        assert not w[i, t:].any() and not x[i, t:].any()  # padding never counts
    # A target is weighted iff it is an assistant token: never a role token or the user's text.
    assert set(np.unique(y[w > 0])) <= set(TOK.encode("很好。是！")) | {END}
    _, _, w_all = sft.training_arrays(encoded, context_length=24, mask_prompt=False)
    assert w_all.sum() == sum(len(ids) - 1 for ids, _ in encoded)


def test_masked_loss_matches_a_hand_computation():
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    targets = np.array([[0, 1, 2]])
    weights = np.array([[1.0, 0.0, 1.0]])
    hand = (-np.log(0.5) - np.log(1 / 3)) / 2  # the middle token is prompt: it weighs 0
    assert sft.masked_loss(logits, targets, weights) == pytest.approx(hand)
    with pytest.raises(ValueError, match="positive sum"):
        sft.masked_loss(logits, targets, np.zeros((1, 3)))


def test_keras_sample_weight_loss_equals_masked_loss():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype("float32")
    targets = rng.integers(0, 7, (3, 5))
    weights = (rng.random((3, 5)) > 0.5).astype("float32")
    keras_value = float(sft.sft_loss()(targets, logits, sample_weight=weights))
    assert keras_value == pytest.approx(sft.masked_loss(logits, targets, weights), rel=1e-5)


def test_answer_loss_weighs_every_answer_token_once_whatever_the_batching():
    encoded = [sft.encode_chat(TOK, CONVERSATION[1:3]), sft.encode_chat(TOK, CONVERSATION[1:]),
               sft.encode_chat(TOK, [("user", "你好"), ("assistant", "谢谢再见！")])]
    x, y, w = sft.training_arrays(encoded, context_length=24)
    model = _tiny_model(context_length=24)
    whole = sft.masked_loss(model(x), y, w)
    for batch_size in (1, 2, 3):
        assert sft.answer_loss(model, x, y, w, batch_size=batch_size) == pytest.approx(whole, rel=1e-5)
    # A mean of per-batch means would differ: the rows hold different numbers of answer tokens.
    per_row = np.mean([sft.masked_loss(model(x[i:i + 1]), y[i:i + 1], w[i:i + 1]) for i in range(3)])
    assert abs(per_row - whole) > 1e-4
    with pytest.raises(ValueError, match="positive sum"):
        sft.answer_loss(model, x, y, np.zeros_like(w))
    with pytest.raises(ValueError, match="one shape"):
        sft.answer_loss(model, x, y[:2], w)
    with pytest.raises(ValueError, match="batch_size must be"):
        sft.answer_loss(model, x, y, w, batch_size=0)


def test_bucketed_batches_keep_one_conversation_per_row():
    encoded = [sft.encode_chat(TOK, CONVERSATION[1:3])] * 5 + [sft.encode_chat(TOK, CONVERSATION[1:])] * 5
    originals = {tuple(ids) for ids, _ in encoded}
    x, y, w = sft.training_arrays(encoded, context_length=32)
    seen = 0
    for xb, yb, wb in sft.sft_batches(x, y, w, batch_size=4, shuffle=True, multiple=4):
        xb, yb, wb = np.asarray(xb), np.asarray(yb), np.asarray(wb)
        assert xb.shape[1] % 4 == 0 and xb.shape[1] <= 32
        for row_x, row_y, row_w in zip(xb, yb, wb):
            n = int((row_x != 0).sum())
            # Each row is exactly one whole conversation from position 0: no packing,
            # so no token can attend to another example.
            assert tuple(row_x[:n]) + (row_y[n - 1],) in originals
            assert not row_w[n:].any()
        seen += len(xb)
    assert seen == len(x)
    lengths = sorted({len(ids) - 1 for ids, _ in encoded})
    assert sft.padding_share(x, batch_size=5, multiple=1) == pytest.approx(0.0)  # buckets of equal length
    assert sft.padding_share(x, batch_size=10, multiple=1) == pytest.approx(1 - sum(lengths) * 5 / (10 * lengths[1]))


def test_sft_learns_and_replies_stop_at_end_of_turn():
    pairs = [("你好", "你好！"), ("谢谢", "再见。"), ("是吗", "是！"), ("今天", "天气很好。")]
    encoded = [sft.encode_chat(TOK, [("user", q), ("assistant", a)]) for q, a in pairs] * 8
    x, y, w = sft.training_arrays(encoded, context_length=16)
    model = _tiny_model(context_length=16)
    data = sft.sft_batches(x, y, w, batch_size=8, shuffle=True)
    rows = sft.fit_sft(model, data, data, epochs=40, learning_rate=3e-2, steps_per_epoch=4, verbose=False)
    assert rows[-1]["val_loss"] < 0.1 * rows[0]["loss"]
    replies = sft.generate_replies(model, TOK, [[("user", q)] for q, _ in pairs], max_new_tokens=10)
    assert [r for r, _ in replies] == [a for _, a in pairs]
    assert all(finished for _, finished in replies)  # stopped at <|end|>, not at the cap
    assert sft.reply(model, TOK, [("user", "谢谢")]) == "再见。"


def test_replies_do_not_depend_on_which_prompts_share_the_batch():
    # Prompts of many lengths near a 16-token context stop at different steps (at the
    # context limit or at max_new_tokens), so with 3 rows each finished row takes the next
    # prompt while the others are mid-reply; every reply must equal the prompt decoded alone.
    model = _tiny_model(context_length=16, seed=3)
    words = "你好今天天气很好谢谢再见是吗"
    prompts = [[("user", words[:n])] for n in (9, 1, 6, 12, 3, 8, 2, 11, 5)]
    together = sft.generate_replies(model, TOK, prompts, max_new_tokens=6, batch_size=3)
    alone = [sft.generate_replies(model, TOK, [p], max_new_tokens=6)[0] for p in prompts]
    assert together == alone
    lengths = {len(TOK.encode(text)) for text, _ in together}
    assert len(lengths) > 2  # rows did finish at different steps
    assert sft.generate_replies(model, TOK, [], max_new_tokens=6) == []


def test_replies_respect_max_new_tokens_and_the_context():
    model = _tiny_model(context_length=12)
    (text, finished), = sft.generate_replies(model, TOK, [[("user", "你好")]], max_new_tokens=3)
    assert len(TOK.encode(text)) <= 3
    with pytest.raises(ValueError, match="no room for a reply"):
        sft.generate_replies(model, TOK, [[("user", "今天天气很好今天天气很好")]], max_new_tokens=3)


def test_weighted_tokens_html_marks_counted_tokens():
    from llmft import notebook

    ids, weights = sft.encode_chat(TOK, CONVERSATION[1:3])
    page = notebook.weighted_tokens_html([TOK.id_to_token(int(i)) for i in ids], weights)
    assert page.count("#c8e6c9") == int(weights.sum()) == len("很好。") + 1
    assert "&lt;|user|&gt;" in page  # role tokens are escaped, not parsed as HTML
    with pytest.raises(ValueError, match="same length"):
        notebook.weighted_tokens_html(["a"], [1, 0])

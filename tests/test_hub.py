"""llmft.hub: the SFT path on a tiny, randomly initialised KerasHub Gemma 3 (offline)."""

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

from llmft import data, hub, instructions, sft  # noqa: E402

CONVERSATION = [("system", "你是助手。"), ("user", "情感？房间干净"), ("assistant", "正面"),
                ("user", "谢谢"), ("assistant", "不客气。")]
SIZES = {k: hub.TINY_GEMMA3[k] for k in ("num_layers", "hidden_dim", "intermediate_dim", "num_query_heads",
                                         "num_key_value_heads", "head_dim")}


@pytest.fixture(scope="module")
def tok():
    texts = [e.text for e in data.load_reviews("train")[:400]]
    return hub.train_tiny_tokenizer(texts + [m for _, m in CONVERSATION], vocab_size=2500)


@pytest.fixture(scope="module")
def preset(tok, tmp_path_factory):
    return hub.save_preset(hub.tiny_causal_lm(tok), tok, tmp_path_factory.mktemp("tiny_gemma3"))


def logits(model, ids, pad=0):
    ids = np.asarray(ids, "int32")
    return np.asarray(model({"token_ids": ids, "padding_mask": ids != pad}))


# ---------------------------------------------------------------------------
# Chat formats
# ---------------------------------------------------------------------------

def test_render_chat_follows_each_family_template():
    short = [("user", "你好"), ("assistant", "你好！")]
    assert hub.render_chat(short, "gemma") == (
        "<bos><start_of_turn>user\n你好<end_of_turn>\n<start_of_turn>model\n你好！<end_of_turn>\n")
    assert hub.render_chat(short, "chatml") == (
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n你好！<|im_end|>\n")
    assert hub.render_chat(short, "llama3") == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n你好<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n你好！<|eot_id|>")
    # Gemma has no system role: the system text goes before the first user text.
    assert hub.render_chat([("system", "S"), ("user", "U")], "gemma", for_training=False) == (
        "<bos><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n")
    assert hub.render_chat([("system", "S"), ("user", "U")], "chatml", for_training=False).startswith(
        "<|im_start|>system\nS<|im_end|>\n")


def test_chat_format_and_family_errors_name_the_argument():
    with pytest.raises(ValueError, match="chat_format"):
        hub.render_chat([("user", "a"), ("assistant", "b")], "alpaca")
    with pytest.raises(ValueError, match="messages"):
        hub.render_chat([("user", "a"), ("user", "b")], "gemma")
    with pytest.raises(ValueError, match="family"):
        hub.family("gpt5")


def test_encode_chat_weights_only_the_assistant_and_its_end_of_turn(tok):
    ids, weights = hub.encode_chat(tok, CONVERSATION, chat_format="gemma")
    strings = hub.token_strings(tok, ids)
    spoken = "".join(s for s, w in zip(strings, weights) if w > 0)
    assert spoken == "正面<end_of_turn>不客气。<end_of_turn>"
    assert strings[0] == "<bos>" and strings.count("<start_of_turn>") == 4
    # The tokens are the rendered template, piece by piece (the decoder drops <bos>).
    assert hub.decode(tok, ids) == hub.render_chat(CONVERSATION, "gemma").removeprefix("<bos>")
    prompt, w = hub.encode_chat(tok, CONVERSATION[:2], chat_format="gemma", for_training=False)
    assert hub.token_strings(tok, prompt)[-3:] == ["<start_of_turn>", "model", "\n"] and w.sum() == 0


def test_encode_chat_rejects_long_conversations_and_foreign_formats(tok):
    with pytest.raises(ValueError, match="max_length=8"):
        hub.encode_chat(tok, CONVERSATION, chat_format="gemma", max_length=8)
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        hub.encode_chat(tok, CONVERSATION, chat_format="chatml")


def test_training_arrays_pad_with_the_family_pad_token(tok):
    items = [instructions.Item("dialog", "x", (("user", "你好"), ("assistant", "好"))),
             instructions.Item("dialog", "y", tuple(CONVERSATION[1:3])),
             instructions.Item("dialog", "z", (("user", "很长" * 40), ("assistant", "好")))]
    kept, encoded, dropped = hub.encode_items(tok, items, chat_format="gemma", context_length=24)
    assert [i.source for i in kept] == ["x", "y"] and dropped == {"dialog": 1}
    x, y, w = hub.training_arrays(tok, encoded, chat_format="gemma", context_length=24)
    pad = hub.pad_id(tok, "gemma")
    assert (x[:, -1] == pad).all() and (w[x == pad] == 0).all()
    np.testing.assert_array_equal(x[1, :len(encoded[1][0]) - 1], encoded[1][0][:-1])
    # sft.training_arrays honours any pad id, and sft_batches finds lengths with it.
    x7, _, _ = sft.training_arrays(encoded, context_length=24, pad_id=7)
    assert (x7[:, -1] == 7).all()
    (batch, yb, wb), = list(hub.sft_batches(x, y, w, pad=pad, batch_size=2, multiple=8).as_numpy_iterator())
    assert set(batch) == {"token_ids", "padding_mask"} and batch["token_ids"].shape[1] % 8 == 0
    np.testing.assert_array_equal(batch["padding_mask"], batch["token_ids"] != pad)
    with pytest.raises(ValueError, match="pad_id"):
        sft.training_arrays(encoded, context_length=24, pad_id=-1)


# ---------------------------------------------------------------------------
# Model, LoRA, counts
# ---------------------------------------------------------------------------

def test_param_counts_match_the_real_backbone_and_the_1b_preset(tok, preset):
    model, _ = hub.load_causal_lm(preset)
    counts = hub.gemma3_param_counts(vocabulary_size=tok.vocabulary_size(), **SIZES, lora_rank=4,
                                     lora_targets=hub.GEMMA3_PROJECTIONS)
    assert counts["total"] == model.backbone.count_params()
    before = logits(model, [[2, 5, 6, 7, 0, 0]])
    info = hub.enable_lora(model, 4, target_layer_names=list(hub.GEMMA3_PROJECTIONS))
    assert info["trainable"] == counts["lora"] == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert all("lora_kernel" in w.path for w in model.trainable_weights)
    assert info["layers"] == 7 * SIZES["num_layers"] and info["total"] == counts["total"] + counts["lora"]
    np.testing.assert_allclose(logits(model, [[2, 5, 6, 7, 0, 0]]), before, atol=1e-6)  # B = 0
    # The 1B preset's sizes (Gemma 3 report) give exactly the parameter count KerasHub lists for it.
    gemma3_1b = dict(vocabulary_size=262144, num_layers=26, hidden_dim=1152, intermediate_dim=6912,
                     num_query_heads=4, num_key_value_heads=1, head_dim=256)
    listed = hub.listed_params("gemma3_instruct_1b")
    assert listed == keras_hub.models.Gemma3Backbone.presets["gemma3_instruct_1b"]["metadata"]["params"]
    with pytest.raises(ValueError, match="preset"):
        hub.listed_params("gemma3_giant")
    assert hub.gemma3_param_counts(**gemma3_1b)["total"] == listed
    with pytest.raises(ValueError, match="lora_targets"):
        hub.gemma3_param_counts(**gemma3_1b, lora_rank=4, lora_targets=("qkv",))
    with pytest.raises(ValueError, match="rank"):
        hub.enable_lora(model, 0)


def test_lora_time_estimate():
    est = hub.lora_time_estimate(10**9, 10**6, peak_flops=1e14, utilization=0.5)
    assert est["flops"] == 4e15 and est["seconds"] == pytest.approx(80.0)
    for kwargs in ({"peak_flops": 0}, {"peak_flops": 1e14, "utilization": 1.5}):
        with pytest.raises(ValueError):
            hub.lora_time_estimate(10**9, 10**6, **kwargs)
    with pytest.raises(ValueError, match="tokens"):
        hub.lora_time_estimate(10**9, 0, peak_flops=1e14)


def test_tiny_tokenizer_and_loader_validate_inputs():
    with pytest.raises(ValueError, match="family_name"):
        hub.train_tiny_tokenizer(["你好"], family_name="qwen")
    with pytest.raises(ValueError, match="texts"):
        hub.train_tiny_tokenizer([], vocab_size=500)
    with pytest.raises(ValueError, match="vocab_size=300"):
        hub.train_tiny_tokenizer([e.text for e in data.load_reviews("train")[:100]], vocab_size=300)
    with pytest.raises(ValueError, match="preset"):
        hub.load_causal_lm("")


# ---------------------------------------------------------------------------
# The whole path: LoRA SFT steps, save/load, generation that stops
# ---------------------------------------------------------------------------

def test_lora_sft_learns_saves_reloads_and_stops_at_end_of_turn(tok, preset, tmp_path):
    model, tok2 = hub.load_causal_lm(preset)
    hub.enable_lora(model, 4, target_layer_names=list(hub.GEMMA3_PROJECTIONS))
    train = [[("user", "情感？房间干净"), ("assistant", "正面")], [("user", "情感？太差了"), ("assistant", "负面")]]
    encoded = [hub.encode_chat(tok2, m, chat_format="gemma") for m in train]
    x, y, w = hub.training_arrays(tok2, encoded, chat_format="gemma", context_length=32)
    pad = hub.pad_id(tok2, "gemma")
    batches = hub.sft_batches(x, y, w, pad=pad, batch_size=2)
    rows = sft.fit_sft(model, batches, batches, epochs=30, learning_rate=3e-2, steps_per_epoch=1,
                       warmup_fraction=0.0, verbose=False, jit_compile=False)
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"] and rows[-1]["val_loss"] is not None
    replies = hub.generate_replies(model, tok2, [m[:1] for m in train], chat_format="gemma", max_new_tokens=6,
                                   jit_compile=False)
    assert replies == [("正面", True), ("负面", True)]
    prompts = [m[:1] for m in train] * 2 + [train[0][:1]]  # 5 prompts: the last batch of 2 is filled up
    assert hub.generate_replies(model, tok2, prompts, chat_format="gemma", max_new_tokens=6, batch_size=2,
                                jit_compile=False) == replies * 2 + replies[:1]

    # Save the adapter only; a fresh copy of the base model plus the adapter gives the same outputs.
    path = tmp_path / "adapter.lora.h5"
    model.backbone.save_lora_weights(str(path))
    fresh, _ = hub.load_causal_lm(preset)
    assert not np.allclose(logits(fresh, x, pad), logits(model, x, pad))
    hub.load_adapter(fresh, path, rank=4, target_layer_names=list(hub.GEMMA3_PROJECTIONS))
    np.testing.assert_allclose(logits(fresh, x, pad), logits(model, x, pad), atol=1e-5)

    with pytest.raises(ValueError, match="path"):
        hub.load_adapter(fresh, tmp_path / "missing.lora.h5", rank=4)

    # Unfinished replies are cut at max_new_tokens and say so.
    untrained, _ = hub.load_causal_lm(preset)
    (text, finished), = hub.generate_replies(untrained, tok2, [[("user", "你好")]], chat_format="gemma",
                                             max_new_tokens=2, jit_compile=False)
    with pytest.raises(ValueError, match="prompts"):
        hub.generate_replies(untrained, tok2, [], chat_format="gemma", max_new_tokens=2)
    with pytest.raises(ValueError, match="jit_compile"):
        hub.generate_replies(untrained, tok2, [[("user", "你好")]], chat_format="gemma", max_new_tokens=2,
                             jit_compile="yes")
    assert not finished and isinstance(text, str)

"""The book's SFT recipe on KerasHub causal language models (Gemma, Qwen, Llama).

Chapter 6.4 fine-tunes the book's own GPT with a chat template, a loss mask
on the assistant's tokens, length-bucketed batches and greedy replies that
stop at the end of the turn (:mod:`llmft.sft`). A real open model needs the
same four things, with two differences:

1. **its own chat format.** Each family was instruction-tuned with its own
   markers, and fine-tuning must use them: Gemma writes
   ``<start_of_turn>user\\n...<end_of_turn>\\n<start_of_turn>model\\n``,
   Qwen uses ChatML (``<|im_start|>user\\n...<|im_end|>``), Llama 3 uses
   ``<|start_header_id|>user<|end_header_id|>\\n\\n...<|eot_id|>``.
   :class:`ChatFormat` holds these strings; :func:`encode_chat` turns a
   conversation (checked by :func:`llmft.sft.check_messages`) into token ids
   and the same loss weights as :func:`llmft.sft.encode_chat`: 1 on the
   assistant's content and on the marker that ends its turn, 0 elsewhere.
2. **its own tokenizer and model classes**, loaded from a KerasHub preset
   (:func:`load_causal_lm`). A KerasHub model takes a dict of ``token_ids``
   and ``padding_mask``; :func:`sft_batches` wraps :func:`llmft.sft.sft_batches`
   to give it one.

Everything else is reused unchanged: :func:`llmft.sft.training_arrays`
(inputs, shifted targets, weights), :func:`llmft.sft.fit_sft` (AdamW with
warmup and cosine decay, masked loss), and the instruction data and scoring
of :mod:`llmft.instructions`. LoRA is KerasHub's own ``backbone.enable_lora``
(:func:`enable_lora` adds a count of what it made trainable).

Presets cannot be downloaded offline, so tests and the ``cpu``/``smoke``
runs of the appendix use a randomly initialised tiny backbone of the same
class, with a SentencePiece vocabulary trained in-process on the book's own
Chinese text (:func:`train_tiny_tokenizer`, :func:`tiny_causal_lm`), saved
as a local preset directory and loaded back with :func:`load_causal_lm`,
the same call that loads ``"gemma3_instruct_1b"`` on a GPU. Tested end to
end offline: the Gemma 3 family. The ChatML and Llama 3 formats are
checked on their templates only.

Introduced in the appendix on fine-tuning open models.
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np

from llmft import sft
from llmft.checks import check_int

# ---------------------------------------------------------------------------
# 1. Chat formats
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChatFormat:
    """The strings a model family's chat template puts around each turn.

    A turn is ``turn_start + role_names[role] + header_end + text + end_of_turn
    + after_end``; the conversation starts with ``begin``. Strings listed in
    ``specials`` are single tokens of the family's vocabulary and are looked
    up by :func:`encode_chat` with ``token_to_id``; the rest is tokenized.

    Args:
        name: short name (``"gemma"``, ``"chatml"``, ``"llama3"``).
        begin: special token that opens a conversation (``""`` for none).
        turn_start: special token that opens a turn.
        role_names: what each of ``system``/``user``/``assistant`` is called.
        header_end: text (or special token plus text) between role and content.
        end_of_turn: special token that closes a turn; the model learns to
            emit it and generation stops at it.
        after_end: text after ``end_of_turn`` (not learned).
        pad_token: special token used for padding; it must never occur inside
            a conversation, since padding is found by comparing with its id.
        system_in_user: the family has no system role; the system text is put
            before the first user text, separated by a blank line (Gemma).

    Example:
        >>> FORMATS["gemma"].end_of_turn
        '<end_of_turn>'
    """

    name: str
    begin: str
    turn_start: str
    role_names: dict
    header_end: tuple
    end_of_turn: str
    after_end: str
    pad_token: str
    system_in_user: bool = False

    @property
    def specials(self) -> frozenset:
        """The strings of this format that are one token each."""
        marks = {self.begin, self.turn_start, self.end_of_turn, self.pad_token}
        return frozenset(m for m in marks | {p for p in self.header_end if p.startswith("<")} if m)


FORMATS = {
    # Gemma 2/3 (Gemma Team, 2025, "Gemma 3 Technical Report"): the assistant is called "model", no system role.
    "gemma": ChatFormat("gemma", "<bos>", "<start_of_turn>", {"user": "user", "assistant": "model"},
                        ("\n",), "<end_of_turn>", "\n", "<pad>", system_in_user=True),
    # ChatML, as used by Qwen 2 / 2.5.
    "chatml": ChatFormat("chatml", "", "<|im_start|>", {"system": "system", "user": "user", "assistant": "assistant"},
                         ("\n",), "<|im_end|>", "\n", "<|endoftext|>"),
    # Llama 3 / 3.1 / 3.2.
    "llama3": ChatFormat("llama3", "<|begin_of_text|>", "<|start_header_id|>",
                         {"system": "system", "user": "user", "assistant": "assistant"},
                         ("<|end_header_id|>", "\n\n"), "<|eot_id|>", "", "<|end_of_text|>"),
}


@dataclasses.dataclass(frozen=True)
class Family:
    """The KerasHub classes of one model family and its chat format.

    Args:
        causal_lm: name of the ``keras_hub.models`` CausalLM class.
        backbone: name of its Backbone class.
        tokenizer: name of its Tokenizer class.
        chat_format: key of ``FORMATS``.
        presets: small instruction-tuned presets that fit a free Colab GPU.
    """

    causal_lm: str
    backbone: str
    tokenizer: str
    chat_format: str
    presets: tuple


FAMILIES = {
    "gemma3": Family("Gemma3CausalLM", "Gemma3Backbone", "Gemma3Tokenizer", "gemma", ("gemma3_instruct_1b",)),
    "qwen": Family("QwenCausalLM", "QwenBackbone", "QwenTokenizer", "chatml", ("qwen2.5_instruct_0.5b_en",)),
    "llama3": Family("Llama3CausalLM", "Llama3Backbone", "Llama3Tokenizer", "llama3", ("llama3.2_instruct_1b",)),
}


def family(name: str) -> Family:
    """The :class:`Family` called ``name`` (a key of ``FAMILIES``)."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}; got {name!r}")
    return FAMILIES[name]


def _chat_format(chat_format) -> ChatFormat:
    if isinstance(chat_format, ChatFormat):
        return chat_format
    if isinstance(chat_format, str) and chat_format in FORMATS:
        return FORMATS[chat_format]
    raise ValueError(f"chat_format must be a ChatFormat or one of {sorted(FORMATS)}; got {chat_format!r}")


def _pieces(messages, fmt, for_training):
    """The conversation as ``(string, weight)`` pieces, in order (the template in one place)."""
    messages = sft.check_messages(messages, for_training=for_training)
    if fmt.system_in_user and messages[0][0] == "system":
        (_, system), (_, first), *rest = messages
        messages = [("user", f"{system}\n\n{first}"), *rest]
    out = [(fmt.begin, 0.0)] if fmt.begin else []

    def header(role):
        return [(fmt.turn_start, 0.0), (fmt.role_names[role], 0.0)] + [(p, 0.0) for p in fmt.header_end]

    for role, text in messages:
        spoken = 1.0 if role == "assistant" else 0.0
        out += header(role) + [(text, spoken), (fmt.end_of_turn, spoken)]
        if fmt.after_end:
            out.append((fmt.after_end, 0.0))
    if not for_training:
        out += header("assistant")
    return out


def render_chat(messages, chat_format, *, for_training=True) -> str:
    """The conversation as the one string the family's chat template produces.

    Args:
        messages: ``[(role, text), ...]`` (see :func:`llmft.sft.check_messages`).
        chat_format: a :class:`ChatFormat` or a key of ``FORMATS``.
        for_training: ``False`` ends with the assistant's header, ready for generation.

    Example:
        >>> render_chat([("user", "你好"), ("assistant", "你好！")], "chatml")
        '<|im_start|>user\\n你好<|im_end|>\\n<|im_start|>assistant\\n你好！<|im_end|>\\n'
    """
    return "".join(s for s, _ in _pieces(messages, _chat_format(chat_format), for_training))


def _token_lists(tokenizer, texts):
    out = tokenizer.tokenize(list(texts))
    out = out.to_list() if hasattr(out, "to_list") else out
    return [[int(t) for t in np.asarray(ids).reshape(-1)] for ids in out]


def special_id(tokenizer, token: str) -> int:
    """Id of a special token; ``ValueError`` if the vocabulary lacks it."""
    try:
        idx = tokenizer.token_to_id(token)
    except (KeyError, ValueError) as err:
        raise ValueError(f"token {token!r} is not in the tokenizer's vocabulary") from err
    if idx is None or int(idx) < 0 or tokenizer.id_to_token(int(idx)) != token:
        raise ValueError(f"token {token!r} is not in the tokenizer's vocabulary; got id {idx!r}")
    return int(idx)


def encode_chat(tokenizer, messages, *, chat_format, max_length=None, for_training=True):
    """Token ids and loss weights of a conversation in the family's chat format.

    The counterpart of :func:`llmft.sft.encode_chat` for a KerasHub tokenizer:
    the weights are 1 on the assistant's content tokens and on the
    ``end_of_turn`` token that closes its turn, 0 on everything else. Each
    piece of the template is tokenized on its own, so a token never spans the
    boundary between a marker and the text, and the mask is exact.

    Args:
        tokenizer: a KerasHub tokenizer of the family (it has the format's special tokens).
        messages: ``[(role, text), ...]`` (see :func:`llmft.sft.check_messages`).
        chat_format: a :class:`ChatFormat` or a key of ``FORMATS``.
        max_length: a longer conversation raises ``ValueError`` (never cut silently).
        for_training: ``False`` ends with the assistant's header, ready for generation.

    Returns:
        ``(ids, weights)``: two 1-D arrays of the same length.
    """
    fmt = _chat_format(chat_format)
    pieces = _pieces(messages, fmt, for_training)
    specials = {s: special_id(tokenizer, s) for s in sorted(fmt.specials)}
    texts = [s for s, _ in pieces if s not in specials]
    tokenized = iter(_token_lists(tokenizer, texts)) if texts else iter(())
    ids, weights = [], []
    for s, weight in pieces:
        part = [specials[s]] if s in specials else next(tokenized)
        ids += part
        weights += [weight] * len(part)
    if max_length is not None and len(ids) > check_int("max_length", max_length):
        raise ValueError(f"messages encode to {len(ids)} tokens, more than max_length={max_length}")
    return np.asarray(ids, "int32"), np.asarray(weights, "float32")


def decode(tokenizer, ids) -> str:
    """Text of a list of token ids (a Python ``str`` on every backend)."""
    ids = [int(t) for t in ids]
    if not ids:
        return ""
    text = tokenizer.detokenize(ids)
    text = text.numpy() if hasattr(text, "numpy") else text
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)


def token_strings(tokenizer, ids) -> list[str]:
    """Each id as its vocabulary string (for showing which tokens the loss counts)."""
    return [tokenizer.id_to_token(int(i)) for i in ids]


# ---------------------------------------------------------------------------
# 2. Batches and LoRA
# ---------------------------------------------------------------------------

def pad_id(tokenizer, chat_format) -> int:
    """Id of the format's padding token in ``tokenizer``."""
    return special_id(tokenizer, _chat_format(chat_format).pad_token)


def encode_items(tokenizer, items, *, chat_format, context_length):
    """Encode instruction items (:class:`llmft.instructions.Item`); drop those longer than the context.

    Returns:
        ``(kept, encoded, dropped)``: the items that fit ``context_length + 1``
        tokens, their ``(ids, weights)`` from :func:`encode_chat`, and how many
        were dropped per task.
    """
    check_int("context_length", context_length)
    kept, encoded, dropped = [], [], {}
    for item in items:
        ids, weights = encode_chat(tokenizer, item.messages, chat_format=chat_format)
        if len(ids) <= context_length + 1:
            kept.append(item)
            encoded.append((ids, weights))
        else:
            dropped[item.task] = dropped.get(item.task, 0) + 1
    return kept, encoded, dropped


def training_arrays(tokenizer, encoded, *, chat_format, context_length, mask_prompt=True):
    """``(x, y, w)`` of :func:`llmft.sft.training_arrays`, padded with the family's padding token."""
    return sft.training_arrays(encoded, context_length=context_length, mask_prompt=mask_prompt,
                               pad_id=pad_id(tokenizer, chat_format))


def sft_batches(x, y, w, *, pad, batch_size=8, shuffle=False, seed=0, multiple=8):
    """:func:`llmft.sft.sft_batches` with inputs as KerasHub wants them.

    Each batch is ``({"token_ids": x, "padding_mask": x != pad}, y, w)``.
    """
    import tensorflow as tf

    check_int("pad", pad, minimum=0)
    batches = sft.sft_batches(x, y, w, batch_size=batch_size, shuffle=shuffle, seed=seed, multiple=multiple,
                              pad_id=pad)
    return batches.map(lambda a, b, c: ({"token_ids": a, "padding_mask": tf.not_equal(a, pad)}, b, c))


def enable_lora(model, rank, *, target_layer_names=None) -> dict:
    """KerasHub's ``backbone.enable_lora(rank)`` plus a count of what it made trainable.

    KerasHub freezes the whole backbone and adds ``lora_kernel_a`` and
    ``lora_kernel_b`` to the attention layers named in ``target_layer_names``
    (default ``backbone.default_lora_layer_names()``: the query and value
    projections, as Hu et al. (2021) did).

    Returns:
        ``{"rank", "layers", "trainable", "total", "share"}``: number of adapted
        layers and trainable parameters of the whole model.
    """
    from llmft.lora import trainable_fraction

    rank = check_int("rank", rank)
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "enable_lora"):
        raise ValueError(f"model must be a KerasHub CausalLM with a backbone; got {model!r:.80}")
    if target_layer_names is not None and (isinstance(target_layer_names, str) or not target_layer_names):
        raise ValueError(f"target_layer_names must be a non-empty list of names or None; got {target_layer_names!r}")
    backbone.enable_lora(rank, target_layer_names=target_layer_names)
    for name in ("train_function", "test_function", "predict_function", "generate_function"):
        if hasattr(model, name):
            setattr(model, name, None)
    trainable, total, share = trainable_fraction(model)
    return {"rank": rank, "layers": len(backbone._lora_enabled_layers), "trainable": trainable, "total": total,
            "share": share}


def load_adapter(model, path, *, rank, target_layer_names=None) -> dict:
    """Put LoRA weights saved with ``backbone.save_lora_weights`` into a fresh copy of the base model.

    The file holds the rank and the adapted layers by position, not their
    names, so LoRA is first enabled on the same ``target_layer_names`` (as in
    :func:`enable_lora`); KerasHub's ``load_lora_weights`` alone would use its
    default targets. Returns what :func:`enable_lora` returns.
    """
    path = Path(path)
    if not path.name.endswith(".lora.h5") or not path.is_file():
        raise ValueError(f"path must be an existing .lora.h5 file; got {str(path)!r}")
    info = enable_lora(model, rank, target_layer_names=target_layer_names)
    model.backbone.load_lora_weights(str(path))
    return info


# ---------------------------------------------------------------------------
# 3. Replies
# ---------------------------------------------------------------------------

def _greedy(model):
    samplers = _keras_hub().samplers
    if not isinstance(getattr(model, "sampler", None), samplers.GreedySampler):
        model.sampler = samplers.GreedySampler()
        model.generate_function = None


def generate_replies(model, tokenizer, prompts, *, chat_format, max_new_tokens, batch_size=16, multiple=16,
                     jit_compile=None):
    """Greedy replies of a KerasHub CausalLM to many prompts, in the shape of :func:`llmft.sft.generate_replies`.

    Each prompt is a conversation ending with a user turn. Rows are right-padded
    to one width for all batches (the longest prompt rounded up to ``multiple``,
    plus ``max_new_tokens``) and the last batch is filled up with a repeated row,
    so the generation loop is traced once;
    KerasHub's compiled generation loop (with its KV cache) fills the padding
    and stops when every row has produced ``end_of_turn``. A reply is the
    row's new tokens up to ``end_of_turn`` or ``max_new_tokens``.
    ``jit_compile`` (``True``/``False``) sets ``model.jit_compile`` first; ``None``
    keeps the model's setting (XLA after KerasHub's default compile).

    Returns:
        list of ``(text, finished)``: the reply and whether it ended with ``end_of_turn``.
    """
    check_int("max_new_tokens", max_new_tokens)
    check_int("batch_size", batch_size)
    fmt = _chat_format(chat_format)
    if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__len__") or len(prompts) == 0:
        raise ValueError(f"prompts must be a non-empty list of conversations; got {prompts!r:.80}")
    encoded = [encode_chat(tokenizer, p, chat_format=fmt, for_training=False)[0] for p in prompts]
    end, pad = special_id(tokenizer, fmt.end_of_turn), pad_id(tokenizer, fmt)
    batch_size = min(batch_size, len(encoded))
    if jit_compile is not None:
        if not isinstance(jit_compile, bool):
            raise ValueError(f"jit_compile must be True, False or None; got {jit_compile!r}")
        if model.jit_compile != jit_compile:
            model.jit_compile, model.generate_function = jit_compile, None
    _greedy(model)
    generate = model.generate_function or model.make_generate_function()
    order = np.argsort([len(e) for e in encoded], kind="stable")
    # One shape for every batch (the longest prompt, rounded up), so the loop is traced once.
    width = -(-max(len(e) for e in encoded) // multiple) * multiple + max_new_tokens
    results = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        padded = np.concatenate([rows, np.repeat(rows[:1], batch_size - len(rows))])  # last batch: repeat a row
        lengths = np.array([len(encoded[r]) for r in padded])
        tokens = np.full((batch_size, width), pad, "int32")
        for j, r in enumerate(padded):
            tokens[j, :lengths[j]] = encoded[r]
        mask = np.arange(width)[None, :] < lengths[:, None]
        out = generate({"token_ids": tokens, "padding_mask": mask}, stop_token_ids=(end,))
        out = np.asarray(out["token_ids"])
        for j, r in enumerate(rows):
            new = [int(t) for t in out[j, lengths[j]:lengths[j] + max_new_tokens]]
            finished = end in new
            results[r] = (decode(tokenizer, new[:new.index(end)] if finished else new), finished)
    return results


# ---------------------------------------------------------------------------
# 4. Loading presets; a tiny offline stand-in
# ---------------------------------------------------------------------------

def _keras_hub():
    # KerasHub's first import loads TensorFlow Text, whose C++ start-up notices go straight
    # to file descriptor 2; keep them out of the notebooks as env.import_backend does.
    import sys

    if "keras_hub" not in sys.modules:
        from llmft.env import _quiet_native_stderr

        with _quiet_native_stderr():
            import keras_hub  # noqa: F401
    import keras_hub

    return keras_hub


def _class(name):
    return getattr(_keras_hub().models, name)


def listed_params(preset, *, family_name="gemma3") -> int:
    """The parameter count KerasHub lists for a preset in its metadata (nothing is downloaded)."""
    presets = _class(family(family_name).backbone).presets
    if not isinstance(preset, str) or preset not in presets:
        raise ValueError(f"preset must be one of {sorted(presets)}; got {preset!r}")
    return int(presets[preset]["metadata"]["params"])


def load_causal_lm(preset, *, family_name="gemma3"):
    """``(model, tokenizer)`` of a KerasHub preset name or a local preset directory.

    The model is loaded without its preprocessor (``preprocessor=None``): the
    SFT data are tokenized here, with :func:`encode_chat`, and KerasHub would
    otherwise tokenize the already tokenized batches again. A Kaggle-hosted
    preset needs credentials (``KAGGLE_USERNAME``/``KAGGLE_KEY``) and, for
    Gemma and Llama, the accepted licence; a directory needs nothing.
    """
    fam = family(family_name)
    if not isinstance(preset, (str, Path)) or not str(preset):
        raise ValueError(f"preset must be a preset name or a directory; got {preset!r}")
    model = _class(fam.causal_lm).from_preset(str(preset), preprocessor=None)
    tokenizer = _class(fam.tokenizer).from_preset(str(preset))
    return model, tokenizer


def train_tiny_tokenizer(texts, *, vocab_size=3000, family_name="gemma3"):
    """A small SentencePiece tokenizer of the family's class, trained in-process on ``texts``.

    It has the family's special tokens (``<pad>`` = 0, ``<eos>``, ``<bos>``,
    ``<unk>``, ``<start_of_turn>``, ``<end_of_turn>``) and falls back to bytes
    for characters it does not know, so any text can be encoded. Only the
    Gemma 3 family (SentencePiece) is supported. ``vocab_size`` must exceed the
    number of distinct characters that cover 98% of the text, plus 256 byte
    pieces (about 2,000 for a few hundred Chinese reviews); a smaller one
    raises ``ValueError``.
    """
    import sentencepiece as spm

    if family_name != "gemma3":
        raise ValueError(f"family_name must be 'gemma3' (a SentencePiece family) here; got {family_name!r}")
    check_int("vocab_size", vocab_size, minimum=300)
    texts = [t for t in texts if isinstance(t, str) and t.strip()] if not isinstance(texts, str) else []
    if not texts:
        raise ValueError("texts must be a non-empty list of strings")
    fmt = FORMATS["gemma"]
    proto = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=proto, vocab_size=vocab_size, model_type="bpe",
            pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
            unk_piece="<unk>", user_defined_symbols=[fmt.turn_start, fmt.end_of_turn, "\n", *fmt.role_names.values()], byte_fallback=True,
            character_coverage=0.98, add_dummy_prefix=False, remove_extra_whitespaces=False,
            normalization_rule_name="identity", num_threads=1, minloglevel=2)
    except RuntimeError as err:  # e.g. fewer pieces than the distinct characters it must cover
        raise ValueError(f"vocab_size={vocab_size} does not fit these texts: {err}") from err
    return _class(family(family_name).tokenizer)(proto=proto.getvalue(), has_vision_tokens=False)


TINY_GEMMA3 = dict(num_layers=2, num_query_heads=4, num_key_value_heads=1, hidden_dim=64, intermediate_dim=128,
                   head_dim=16, sliding_window_size=64, use_sliding_window_attention=True, use_post_ffw_norm=True,
                   use_post_attention_norm=True)


def tiny_causal_lm(tokenizer, *, family_name="gemma3", seed=0, **overrides):
    """A randomly initialised tiny CausalLM of the family's real classes (``preprocessor=None``).

    Sizes default to ``TINY_GEMMA3`` (two layers, width 64); ``overrides``
    change any backbone argument. The weights are random: its replies are
    gibberish, but it goes through exactly the code a real preset does.

    One change to KerasHub's initialisation: the tied embedding is drawn with
    standard deviation ``1 / sqrt(hidden_dim)`` instead of ``1 / sqrt(vocabulary_size)``.
    With the latter the logits of a random model span only about +-1, and a
    LoRA fine-tune, which cannot touch the frozen embedding, could not lower
    the loss much below ``ln(vocabulary_size) - 1``; a pretrained model's
    embeddings are not that small.
    """
    import keras

    fam = family(family_name)
    if family_name != "gemma3":
        raise ValueError(f"family_name must be 'gemma3' here; got {family_name!r}")
    keras.utils.set_random_seed(check_int("seed", seed, minimum=0))
    kwargs = {**TINY_GEMMA3, **overrides}
    backbone = _class(fam.backbone)(vocabulary_size=tokenizer.vocabulary_size(), image_size=16, vision_encoder=None,
                                    **kwargs)
    embedding = backbone.token_embedding.embeddings
    rng = np.random.default_rng(seed)
    embedding.assign(rng.normal(0.0, kwargs["hidden_dim"] ** -0.5, tuple(embedding.shape)).astype(embedding.dtype))
    return _class(fam.causal_lm)(backbone=backbone, preprocessor=None)


def save_preset(model, tokenizer, directory) -> Path:
    """Write ``model.backbone`` and ``tokenizer`` as a KerasHub preset directory (readable by :func:`load_causal_lm`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    return directory


# ---------------------------------------------------------------------------
# 5. Estimates for the real presets
# ---------------------------------------------------------------------------

# The projections of a Gemma 3 layer that LoRA can adapt, and the shapes of their kernels
# (d: width, H/K: query/key-value heads, h: head size, F: MLP width).
GEMMA3_PROJECTIONS = ("query", "key", "value", "attention_output", "ffw_gating", "ffw_gating_2", "ffw_linear")


def gemma3_param_counts(*, vocabulary_size, num_layers, hidden_dim, intermediate_dim, num_query_heads,
                        num_key_value_heads, head_dim, use_post_norms=True, use_query_key_norm=True,
                        lora_rank=None, lora_targets=("query", "value")) -> dict:
    """Parameters of a text-only Gemma 3 backbone, counted from its sizes.

    Per layer: query/key/value/output projections, the gated MLP (three
    matrices), RMSNorm scales before attention and MLP (and after them with
    ``use_post_norms``, as Gemma 3 does) and on queries and keys
    (``use_query_key_norm``); the embedding is tied with the output layer.

    With ``lora_rank``, also the LoRA parameters KerasHub adds to each layer's
    ``lora_targets`` (names from ``GEMMA3_PROJECTIONS``). Keras' LoRA for a
    kernel of shape ``(*in_dims, out)`` has ``A`` of shape ``(*in_dims, r)`` and
    ``B`` of shape ``(r, out)``; for the query kernel ``(d, H, h)`` that is
    ``r * (d * H + h)``. The test suite checks both counts on a real tiny backbone.
    """
    sizes = dict(vocabulary_size=vocabulary_size, num_layers=num_layers, hidden_dim=hidden_dim,
                 intermediate_dim=intermediate_dim, num_query_heads=num_query_heads,
                 num_key_value_heads=num_key_value_heads, head_dim=head_dim)
    for name, value in sizes.items():
        check_int(name, value)
    d, H, K, h, F = hidden_dim, num_query_heads, num_key_value_heads, head_dim, intermediate_dim
    kernels = {"query": (d, H, h), "key": (d, K, h), "value": (d, K, h), "attention_output": (H, h, d),
               "ffw_gating": (d, F), "ffw_gating_2": (d, F), "ffw_linear": (F, d)}
    norms = (4 if use_post_norms else 2) * d + (2 * h if use_query_key_norm else 0)
    per_layer = sum(math.prod(k) for k in kernels.values()) + norms
    out = {"embedding": vocabulary_size * d, "layers": num_layers * per_layer, "final_norm": d}
    out["total"] = sum(out.values())
    if lora_rank is not None:
        r = check_int("lora_rank", lora_rank)
        if isinstance(lora_targets, str) or not lora_targets or any(t not in kernels for t in lora_targets):
            raise ValueError(f"lora_targets must be a non-empty list from {GEMMA3_PROJECTIONS}; got {lora_targets!r}")
        out["lora"] = num_layers * sum(r * (math.prod(kernels[t][:-1]) + kernels[t][-1]) for t in set(lora_targets))
    return out


def lora_time_estimate(total_params, tokens, *, peak_flops, utilization=0.3) -> dict:
    """Rough seconds for LoRA fine-tuning: about 4 N FLOPs per token.

    The forward pass costs 2 N per token; the backward pass still has to carry
    gradients through every frozen layer (another 2 N) but skips the
    gradients of the frozen weights (the other 2 N of the full ``6 N D``,
    :func:`llmft.estimates.training_flops`). ``utilization`` is the share of
    the accelerator's peak one gets in practice (an assumption, not a measurement).
    """
    check_int("total_params", total_params)
    check_int("tokens", tokens)
    for name, value in (("peak_flops", peak_flops), ("utilization", utilization)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be a positive number; got {value!r}")
    if utilization > 1:
        raise ValueError(f"utilization must be in (0, 1]; got {utilization!r}")
    flops = 4.0 * total_params * tokens
    return {"flops": flops, "seconds": flops / (peak_flops * utilization)}

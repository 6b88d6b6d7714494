"""Property-based tests: random strings, shapes and parameters, only clear errors.

Hypothesis throws generated arguments (good ones, junk of every type,
edge values) at the tokenizer, the data loaders, sampling, the SFT chat
template and the instruction builder. Each call must either return a
correct result (checked by a property) or raise ``ValueError`` whose message
names one of the arguments; any other exception (``TypeError``,
``KeyError``, a TensorFlow error, ...) fails the test.

Every test has a fixed budget of ``max_examples`` generated cases, with no
deadline (the machine may be busy) and a fixed derandomised seed, so the
suite is reproducible and takes well under a minute; ``TOTAL_CASES`` is the
upper bound on the number of cases it tries.
"""

import json
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llmft import data, instructions, sampling, sft, tokenizers
from llmft.tokenizers import CharTokenizer

EXAMPLES = 60
SLOW_EXAMPLES = 25  # tests whose valid cases run a model or load a dataset
FAST = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW = settings(FAST, max_examples=SLOW_EXAMPLES)
DATA_EXAMPLES = 10  # each valid call parses a cached corpus (about 0.5 s)
DATA = settings(FAST, max_examples=DATA_EXAMPLES)


def clear_error_or(fn, *args, names=(), **kwargs):
    """``(True, result)`` or ``(False, None)`` after a ValueError naming one of ``names``."""
    try:
        return True, fn(*args, **kwargs)
    except ValueError as err:
        message = str(err)
        assert message, f"{fn.__name__} raised a ValueError without a message"
        if names:
            assert any(name in message for name in names), f"{fn.__name__}: {message!r} names none of {names}"
        return False, None


# -- strategies ---------------------------------------------------------------

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.binary(max_size=4), st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.tuples(st.integers()),
    st.sampled_from([object(), np.int64(3), np.float32(0.5), np.array([[1, 2]]), {1, 2}, range(3)]),
)
# Short Chinese, ASCII, punctuation and odd code points (combining marks, emoji, NUL).
chinese = st.characters(min_codepoint=0x4E00, max_codepoint=0x4E40)
text = st.text(st.one_of(chinese, st.sampled_from(string.printable + "，。！？<>|\x00\u0301😀")), max_size=12)


def maybe(strategy, bad=junk):
    return st.one_of(strategy, bad)


def one_bad(**valid):
    """Keyword arguments drawn from ``valid``, except at most one replaced by junk.

    With several arguments, junk in each one at a time reaches the checks of
    the later arguments too (a first bad argument would stop every call early).
    """
    return st.sampled_from([None, *sorted(valid)]).flatmap(lambda bad: st.fixed_dictionaries(
        {name: (junk if name == bad else strategy) for name, strategy in valid.items()}))


CORPUS = ["今天天气很好。", "我们去北京。", "好的，谢谢！", "<pad>不是特殊词元"]


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.train(CORPUS)


# -- tokenizer ----------------------------------------------------------------

@FAST
@given(args=one_bad(texts=st.lists(maybe(text, st.integers()), max_size=4), min_freq=st.integers(-1, 3),
                    max_vocab=st.one_of(st.none(), st.integers(0, 20))))
def test_tokenizer_train(args):
    max_vocab = args["max_vocab"]
    ok, tk = clear_error_or(CharTokenizer.train, args["texts"], min_freq=args["min_freq"], max_vocab=max_vocab,
                            names=("texts", "min_freq", "max_vocab"))
    if ok:
        assert tk.tokens[: len(tokenizers.SPECIAL_TOKENS)] == list(tokenizers.SPECIAL_TOKENS)
        assert tk.vocab_size <= (max_vocab or tk.vocab_size) and len(set(tk.tokens)) == tk.vocab_size
        assert CharTokenizer.from_dict(json.loads(json.dumps(tk.to_dict()))).tokens == tk.tokens


@FAST
@given(chars=maybe(st.lists(st.one_of(chinese, st.text(max_size=2)), max_size=5)))
def test_tokenizer_constructor(chars):
    ok, tk = clear_error_or(CharTokenizer, chars, names=("chars",))
    if ok:
        assert tk.tokens[len(tokenizers.SPECIAL_TOKENS):] == list(chars)


@FAST
@given(value=maybe(text), add_bos=st.booleans(), add_eos=st.booleans())
def test_tokenizer_encode_and_round_trip(tok, value, add_bos, add_eos):
    ok, ids = clear_error_or(tok.encode, value, add_bos=add_bos, add_eos=add_eos, names=("text",))
    if ok:
        assert len(ids) == len(value) + add_bos + add_eos and all(0 <= i < tok.vocab_size for i in ids)
        known = "".join(ch for ch in value if ch in tok.tokens)  # unknown characters decode to nothing
        assert tok.decode(ids) == known
        assert tok.decode(ids, skip_special=False).count(tokenizers.UNK) == len(value) - len(known)
        assert 0.0 <= tok.unknown_rate(value) <= 1.0


@FAST
@given(ids=maybe(st.lists(maybe(st.integers(-3, 40)), max_size=6)), skip=st.booleans())
def test_tokenizer_decode(tok, ids, skip):
    ok, out = clear_error_or(tok.decode, ids, skip_special=skip, names=("ids",))
    if ok:
        assert isinstance(out, str)


@FAST
@given(value=junk)
def test_tokenizer_scalar_methods_reject_junk(tok, value):
    clear_error_or(tok.id_to_token, value, names=("token_id",))
    ok, rate = clear_error_or(tok.unknown_rate, value, names=("text",))
    if ok:
        assert isinstance(value, str) and 0.0 <= rate <= 1.0


@FAST
@given(args=one_bad(texts=st.lists(maybe(text, st.integers()), max_size=3),
                    max_length=st.one_of(st.none(), st.integers(-1, 8)),
                    padding=st.sampled_from(["longest", "max_length"])), truncation=st.booleans())
def test_tokenizer_encode_batch(tok, args, truncation):
    texts, max_length = args["texts"], args["max_length"]
    ok, out = clear_error_or(tok.encode_batch, texts, max_length=max_length, padding=args["padding"],
                             truncation=truncation, names=("texts", "max_length", "padding"))
    if ok:
        ids, mask = out["input_ids"], out["attention_mask"]
        assert ids.shape == mask.shape and ids.shape[0] == len(texts) and ids.dtype == np.int32
        assert np.all(ids[mask == 0] == tok.pad_id)
        if max_length is not None:
            assert ids.shape[1] <= max(max_length, 1)


@FAST
@given(payload=st.one_of(
    junk,
    st.fixed_dictionaries({}, optional={
        "format": maybe(st.just("llmft.CharTokenizer")), "version": maybe(st.just(1)),
        "special_tokens": maybe(st.just(list(tokenizers.SPECIAL_TOKENS))),
        "chars": maybe(st.lists(st.one_of(chinese, st.text(max_size=2)), max_size=4)),
        "fingerprint": maybe(st.text(max_size=4))}),
))
def test_tokenizer_from_dict_and_load(tmp_path_factory, payload):
    ok, tk = clear_error_or(CharTokenizer.from_dict, payload, names=("data", "version", "special_tokens", "chars",
                                                                     "fingerprint"))
    if ok:
        assert tk.tokens[len(tokenizers.SPECIAL_TOKENS):] == list(payload["chars"])
    path = tmp_path_factory.mktemp("tok") / "tok.json"
    path.write_bytes(payload if isinstance(payload, bytes) else json.dumps(payload, default=repr).encode())
    clear_error_or(CharTokenizer.load, path, names=("path", "data", "version", "special_tokens", "chars",
                                                   "fingerprint"))


# -- data loaders ---------------------------------------------------------------

# Valid seeds other than the default would build (and cache) new splits: a few
# for the reviews (fast), only the default for the People's Daily corpus.


@SLOW
@given(args=one_bad(split=st.sampled_from(data.SPLITS), seed=st.sampled_from([data.DEFAULT_SEED, 0, 1]),
                    limit=st.one_of(st.none(), st.integers(-1, 30))))
def test_load_reviews(args):
    split, seed, limit = args["split"], args["seed"], args["limit"]
    ok, rows = clear_error_or(data.load_reviews, split, seed=seed, limit=limit, names=("split", "seed", "limit"))
    if ok:
        assert rows and all(isinstance(r.text, str) and r.label in (0, 1) for r in rows)
        assert limit is None or len(rows) <= limit
        assert all(data.split_of(r.text, seed) == split for r in rows[:20])


@DATA
@given(loader=st.sampled_from([data.load_peoples_daily, data.load_segmentation, data.load_dialogs]),
       args=one_bad(split=st.sampled_from(data.SPLITS), seed=st.just(data.DEFAULT_SEED)))
def test_corpus_loaders(loader, args):
    ok, rows = clear_error_or(loader, args["split"], seed=args["seed"], names=("split", "seed"))
    if ok:
        assert len(rows) > 0


@DATA
@given(args=one_bad(split=st.sampled_from(data.SPLITS), seed=st.just(data.DEFAULT_SEED),
                    max_chars=st.one_of(st.none(), st.integers(-1, 500))))
def test_pretraining_documents(args):
    split, seed, max_chars = args["split"], args["seed"], args["max_chars"]
    ok, docs = clear_error_or(data.pretraining_documents, split, seed=seed, max_chars=max_chars,
                              names=("split", "seed", "max_chars"))
    if ok:
        assert all(isinstance(d, str) and d for d in docs)
        assert max_chars is None or sum(map(len, docs)) <= max_chars


@FAST
@given(key=maybe(text), seed=st.integers(0, 3))
def test_split_of(key, seed):
    ok, name = clear_error_or(data.split_of, key, seed, names=("key",))
    if ok:
        assert name in data.SPLITS and data.split_of(key, seed) == name


@FAST
@given(words=st.lists(st.tuples(st.text(st.characters(blacklist_categories=("Zs", "Cc")), min_size=1, max_size=3),
                                 st.text(string.ascii_lowercase, min_size=1, max_size=2)), max_size=4),
       line=maybe(text))
def test_tagged_lines(words, line):
    words = [(w, t) for w, t in words if w.strip() == w and "/" not in t]
    assert data.parse_tagged_line("  ".join(f"{w}/{t}" for w, t in words)) == [
        (w, t) for w, t in words if "".join(w.split()) == w]
    ok, tokens = clear_error_or(data.parse_tagged_line, line, names=("line",))
    if ok:
        assert all(w and t for w, t in tokens)
    ok, spans = clear_error_or(data.entity_spans, words, names=("tokens",))
    assert ok and all(0 <= s < e for s, e, _ in spans)


@FAST
@given(args=one_bad(text=text, tags=st.text("BMES", max_size=12)))
def test_words_from_bmes(args):
    text_, tags = args["text"], args["tags"]
    ok, words = clear_error_or(data.words_from_bmes, text_, tags, names=("text", "tags"))
    if ok:
        assert "".join(words) == text_


@FAST
@given(name=maybe(st.sampled_from(sorted(data.SOURCES))))
def test_source_path(name):
    ok, path = clear_error_or(data.source_path, name, verify=False, names=("name", "data source"))
    if ok:
        assert path.is_file()


# -- sampling -------------------------------------------------------------------

logit_arrays = st.one_of(
    st.integers(1, 3).flatmap(lambda rows: st.integers(0, 6).flatmap(lambda v: st.lists(
        st.lists(st.floats(-50, 50), min_size=v, max_size=v), min_size=rows, max_size=rows))),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5),
    junk,
)


@FAST
@given(args=one_bad(logits=logit_arrays, k=st.integers(-1, 8)))
def test_top_k_filter(args):
    logits, k = args["logits"], args["k"]
    ok, out = clear_error_or(sampling.top_k_filter, logits, k, names=("logits", "k"))
    if ok:
        arr = np.asarray(logits, dtype=np.float64)
        assert out.shape == arr.shape
        if np.isfinite(arr).all():
            kept = np.isfinite(out).sum(axis=-1)
            assert np.all(kept == min(k, arr.shape[-1]))
            assert np.all(np.where(np.isfinite(out), out == arr, True))


@FAST
@given(args=one_bad(logits=logit_arrays, p=st.floats(-0.5, 1.5)))
def test_top_p_filter(args):
    logits, p = args["logits"], args["p"]
    ok, out = clear_error_or(sampling.top_p_filter, logits, p, names=("logits", "p"))
    if ok:
        arr = np.asarray(logits, dtype=np.float64)
        assert out.shape == arr.shape
        if np.isfinite(arr).all():
            assert np.all(np.isfinite(out).sum(axis=-1) >= 1)  # the most likely token always survives
            top = np.argmax(arr, axis=-1)
            assert np.all(np.isfinite(np.take_along_axis(out, top[..., None], -1)))


VOCAB, CONTEXT = 11, 8


@pytest.fixture(scope="module")
def lm():
    import keras

    from llmft import gpt

    keras.utils.set_random_seed(0)
    model = gpt.from_preset("tiny", vocab_size=VOCAB, context_length=CONTEXT, num_layers=1, hidden_dim=16)
    model(np.zeros((1, CONTEXT), "int32"))
    return model


prompts = st.one_of(
    st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=CONTEXT),
    st.lists(st.integers(-3, VOCAB + 3), max_size=CONTEXT + 2),
    st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=2, max_size=2), min_size=1, max_size=2),
    st.lists(st.floats(0, 5), min_size=1, max_size=3),
    junk,
)


@SLOW
@given(args=one_bad(prompt=prompts, max_new=st.integers(-1, 4),
                    strategy=st.one_of(st.none(), st.sampled_from(["greedy", "sample", "beam"])),
                    temperature=st.one_of(st.none(), st.floats(0.05, 5)),
                    top_k=st.one_of(st.none(), st.integers(-1, 12)),
                    top_p=st.one_of(st.none(), st.floats(-0.5, 1.5)), seed=st.one_of(st.none(), st.integers(-2, 5)),
                    stop_ids=st.lists(st.integers(0, VOCAB - 1), max_size=2)), use_cache=st.booleans())
def test_generate(lm, args, use_cache):
    prompt, max_new, strategy, temperature = args["prompt"], args["max_new"], args["strategy"], args["temperature"]
    top_k, top_p, seed, stop_ids = args["top_k"], args["top_p"], args["seed"], args["stop_ids"]
    ok, new = clear_error_or(
        sampling.generate, lm, prompt, max_new, strategy=strategy, temperature=temperature, top_k=top_k,
        top_p=top_p, seed=seed, stop_ids=stop_ids, use_cache=use_cache,
        names=("prompt_ids", "max_new_tokens", "strategy", "temperature", "top_k", "top_p", "seed", "stop_ids"))
    event("generated" if ok else "ValueError")
    if ok:
        assert len(new) <= max_new and all(isinstance(i, int) and 0 <= i < VOCAB for i in new)
        assert not set(new) & {int(s) for s in stop_ids}


# -- SFT chat template ------------------------------------------------------------

roles = st.one_of(st.sampled_from(sft.ROLES), junk)
message = st.one_of(
    st.tuples(roles, maybe(text)),
    st.builds(lambda r, t: {"role": r, "content": t}, roles, maybe(text)),
    junk,
)
conversation = st.one_of(
    # well-formed: optional system, then user/assistant alternating
    st.tuples(st.booleans(), st.lists(st.text("今天好的谢 ", min_size=1, max_size=5).filter(str.strip),
                                      min_size=1, max_size=5)).map(
        lambda a: ([("system", "你好")] if a[0] else []) + [(("user", "assistant")[i % 2], t)
                                                            for i, t in enumerate(a[1])]),
    st.lists(message, max_size=4),
    junk,
)


@FAST
@given(messages=conversation, for_training=st.booleans())
def test_check_messages(messages, for_training):
    ok, out = clear_error_or(sft.check_messages, messages, for_training=for_training, names=("messages",))
    if ok:
        body = out[1:] if out[0][0] == "system" else out
        assert [r for r, _ in body] == [("user", "assistant")[i % 2] for i in range(len(body))]
        assert body[-1][0] == ("assistant" if for_training else "user")


@FAST
@given(args=one_bad(messages=conversation, max_length=st.one_of(st.none(), st.integers(-1, 40))),
       for_training=st.booleans())
def test_encode_chat(tok, args, for_training):
    messages, max_length = args["messages"], args["max_length"]
    ok, out = clear_error_or(sft.encode_chat, tok, messages, max_length=max_length, for_training=for_training,
                             names=("messages", "max_length"))
    if ok:
        ids, weights = out
        assert ids.shape == weights.shape and set(np.unique(weights)) <= {0.0, 1.0}
        assert max_length is None or len(ids) <= max_length
        if for_training:
            known = [(r, "".join(ch for ch in t if ch in tok.tokens)) for r, t in sft.check_messages(messages)]
            assert sft.decode_chat(tok, ids) == known


@FAST
@given(ids=st.lists(st.integers(-2, 30), max_size=10))
def test_decode_chat(tok, ids):
    ok, out = clear_error_or(sft.decode_chat, tok, ids, names=("ids",))
    if ok:
        assert all(role in sft.ROLES for role, _ in out)


# -- instruction dataset ------------------------------------------------------------

cheap_tasks = st.sampled_from([("sentiment",), ("dialog",), ("sentiment", "dialog")])


@SLOW
@given(args=one_bad(split=st.sampled_from(data.SPLITS), per_task=st.one_of(st.none(), st.integers(-1, 5)),
                    max_chars=st.one_of(st.none(), st.dictionaries(st.sampled_from(instructions.TASKS + ("bogus",)),
                                                                   maybe(st.integers(-1, 80)), max_size=2)),
                    which=st.one_of(st.none(), st.sampled_from(["train", "held_out", "all", "test"])),
                    seed=st.integers(0, 5), tasks=st.one_of(cheap_tasks, st.just(()), st.just(("bogus",)))))
def test_instructions_build(args):
    split, per_task, max_chars, which = args["split"], args["per_task"], args["max_chars"], args["which"]
    seed, tasks = args["seed"], args["tasks"]
    ok, items = clear_error_or(instructions.build, split, per_task=per_task, max_chars=max_chars,
                               which_phrasings=which, seed=seed, tasks=tasks,
                               names=("split", "per_task", "max_chars", "which", "seed", "tasks"))
    if ok:
        assert all(item.task in tasks for item in items)
        assert per_task is None or len(items) <= per_task * len(tasks)
        assert all(sft.check_messages(item.messages) for item in items)


@FAST
@given(args=one_bad(task=st.sampled_from(instructions.TASKS), which=st.sampled_from(["train", "held_out", "all"])))
def test_instructions_phrasings(args):
    task, which = args["task"], args["which"]
    ok, templates = clear_error_or(instructions.phrasings, task, which, names=("task", "which"))
    if ok:
        assert templates and all("{text}" in t for t in templates)


TOTAL_CASES = EXAMPLES * 17 + SLOW_EXAMPLES * 3 + DATA_EXAMPLES * 2


def test_the_budget_is_what_the_docstring_states():
    import sys

    module = sys.modules[__name__]
    tests = [getattr(module, n) for n in dir(module) if n.startswith("test_")]
    budgets = [t._hypothesis_internal_use_settings.max_examples for t in tests if hasattr(t, "hypothesis")]
    assert len(budgets) == 22 and sum(budgets) == TOTAL_CASES

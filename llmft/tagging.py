"""Token classification (sequence tagging): BIO tags, entity-level scores, taggers.

Named-entity recognition as the book does it in chapter 6.2: every character
gets one tag (``B-PER`` begins a person, ``I-PER`` continues it, ``O`` is
outside every entity), a model predicts one tag per position, and the tags
are turned back into entity spans that are scored by **exact span match**.

1. :func:`tag_names`, :func:`entity_spans_from_bio`, :func:`entity_prf`:
   the tag set, BIO -> spans, precision/recall/F1 per type and micro;
2. :func:`split_points` cuts a long sentence into windows that fit a
   model's context, at punctuation, never inside a gold entity when the
   tags are given, and always covering every character;
3. :class:`TokenTagger` puts a per-position head on a backbone with
   ``hidden_states`` (the pretrained GPT), optionally with a bidirectional
   LSTM in between; :func:`bilstm_tagger` is the from-scratch baseline,
   optionally with hashed character-bigram features (:class:`CharBigrams`);
4. :func:`viterbi_decode` picks the most probable *valid* BIO sequence
   (:func:`bio_transitions`) instead of the argmax at each position;
5. :func:`encode`, :func:`fit_tagger`, :func:`predict_tags` (:func:`predict_log_probs`
   then :func:`decode_tags`) do the rest.

Label ``-1`` marks padding positions; the loss ignores them.

Introduced in chapter 6.2.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from llmft import finetune, heads, padding
from llmft.checks import check_dropout, check_int
from llmft.train import build_before_fit, finetune_optimizer

IGNORE = -1  # label of padding positions: no loss, no score
PUNCTUATION = frozenset("。！？；，、：!?;,:")  # a window may end right after one of these


def tag_names(types: Sequence[str]) -> list[str]:
    """``["O", "B-T1", "I-T1", "B-T2", ...]`` for entity types ``types``.

    Example:
        >>> tag_names(["PER", "LOC"])
        ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC']
    """
    if isinstance(types, str) or not isinstance(types, Sequence) or not types:
        raise ValueError(f"types must be a non-empty list of entity type names; got {types!r}")
    if len(set(types)) != len(types) or not all(isinstance(t, str) and t and "-" not in t for t in types):
        raise ValueError(f"types must be distinct names without '-'; got {types!r}")
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def _split_tag(tag):
    if tag == "O":
        return "O", None
    prefix, sep, etype = tag.partition("-") if isinstance(tag, str) else ("", "", "")
    if prefix not in ("B", "I") or not sep or not etype:
        raise ValueError(f"tags must be 'O', 'B-<type>' or 'I-<type>'; got {tag!r}")
    return prefix, etype


def entity_spans_from_bio(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entity spans ``(start, end, type)`` (``end`` exclusive) of a BIO tag sequence.

    An ``I-X`` that does not continue an entity of type ``X`` (it follows
    ``O``, another type, or starts the sequence) begins a new entity, as the
    CoNLL evaluation script does: a model's malformed output still counts.

    Example:
        >>> entity_spans_from_bio(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"])
        [(0, 2, 'PER'), (3, 4, 'LOC'), (4, 5, 'LOC')]
    """
    if isinstance(tags, str) or not isinstance(tags, Sequence):
        raise ValueError(f"tags must be a list of BIO tags; got {tags!r}")
    spans, start, current = [], None, None
    for i, tag in enumerate(tags):
        prefix, etype = _split_tag(tag)
        if prefix == "I" and current == etype:
            continue  # the entity goes on
        if current is not None:
            spans.append((start, i, current))
        start, current = (i, etype) if prefix in ("B", "I") else (None, None)
    if current is not None:
        spans.append((start, len(tags), current))
    return spans


def bio_transitions(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Which BIO tags may start a sequence and which may follow which.

    ``I-X`` may only continue an entity of type ``X``: it must follow
    ``B-X`` or ``I-X`` and cannot start a sequence. Everything else is
    allowed.

    Returns:
        ``(start, allowed)``: bool arrays of shape (K,) and (K, K), with
        ``allowed[i, j]`` true when tag ``j`` may follow tag ``i``.

    Example:
        >>> start, allowed = bio_transitions(["O", "B-PER", "I-PER"])
        >>> start.tolist(), allowed[0].tolist(), allowed[1].tolist()
        ([True, True, False], [True, True, False], [True, True, True])
    """
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ValueError(f"names must be a non-empty list of BIO tag names; got {names!r}")
    parts = [_split_tag(n) for n in names]
    start = np.array([prefix != "I" for prefix, _ in parts])
    allowed = np.array([[prefix != "I" or etype == prev_type
                         for prefix, etype in parts] for _, prev_type in parts])
    return start, allowed


def viterbi_decode(log_probs, lengths, names: Sequence[str]) -> np.ndarray:
    """The most probable tag sequence per row among the valid BIO sequences.

    Per-position argmax can output ``O I-LOC``, a sequence no annotation
    has. Viterbi decoding maximises the summed log-probabilities over whole
    sequences that obey :func:`bio_transitions`: with hard constraints and no
    learned transition scores, this is the decoding step of a CRF tagger
    (:cite:`lample2016ner`) applied to a softmax model.

    Args:
        log_probs: (N, T, K) per-position log-probabilities (or any scores).
        lengths: (N,) number of real positions per row (the rest is padding).
        names: the K tag names in id order.

    Returns:
        (N, T) tag ids, ``-1`` on padding.

    Example:
        >>> lp = np.log(np.array([[[0.45, 0.15, 0.4], [0.1, 0.1, 0.8]]]))  # argmax: O I-PER
        >>> viterbi_decode(lp, [2], ["O", "B-PER", "I-PER"]).tolist()
        [[1, 2]]
    """
    scores = np.asarray(log_probs, dtype="float64")
    if scores.ndim != 3 or scores.shape[-1] != len(names):
        raise ValueError(f"log_probs must have shape (N, T, {len(names)}) for {len(names)} names; got {scores.shape}")
    n, t_max, k = scores.shape
    lengths = np.asarray(lengths)
    if lengths.shape != (n,) or np.any(lengths < 0) or np.any(lengths > t_max):
        raise ValueError(f"lengths must be {n} integers in [0, {t_max}]; got {lengths!r}")
    start, allowed = bio_transitions(names)
    transition = np.where(allowed, 0.0, -np.inf)
    best = scores[:, 0] + np.where(start, 0.0, -np.inf)  # (N, K): best score of a path ending in each tag
    back = np.broadcast_to(np.arange(k), (n, t_max, k)).copy()  # identity on padding
    for t in range(1, t_max):
        candidates = best[:, :, None] + transition  # (N, previous tag, tag)
        active = t < lengths
        back[active, t] = candidates[active].argmax(axis=1)
        best[active] = candidates[active].max(axis=1) + scores[active, t]
    tags = np.empty((n, t_max), dtype="int32")
    tags[:, -1] = best.argmax(axis=-1)
    rows = np.arange(n)
    for t in range(t_max - 1, 0, -1):
        tags[:, t - 1] = back[rows, t, tags[:, t]]
    tags[np.arange(t_max) >= lengths[:, None]] = IGNORE
    return tags


def _prf(tp, fp, fn):
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "support": tp + fn}


def entity_prf(true_spans, pred_spans, *, types=None) -> dict:
    """Entity-level precision, recall and F1 by exact span match, per type and micro.

    A predicted entity counts as correct only if a gold entity has the same
    start, end and type; a span off by one character is one false positive
    and one false negative.

    Args:
        true_spans: one list of ``(start, end, type)`` per sentence (gold).
        pred_spans: one list per sentence (predicted), same sentences in order.
        types: the entity types to report; default: every type seen.

    Returns:
        ``{type: {"precision", "recall", "f1", "support"}, ..., "micro": {...}}``
        where support is the number of gold entities.

    Example:
        >>> entity_prf([[(0, 2, "PER")]], [[(0, 2, "PER"), (3, 4, "LOC")]])["micro"]["f1"]
        0.6666666666666666
    """
    for name, value in [("true_spans", true_spans), ("pred_spans", pred_spans)]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"{name} must be a list with one list of spans per sentence; got {value!r}")
    if len(true_spans) != len(pred_spans):
        raise ValueError(
            f"pred_spans must have one entry per sentence of true_spans ({len(true_spans)}); got {len(pred_spans)}"
        )
    gold = [set(map(tuple, s)) for s in true_spans]
    pred = [set(map(tuple, s)) for s in pred_spans]
    if types is None:
        types = sorted({s[2] for sent in gold + pred for s in sent})
    counts = {t: [0, 0, 0] for t in types}  # tp, fp, fn
    for g, p in zip(gold, pred):
        for span in p:
            if span[2] in counts:
                counts[span[2]][0 if span in g else 1] += 1
        for span in g - p:
            if span[2] in counts:
                counts[span[2]][2] += 1
    scores = {t: _prf(*c) for t, c in counts.items()}
    scores["micro"] = _prf(*(sum(c[i] for c in counts.values()) for i in range(3)))
    return scores


def split_points(text: str, max_length: int, tags: Sequence[str] | None = None) -> list[tuple[int, int]]:
    """Cut ``text`` into consecutive windows ``(start, end)`` of at most ``max_length`` characters.

    Greedy and deterministic: each window ends after the last punctuation
    mark (``PUNCTUATION``: 。！？；，、： and their ASCII forms) that keeps it within ``max_length``; a stretch
    with no punctuation is cut at ``max_length``. With ``tags`` (training
    data) no cut falls inside an entity unless the entity itself is longer
    than ``max_length``. The windows cover every character exactly once.

    Example:
        >>> split_points("今天，北京下雪。", 4)
        [(0, 3), (3, 7), (7, 8)]
    """
    check_int("max_length", max_length)
    if not isinstance(text, str):
        raise ValueError(f"text must be a string; got {text!r}")
    if tags is not None and len(tags) != len(text):
        raise ValueError(f"tags must have one tag per character ({len(text)}); got {len(tags)}")

    def allowed(cut):  # may a window end before position `cut`?
        return tags is None or cut == len(text) or not str(tags[cut]).startswith("I-")

    windows, start = [], 0
    while start < len(text):
        limit = min(start + max_length, len(text))
        if limit == len(text):
            end = limit
        else:
            ends = [c for c in range(limit, start, -1) if text[c - 1] in PUNCTUATION and allowed(c)]
            if not ends:
                ends = [c for c in range(limit, start, -1) if allowed(c)] or [limit]
            end = ends[0]
        windows.append((start, end))
        start = end
    return windows


def encode(tokenizer, texts, tags=None, *, max_length, tag_to_id=None):
    """Token ids (N, max_length) and, with ``tags``, labels (N, max_length) with -1 on padding.

    Args:
        tokenizer: a character tokenizer (one id per character, pad id 0).
        texts: strings of at most ``max_length`` characters (use :func:`split_points`).
        tags: one list of tag names per text, or ``None``.
        tag_to_id: ``{tag name: id}``, required with ``tags``.
    """
    check_int("max_length", max_length)
    texts = list(texts)
    if not texts:
        raise ValueError("texts must not be empty")
    too_long = [t for t in texts if len(t) > max_length]
    if too_long:
        raise ValueError(f"texts must have at most max_length={max_length} characters; got {too_long[0]!r}")
    ids = np.zeros((len(texts), max_length), "int32")
    for i, text in enumerate(texts):
        ids[i, :len(text)] = tokenizer.encode(text)
    if tags is None:
        return ids
    if tag_to_id is None or len(tags) != len(texts):
        raise ValueError(f"tags must come with tag_to_id and match texts ({len(texts)}); got {len(tags)} rows")
    labels = np.full((len(texts), max_length), IGNORE, "int32")
    for i, row in enumerate(tags):
        if len(row) != len(texts[i]):
            raise ValueError(f"tags row {i} must have {len(texts[i])} tags; got {len(row)}")
        labels[i, :len(row)] = [tag_to_id[t] for t in row]
    return ids, labels


@keras.saving.register_keras_serializable(package="llmft")
class TokenTagger(keras.Model):
    """A backbone, an optional bidirectional LSTM and a per-position Dense head.

    ``call(token_ids)`` returns logits (B, T, num_tags). A left-to-right
    backbone (the GPT) has seen only the characters up to position ``t``
    when it tags position ``t``; ``bilstm_units > 0`` adds a
    ``Bidirectional(LSTM)`` over its hidden states so that every position
    also sees the characters after it. Padding (id ``pad_id``, on the right)
    is masked in the LSTM.

    Args:
        backbone: a Keras model with ``hidden_states(token_ids, training)`` (B, T, C).
        num_tags: number of tags (>= 2).
        bilstm_units: units per direction of the LSTM on top; 0 for none.
        pad_id: the padding token id.
        dropout: dropout on the hidden states before the LSTM/head.

    Example:
        >>> from llmft import gpt
        >>> tagger = TokenTagger(gpt.from_preset("tiny", vocab_size=30), num_tags=9)
        >>> tuple(tagger(np.array([[5, 6, 7, 0]], "int32")).shape)
        (1, 4, 9)
    """

    def __init__(self, backbone, *, num_tags, bilstm_units=0, pad_id=0, dropout=0.0, **kwargs):
        if not isinstance(backbone, keras.Model) or not callable(getattr(backbone, "hidden_states", None)):
            raise ValueError(
                "backbone must be a keras.Model with a hidden_states(token_ids, training) method; "
                f"got {backbone!r}"
            )
        check_int("num_tags", num_tags, minimum=2)
        check_int("bilstm_units", bilstm_units, minimum=0)
        check_int("pad_id", pad_id, minimum=0)
        check_dropout(dropout)
        super().__init__(**kwargs)
        self.backbone = backbone
        self.num_tags, self.bilstm_units = int(num_tags), int(bilstm_units)
        self.pad_id, self.dropout = int(pad_id), float(dropout)
        self.hidden_dropout = keras.layers.Dropout(dropout, name="hidden_dropout")
        self.bilstm = None
        if bilstm_units:
            self.bilstm = keras.layers.Bidirectional(
                keras.layers.LSTM(bilstm_units, return_sequences=True), name="bilstm")
        self.head = keras.layers.Dense(
            num_tags, kernel_initializer=keras.initializers.RandomNormal(stddev=0.02), name="head")

    def build(self, input_shape):
        if not self.backbone.built:
            self.backbone.build(input_shape)
        width = getattr(self.backbone, "hidden_dim", None)
        if width is None:
            width = self.backbone.hidden_states(np.ones((1, 1), "int32")).shape[-1]
        if self.bilstm is not None:
            self.bilstm.build((input_shape[0], input_shape[1], width))
            width = 2 * self.bilstm_units
        self.head.build((input_shape[0], input_shape[1], width))
        lm_head = getattr(self.backbone, "lm_head", None)  # unused for tagging: freeze it
        if isinstance(lm_head, keras.layers.Layer):
            heads.set_trainable(lm_head, False)

    def call(self, token_ids, training=False):
        if isinstance(token_ids, (list, tuple)):
            token_ids = np.asarray(token_ids, dtype="int32")
        hidden = self.backbone.hidden_states(token_ids, training=training)  # (B, T, C)
        hidden = self.hidden_dropout(hidden, training=training)
        if self.bilstm is not None:
            mask = ops.not_equal(token_ids, self.pad_id)  # (B, T): the backward pass skips padding
            hidden = self.bilstm(ops.cast(hidden, "float32"), mask=mask, training=training)  # (B, T, 2U)
        return ops.cast(self.head(hidden), "float32")  # (B, T, num_tags)

    def get_config(self):
        return {**super().get_config(), "backbone": keras.saving.serialize_keras_object(self.backbone),
                "num_tags": self.num_tags, "bilstm_units": self.bilstm_units,
                "pad_id": self.pad_id, "dropout": self.dropout}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="llmft")
class CharBigrams(keras.layers.Layer):
    """Hashed id of the pair (this character, next character), 0 on padding.

    Chinese words are mostly two characters long, so the pair starting at a
    position says much about where words (and entities) begin and end. A
    pair ``(a, b)`` is numbered ``a * vocab_size + b`` and hashed into
    ``buckets`` ids ``1 .. buckets`` (the hashing trick, :cite:`weinberger2009hashing`):
    no vocabulary of pairs to build or store, at the price of collisions
    (with fewer buckets than pair types, several pairs share a bucket and its
    vector). The last character pairs with padding id 0.

    Example:
        >>> ops.convert_to_numpy(CharBigrams(vocab_size=10, buckets=97)(np.array([[3, 4, 0]], "int32"))).tolist()
        [[35, 41, 0]]
    """

    def __init__(self, vocab_size, buckets, **kwargs):
        check_int("vocab_size", vocab_size)
        check_int("buckets", buckets)
        if vocab_size * vocab_size >= 2**31:
            raise ValueError(f"vocab_size must be below 46341 so that pair ids fit in int32; got {vocab_size}")
        super().__init__(**kwargs)
        self.vocab_size, self.buckets = int(vocab_size), int(buckets)

    def call(self, ids):
        ids = ops.cast(ids, "int32")
        following = ops.pad(ids[:, 1:], [[0, 0], [0, 1]])
        pair = ids * self.vocab_size + following
        return ops.where(ops.not_equal(ids, 0), ops.mod(pair, self.buckets) + 1, 0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "buckets": self.buckets}


def bilstm_tagger(*, vocab_size, num_tags, embedding_dim=128, units=128, dropout=0.0,
                  bigram_buckets=0, bigram_dim=64):
    """The from-scratch baseline: ``Embedding -> Bidirectional(LSTM) -> Dense``, logits (B, T, num_tags).

    Id 0 is padding (``mask_zero=True``), so the backward LSTM starts at the
    last real character. With ``bigram_buckets > 0`` every position also gets
    an embedding of the character pair starting there (:class:`CharBigrams`),
    concatenated to the character embedding, as in the character-bigram
    baselines of Chinese NER :cite:`zhang2018lattice`.

    Example:
        >>> m = bilstm_tagger(vocab_size=30, num_tags=9, embedding_dim=8, units=8)
        >>> tuple(m(np.array([[5, 6, 0]], "int32")).shape)
        (1, 3, 9)
    """
    for name, value in [("vocab_size", vocab_size), ("num_tags", num_tags),
                        ("embedding_dim", embedding_dim), ("units", units), ("bigram_dim", bigram_dim)]:
        check_int(name, value, minimum=2 if name == "num_tags" else 1)
    check_int("bigram_buckets", bigram_buckets, minimum=0)
    check_dropout(dropout)
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(ids)
    if bigram_buckets:
        pairs = CharBigrams(vocab_size, bigram_buckets, name="bigrams")(ids)
        pair_vectors = keras.layers.Embedding(bigram_buckets + 1, bigram_dim, mask_zero=True,
                                              name="bigram_embedding")(pairs)
        x = keras.layers.Concatenate(name="char_and_bigram")([x, pair_vectors])
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(units, return_sequences=True), name="bilstm")(x)
    x = keras.layers.Dropout(dropout)(x)
    return keras.Model(ids, keras.layers.Dense(num_tags, name="head")(x), name="bilstm_tagger")


def _dataset(x, y, batch_size, seed):
    import tensorflow as tf

    lengths, epoch = padding.lengths(x), [0]

    def generate():
        groups = finetune.batch_indices(lengths, batch_size=batch_size, shuffle=True, seed=seed + epoch[0])
        epoch[0] += 1
        for rows in groups:
            width = padding.batch_width(x[rows])
            yield x[rows][:, :width], y[rows][:, :width]

    spec = tf.TensorSpec((None, None), tf.int32)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=(spec, spec))
    return dataset.apply(tf.data.experimental.assert_cardinality(-(-len(x) // batch_size)))


_PREDICT_FNS = weakref.WeakKeyDictionary()  # model -> its compiled log-softmax
DECODERS = ("argmax", "viterbi")


def _check_decode(decode, names):
    if decode not in DECODERS:
        raise ValueError(f"decode must be one of {DECODERS}; got {decode!r}")
    if decode == "viterbi" and names is None:
        raise ValueError("names must list the tag names in id order for decode='viterbi'; got None")


def predict_log_probs(model, x, *, batch_size=128):
    """Per-position log-probabilities (N, T, K) of a tagger for token ids ``x``; 0 on padding.

    Batches are formed from rows of similar length and cut to their longest
    row, so short windows do not pay for the padding of long ones. Decode the
    result with :func:`decode_tags` (once per decoding rule, without running
    the model again).
    """
    import tensorflow as tf

    check_int("batch_size", batch_size)
    x = np.asarray(x, dtype="int32")
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"x must be token ids of shape (N, T) with N >= 1; got shape {x.shape}")
    fn = _PREDICT_FNS.get(model)
    if fn is None:  # one trace per model for every batch shape (no retracing per call)
        ref = weakref.ref(model)  # the cache must not keep the model alive
        fn = tf.function(lambda xb: ops.log_softmax(ref()(xb, training=False), axis=-1),
                         input_signature=[tf.TensorSpec((None, None), tf.int32)])
        _PREDICT_FNS[model] = fn
    order = np.argsort(padding.lengths(x), kind="stable")
    out = None
    for i in range(0, len(x), batch_size):
        rows = order[i:i + batch_size]
        width = padding.batch_width(x[rows])
        log_probs = ops.convert_to_numpy(fn(x[rows][:, :width]))
        if out is None:
            out = np.zeros(x.shape + log_probs.shape[-1:], "float32")
        out[rows, :width] = log_probs
    out[x == 0] = 0.0
    return out


def decode_tags(log_probs, x, *, decode="argmax", names=None):
    """Tag ids (N, T) from :func:`predict_log_probs`; -1 on the padding of ``x``.

    Args:
        log_probs: (N, T, K) per-position log-probabilities.
        x: the token ids (N, T) they were computed from (0 on padding, on the right).
        decode: ``"argmax"`` takes the most probable tag at each position on
            its own; ``"viterbi"`` takes the most probable valid BIO sequence
            (:func:`viterbi_decode`).
        names: the K tag names in id order (needed for ``"viterbi"``).
    """
    _check_decode(decode, names)
    x, log_probs = np.asarray(x), np.asarray(log_probs)
    if log_probs.shape[:2] != x.shape:
        raise ValueError(f"log_probs must be (N, T, K) for x of shape {x.shape}; got {log_probs.shape}")
    if decode == "viterbi":
        out = viterbi_decode(log_probs, padding.lengths(x), names)
    else:
        out = log_probs.argmax(axis=-1).astype("int32")
    out[x == 0] = IGNORE
    return out


def predict_tags(model, x, *, batch_size=128, decode="argmax", names=None):
    """Predicted tag ids (N, T) for token ids ``x``; -1 on padding.

    :func:`predict_log_probs` followed by :func:`decode_tags` (see there for
    ``decode`` and ``names``).
    """
    _check_decode(decode, names)  # fail before running the model
    return decode_tags(predict_log_probs(model, x, batch_size=batch_size), x, decode=decode, names=names)


def _id_rows_to_spans(rows, names):
    # tag-id rows (-1 on padding) -> one list of entity spans per row
    return [entity_spans_from_bio([names[t] for t in row[row >= 0]]) for row in rows]


def fit_tagger(model, train, val, *, epochs, learning_rate, batch_size=32, names=None, decode="argmax",
               warmup_fraction=0.1, weight_decay=0.01, clip_norm=1.0, seed=0, name="", verbose=True):
    """Train a tagger (ids -> (B, T, num_tags) logits) with AdamW, warmup and cosine decay.

    After each epoch it predicts the validation windows, prints one line with
    the training loss and the validation entity micro-F1, and at the end
    restores the weights of the best epoch (chosen on validation data).

    Args:
        model: e.g. a :class:`TokenTagger` or :func:`bilstm_tagger`.
        train, val: ``(ids (N, T), labels (N, T))`` from :func:`encode`.
        epochs: passes over ``train``.
        learning_rate: peak learning rate.
        names: the tag names in id order (for the validation F1).
        decode: how validation tags are decoded (see :func:`predict_tags`).

    Returns:
        one dict per epoch: ``epoch``, ``loss``, ``val_f1``, ``seconds``.
    """
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    if names is None:
        raise ValueError("names must list the tag names in id order; got None")
    x, y = (np.asarray(a, dtype="int32") for a in train)
    if x.shape != y.shape or len(x) == 0:
        raise ValueError(f"train must be (ids, labels) of the same shape; got {x.shape} and {y.shape}")
    steps = -(-len(x) // batch_size)
    optimizer = finetune_optimizer(learning_rate, epochs * steps, warmup_fraction=warmup_fraction,
                                   weight_decay=weight_decay, clip_norm=clip_norm)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE))
    val_x, val_y = (np.asarray(a) for a in val)
    gold = _id_rows_to_spans(val_y, names)
    rows, best, best_weights, start = [], -1.0, None, time.perf_counter()
    data = _dataset(x, y, batch_size, seed)
    build_before_fit(model, data)  # fit is called once per epoch; the step is traced once in all
    for epoch in range(epochs):
        history = model.fit(data, epochs=1, verbose=0, shuffle=False)
        pred = predict_tags(model, val_x, decode=decode, names=names)
        spans = _id_rows_to_spans(pred, names)
        f1 = entity_prf(gold, spans)["micro"]["f1"]
        rows.append({"epoch": epoch + 1, "loss": float(history.history["loss"][-1]), "val_f1": f1,
                     "seconds": round(time.perf_counter() - start, 1)})
        if f1 > best:
            best, best_weights = f1, model.get_weights()
        if verbose:
            r = rows[-1]
            print(f"{name}第 {r['epoch']} 轮  训练损失 {r['loss']:.4f}  验证实体 F1 {f1:.4f}  {r['seconds']:.0f}s", flush=True)
    if best_weights is not None:
        model.set_weights(best_weights)
    return rows

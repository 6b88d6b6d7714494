"""Sequence classification on a pretrained language model.

A :class:`SequenceClassifier` puts a small head on a backbone (the book's
:class:`~llmft.gpt.GPT` or :class:`~llmft.lstm.LSTMLanguageModel`): the
backbone turns token ids into hidden states (B, T, C), a pooling step turns
those into one vector per text (B, C), and a Dense layer turns that vector
into class logits (B, num_classes).

Two poolings:

- ``"last"``: the hidden state of the last real (non-pad) token. In a
  left-to-right model only this position has seen the whole text, so it is
  the natural summary (GPT-style classifiers use it).
- ``"mean"``: the average over the real tokens. Each position has seen only
  the text up to itself, so this averages partial summaries; it is a useful
  baseline and the usual choice for bidirectional encoders.

Both are computed from the token ids alone (pad id 0, right padding, as
:meth:`~llmft.tokenizers.CharTokenizer.encode_batch` produces), so
``model.fit(input_ids, labels)`` needs no attention mask. Pad tokens after the
last real token cannot change a left-to-right backbone's hidden states at
earlier positions, so padding never changes the logits.

Introduced in chapter 5 (full fine-tuning, the linear probe, LoRA via
:mod:`llmft.lora`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from llmft.checks import check_dropout, check_int

POOLINGS = ("last", "mean")


def set_trainable(layer, value):
    """Set ``trainable`` on ``layer``, every sublayer and their weights.

    Why not just ``layer.trainable = value``: on the TensorFlow backend that
    assignment does nothing when ``layer.trainable`` already equals ``value``
    (Keras' ``KerasAutoTrackable.__setattr__`` skips "unchanged" attributes),
    so weights frozen one by one (as :func:`llmft.lora.enable_lora` does), or
    left trainable by loading a frozen model, would keep their own flags.
    """
    for sub in layer._flatten_layers():  # the layer itself and all sublayers
        keras.layers.Layer.trainable.fset(sub, value)  # the real setter, always


def pooling_weights(token_ids, *, pooling, pad_id=0, dtype="float32"):
    """How much each position counts in the pooled vector, shape (B, T).

    ``"last"``: 1 at the last position whose id is not ``pad_id`` (position
    0 for an all-pad row). ``"mean"``: ``1 / n`` at each of the ``n``
    non-pad positions (all zeros for an all-pad row).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
    is_token = ops.not_equal(token_ids, pad_id)  # (B, T)
    positions = ops.arange(ops.shape(token_ids)[1])  # (T,)
    if pooling == "last":
        # Largest position holding a real token; -1 (clipped to 0) if none.
        last = ops.max(ops.where(is_token, positions[None, :], -1), axis=1)  # (B,)
        last = ops.maximum(last, 0)
        return ops.cast(ops.equal(positions[None, :], last[:, None]), dtype)  # one-hot rows
    weights = ops.cast(is_token, dtype)
    return weights / ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1.0)


@keras.saving.register_keras_serializable(package="llmft")
class SequenceClassifier(keras.Model):
    """A backbone, a pooling step and a Dense head; ``call`` returns logits (B, num_classes).

    Args:
        backbone: a Keras model with a ``hidden_states(token_ids, training)``
            method returning (B, T, C), e.g. a pretrained GPT.
        num_classes: number of classes (>= 2).
        pooling: ``"last"`` (hidden state of the last non-pad token) or
            ``"mean"`` (average over non-pad tokens).
        pad_id: the padding token id; rows are padded on the right.
        dropout: dropout rate on the pooled vector before the head.

    A frozen backbone (:meth:`freeze_backbone`) also runs in inference mode
    during ``fit`` (no dropout inside it), so a linear probe trains on fixed
    features. The backbone's ``lm_head`` (if it has one) is unused here and
    always frozen. Change what is trainable before ``compile``.

    Example:
        >>> from llmft import gpt
        >>> clf = SequenceClassifier(gpt.from_preset("tiny", vocab_size=30), num_classes=2)
        >>> tuple(clf(np.array([[5, 6, 7, 0]], "int32")).shape)
        (1, 2)
    """

    def __init__(self, backbone, *, num_classes, pooling="last", pad_id=0, dropout=0.0, **kwargs):
        has_hidden_states = callable(getattr(backbone, "hidden_states", None))
        if not isinstance(backbone, keras.Model) or not has_hidden_states:
            raise ValueError(
                "backbone must be a keras.Model with a hidden_states(token_ids, training) "
                f"method; got {backbone!r}"
            )
        check_int("num_classes", num_classes, minimum=2)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
        check_int("pad_id", pad_id, minimum=0)
        check_dropout(dropout)
        super().__init__(**kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.pooling = pooling
        self.pad_id = int(pad_id)
        self.dropout = float(dropout)
        self.head_dropout = keras.layers.Dropout(dropout, name="head_dropout")
        # A small init makes the first logits near 0, so the first loss is
        # about log(num_classes): a quick check that the pipeline is sane.
        self.head = keras.layers.Dense(
            num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.02), name="head"
        )

    def build(self, input_shape):
        if not self.backbone.built:
            self.backbone.build(input_shape)
        hidden_dim = getattr(self.backbone, "hidden_dim", None)
        if hidden_dim is None:  # a backbone that doesn't say: ask it
            hidden_dim = self.backbone.hidden_states(np.full((1, 1), self.pad_id, "int32")).shape[-1]
        if not self.head.built:
            self.head.build((input_shape[0], hidden_dim))
        # A config's trainable=False reaches the layer flag only, not the weights
        # created afterwards; re-apply it so a reloaded frozen backbone stays frozen.
        if not self.backbone.trainable:
            set_trainable(self.backbone, False)
        self._freeze_lm_head()

    def freeze_backbone(self):
        """Make the backbone's weights non-trainable (the linear probe): only the head trains."""
        set_trainable(self.backbone, False)

    def unfreeze_backbone(self):
        """Make the backbone trainable again (full fine-tuning), except its unused ``lm_head``.

        This also undoes the freezing that :func:`llmft.lora.enable_lora` does.
        """
        set_trainable(self.backbone, True)
        self._freeze_lm_head()

    def _freeze_lm_head(self):
        # The backbone's next-token output layer (an LSTM's, or an untied
        # GPT's) is not used for classification; trainable, it would get no
        # gradient and Keras would warn "Gradients do not exist" every step.
        lm_head = getattr(self.backbone, "lm_head", None)
        if isinstance(lm_head, keras.layers.Layer):
            set_trainable(lm_head, False)

    def pooling_weights(self, token_ids, dtype="float32"):
        """This classifier's :func:`pooling_weights`, shape (B, T)."""
        return pooling_weights(token_ids, pooling=self.pooling, pad_id=self.pad_id, dtype=dtype)

    def features(self, token_ids, training=False):
        """The pooled hidden states, shape (B, C): what the head sees."""
        if isinstance(token_ids, (list, tuple)):
            token_ids = np.asarray(token_ids, dtype="int32")
        # A frozen backbone runs in inference mode, so its features are fixed.
        hidden = self.backbone.hidden_states(token_ids, training=training and self.backbone.trainable)
        weights = self.pooling_weights(token_ids, dtype=hidden.dtype)  # (B, T)
        return ops.einsum("bt,btc->bc", weights, hidden)  # (B, C)

    def call(self, token_ids, training=False):
        pooled = self.features(token_ids, training=training)  # (B, C)
        logits = self.head(self.head_dropout(pooled, training=training))  # (B, num_classes)
        return ops.cast(logits, "float32")  # accurate softmax under mixed precision

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "pad_id": self.pad_id,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def classify(model, tokenizer, texts, *, max_length, labels, batch_size=64):
    """Class probabilities for each text.

    Args:
        model: a classifier mapping token ids (B, T) to logits (B, len(labels)),
            e.g. a :class:`SequenceClassifier`.
        tokenizer: the tokenizer the model was trained with (pads with id 0).
        texts: a list of strings.
        max_length: longer texts are cut to their first ``max_length`` tokens.
        labels: the class names, in logit order.
        batch_size: texts per forward pass.

    Returns:
        one dict per text, ``{label: probability}`` in ``labels`` order.

    Example:
        >>> classify(model, tok, ["这家店很好吃"], max_length=128, labels=["负面", "正面"])  # doctest: +SKIP
        [{'负面': 0.08, '正面': 0.92}]
    """
    if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) < 2:
        raise ValueError(f"labels must be a list of at least 2 class names; got {labels!r}")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and len(labels) != num_classes:
        raise ValueError(
            f"labels must have num_classes={num_classes} entries; got {len(labels)}: {labels!r}"
        )
    check_int("max_length", max_length)
    check_int("batch_size", batch_size)
    if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
        raise ValueError(f"texts must be a non-empty list of strings; got {texts!r}")
    results = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer.encode_batch(list(texts[start:start + batch_size]), max_length=max_length)
        logits = ops.convert_to_numpy(model(batch["input_ids"], training=False)).astype("float64")
        if logits.shape[-1] != len(labels):
            raise ValueError(
                f"labels must have one entry per logit ({logits.shape[-1]}); got {len(labels)}"
            )
        logits -= logits.max(axis=-1, keepdims=True)  # stable softmax
        probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
        results.extend({label: float(p) for label, p in zip(labels, row)} for row in probs)
    return results

"""Fine-tuning a sequence classifier on labelled texts: data, training loop, prediction.

What :mod:`llmft.heads` leaves to the caller, done once so that chapters 5
and 6 share it:

1. :func:`encode` turns labelled examples into padded token ids and labels;
2. :func:`batches` groups texts of similar length into a batch and cuts each
   batch to its longest row (short reviews then cost far less than
   ``max_length`` tokens), in a seeded order that changes every epoch;
3. :func:`fit_classifier` compiles with AdamW and a warmup/cosine schedule,
   prints one line per epoch with the validation accuracy, and keeps the
   weights of the best epoch (chosen on validation data, never on test);
4. :func:`predict_logits` and :func:`extract_features` run the model in
   length-sorted batches and return rows in the original order.

Introduced in chapter 5.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from llmft import heads, padding
from llmft.checks import check_int
from llmft.train import build_before_fit, finetune_optimizer


def encode(tokenizer, examples, *, max_length):
    """``(input_ids (N, max_length) int32, labels (N,) int32)`` of ``examples``.

    Args:
        tokenizer: a :class:`~llmft.tokenizers.CharTokenizer` (pad id 0).
        examples: objects with ``.text`` and ``.label`` (e.g. :func:`llmft.data.load_reviews`).
        max_length: texts are cut to their first ``max_length`` tokens.
    """
    check_int("max_length", max_length)
    examples = list(examples)
    if not examples:
        raise ValueError("examples must not be empty")
    ids = tokenizer.encode_batch([ex.text for ex in examples], max_length=max_length, padding="max_length")
    return ids["input_ids"], np.array([ex.label for ex in examples], dtype="int32")


def batch_indices(lengths, *, batch_size, shuffle, seed=0, bucket=True):
    """Row indices of each batch.

    With ``shuffle`` the rows are permuted with ``seed``; with ``bucket``
    each window of 50 batches is then sorted by length before it is cut into
    batches, and (if shuffling) the batch order is permuted again, so a batch
    holds texts of similar length but the epoch is still random.
    """
    check_int("batch_size", batch_size)
    n = len(lengths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n) if shuffle else np.arange(n)
    if bucket:
        window = 50 * batch_size
        order = np.concatenate([
            chunk[np.argsort(lengths[chunk], kind="stable")]
            for chunk in np.array_split(order, max(1, -(-n // window)))
        ])
    groups = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if shuffle:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    return groups


def batches(x, y, *, batch_size=32, shuffle=False, seed=0, bucket=True, multiple=8):
    """A ``tf.data.Dataset`` of ``(x_batch, y_batch)``; a new seeded order each epoch.

    Args:
        x: token ids (N, T) padded with 0 on the right, or features (N, C)
            (then pass ``bucket=False``).
        y: integer labels (N,).
        bucket: batch rows of similar length together and cut each batch's
            ids to its longest row (rounded up to ``multiple``).
    """
    import tensorflow as tf

    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty with the same length; got {len(x)} and {len(y)}")
    lengths = padding.lengths(x) if bucket else np.zeros(len(x), int)
    epoch = [0]

    def generate():
        groups = batch_indices(lengths, batch_size=batch_size, shuffle=shuffle, seed=seed + epoch[0], bucket=bucket)
        epoch[0] += 1
        for rows in groups:
            xb = x[rows]
            yield (xb[:, :padding.batch_width(xb, multiple)] if bucket else xb), y[rows]

    spec_x = tf.TensorSpec((None,) * x.ndim, tf.as_dtype(x.dtype))
    spec_y = tf.TensorSpec((None,), tf.as_dtype(y.dtype))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=(spec_x, spec_y))
    # A known length lets Keras end each epoch cleanly (no "ran out of data" warning).
    return dataset.apply(tf.data.experimental.assert_cardinality(-(-len(x) // batch_size)))


class _EpochLog(keras.callbacks.Callback):
    """One printed line per epoch; remembers the weights of the best validation epoch."""

    def __init__(self, name, verbose):
        super().__init__()
        self.name, self.verbose = name, verbose
        self.rows, self.best, self.best_weights = [], -1.0, None
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1, "loss": float(logs["loss"]), "accuracy": float(logs["accuracy"]),
               "val_loss": float(logs["val_loss"]), "val_accuracy": float(logs["val_accuracy"]),
               "seconds": round(time.perf_counter() - self.start, 1)}
        self.rows.append(row)
        if row["val_accuracy"] > self.best:
            self.best, self.best_weights = row["val_accuracy"], self.model.get_weights()
        if self.verbose:
            print(f"{self.name}第 {row['epoch']} 轮  训练损失 {row['loss']:.4f}  训练准确率 {row['accuracy']:.4f}  "
                  f"验证损失 {row['val_loss']:.4f}  验证准确率 {row['val_accuracy']:.4f}  {row['seconds']:.0f}s",
                  flush=True)


def fit_classifier(model, train_data, val_data, *, epochs, learning_rate, steps_per_epoch,
                   warmup_fraction=0.1, weight_decay=0.01, clip_norm=1.0, restore_best=True,
                   name="", verbose=True):
    """Train ``model`` (ids -> logits) with AdamW, warmup and cosine decay.

    Args:
        model: e.g. a :class:`~llmft.heads.SequenceClassifier`; set what is
            trainable (freeze, LoRA) before calling.
        train_data, val_data: datasets from :func:`batches`.
        epochs: passes over ``train_data``.
        learning_rate: peak learning rate.
        steps_per_epoch: batches per epoch (``ceil(N / batch_size)``), for the schedule.
        restore_best: end with the weights of the epoch with the best
            validation accuracy (model selection on validation data).
        name: printed at the start of every line.

    Returns:
        one dict per epoch: ``epoch``, ``loss``, ``accuracy``, ``val_loss``,
        ``val_accuracy``, ``seconds`` (since the start).
    """
    check_int("epochs", epochs)
    check_int("steps_per_epoch", steps_per_epoch)
    optimizer = finetune_optimizer(learning_rate, epochs * steps_per_epoch, warmup_fraction=warmup_fraction,
                                   weight_decay=weight_decay, clip_norm=clip_norm)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    build_before_fit(model, train_data)
    log = _EpochLog(name, verbose)
    # shuffle=False: the dataset from `batches` shuffles itself, per epoch.
    model.fit(train_data, validation_data=val_data, epochs=epochs, callbacks=[log], shuffle=False, verbose=0)
    if restore_best and log.best_weights is not None:
        model.set_weights(log.best_weights)
    return log.rows


def _compiled(fn):
    # One trace for every batch shape: (None, None) int32 ids. Without the
    # signature, each new batch width would retrace (and warn after five).
    import tensorflow as tf

    return tf.function(fn, input_signature=[tf.TensorSpec((None, None), tf.int32)])


def _sorted_apply(fn, x, batch_size, bucket):
    x = np.asarray(x)
    lengths = padding.lengths(x) if bucket else np.zeros(len(x), int)
    order = np.argsort(lengths, kind="stable")
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[order[i:i + batch_size]]
        xb = xb[:, :padding.batch_width(xb, 8)] if bucket else xb
        out.append(keras.ops.convert_to_numpy(fn(xb.astype("int32"))))
    result = np.concatenate(out)
    restored = np.empty_like(result)
    restored[order] = result
    return restored


def predict_logits(model, x, *, batch_size=128, bucket=True):
    """Logits (N, num_classes) of ``model`` on token ids ``x``, in the order of ``x``."""
    check_int("batch_size", batch_size)
    return _sorted_apply(_compiled(lambda xb: model(xb, training=False)), x, batch_size, bucket)


def extract_features(classifier, x, *, batch_size=128, poolings=None):
    """Pooled backbone features of a :class:`~llmft.heads.SequenceClassifier`, in the order of ``x``.

    For a linear probe: the frozen backbone runs once over the data, then only
    the head trains on these fixed vectors.

    Args:
        classifier: the classifier whose backbone makes the features.
        x: token ids (N, T), padded with ``classifier.pad_id`` on the right.
        poolings: ``None`` for the classifier's own pooling, returning an
            array (N, C); or a tuple such as ``("last", "mean")``, returning
            ``{pooling: (N, C)}`` from a single pass over the data.
    """
    check_int("batch_size", batch_size)
    names = (classifier.pooling,) if poolings is None else tuple(poolings)
    for name in names:
        if name not in heads.POOLINGS:
            raise ValueError(f"poolings must contain only {heads.POOLINGS}; got {name!r}")
    def features(xb):
        hidden = classifier.backbone.hidden_states(xb, training=False)  # (B, T, C)
        pooled = [
            keras.ops.einsum(
                "bt,btc->bc",
                heads.pooling_weights(xb, pooling=name, pad_id=classifier.pad_id, dtype=hidden.dtype),
                hidden,
            )
            for name in names
        ]
        return keras.ops.concatenate(pooled, axis=-1)  # (B, len(names) * C)

    out = _sorted_apply(_compiled(features), x, batch_size, True)
    parts = np.split(out, len(names), axis=-1)
    return parts[0] if poolings is None else dict(zip(names, parts))

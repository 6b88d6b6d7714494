"""Linear classifiers with their regularisation chosen on validation data.

Two classifiers that the chapters compare neural models against, each a
logistic regression (scikit-learn) whose strength ``C`` is picked by
accuracy on a validation set, never on the test set:

- :func:`tfidf_logreg`: TF-IDF of character n-grams, the classic strong
  baseline for short Chinese texts (no word segmentation needed);
- :func:`linear_probe`: features of a frozen backbone
  (:func:`llmft.finetune.extract_features`), optionally under several
  poolings, the pooling chosen together with ``C``.

The best ``C`` depends on how many labelled examples there are (fewer
examples want stronger regularisation, a smaller ``C``), so a label-efficiency
curve calls these once per training-set size. Introduced in chapter 5.

Example:
    >>> texts = ["好", "很好", "不好", "差", "很差", "不差"] * 3
    >>> labels = [1, 1, 0, 0, 0, 1] * 3
    >>> choice = tfidf_logreg(texts, labels, texts, labels, Cs=(1.0, 10.0))
    >>> choice.val_scores  # a tie: the first candidate is kept
    {1.0: 1.0, 10.0: 1.0}
    >>> choice.setting, choice.predict(["很好", "很差"]).tolist()
    ({'C': 1.0}, [1, 0])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from llmft import metrics

# Grids: a factor of about 3 between neighbours. TF-IDF features are sparse
# and many, so it wants weaker regularisation than a probe's 128 dense features.
TFIDF_CS = (1.0, 3.0, 10.0, 30.0, 100.0)
PROBE_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


@dataclasses.dataclass(frozen=True)
class Selection:
    """A fitted classifier and how it was chosen.

    Attributes:
        model: the scikit-learn estimator fitted on the training data with
            the chosen setting (a ``Pipeline`` for TF-IDF).
        setting: the chosen hyperparameters, e.g. ``{"C": 10.0}`` or
            ``{"pooling": "mean", "C": 0.1}``.
        val_accuracy: its accuracy on the validation data.
        val_scores: validation accuracy of every candidate, keyed by ``C`` or
            by ``(pooling, C)``.
    """

    model: object
    setting: dict
    val_accuracy: float
    val_scores: dict

    def predict(self, inputs) -> np.ndarray:
        """Predicted labels; a probe takes the dict of pooled features (or one array)."""
        if "pooling" in self.setting and isinstance(inputs, Mapping):
            inputs = inputs[self.setting["pooling"]]
        return np.asarray(self.model.predict(inputs))


def _check_Cs(Cs) -> tuple[float, ...]:
    values = tuple(Cs) if isinstance(Cs, Sequence) and not isinstance(Cs, str) else ()
    if not values or any(isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0 for c in values):
        raise ValueError(f"Cs must be a non-empty sequence of numbers > 0; got {Cs!r}")
    return tuple(float(c) for c in values)


def _check_labels(name, labels, n, inputs_name):
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{name} must be a 1-D sequence with one label per item of {inputs_name} ({n}); "
                         f"got shape {labels.shape}")
    return labels


def _check_train_labels(labels):
    if len(np.unique(labels)) < 2:
        raise ValueError(f"train_labels must contain at least two classes; got {np.unique(labels).tolist()!r}")


def _best(scores: dict):
    # max() keeps the first of equal scores: ties go to the earlier candidate
    # (the stronger regularisation, as the grids are in increasing C).
    return max(scores, key=scores.get)


def _logreg(C, max_iter):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=max_iter)


def tfidf_logreg(train_texts, train_labels, val_texts, val_labels, *, Cs=TFIDF_CS, ngram_range=(1, 3),
                 max_iter=3000) -> Selection:
    """TF-IDF of character n-grams + logistic regression, ``C`` chosen on validation accuracy.

    The vectoriser (sublinear term frequency) is fitted on the training texts
    only, once; a logistic regression is fitted for every ``C`` in ``Cs``.

    Args:
        train_texts, val_texts: sequences of strings.
        train_labels, val_labels: integer labels, one per text.
        Cs: candidate inverse regularisation strengths, tried in order
            (ties keep the first).
        ngram_range: ``(min_n, max_n)`` character n-gram lengths.
        max_iter: iterations of the lbfgs solver.

    Returns:
        a :class:`Selection` whose ``model`` is a ``Pipeline`` that predicts
        from raw texts.

    Raises:
        ValueError: empty or mismatched inputs, a bad ``Cs`` or
            ``ngram_range``, or fewer than two classes in ``train_labels``.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline

    Cs = _check_Cs(Cs)
    for name, texts in [("train_texts", train_texts), ("val_texts", val_texts)]:
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts \
                or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{name} must be a non-empty sequence of strings; got {type(texts).__name__} "
                             f"of length {len(texts) if hasattr(texts, '__len__') else '?'}")
    if (not isinstance(ngram_range, tuple) or len(ngram_range) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in ngram_range)
            or not 1 <= ngram_range[0] <= ngram_range[1]):
        raise ValueError(f"ngram_range must be a tuple (min_n, max_n) with 1 <= min_n <= max_n; got {ngram_range!r}")
    y_train = _check_labels("train_labels", train_labels, len(train_texts), "train_texts")
    y_val = _check_labels("val_labels", val_labels, len(val_texts), "val_texts")
    _check_train_labels(y_train)

    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=ngram_range, sublinear_tf=True).fit(train_texts)
    x_train, x_val = vectorizer.transform(train_texts), vectorizer.transform(val_texts)
    fitted = {C: _logreg(C, max_iter).fit(x_train, y_train) for C in Cs}
    scores = {C: metrics.accuracy(y_val, model.predict(x_val)) for C, model in fitted.items()}
    C = _best(scores)
    pipeline = Pipeline([("tfidf", vectorizer), ("logreg", fitted[C])])
    return Selection(pipeline, {"C": C}, scores[C], scores)


def _as_pooled(name, features) -> dict[str | None, np.ndarray]:
    if isinstance(features, Mapping):
        pooled = {str(k): np.asarray(v) for k, v in features.items()}
    else:
        pooled = {None: np.asarray(features)}
    if not pooled or any(v.ndim != 2 or len(v) == 0 for v in pooled.values()):
        raise ValueError(f"{name} must be a non-empty 2-D array (examples, features) or a dict of them per pooling; "
                         f"got shapes {({k: v.shape for k, v in pooled.items()})!r}")
    return pooled


def linear_probe(train_features, train_labels, val_features, val_labels, *, Cs=PROBE_CS,
                 max_iter=3000) -> Selection:
    """Logistic regression on fixed features; pooling and ``C`` chosen on validation accuracy.

    Args:
        train_features, val_features: a 2-D array ``(examples, features)``,
            or a dict ``pooling -> array`` as returned by
            :func:`llmft.finetune.extract_features` with several poolings
            (both with the same keys).
        train_labels, val_labels: integer labels, one per row.
        Cs: candidate inverse regularisation strengths, tried in order.
        max_iter: iterations of the lbfgs solver.

    Returns:
        a :class:`Selection`; ``setting`` holds ``C`` and, for dict inputs,
        ``pooling``. ``Selection.predict`` takes the same kind of input.

    Raises:
        ValueError: mismatched shapes or poolings, a bad ``Cs``, or fewer
            than two classes in ``train_labels``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(40, 3)); y = (x[:, 0] > 0).astype(int)
        >>> probe = linear_probe({"last": x, "mean": -x}, y, {"last": x, "mean": -x}, y, Cs=(1.0,))
        >>> probe.setting, probe.val_accuracy
        ({'pooling': 'last', 'C': 1.0}, 1.0)
    """
    Cs = _check_Cs(Cs)
    train, val = _as_pooled("train_features", train_features), _as_pooled("val_features", val_features)
    if set(train) != set(val):
        raise ValueError(f"train_features and val_features must have the same poolings; got {sorted(map(str, train))!r} "
                         f"and {sorted(map(str, val))!r}")
    for pool in train:
        if train[pool].shape[1] != val[pool].shape[1]:
            raise ValueError(f"train_features and val_features must have the same width; got {train[pool].shape[1]} "
                             f"and {val[pool].shape[1]} (pooling {pool!r})")
    for pool in train:
        y_train = _check_labels("train_labels", train_labels, len(train[pool]), "train_features")
        y_val = _check_labels("val_labels", val_labels, len(val[pool]), "val_features")
    _check_train_labels(y_train)

    fitted = {(pool, C): _logreg(C, max_iter).fit(train[pool], y_train) for pool in train for C in Cs}
    scores = {key: metrics.accuracy(y_val, model.predict(val[key[0]])) for key, model in fitted.items()}
    pool, C = _best(scores)
    if pool is None:
        return Selection(fitted[pool, C], {"C": C}, scores[pool, C], {c: a for (_, c), a in scores.items()})
    return Selection(fitted[pool, C], {"pooling": pool, "C": C}, scores[pool, C], scores)

"""An LSTM language model: the architecture the source article builds on.

Introduced in chapter 3 (LSTM gates, pretraining) as the baseline the book
compares with the Transformer in :mod:`llmft.gpt`; chapter 4 checks its
equations against ``keras.layers.LSTM``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from llmft.checks import check_dropout, check_int

# Named sizes (the vocabulary comes from the tokenizer). "small" has about
# the parameters of GPT "small" (1.55M with 5000 tokens) and trains at least
# as fast per step on a 2-core CPU; hidden_dim=256 would be 3-4x slower,
# mostly in the wider 5000-way output layer.
PRESETS: dict[str, dict] = {
    "tiny": dict(embedding_dim=16, hidden_dim=32, num_layers=1),
    "small": dict(embedding_dim=128, hidden_dim=128, num_layers=2, dropout=0.1),
    "base": dict(embedding_dim=256, hidden_dim=512, num_layers=2, dropout=0.1),
}


@keras.saving.register_keras_serializable(package="llmft")
class LSTMLanguageModel(keras.Model):
    """Embedding, stacked LSTMs and a Dense layer to next-token logits (B, T, V).

    ``call(token_ids, training=False, return_hidden_states=False)``: with
    ``return_hidden_states=True`` it returns the last LSTM's outputs instead.

    Introduced in chapter 3.

    Args:
        vocab_size: number of token ids V.
        embedding_dim: width E of the token embeddings.
        hidden_dim: units H of every LSTM layer.
        num_layers: number of stacked LSTM layers.
        dropout: rate in [0, 1) applied to the embeddings and to each LSTM's
            output (not to the recurrent state, which keeps the fast fused
            LSTM kernel usable on GPU).

    Example:
        >>> model = LSTMLanguageModel(vocab_size=100, embedding_dim=16, hidden_dim=32)
        >>> tuple(model(np.zeros((2, 10), "int32")).shape)
        (2, 10, 100)
    """

    def __init__(
        self, *, vocab_size, embedding_dim, hidden_dim, num_layers=1, dropout=0.0, **kwargs
    ):
        check_int("vocab_size", vocab_size)
        check_int("embedding_dim", embedding_dim)
        check_int("hidden_dim", hidden_dim)
        check_int("num_layers", num_layers)
        check_dropout(dropout)
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.embedding_dim = int(embedding_dim)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.lstm_layers = [
            keras.layers.LSTM(hidden_dim, return_sequences=True, name=f"lstm_{i + 1}")
            for i in range(num_layers)
        ]
        self.dropouts = [
            keras.layers.Dropout(dropout, name=f"dropout_{i}") for i in range(num_layers + 1)
        ]
        # No softmax here: the loss takes logits (from_logits=True) and applies
        # log-softmax itself, which is numerically stable; log(softmax(x))
        # computed in two steps underflows to log(0) = -inf for unlikely tokens.
        self.lm_head = keras.layers.Dense(vocab_size, name="lm_head")

    def build(self, input_shape):
        self.embedding.build(input_shape)
        shape = (input_shape[0], input_shape[1], self.embedding_dim)
        for lstm in self.lstm_layers:
            lstm.build(shape)
            shape = (input_shape[0], input_shape[1], self.hidden_dim)
        self.lm_head.build(shape)

    def call(self, token_ids, training=False, return_hidden_states=False):
        if len(token_ids.shape) != 2:
            raise ValueError(
                f"token_ids must have shape (batch, length); got shape {tuple(token_ids.shape)}"
            )
        x = self.embedding(token_ids)  # (B, T, E)
        x = self.dropouts[0](x, training=training)
        for lstm, dropout in zip(self.lstm_layers, self.dropouts[1:]):
            x = dropout(lstm(x, training=training), training=training)  # (B, T, H)
        if return_hidden_states:
            return x
        return ops.cast(self.lm_head(x), "float32")  # (B, T, V)

    def hidden_states(self, token_ids, training=False):
        """Outputs of the last LSTM layer, shape (B, T, hidden_dim)."""
        if isinstance(token_ids, (list, tuple)):
            token_ids = np.asarray(token_ids, dtype="int32")
        return self(token_ids, training=training, return_hidden_states=True)

    def get_config(self):
        keys = ("vocab_size", "embedding_dim", "hidden_dim", "num_layers", "dropout")
        return {**super().get_config(), **{key: getattr(self, key) for key in keys}}


def from_preset(name, vocab_size, **overrides):
    """Build an :class:`LSTMLanguageModel` from ``PRESETS[name]`` plus ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"name must be one of {sorted(PRESETS)}; got {name!r}")
    return LSTMLanguageModel(vocab_size=vocab_size, **{**PRESETS[name], **overrides})

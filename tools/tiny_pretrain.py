"""Pretrain a tiny GPT in a fresh process: the worker of tests/test_reliability.py.

The reliability tests start this script as a real subprocess, so that "two
runs give the same weights" means two separate processes (fresh Python, fresh
TensorFlow), and "kill and resume" means a real ``SIGKILL`` that no Python
code can catch or clean up after.

It seeds everything with :func:`llmft.env.set_seed`, builds the ``tiny`` GPT
preset (with dropout, so that the random state of dropout must survive a
resume too), and runs :func:`llmft.train.pretrain` on a fixed synthetic token
stream. At the end it writes ``OUT/weights.npz`` (every weight, in order) and
``OUT/history.json``. With ``--checkpoint-dir`` it checkpoints after every
evaluation and, started again with the same folder, resumes.

Usage::

    python tools/tiny_pretrain.py OUT [--checkpoint-dir DIR] [--steps 40]
        [--eval-every 2] [--pause 0.0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

VOCAB = 24
CONTEXT = 16


def token_stream(n=4000, seed=0):
    """A fixed stream with structure to learn: counting, with 10% random tokens."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = np.arange(n) % (VOCAB - 1) + 1
    noise = rng.random(n) < 0.1
    ids[noise] = rng.integers(1, VOCAB, noise.sum())
    return ids.astype(np.int32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds to sleep after each evaluation (slows the run, changes no number)")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from llmft import env, gpt, train

    env.set_seed(0)
    model = gpt.from_preset("tiny", vocab_size=VOCAB, context_length=CONTEXT, dropout=args.dropout)
    ids = token_stream()

    class Pause(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(args.pause)

    model, history = train.pretrain(
        model, ids[:3000], ids[3000:], steps=args.steps, eval_every=args.eval_every, batch_size=8,
        warmup_steps=2, learning_rate=1e-2, eval_batches=2, checkpoint_dir=args.checkpoint_dir,
        callbacks=[Pause()] if args.pause else (), verbose=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    weights = {f"w{i:03d}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    np.savez(args.out / "weights.npz", **weights)
    (args.out / "history.json").write_text(json.dumps(history), encoding="utf-8")
    print(f"done: step {history[-1]['step']}, {len(weights)} weight arrays", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

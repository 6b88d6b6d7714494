"""llmft: the code behind the book 《大语言模型原理与工程实践：有监督微调》.

Small flat modules, one concept each (see the API reference in the book).
Import what you need, e.g. ``from llmft import data, tokenizers``.
"""

import os as _os

# TensorFlow prints pages of C++ start-up logs; keep notebooks readable.
# setdefault: a reader who wants the logs can still set the variable first.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Import the Keras backend once, with its native start-up notices silenced
# (see llmft.env), before any module below imports keras itself: whichever
# llmft module a chapter imports first, its output stays clean.
from llmft import env as _env  # noqa: E402,F401

__version__ = "0.1.0"

"""llmft: the code behind the book 《大语言模型原理与工程实践：有监督微调》.

Small flat modules, one concept each (see the API reference in the book).
Import what you need, e.g. ``from llmft import data, tokenizers``.
"""

import os as _os

# TensorFlow prints pages of C++ start-up logs; keep notebooks readable.
# setdefault: a reader who wants the logs can still set the variable first.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

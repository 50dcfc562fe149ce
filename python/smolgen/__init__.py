"""smolgen: run SmolLM2 locally, fast, with the lid off.

>>> import smolgen
>>> model = smolgen.load()            # the default model, pulled on first use
>>> model.generate("Once upon a time", max_tokens=20, temperature=0).text
"""

from __future__ import annotations

from ._core import __version__
from .batches import BatchStats, batch, run_batch_file
from .chat import ChatTemplate, TrimmedMessages, trim_messages
from .convert import QuantizeResult, TensorConversion, quantize
from .errors import (
    ChatTemplateError,
    ContextLengthExceededError,
    DownloadError,
    InternalError,
    InvalidArgumentError,
    MalformedModelError,
    ModelIOError,
    ModelNotFoundError,
    SmolgenError,
    UnsupportedModelError,
)
from .hub import DEFAULT_MODEL, pull
from .model import Completion, CompletionStream, Model, Tokenizer, TokenPiece, load, step_streams
from .peek import Candidate, Peek, Score, TokenScore

__all__ = [
    "DEFAULT_MODEL",
    "BatchStats",
    "Candidate",
    "ChatTemplate",
    "ChatTemplateError",
    "Completion",
    "CompletionStream",
    "ContextLengthExceededError",
    "DownloadError",
    "InternalError",
    "InvalidArgumentError",
    "MalformedModelError",
    "Model",
    "ModelIOError",
    "ModelNotFoundError",
    "Peek",
    "QuantizeResult",
    "Score",
    "SmolgenError",
    "TensorConversion",
    "TokenPiece",
    "TokenScore",
    "Tokenizer",
    "TrimmedMessages",
    "UnsupportedModelError",
    "__version__",
    "batch",
    "load",
    "pull",
    "quantize",
    "run_batch_file",
    "step_streams",
    "trim_messages",
]

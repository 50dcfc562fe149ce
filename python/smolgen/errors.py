"""The exceptions smolgen raises. The Rust core maps each of its error kinds to one of these.

Every class derives from :class:`SmolgenError` and also from the builtin a Python user would
catch for that kind of failure (``FileNotFoundError``, ``ValueError``, ...).
"""

from __future__ import annotations


class SmolgenError(Exception):
    """Base class of every smolgen error."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        for key, value in details.items():
            setattr(self, key, value)


class ModelNotFoundError(SmolgenError, FileNotFoundError):
    """No model at the given path, alias or repository."""


class MalformedModelError(SmolgenError, ValueError):
    """The model file is truncated, corrupt or inconsistent (names the file and the problem),
    found at load or by weights that give non-finite logits. ``path``: the file."""


class UnsupportedModelError(SmolgenError):
    """A well-formed model smolgen cannot run (architecture, tensor type, tokenizer...), or a
    device or kernel path this build or machine lacks. ``path``: the model's file, or None."""


class ContextLengthExceededError(SmolgenError, ValueError):
    """Prompt tokens plus ``max_tokens`` exceed the model's context window.

    Attributes: ``max_context``, ``prompt_tokens``, ``max_tokens``, ``requested``, and
    ``at_least``: true when the prompt was refused for its length in bytes, before tokenizing,
    so that ``prompt_tokens`` is a lower bound.
    """

    max_context: int
    prompt_tokens: int
    max_tokens: int
    requested: int
    at_least: bool = False


class InvalidArgumentError(SmolgenError, ValueError, TypeError):
    """An argument of the wrong type or outside its domain (negative temperature, unknown token
    id, an integer that does not fit, text with a lone surrogate, an unknown keyword...). It is
    both a ``ValueError`` and a ``TypeError``, so code written for either builtin catches it."""


class ChatTemplateError(SmolgenError, ValueError):
    """The model's chat template is missing, does not compile, or tried something other than
    formatting the messages (the sandbox refused it)."""


class ModelIOError(SmolgenError, OSError):
    """Reading a model failed at the operating-system level."""


class DownloadError(SmolgenError):
    """Fetching a model failed from every source, or its checksum did not match."""


class InternalError(SmolgenError, RuntimeError):
    """A bug in smolgen rather than bad input: please report it."""


class OverloadedError(SmolgenError):
    """The server's every slot is busy and its queue is full: try again later."""


class ClientDisconnectedError(SmolgenError, ConnectionError):
    """The client of a server request went away before its generation finished."""


class ThroughputUnavailableError(SmolgenError, RuntimeError):
    """A measured throughput was asked for, but this build cannot measure one."""


class BpeDataError(SmolgenError, RuntimeError):
    """A BPE rank file is missing, unreadable or does not match tiktoken's pinned hash."""


__all__ = [
    "BpeDataError",
    "ChatTemplateError",
    "ClientDisconnectedError",
    "ContextLengthExceededError",
    "DownloadError",
    "InternalError",
    "InvalidArgumentError",
    "MalformedModelError",
    "ModelIOError",
    "ModelNotFoundError",
    "OverloadedError",
    "SmolgenError",
    "ThroughputUnavailableError",
    "UnsupportedModelError",
]

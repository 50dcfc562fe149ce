"""The Python face of a loaded model: `smolgen.load(...)` returns a :class:`Model`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np

from . import _core
from .errors import InvalidArgumentError
from .hub import resolve
from .peek import Peek, Score, peek, score

TokenPiece = _core.TokenPiece
Completion = _core.Completion
CompletionStream = _core.CompletionStream


class Tokenizer:
    """A model's tokenizer: text to token ids and back, and the pieces in between."""

    def __init__(self, inner: _core.Tokenizer) -> None:
        self._inner = inner

    @classmethod
    def load(cls, spec: str | os.PathLike[str] | None = None) -> Tokenizer:
        """The tokenizer of a model spec (``.gguf``, ``tokenizer.json``, directory or alias),
        without loading the weights."""
        return cls(_core.Tokenizer.from_file(resolve(spec)))

    def encode(self, text: str, special: bool = False) -> list[int]:
        """Token ids of ``text``. ``special=True`` parses special-token text (``<|im_end|>``)."""
        return self._inner.encode(text, special)

    def decode(self, ids: Sequence[int]) -> str:
        return self._inner.decode(list(ids))

    def tokens(self, text: str, special: bool = False) -> list[TokenPiece]:
        """One :class:`TokenPiece` (``id``, ``text``, ``bytes``) per token of ``text``."""
        return self._inner.tokens(text, special)

    def piece(self, token_id: int) -> TokenPiece:
        return self._inner.piece(token_id)

    @property
    def vocab_size(self) -> int:
        return self._inner.vocab_size

    @property
    def bos_id(self) -> int | None:
        return self._inner.bos_id

    @property
    def eos_id(self) -> int | None:
        return self._inner.eos_id

    @property
    def end_of_generation_ids(self) -> list[int]:
        return self._inner.end_of_generation_ids

    @property
    def chat_template(self) -> str | None:
        return self._inner.chat_template

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"


class Model:
    """A loaded model. Thread-safe: several threads may generate at once (the GIL is released
    while the model computes)."""

    def __init__(self, inner: _core.Model) -> None:
        self._inner = inner

    @property
    def info(self) -> dict[str, Any]:
        """Architecture, parameter count, layers, heads, context length, vocabulary size, storage
        type per tensor kind, weight bytes, KV-cache bytes per token, device, load time."""
        return self._inner.info

    def memory(self) -> dict[str, int | None]:
        """Weight bytes, KV-cache bytes per token of context, and this process's peak resident
        memory so far (``None`` where the platform does not report it)."""
        info = self.info
        return {
            "weight_bytes": info["weight_bytes"],
            "kv_bytes_per_token": info["kv_bytes_per_token"],
            "peak_rss_bytes": peak_rss_bytes(),
        }

    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self._inner.tokenizer)

    @property
    def context_length(self) -> int:
        return self._inner.info["context_length"]

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids of ``text`` (special-token text parsed unless ``special=False``)."""
        return self._inner.tokenize(text, special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._inner.detokenize(list(ids))

    def tokens(self, text: str, special: bool = True) -> list[TokenPiece]:
        """``text`` as the model sees it: a :class:`TokenPiece` (id, text, bytes) per token."""
        return self._inner.tokens(text, special)

    def logits(
        self, prompt: str | Sequence[int], positions: Literal["last", "all"] = "last"
    ) -> np.ndarray:
        """Next-token logits after ``prompt``: float32 ``[vocab]`` for the last position, or
        ``[tokens, vocab]`` with ``positions="all"`` (row i predicts token i + 1)."""
        if not isinstance(prompt, str):
            prompt = list(prompt)
        return self._inner.logits(prompt, positions)

    def attention(
        self, prompt: str | Sequence[int], layers: Sequence[int] | None = None
    ) -> np.ndarray:
        """Softmax attention weights of one forward pass: float32
        ``[layers, heads, tokens, tokens]``, row = query position, column = key position, each
        row summing to 1 over the positions it may see. ``layers`` picks layers (default all)."""
        if not isinstance(prompt, str):
            prompt = list(prompt)
        return self._inner.attention(prompt, None if layers is None else list(layers))

    def peek(self, prompt: str | Sequence[int], top_k: int = 5) -> Peek:
        """The ``top_k`` likeliest next tokens (id, piece, probability, log-probability), the
        distribution's entropy in bits, the top-1 probability and its margin to the second."""
        return peek(self, prompt, top_k)

    def score(self, text: str | Sequence[int]) -> Score:
        """The log-probability of each token of ``text`` given the ones before it, and the
        text's perplexity."""
        return score(self, text)

    @overload
    def generate(
        self, prompt: str | Sequence[int], *, stream: Literal[False] = ..., **sampling: Any
    ) -> Completion: ...
    @overload
    def generate(
        self, prompt: str | Sequence[int], *, stream: Literal[True], **sampling: Any
    ) -> CompletionStream: ...

    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        max_tokens: int | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        logit_bias: Mapping[int, float] | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        logprobs: int | None = None,
        stream: bool = False,
        prefix_cache: bool = True,
    ) -> Completion | CompletionStream:
        """Continues ``prompt`` (text, or token ids used as they are).

        ``temperature=0`` is greedy; ``top_k=0``, ``top_p=1`` and ``min_p=0`` switch those
        filters off. Generation ends at an end-of-generation token (``finish_reason="stop"``),
        before the first ``stop`` string (never included in the text), or after ``max_tokens``
        (``"length"``; unset, 256 or what is left of the context window). The same ``seed``
        and settings give the same tokens on every run.

        ``logprobs=N`` (0..20) reports, for every generated token, its log-probability under
        the model (softmax of the raw logits) and the N likeliest alternatives at that step.

        The prompt's beginning is taken from the model's prefix cache when an earlier request
        left it there (``usage.cached_tokens`` says how many tokens); the output is the same
        either way. ``prefix_cache=False`` neither reuses nor leaves anything there.

        Returns a :class:`Completion` (``text``, ``token_ids``, ``finish_reason``, ``usage``,
        ``timings``, ``logprobs``), or with ``stream=True`` an iterator of chunks
        ``(text, token_id)`` that never splits a UTF-8 character; its ``completion`` is set once
        it is exhausted.
        """
        if not isinstance(prompt, str):
            prompt = list(prompt)
        stops = stop if isinstance(stop, str) or stop is None else list(stop)
        return self._inner.generate(
            prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            repetition_penalty=repetition_penalty,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            logit_bias=dict(logit_bias) if logit_bias else None,
            seed=seed,
            stop=stops,
            logprobs=logprobs,
            stream=stream,
            prefix_cache=prefix_cache,
        )

    @overload
    def chat(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        stream: Literal[False] = ...,
        max_tokens: int | None = ...,
        **sampling: Any,
    ) -> Completion: ...
    @overload
    def chat(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        stream: Literal[True],
        max_tokens: int | None = ...,
        **sampling: Any,
    ) -> CompletionStream: ...

    def chat(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        stream: bool = False,
        max_tokens: int | None = None,
        **sampling: Any,
    ) -> Completion | CompletionStream:
        """The assistant's reply to ``messages`` (``{"role", "content"}`` with roles ``system``,
        ``developer`` (= system), ``user``, ``assistant``; content a string or a list of
        ``{"type": "text", "text": ...}`` parts), prompted through the model's own chat template.

        Takes every keyword of :meth:`generate`. The messages are never truncated: when they
        and ``max_tokens`` do not fit the context window this raises
        :class:`~smolgen.errors.ContextLengthExceededError` (see :func:`smolgen.trim_messages`).
        A conversation's earlier turns are reused from the prefix cache, so each turn prefills
        only what is new (``usage.cached_tokens``).
        """
        from .chat import chat_prompt_ids, check_context

        ids = chat_prompt_ids(self, messages)
        check_context(self, len(ids), max_tokens)
        return self.generate(ids, stream=stream, max_tokens=max_tokens, **sampling)

    def prefix_cache_stats(self) -> dict[str, int]:
        """The prefix cache: ``entries``, ``bytes`` held, ``capacity_bytes``, ``hits``,
        ``misses`` and ``tokens_reused`` (prompt tokens not prefilled again)."""
        return self._inner.prefix_cache_stats()

    def configure_prefix_cache(
        self, capacity_bytes: int | None = None, *, clear: bool = False
    ) -> None:
        """Resizes the prefix cache (``0`` disables it) and, with ``clear=True``, empties it."""
        self._inner.configure_prefix_cache(_cache_bytes(capacity_bytes), clear)

    def __repr__(self) -> str:
        info = self.info
        return (
            f"Model({info['path']!r}, format={info['format']!r}, "
            f"parameters={info['parameters']:,}, device={info['device']!r})"
        )


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size, in bytes."""
    try:
        import resource
    except ImportError:  # not on this platform (Windows)
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def step_streams(streams: Sequence[CompletionStream]) -> list[Any]:
    """One token of each stream, their forward passes batched into one pass over the weights.

    The streams (from ``generate(..., stream=True)`` on the same model) each keep their own KV
    cache, sampler and stop strings, and get exactly the tokens they would get stepped alone;
    several concurrent generations cost little more than one. Returns, per stream, its next
    :class:`~smolgen._core.Chunk`, ``None`` once it has finished, or the exception its step
    raised (returned, not raised, so one bad request cannot fail the others).
    """
    return _core.step_streams(list(streams))


def load(
    spec: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    *,
    progress: bool = True,
    prefix_cache_bytes: int | None = None,
    threads: int | None = None,
) -> Model:
    """Loads a model.

    ``spec``: a ``.gguf`` path, a local Hugging Face directory, an alias
    (``smollm2-135m-instruct``, the default, pulled into the cache on first use) or a Hugging
    Face repo id. ``device``: ``cpu``, ``cuda[:N]`` or ``metal`` (when built with that feature).
    ``dtype`` (``f32``, ``f16``, ``bf16``) converts safetensors weights.
    ``prefix_cache_bytes`` bounds the keys and values kept from finished requests so that a
    later prompt with the same beginning skips its prefill (default 256 MiB; ``0`` disables).
    ``threads`` sizes the CPU kernels' thread pool (default: one per core; ``info["threads"]``
    reports it, and ``info["engine"]`` the instruction set they run, or ``candle``).
    """
    cache_bytes = _cache_bytes(prefix_cache_bytes)
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise InvalidArgumentError(f"threads must be an integer >= 1, got {threads!r}")
    path = resolve(spec, progress=progress)
    return Model(_core.Model.load(path, device, dtype, cache_bytes, threads))


def _cache_bytes(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InvalidArgumentError(f"prefix cache bytes must be an integer >= 0, got {value!r}")
    return value

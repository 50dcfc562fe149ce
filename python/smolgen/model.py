"""The Python face of a loaded model: `smolgen.load(...)` returns a :class:`Model`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from . import _core
from .errors import InvalidArgumentError
from .hub import resolve
from .peek import Peek, Score, peek, score
from .tools import Tool

TokenPiece = _core.TokenPiece
Completion = _core.Completion
CompletionStream = _core.CompletionStream

if TYPE_CHECKING:
    from typing_extensions import Unpack


class Tokenizer(_core.Tokenizer):
    """A model's tokenizer: text to token ids and back, and the pieces in between.

    ``Tokenizer(path)`` loads a ``.gguf``, ``tokenizer.json`` or Hugging Face directory;
    :meth:`load` also takes a model alias. ``encode`` and ``tokens`` keep special-token text
    (``<|im_end|>``) as plain text unless ``special=True``.
    """

    @classmethod
    def load(cls, spec: str | os.PathLike[str] | None = None) -> Tokenizer:
        """The tokenizer of a model spec (``.gguf``, ``tokenizer.json``, directory or alias),
        without loading the weights."""
        return cls(resolve(spec))


class Model(_core.Model):
    """A loaded model. Thread-safe: several threads may generate at once (the GIL is released
    while the model computes).

    Everything but :meth:`chat`, :meth:`chat_prompt`, :meth:`peek`, :meth:`score` and
    :meth:`memory` is the Rust class :class:`smolgen._core.Model`: ``generate`` (its keywords
    are typed once, by ``smolgen._core._GenerateOptions``), ``logits``, ``attention``,
    ``tokenize`` (special-token text stays plain text unless ``special=True``), ``detokenize``,
    ``tokens``, ``info``, ``context_length``, ``longest_token_bytes``, ``check_prompt_length``,
    ``prefix_cache_stats``, ``configure_prefix_cache``.
    """

    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(super().tokenizer)

    def memory(self) -> dict[str, int | None]:
        """Weight bytes, KV-cache bytes per token of context, and this process's peak resident
        memory so far (``None`` where the platform does not report it)."""
        info = self.info
        return {
            "weight_bytes": info["weight_bytes"],
            "kv_bytes_per_token": info["kv_bytes_per_token"],
            "peak_rss_bytes": peak_rss_bytes(),
        }

    def chat_prompt(
        self, messages: Iterable[Mapping[str, Any]], *, continue_final_message: bool = False
    ) -> list[int]:
        """The token ids of ``messages`` rendered for a reply through the model's chat
        template: what :meth:`chat` generates from. A rendered prompt too long for any
        tokenization of it to fit the context window is refused before it is tokenized
        (:meth:`check_prompt_length`). ``continue_final_message``: the last message is the
        start of the assistant's reply, which the model goes on writing (a "prefill")."""
        from .chat import chat_prompt_ids

        return chat_prompt_ids(self, messages, continue_final_message=continue_final_message)

    def peek(self, prompt: str | Sequence[int], top_k: int = 5) -> Peek:
        """The ``top_k`` likeliest next tokens (id, piece, probability, log-probability), the
        distribution's entropy in bits, the top-1 probability and its margin to the second.
        A text prompt reads as ``generate`` reads it (BOS first when the model asks)."""
        return peek(self, prompt, top_k)

    def score(self, text: str | Sequence[int]) -> Score:
        """The log-probability of each token of ``text`` given the ones before it, and the
        text's perplexity. A text reads as ``generate`` reads a prompt (BOS first when the model
        asks; BOS itself is not scored)."""
        return score(self, text)

    @overload
    def chat(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        stream: Literal[False] = ...,
        continue_final_message: bool = ...,
        tools: Sequence[Mapping[str, Any] | Tool] | None = ...,
        tool_choice: str = ...,
        parallel_tool_calls: bool = ...,
        **options: Unpack[_core._GenerateOptions],
    ) -> Completion: ...
    @overload
    def chat(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        stream: Literal[True],
        continue_final_message: bool = ...,
        tools: Sequence[Mapping[str, Any] | Tool] | None = ...,
        tool_choice: str = ...,
        parallel_tool_calls: bool = ...,
        **options: Unpack[_core._GenerateOptions],
    ) -> CompletionStream: ...

    def chat(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        stream: bool = False,
        continue_final_message: bool = False,
        tools: Sequence[Mapping[str, Any] | Tool] | None = None,
        tool_choice: str = "auto",
        parallel_tool_calls: bool = True,
        **options: Unpack[_core._GenerateOptions],
    ) -> Completion | CompletionStream:
        """The assistant's reply to ``messages`` (``{"role", "content"}`` with roles ``system``,
        ``developer`` (= system), ``user``, ``assistant``; content a string or a list of
        ``{"type": "text", "text": ...}`` parts), prompted through the model's own chat template.

        Takes every keyword of :meth:`generate`. The messages are never truncated: when they
        and ``max_tokens`` do not fit the context window this raises
        :class:`~smolgen.errors.ContextLengthExceededError` (see :func:`smolgen.trim_messages`).
        A conversation's earlier turns are reused from the prefix cache, so each turn prefills
        only what is new (``usage.cached_tokens``). ``continue_final_message``: the last
        message is the start of the assistant's reply, which this goes on writing (the reply's
        text is what comes after it).

        ``tools`` (OpenAI's function tools, or :class:`~smolgen.tools.Tool`) are described to
        the model in SmolLM2's function-calling format and its reply is constrained to text or
        calls of them (``tool_choice``: ``"auto"``, ``"required"``, a tool's name, or
        ``"none"``; ``parallel_tool_calls=False``: one call at most); read the calls with
        :func:`smolgen.tools.parse_tool_calls`. Messages may hold OpenAI's tool turns (an
        assistant's ``tool_calls``, ``tool`` results).
        """
        from . import tools as tool_calls
        from .chat import check_context

        messages = tool_calls.openai_messages(messages)
        if tools and tool_choice != "none":
            listed = tool_calls.openai_tools(tools)
            if any(options.get(k) is not None for k in ("json_schema", "regex", "grammar")):
                raise InvalidArgumentError("tools and a json_schema, regex or grammar cannot "
                                           "be combined: give one constraint")  # fmt: skip
            messages = tool_calls.with_tools(messages, listed, tool_choice)
            options["grammar"] = tool_calls.grammar(listed, tool_choice, parallel_tool_calls)
        ids = self.chat_prompt(messages, continue_final_message=continue_final_message)
        check_context(self, len(ids), options.get("max_tokens"))
        return self.generate(ids, stream=stream, **options)


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
    quantize: str | None = None,
    progress: bool = True,
    prefix_cache_bytes: int | None = None,
    threads: int | None = None,
) -> Model:
    """Loads a model.

    ``spec``: a ``.gguf`` path, a local Hugging Face directory, an alias
    (``smollm2-135m-instruct``, the default, pulled into the cache on first use) or a Hugging
    Face repo id. ``device``: ``cpu``, ``cuda[:N]`` or ``metal`` (when built with that feature).
    ``dtype`` (``f32``, ``f16``, ``bf16``) converts safetensors weights; ``quantize`` (``q8_0``,
    ``q4_k``, ...: ggml's type names, ``smolgen._core.weight_types()``) quantizes their
    matrices at load, in ggml's reference rounding, so the result equals the same weights
    converted and quantized by llama.cpp's tools (rows a K-quant's 256-value superblocks do not
    tile fall back as ``llama-quantize`` does: q4_k to q5_0, q5_k to q5_1, q6_k to q8_0, q2_k
    and q3_k to q4_0).
    ``prefix_cache_bytes`` bounds the keys and values kept from finished requests so that a
    later prompt with the same beginning skips its prefill (default 256 MiB; ``0`` disables).
    ``threads`` sizes the CPU kernels' thread pool (default: one per core; ``info["threads"]``
    reports it, and ``info["engine"]`` the instruction set they run, or ``candle``).
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise InvalidArgumentError(f"threads must be an integer >= 1, got {threads!r}")
    path = resolve(spec, progress=progress)
    return Model(path, device, dtype, prefix_cache_bytes, threads, quantize)

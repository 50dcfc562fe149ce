"""OpenAI's request and response shapes for ``/v1/models``, ``/v1/chat/completions`` and
``/v1/completions``: requests take the fields the official client sends (unknown ones are
ignored; known ones that would change the answer in a way this server does not are refused);
responses and stream chunks have OpenAI's exact shape."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from ...errors import InvalidArgumentError
from ...tools import MAX_TOOLS, Tool, grammar, openai_messages, openai_tools, with_tools
from ..common import (
    MAX_INT,
    Constraint,
    Lenient,
    MaxTokens,
    Response,
    SamplingParams,
    TokenId,
    json_schema_of,
    messages_schema,
    one_constraint,
    unsupported,
)

# More alternatives than this per token is a payload, not an answer.
MAX_N = 16
MAX_STOP = 16


class StreamOptions(Lenient):
    include_usage: bool = False


class OpenAIRequest(SamplingParams):
    """The fields both OpenAI endpoints take beside the sampling ones."""

    model: str
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # vLLM's fields for structured output (clients send them in `extra_body`): the only way to
    # constrain a legacy completion.
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_grammar: str | None = None

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def guided(self) -> list[Constraint | None]:
        """The constraints vLLM's ``guided_*`` fields ask for."""
        schema = self.guided_json
        if isinstance(schema, str):  # vLLM takes the schema as its JSON text too
            try:
                schema = json.loads(schema)
            except ValueError as exc:
                raise InvalidArgumentError(
                    f"guided_json: not JSON: {exc}", param="guided_json"
                ) from exc
        return [
            None
            if schema is None
            else Constraint("json_schema", json_schema_of(schema, "guided_json"), "guided_json"),
            None
            if self.guided_regex is None
            else Constraint("regex", self.guided_regex, "guided_regex"),
            None
            if self.guided_grammar is None
            else Constraint("grammar", self.guided_grammar, "guided_grammar"),
        ]

    def constraint(self) -> Constraint | None:
        """What the reply must match, if anything."""
        return one_constraint(*self.guided())


class ChatCompletionRequest(OpenAIRequest):
    messages: Annotated[
        list[dict[str, Any]],
        Field(
            json_schema_extra=messages_schema(("system", "developer", "user", "assistant", "tool"))
        ),
    ]
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    # vLLM's and transformers' name: the last message, an assistant's, is the start of the
    # reply, which goes on from it (clients send it in `extra_body`).
    continue_final_message: bool = False
    # `text`, `json_object` (any object, or llama.cpp's `schema` in it) or `json_schema`.
    response_format: dict[str, Any] | None = None
    # Function tools, in SmolLM2's function-calling format (see `smolgen.tools`).
    tools: Annotated[list[Any], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool = True
    # Read only to be refused when they ask for what this server does not do (see `check`).
    functions: list[Any] | None = None
    function_call: Any = None
    modalities: list[str] | None = None
    audio: Any = None

    def asked_max_tokens(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``; ``None`` for
        neither."""
        return self.max_completion_tokens or self.max_tokens

    def constraint(self) -> Constraint | None:
        """What the reply must match: calls of the tools, ``response_format`` or a
        ``guided_*`` field."""
        return one_constraint(
            self.tools_constraint(), self.response_format_constraint(), *self.guided()
        )

    def tool_use(self) -> tuple[list[Tool], str] | None:
        """The tools the reply may call and ``tool_choice`` as :mod:`smolgen.tools` takes it
        (``auto``, ``required`` or a tool's name); ``None`` when no tool may be called."""
        choice = self.tool_choice
        if isinstance(choice, dict):
            f = choice.get("function")
            if choice.get("type") != "function" or not isinstance(f, dict) or "name" not in f:
                raise InvalidArgumentError(
                    'tool_choice: must be "none", "auto", "required" or '
                    '{"type": "function", "function": {"name": ...}}',
                    param="tool_choice",
                )
            choice = f["name"]
        elif choice not in (None, "none", "auto", "required"):
            raise InvalidArgumentError(
                f'tool_choice: must be "none", "auto", "required" or a function, got {choice!r}',
                param="tool_choice",
            )
        if not self.tools:
            if choice not in (None, "none"):
                raise InvalidArgumentError(
                    "tool_choice: needs tools to choose from", param="tool_choice"
                )
            return None
        if choice == "none":
            return None
        return openai_tools(self.tools), choice or "auto"

    def tools_constraint(self) -> Constraint | None:
        use = self.tool_use()
        if use is None:
            return None
        tools, choice = use
        return Constraint("grammar", grammar(tools, choice, self.parallel_tool_calls), "tools")

    def prompt_messages(self) -> list[Any]:
        """The messages as the model reads them: tool turns as text, and the tools described
        in the system prompt when a call may be made."""
        messages = openai_messages(self.messages)
        use = self.tool_use()
        return messages if use is None else with_tools(messages, *use)

    def response_format_constraint(self) -> Constraint | None:
        fmt = self.response_format or {}
        kind = fmt.get("type", "text")
        if kind == "text":
            return None
        if kind == "json_object":
            schema = fmt.get("schema", {"type": "object"})
        elif kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict):
                raise InvalidArgumentError(
                    "response_format: type 'json_schema' needs a json_schema object with the "
                    "schema in it",
                    param="response_format",
                )
            # Without a schema, any object; with one, it is followed whether `strict` is set or
            # not: a constrained reply always parses.
            schema = spec.get("schema", {"type": "object"})
        else:
            unsupported(
                "response_format", f"type {kind!r} (only 'text', 'json_object' and 'json_schema')"
            )
        schema = json_schema_of(schema, "response_format")
        return Constraint("json_schema", schema, "response_format")

    def check(self) -> None:
        """Refuses what would change the answer in a way this server does not: the legacy
        ``functions`` (``tools`` replaced them), output other than text, and top
        log-probabilities without ``logprobs`` (as OpenAI refuses them); checks the response
        format and the tools."""
        self.constraint()
        if self.functions:
            unsupported("functions", "the legacy function calls (give them as tools)")
        if self.function_call not in (None, "none"):
            unsupported("function_call", "the legacy function calls (use tool_choice)")
        if self.modalities is not None and set(self.modalities) != {"text"}:
            unsupported("modalities", "output other than text")
        if self.audio is not None:
            unsupported("audio", "audio output")
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidArgumentError(
                "top_logprobs: needs logprobs to be true", param="top_logprobs"
            )


class CompletionRequest(OpenAIRequest):
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    max_tokens: MaxTokens | None = 16  # the legacy endpoint's default
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1, le=MAX_N)] | None = None

    def check(self) -> None:
        """Refuses insertion (``suffix``) and ``best_of`` above ``n``: this server generates
        each choice as asked and returns them all."""
        if self.suffix:
            unsupported("suffix", "insertion between a prompt and a suffix")
        if self.best_of is not None and self.best_of != self.n:
            unsupported("best_of", "generating more choices than it returns")
        self.constraint()

    @field_validator("prompt", mode="before")
    @classmethod
    def prompt_shape(cls, value: Any) -> Any:
        """One of the four shapes, in words that say so (the union's own errors list every
        shape it tried)."""
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            items = [t for v in value for t in (v if isinstance(v, list) else [v])]
            for token in items:
                if _is_int(token) and not 0 <= token <= MAX_INT:
                    raise ValueError(f"token ids must be from 0 to {MAX_INT}, got {token}")
            if (
                all(isinstance(v, str) for v in value)
                or all(_is_int(v) for v in value)
                or all(isinstance(v, list) and all(_is_int(t) for t in v) for v in value)
            ):
                return value
        raise ValueError(
            "must be a string, a list of strings, a list of token ids or a list of lists of "
            "token ids"
        )


def _is_int(value: Any) -> bool:
    """An integer as JSON has it: ``3`` or ``3.0``."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


# --- responses -----------------------------------------------------------------------------------


class PromptTokensDetails(Response):
    cached_tokens: int


class UsageInfo(Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> UsageInfo:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
        )


class ModelCard(Response):
    optional = frozenset({"context_length"})

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    context_length: int | None = None


class ModelList(Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TopLogprob(Response):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(Response):
    content: list[TokenLogprob]
    refusal: None = None


class FunctionCall(Response):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(Response):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Response):
    optional = frozenset({"tool_calls"})

    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    annotations: list[Any] = Field(default_factory=list)
    tool_calls: list[ToolCall] | None = None


class ChatChoice(Response):
    index: int
    message: ChatMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: str | None


class ChatCompletionResponse(Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: UsageInfo


class ToolCallDelta(ToolCall):
    index: int


class DeltaMessage(Response):
    optional = frozenset({"role", "content", "tool_calls"})

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(Response):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: str | None


class ChatCompletionChunk(Response):
    """One event of a streamed chat completion. ``usage`` is sent only when asked for
    (``stream_options.include_usage``): ``null`` on every chunk but the last."""

    optional = frozenset({"usage"})

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None


class LegacyLogprobs(Response):
    """The ``/v1/completions`` log-probability shape: parallel lists, one entry per token."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(Response):
    text: str
    index: int
    logprobs: LegacyLogprobs | None
    finish_reason: str | None


class CompletionResponse(Response):
    """A text completion, and each event of a streamed one (``usage`` as in
    :class:`ChatCompletionChunk`)."""

    optional = frozenset({"usage"})

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None

"""Anthropic's Messages API shapes: top-level ``system``, ``max_tokens`` required, content
blocks, ``stop_sequences``, ``stop_reason``, ``usage.input_tokens`` / ``output_tokens``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from ...errors import InvalidArgumentError
from ...tools import MAX_TOOLS, Tool, anthropic_tools, grammar
from ..common import (
    Constraint,
    Lenient,
    MaxTokens,
    Response,
    SamplingParams,
    json_schema_of,
    messages_schema,
    one_constraint,
    unsupported,
)

MAX_STOP = 16


#: Anthropic's turns: user and assistant (the system prompt is its own field).
Messages = Annotated[
    list[dict[str, Any]], Field(json_schema_extra=messages_schema(("user", "assistant")))
]


class Unanswerable(Lenient):
    """Tool use (in SmolLM2's function-calling format, see `smolgen.tools`), and the fields
    read only to be refused when they ask for what this server does not do."""

    tools: Annotated[list[Any], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None

    def check(self) -> None:
        """Refuses extended thinking: a 400 that names the field, never a reply that quietly
        ignores it; checks the tools."""
        self.tool_use()
        if self.thinking is not None and self.thinking.get("type") != "disabled":
            unsupported("thinking", "extended thinking")

    def tool_use(self) -> tuple[list[Tool], str, bool] | None:
        """The tools the reply may call, ``tool_choice`` as :mod:`smolgen.tools` takes it
        (``auto``, ``required`` or a tool's name) and whether several calls may be made;
        ``None`` when no tool may be called."""
        choice = self.tool_choice or {"type": "auto"}
        kind = choice.get("type")
        if kind not in ("auto", "any", "tool", "none"):
            raise InvalidArgumentError(
                f"tool_choice.type: must be 'auto', 'any', 'tool' or 'none', got {kind!r}",
                param="tool_choice",
            )
        if kind == "tool" and not isinstance(choice.get("name"), str):
            raise InvalidArgumentError("tool_choice: type 'tool' needs a name", param="tool_choice")
        if not self.tools:
            if self.tool_choice is not None and kind != "none":
                raise InvalidArgumentError(
                    "tool_choice: needs tools to choose from", param="tool_choice"
                )
            return None
        if kind == "none":
            return None
        tools = anthropic_tools(self.tools)
        named = {"auto": "auto", "any": "required"}.get(kind) or str(choice["name"])
        return tools, named, not choice.get("disable_parallel_tool_use", False)


class MessagesRequest(SamplingParams, Unanswerable):
    model: str
    messages: Messages
    max_tokens: MaxTokens
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    stream: bool = False
    # Structured outputs: `output_config.format`, or the beta's `output_format`, a JSON Schema.
    output_config: dict[str, Any] | None = None
    output_format: dict[str, Any] | None = None

    def constraint(self) -> Constraint | None:
        """What the reply must match: calls of the tools, or an output format
        (``{"type": "json_schema", "schema": {...}}``)."""
        formats = [
            ("output_config", (self.output_config or {}).get("format")),
            ("output_format", self.output_format),
        ]
        use = self.tool_use()
        calls = None if use is None else Constraint("grammar", grammar(*use), "tools")
        return one_constraint(calls, *(json_schema_format(fmt, param) for param, fmt in formats))

    def check(self) -> None:
        super().check()
        self.constraint()

    @field_validator("temperature")
    @classmethod
    def anthropic_temperature(cls, value: float | None) -> float | None:
        """Anthropic's temperatures go from 0 to 1 (OpenAI's to 2)."""
        if value is not None and value > 1:
            raise ValueError("Input should be less than or equal to 1")
        return value


def json_schema_format(fmt: Any, param: str) -> Constraint | None:
    """An output format as Anthropic gives it, checked."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind != "json_schema":
        unsupported(param, f"format type {kind!r} (only 'json_schema')")
    if "schema" not in fmt:
        raise InvalidArgumentError(f"{param}: a json_schema format needs a schema", param=param)
    return Constraint("json_schema", json_schema_of(fmt["schema"], param), param)


class CountTokensRequest(Unanswerable):
    model: str
    messages: Messages
    system: str | list[dict[str, Any]] | None = None


class TokenCount(Response):
    input_tokens: int


class TextBlock(Response):
    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(Response):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class MessagesUsage(Response):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int = 0


class MessagesResponse(Response):
    """A reply; also the ``message`` of a stream's ``message_start`` event (empty
    ``content``, no ``stop_reason`` yet)."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[TextBlock | ToolUseBlock]
    stop_reason: str | None
    stop_sequence: str | None
    usage: MessagesUsage

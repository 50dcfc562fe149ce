"""Anthropic's Messages API shapes: top-level ``system``, ``max_tokens`` required, content
blocks, ``stop_sequences``, ``stop_reason``, ``usage.input_tokens`` / ``output_tokens``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from ..common import (
    Lenient,
    MaxTokens,
    Response,
    SamplingParams,
    messages_schema,
    unsupported,
)

MAX_STOP = 16


#: Anthropic's turns: user and assistant (the system prompt is its own field).
Messages = Annotated[
    list[dict[str, Any]], Field(json_schema_extra=messages_schema(("user", "assistant")))
]


class Unanswerable(Lenient):
    """Fields read only to be refused when they ask for what this server does not do."""

    tools: list[Any] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None

    def check(self) -> None:
        """Refuses tool use and extended thinking: a 400 that names the field, never a reply
        that quietly ignores it."""
        if self.tools:
            unsupported("tools", "tool use")
        if self.tool_choice is not None and self.tool_choice.get("type") != "none":
            unsupported("tool_choice", "tool use")
        if self.thinking is not None and self.thinking.get("type") != "disabled":
            unsupported("thinking", "extended thinking")


class MessagesRequest(SamplingParams, Unanswerable):
    model: str
    messages: Messages
    max_tokens: MaxTokens
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    stream: bool = False

    @field_validator("temperature")
    @classmethod
    def anthropic_temperature(cls, value: float | None) -> float | None:
        """Anthropic's temperatures go from 0 to 1 (OpenAI's to 2)."""
        if value is not None and value > 1:
            raise ValueError("Input should be less than or equal to 1")
        return value


class CountTokensRequest(Unanswerable):
    model: str
    messages: Messages
    system: str | list[dict[str, Any]] | None = None


class TokenCount(Response):
    input_tokens: int


class TextBlock(Response):
    type: Literal["text"] = "text"
    text: str


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
    content: list[TextBlock]
    stop_reason: str | None
    stop_sequence: str | None
    usage: MessagesUsage

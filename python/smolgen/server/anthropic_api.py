"""The Anthropic Messages API: ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

Top-level ``system``, ``max_tokens`` required, content blocks, ``stop_sequences``,
``stop_reason``, ``usage.input_tokens`` / ``output_tokens``, and its named SSE events, so the
official ``anthropic`` client works with only ``base_url`` changed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from ..chat import chat_prompt_ids, message_text
from ..errors import ContextLengthExceededError
from .engine import Engine
from .errors import ApiError, api_error, unknown_model
from .openai_api import Lenient, event_stream

STOP_REASONS = {"length": "max_tokens"}


class MessagesRequest(Lenient):
    model: str
    messages: list[dict[str, Any]]
    max_tokens: Annotated[int, Field(ge=1)]
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: Annotated[list[str], Field(max_length=16)] | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stream: bool = False


class CountTokensRequest(Lenient):
    model: str
    messages: list[dict[str, Any]]
    system: str | list[dict[str, Any]] | None = None


def chat_messages(system: Any, messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Anthropic's request as chat messages: ``system`` first; only user/assistant turns."""
    out = []
    if system:
        out.append({"role": "system", "content": message_text(system, "system")})
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise ApiError(
                400,
                f"messages.{i}.role: must be 'user' or 'assistant' (use the top-level system "
                f"field for a system prompt), got {role!r}",
            )
        out.append({"role": role, "content": message_text(message.get("content"), f"messages.{i}")})
    if not out or out[-1]["role"] == "system":
        raise ApiError(400, "messages: at least one message is required")
    return out


def sse(event: str, payload: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"


def router(engine: Engine) -> APIRouter:
    api = APIRouter()

    def prompt(model: str, system: Any, messages: list[dict[str, Any]]) -> list[int]:
        if not engine.serves(model):
            raise unknown_model(model, engine.model_id)
        return chat_prompt_ids(engine.model, chat_messages(system, messages))

    @api.post("/v1/messages/count_tokens")
    async def count_tokens(req: CountTokensRequest) -> dict[str, int]:
        """Prompt tokens of a Messages request, counted with the model's own tokenizer."""
        ids = await engine.run_sync(prompt, req.model, req.system, req.messages)
        return {"input_tokens": len(ids)}

    @api.post("/v1/messages", response_model=None)
    async def messages(req: MessagesRequest, request: Request) -> JSONResponse | StreamingResponse:
        """A reply in the Anthropic Messages shape, whole or as its SSE events."""
        ids = await engine.run_sync(prompt, req.model, req.system, req.messages)
        window = engine.model.context_length
        if len(ids) + req.max_tokens > window:
            raise ContextLengthExceededError(
                f"prompt is too long: {len(ids)} tokens + {req.max_tokens} max_tokens > "
                f"{window} maximum",
                max_context=window,
                prompt_tokens=len(ids),
                max_tokens=req.max_tokens,
                requested=len(ids) + req.max_tokens,
            )
        stream = engine.model.generate(
            ids,
            max_tokens=req.max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=req.top_p or 1.0,
            top_k=req.top_k or 0,
            stop=req.stop_sequences or None,
            stream=True,
        )
        ticket = engine.admit()
        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        head = {"id": message_id, "type": "message", "role": "assistant", "model": engine.model_id}

        def outcome(done: Any) -> dict[str, Any]:
            reason = done.finish_reason
            if done.stop_sequence is not None:
                reason = "stop_sequence"
            return {
                "stop_reason": STOP_REASONS.get(reason, "end_turn" if reason == "stop" else reason),
                "stop_sequence": done.stop_sequence,
            }

        def usage(output_tokens: int, cached: int) -> dict[str, int]:
            return {
                "input_tokens": len(ids) - cached,
                "output_tokens": output_tokens,
                "cache_read_input_tokens": cached,
                "cache_creation_input_tokens": 0,
            }

        if req.stream:

            async def body() -> AsyncIterator[str]:
                start: dict[str, Any] = {
                    **head,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage(0, stream.cached_tokens),
                }
                yield sse("message_start", {"type": "message_start", "message": start})
                block = {"type": "text", "text": ""}
                yield sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                )
                yield sse("ping", {"type": "ping"})
                try:
                    async for chunk in engine.stream(ticket, stream):
                        if chunk.text:
                            delta = {"type": "text_delta", "text": chunk.text}
                            yield sse(
                                "content_block_delta",
                                {"type": "content_block_delta", "index": 0, "delta": delta},
                            )
                except Exception as e:
                    yield sse("error", api_error(e).anthropic_body())
                    return
                done = stream.completion
                if done is None:
                    yield sse("error", api_error(RuntimeError("no result")).anthropic_body())
                    return
                yield sse("content_block_stop", {"type": "content_block_stop", "index": 0})
                yield sse(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": outcome(done),
                        "usage": {"output_tokens": done.usage.completion_tokens},
                    },
                )
                yield sse("message_stop", {"type": "message_stop"})

            return event_stream(body())

        async for _ in engine.stream(ticket, stream, request.is_disconnected):
            pass
        done = stream.completion
        if done is None:
            raise RuntimeError("a generation ended without its result")
        return JSONResponse(
            {
                **head,
                "content": [{"type": "text", "text": done.text}],
                **outcome(done),
                "usage": usage(done.usage.completion_tokens, done.usage.cached_tokens),
            }
        )

    return api

"""The OpenAI-compatible routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

Requests take the fields the official client sends (unknown fields are ignored, not rejected);
responses and stream chunks have OpenAI's exact shape, so switching ``base_url`` is the only
change a client makes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..chat import chat_prompt_ids, check_context
from ..peek import log_softmax
from .engine import Engine
from .errors import ApiError, api_error, unknown_model

SYSTEM_FINGERPRINT = f"smolgen-{__version__}"
# More alternatives than this per token is a payload, not an answer.
MAX_N = 16
MAX_STOP = 16


class Lenient(BaseModel):
    """Unknown fields are ignored: clients send newer fields than we know."""

    model_config = ConfigDict(extra="ignore")


class StreamOptions(Lenient):
    include_usage: bool = False


class SamplingFields(Lenient):
    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Beyond OpenAI's fields, as vLLM and llama-server take them (the client's `extra_body`).
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0)] | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[dict[str, Any]]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: Annotated[int, Field(ge=1)] | None = 16  # the legacy endpoint's default
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool = False


def sampling_kwargs(req: SamplingFields, choice: int) -> dict[str, Any]:
    """The keyword arguments of ``Model.generate`` for one of the request's ``n`` choices."""
    temperature = 1.0 if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    if top_p == 0:  # the limit of a shrinking nucleus: the single likeliest token
        temperature, top_p = 0.0, 1.0
    bias: dict[int, float] = {}
    for key, value in (req.logit_bias or {}).items():
        try:
            bias[int(key)] = value
        except ValueError:
            raise ApiError(
                400, f"logit_bias keys must be token ids, got {key!r}", param="logit_bias"
            ) from None
    return {
        "temperature": temperature,
        "top_p": top_p,
        "top_k": req.top_k or 0,
        "min_p": req.min_p or 0.0,
        "repetition_penalty": req.repetition_penalty or 1.0,
        "frequency_penalty": req.frequency_penalty or 0.0,
        "presence_penalty": req.presence_penalty or 0.0,
        "logit_bias": bias or None,
        # Each choice its own stream of randomness, all reproducible from the request's seed.
        "seed": None if req.seed is None else (req.seed + choice) % 2**64,
        "stop": req.stop,
    }


def default_max_tokens(engine: Engine, prompt_tokens: int, asked: int | None) -> int:
    """What an API does without ``max_tokens``: whatever the context window has left."""
    if asked is not None:
        return asked
    return max(engine.model.context_length - prompt_tokens, 1)


def usage_dict(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def token_logprob(lp: Any) -> dict[str, Any]:
    """One entry of ``logprobs.content``."""
    return {
        "token": lp.token,
        "logprob": lp.logprob,
        "bytes": list(lp.bytes),
        "top_logprobs": [
            {"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)}
            for t in lp.top_logprobs
        ],
    }


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def event_stream(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def sse_errors(body: AsyncIterator[str]) -> AsyncIterator[str]:
    """Once a stream has started its status is sent: a failure becomes an error event."""
    try:
        async for event in body:
            yield event
    except Exception as e:
        yield sse(api_error(e).openai_body())


def router(engine: Engine) -> APIRouter:
    api = APIRouter()

    def check_model(requested: str) -> None:
        if not engine.serves(requested):
            raise unknown_model(requested, engine.model_id)

    @api.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        """The model this server serves."""
        return {
            "object": "list",
            "data": [
                {
                    "id": engine.model_id,
                    "object": "model",
                    "created": engine.created,
                    "owned_by": "smolgen",
                    "context_length": engine.model.context_length,
                }
            ],
        }

    @api.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> dict[str, Any]:
        check_model(model_id)
        return {
            "id": engine.model_id,
            "object": "model",
            "created": engine.created,
            "owned_by": "smolgen",
        }

    @api.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        req: ChatCompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        """A chat completion, whole or streamed as server-sent events."""
        check_model(req.model)
        ids = await engine.run_sync(chat_prompt_ids, engine.model, req.messages)
        asked = req.max_completion_tokens or req.max_tokens
        check_context(engine.model, len(ids), asked)
        max_tokens = default_max_tokens(engine, len(ids), asked)
        top = (req.top_logprobs or 0) if req.logprobs else None
        streams = [
            engine.model.generate(
                ids,
                max_tokens=max_tokens,
                logprobs=top,
                stream=True,
                **sampling_kwargs(req, i),
            )
            for i in range(req.n)
        ]
        tickets = [engine.admit() for _ in streams]
        reply_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        head = {"id": reply_id, "created": created, "model": engine.model_id}

        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)

            async def body() -> AsyncIterator[str]:
                extra = {"usage": None} if include_usage else {}
                chunk_head = {**head, "object": "chat.completion.chunk"}
                chunk_head["system_fingerprint"] = SYSTEM_FINGERPRINT
                completion_tokens = cached = 0
                for index, (stream, ticket) in enumerate(zip(streams, tickets, strict=True)):
                    first = {
                        "index": index,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                    yield sse({**chunk_head, "choices": [first], **extra})
                    async for chunk in engine.stream(ticket, stream):
                        choice: dict[str, Any] = {
                            "index": index,
                            "delta": {"content": chunk.text} if chunk.text else {},
                            "logprobs": None,
                            "finish_reason": chunk.finish_reason,
                        }
                        if chunk.logprob is not None:
                            choice["logprobs"] = {
                                "content": [token_logprob(chunk.logprob)],
                                "refusal": None,
                            }
                        if chunk.text or chunk.finish_reason or chunk.logprob is not None:
                            yield sse({**chunk_head, "choices": [choice], **extra})
                    done = stream.completion
                    if done is not None:
                        completion_tokens += done.usage.completion_tokens
                        cached = cached if index else done.usage.cached_tokens
                if include_usage:
                    usage = usage_dict(len(ids), completion_tokens, cached)
                    yield sse({**chunk_head, "choices": [], "usage": usage})
                yield "data: [DONE]\n\n"

            return event_stream(sse_errors(body()))

        choices = []
        completion_tokens = cached = 0
        for index, (stream, ticket) in enumerate(zip(streams, tickets, strict=True)):
            async for _ in engine.stream(ticket, stream, request.is_disconnected):
                pass
            done = stream.completion
            if done is None:
                raise RuntimeError("a generation ended without its result")
            completion_tokens += done.usage.completion_tokens
            cached = cached if index else done.usage.cached_tokens
            logprobs = None
            if done.logprobs is not None:
                logprobs = {
                    "content": [token_logprob(lp) for lp in done.logprobs],
                    "refusal": None,
                }
            choices.append(
                {
                    "index": index,
                    "message": {
                        "role": "assistant",
                        "content": done.text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": logprobs,
                    "finish_reason": done.finish_reason,
                }
            )
        return JSONResponse(
            {
                **head,
                "object": "chat.completion",
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": choices,
                "usage": usage_dict(len(ids), completion_tokens, cached),
            }
        )

    @api.post("/v1/completions", response_model=None)
    async def completions(
        req: CompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        """A text completion of one prompt or several (strings or token ids)."""
        check_model(req.model)
        prompts = await engine.run_sync(prompt_id_lists, engine, req.prompt)
        jobs = []  # (choice index, prompt ids, stream)
        for p, ids in enumerate(prompts):
            check_context(engine.model, len(ids), req.max_tokens)
            max_tokens = default_max_tokens(engine, len(ids), req.max_tokens)
            for i in range(req.n):
                stream = engine.model.generate(
                    ids,
                    max_tokens=max_tokens,
                    logprobs=req.logprobs,
                    stream=True,
                    **sampling_kwargs(req, i),
                )
                jobs.append((p * req.n + i, ids, stream))
        tickets = [engine.admit() for _ in jobs]
        reply_id = f"cmpl-{uuid.uuid4().hex}"
        head = {
            "id": reply_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": engine.model_id,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        prompt_tokens = sum(len(ids) for ids in prompts)

        async def echoed(ids: list[int]) -> tuple[str, dict[str, Any] | None]:
            text = engine.model.detokenize(ids)
            if req.logprobs is None:
                return text, None
            scored = await engine.run_sync(prompt_logprobs, engine, ids, req.logprobs)
            return text, scored

        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)

            async def body() -> AsyncIterator[str]:
                extra = {"usage": None} if include_usage else {}
                completion_tokens = 0
                for (index, ids, stream), ticket in zip(jobs, tickets, strict=True):
                    if req.echo:
                        text, lps = await echoed(ids)
                        choice = {"text": text, "index": index, "logprobs": lps}
                        yield sse({**head, "choices": [{**choice, "finish_reason": None}]})
                    offset = 0
                    async for chunk in engine.stream(ticket, stream):
                        lps = None
                        if chunk.logprob is not None:
                            lps = legacy_logprobs([chunk.logprob], offset)
                        offset += len(chunk.text)
                        if chunk.text or chunk.finish_reason or lps is not None:
                            choice = {
                                "text": chunk.text,
                                "index": index,
                                "logprobs": lps,
                                "finish_reason": chunk.finish_reason,
                            }
                            yield sse({**head, "choices": [choice], **extra})
                    if stream.completion is not None:
                        completion_tokens += stream.completion.usage.completion_tokens
                if include_usage:
                    usage = usage_dict(prompt_tokens, completion_tokens, 0)
                    yield sse({**head, "choices": [], "usage": usage})
                yield "data: [DONE]\n\n"

            return event_stream(sse_errors(body()))

        choices = []
        completion_tokens = cached = 0
        for (index, ids, stream), ticket in zip(jobs, tickets, strict=True):
            async for _ in engine.stream(ticket, stream, request.is_disconnected):
                pass
            done = stream.completion
            if done is None:
                raise RuntimeError("a generation ended without its result")
            completion_tokens += done.usage.completion_tokens
            cached += done.usage.cached_tokens if index % req.n == 0 else 0
            text, logprobs = done.text, None
            if req.logprobs is not None:
                logprobs = legacy_logprobs(done.logprobs or [], 0)
            if req.echo:
                prefix, prompt_lps = await echoed(ids)
                text = prefix + text
                if logprobs is not None and prompt_lps is not None:
                    logprobs = join_legacy(prompt_lps, logprobs, len(prefix))
            choices.append(
                {
                    "text": text,
                    "index": index,
                    "logprobs": logprobs,
                    "finish_reason": done.finish_reason,
                }
            )
        return JSONResponse(
            {
                **head,
                "choices": choices,
                "usage": usage_dict(prompt_tokens, completion_tokens, cached),
            }
        )

    return api


def prompt_id_lists(engine: Engine, prompt: Any) -> list[list[int]]:
    """``prompt`` of ``/v1/completions`` as token id lists: a string, strings, ids, id lists."""
    model = engine.model
    if isinstance(prompt, str):
        return [model.tokenize(prompt)]
    if not prompt:
        raise ApiError(400, "prompt must not be empty", param="prompt")
    if all(isinstance(p, str) for p in prompt):
        return [model.tokenize(p) for p in prompt]
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    return [list(p) for p in prompt]


def legacy_logprobs(lps: list[Any], text_offset: int) -> dict[str, Any]:
    """The ``/v1/completions`` log-probability shape: parallel lists per token."""
    tokens, token_logprobs, top, offsets = [], [], [], []
    offset = text_offset
    for lp in lps:
        tokens.append(lp.token)
        token_logprobs.append(lp.logprob)
        top.append({t.token: t.logprob for t in lp.top_logprobs})
        offsets.append(offset)
        offset += len(lp.token)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    }


def prompt_logprobs(engine: Engine, ids: list[int], top: int) -> dict[str, Any]:
    """The prompt's own tokens with their log-probabilities (``echo`` with ``logprobs``): the
    first token has no context, so ``None``."""
    model = engine.model
    tokenizer = model.tokenizer
    logprobs = log_softmax(model.logits(ids, positions="all")) if len(ids) > 1 else None
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    offset = 0
    for pos, tok in enumerate(ids):
        piece = tokenizer.piece(tok).text
        tokens.append(piece)
        offsets.append(offset)
        offset += len(piece)
        if pos == 0 or logprobs is None:
            token_logprobs.append(None)
            tops.append(None)
            continue
        row = logprobs[pos - 1]
        token_logprobs.append(float(row[tok]))
        best = row.argsort()[::-1][:top] if top else []
        tops.append({tokenizer.piece(int(b)).text: float(row[b]) for b in best})
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def join_legacy(first: dict[str, Any], second: dict[str, Any], shift: int) -> dict[str, Any]:
    return {
        "tokens": first["tokens"] + second["tokens"],
        "token_logprobs": first["token_logprobs"] + second["token_logprobs"],
        "top_logprobs": first["top_logprobs"] + second["top_logprobs"],
        "text_offset": first["text_offset"] + [o + shift for o in second["text_offset"]],
    }

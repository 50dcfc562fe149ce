"""Serving OpenAI's chat and text completions: each request becomes its jobs, admitted, then
created; :func:`~smolgen.server.common.generate` gives their events, which the streamed answer
renders as chunks and the whole answer collects, so the two cannot disagree."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ... import __version__
from ...errors import InvalidArgumentError
from ...peek import log_softmax
from ...tools import may_be_calls, parse_tool_calls
from ..common import (
    Delta,
    Event,
    Finished,
    Job,
    Started,
    Usage,
    check_token_ids,
    constrained,
    generate,
    max_tokens_for,
    sse_data,
)
from ..errors import api_error
from ..scheduler import Admitted, Scheduler
from .protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    FunctionCall,
    LegacyLogprobs,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
    UsageInfo,
)

SYSTEM_FINGERPRINT = f"smolgen-{__version__}"
Disconnected = Callable[[], Awaitable[bool]]


@dataclass
class Echo:
    """The prompt of a ``/v1/completions`` choice, sent back before its completion
    (``echo``)."""

    index: int
    text: str
    logprobs: LegacyLogprobs | None


def tool_calls(text: str) -> list[ToolCall] | None:
    """A reply's calls of the request's tools in OpenAI's shape; ``None`` for a text reply."""
    calls = parse_tool_calls(text)
    if calls is None:
        return None
    return [
        ToolCall(
            id=f"call_{uuid.uuid4().hex[:24]}",
            function=FunctionCall(
                name=c.name, arguments=json.dumps(c.arguments, ensure_ascii=False)
            ),
        )
        for c in calls
    ]


def usage_info(usage: Usage) -> UsageInfo:
    return UsageInfo.of(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)


def token_logprob(lp: Any) -> TokenLogprob:
    """One entry of a chat choice's ``logprobs.content``."""
    return TokenLogprob(
        token=lp.token,
        logprob=lp.logprob,
        bytes=list(lp.bytes),
        top_logprobs=[
            TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes))
            for t in lp.top_logprobs
        ],
    )


class ChatServing:
    """One ``/v1/chat/completions`` request, admitted and with its generations created."""

    def __init__(self, scheduler: Scheduler, req: ChatCompletionRequest, ids: list[int]) -> None:
        self.scheduler, self.req = scheduler, req
        model = scheduler.model
        max_tokens = max_tokens_for(
            model, len(ids), req.asked_max_tokens(), scheduler.max_tokens_default
        )
        top = (req.top_logprobs or 0) if req.logprobs else None
        vocab_size = model.tokenizer.vocab_size
        defaults = scheduler.sampling_defaults
        sampling = [req.sampling_kwargs(i, vocab_size, defaults) for i in range(req.n)]
        self.jobs = [Job(i, ids, first_of_prompt=i == 0) for i in range(req.n)]
        self.admitted = constrained(
            req.constraint(),
            lambda constraint: scheduler.start(
                req.n,
                lambda i: model.generate(
                    ids,
                    max_tokens=max_tokens,
                    logprobs=top,
                    stream=True,
                    stop=req.stop,
                    **constraint,
                    **sampling[i],
                ),
            ),
        )
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.tool_use = req.tool_use() is not None

    def events(self, is_disconnected: Disconnected | None = None) -> AsyncIterator[Event]:
        return generate(self.scheduler, self.jobs, self.admitted, is_disconnected)

    async def whole(self, is_disconnected: Disconnected) -> ChatCompletionResponse:
        choices: list[ChatChoice] = []
        usage = None
        async for event in self.events(is_disconnected):
            if isinstance(event, Finished):
                done = event.completion
                logprobs = None
                if done.logprobs is not None:
                    logprobs = ChoiceLogprobs(content=[token_logprob(lp) for lp in done.logprobs])
                calls = tool_calls(done.text) if self.tool_use else None
                message = (
                    ChatMessage(content=done.text)
                    if calls is None
                    else ChatMessage(content=None, tool_calls=calls)
                )
                choices.append(
                    ChatChoice(
                        index=event.index,
                        message=message,
                        logprobs=logprobs,
                        finish_reason="tool_calls" if calls else done.finish_reason,
                    )
                )
            elif isinstance(event, Usage):
                usage = usage_info(event)
        assert usage is not None  # the generator's last event
        return ChatCompletionResponse(
            id=self.id,
            created=self.created,
            model=self.scheduler.model_id,
            system_fingerprint=SYSTEM_FINGERPRINT,
            choices=choices,
            usage=usage,
        )

    async def stream(self) -> AsyncIterator[str]:
        include_usage = self.req.include_usage()

        def chunk(choices: list[ChatChunkChoice], usage: UsageInfo | None = None) -> str:
            fields: dict[str, Any] = {"usage": usage} if include_usage else {}
            return sse_data(
                ChatCompletionChunk(
                    id=self.id,
                    created=self.created,
                    model=self.scheduler.model_id,
                    system_fingerprint=SYSTEM_FINGERPRINT,
                    choices=choices,
                    **fields,
                )
            )

        held = HeldBack(self.tool_use)
        try:
            async for event in self.events():
                if isinstance(event, Started):
                    delta = DeltaMessage(role="assistant", content="")
                    yield chunk(
                        [
                            ChatChunkChoice(
                                index=event.index, delta=delta, logprobs=None, finish_reason=None
                            )
                        ]
                    )
                    held = HeldBack(self.tool_use)
                elif isinstance(event, Delta):
                    for delta, logprobs, finish_reason in held.push(event):
                        choice = ChatChunkChoice(
                            index=event.index,
                            delta=delta,
                            logprobs=logprobs,
                            finish_reason=finish_reason,
                        )
                        yield chunk([choice])
                elif isinstance(event, Usage) and include_usage:
                    yield chunk([], usage_info(event))
            yield "data: [DONE]\n\n"
        except Exception as e:  # the status is sent: a failure becomes an error event
            yield sse_data(api_error(e).openai_body())


class HeldBack:
    """One choice's stream when tools may be called: text that may be the start of calls is
    held back until it is known to be (then the calls are sent whole, one delta each, when the
    reply ends) or not (then it is sent, and the rest streams as it comes)."""

    def __init__(self, tool_use: bool) -> None:
        self.holding = tool_use
        self.text = ""
        self.logprobs: list[TokenLogprob] = []

    def push(self, event: Delta) -> list[tuple[DeltaMessage, ChoiceLogprobs | None, str | None]]:
        """The deltas to send for ``event``: none while holding back."""
        if event.logprob is not None:
            self.logprobs.append(token_logprob(event.logprob))
        if self.holding:
            self.text += event.text
            if event.finish_reason is None and may_be_calls(self.text):
                return []
            self.holding = False
            calls = tool_calls(self.text) if event.finish_reason else None
            if calls is not None:
                deltas = [
                    (
                        DeltaMessage(tool_calls=[ToolCallDelta(index=i, **c.model_dump())]),
                        None,
                        None,
                    )
                    for i, c in enumerate(calls)
                ]
                return [*deltas, (DeltaMessage(), self.flush_logprobs(), "tool_calls")]
            text = self.text
        else:
            text = event.text
        if not (text or event.finish_reason or self.logprobs):
            return []
        delta = DeltaMessage(content=text) if text else DeltaMessage()
        return [(delta, self.flush_logprobs(), event.finish_reason)]

    def flush_logprobs(self) -> ChoiceLogprobs | None:
        if not self.logprobs:
            return None
        content, self.logprobs = self.logprobs, []
        return ChoiceLogprobs(content=content)


def prompt_count(prompt: Any) -> int:
    """How many prompts ``prompt`` of ``/v1/completions`` holds."""
    if isinstance(prompt, str) or all(isinstance(p, int) for p in prompt):
        return 1
    return len(prompt)


def prompt_id_lists(scheduler: Scheduler, prompt: Any) -> list[list[int]]:
    """``prompt`` of ``/v1/completions`` as token id lists: a string, strings, ids, id lists.
    A string too long for any tokenization of it to fit the context window is refused before
    it is tokenized."""
    model = scheduler.model
    tokenizer = model.tokenizer

    def encode(text: str) -> list[int]:
        model.check_prompt_length(text)
        # Read as `generate` reads a text prompt: special-token text parsed, BOS when asked.
        return tokenizer.encode_prompt(text)

    if isinstance(prompt, str):
        return [encode(prompt)]
    if not prompt:
        raise InvalidArgumentError("prompt must not be empty", param="prompt")
    if all(isinstance(p, str) for p in prompt):
        return [encode(p) for p in prompt]
    lists = [list(prompt)] if all(isinstance(p, int) for p in prompt) else [list(p) for p in prompt]
    for ids in lists:
        if not ids:
            raise InvalidArgumentError(
                "prompt: a list of token ids must not be empty", param="prompt"
            )
        check_token_ids(ids, tokenizer.vocab_size, "prompt")
    return lists


class CompletionServing:
    """One ``/v1/completions`` request: ``n`` choices of each prompt, admitted and created."""

    def __init__(
        self, scheduler: Scheduler, req: CompletionRequest, prompts: list[list[int]]
    ) -> None:
        self.scheduler, self.req = scheduler, req
        model = scheduler.model
        vocab_size = model.tokenizer.vocab_size
        self.jobs: list[Job] = []
        calls: list[dict[str, Any]] = []
        for p, ids in enumerate(prompts):
            max_tokens = max_tokens_for(
                model, len(ids), req.max_tokens, scheduler.max_tokens_default
            )
            for i in range(req.n):
                self.jobs.append(Job(p * req.n + i, ids, first_of_prompt=i == 0))
                kwargs = req.sampling_kwargs(i, vocab_size, scheduler.sampling_defaults)
                calls.append({"prompt": ids, "max_tokens": max_tokens, **kwargs})
        self.admitted: list[Admitted] = constrained(
            req.constraint(),
            lambda constraint: scheduler.start(
                len(calls),
                lambda j: model.generate(
                    **calls[j], logprobs=req.logprobs, stream=True, stop=req.stop, **constraint
                ),
            ),
        )
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    async def events(
        self, is_disconnected: Disconnected | None = None
    ) -> AsyncIterator[Event | Echo]:
        """The generator's events, with the prompt's own text (and log-probabilities) after
        each :class:`Started` when the request asks for ``echo``."""
        async for event in generate(self.scheduler, self.jobs, self.admitted, is_disconnected):
            yield event
            if isinstance(event, Started) and self.req.echo:
                yield await self.echoed(event.index, event.prompt_ids)

    async def echoed(self, index: int, ids: list[int]) -> Echo:
        text = self.scheduler.model.detokenize(ids)
        if self.req.logprobs is None:
            return Echo(index, text, None)
        scored = await self.scheduler.run_sync(
            prompt_logprobs, self.scheduler, ids, self.req.logprobs
        )
        return Echo(index, text, scored)

    def response(
        self, choices: list[CompletionChoice], usage: UsageInfo | None = None, *, stream: bool
    ) -> CompletionResponse:
        fields: dict[str, Any] = {}
        if not stream or self.req.include_usage():
            fields["usage"] = usage
        return CompletionResponse(
            id=self.id,
            created=self.created,
            model=self.scheduler.model_id,
            system_fingerprint=SYSTEM_FINGERPRINT,
            choices=choices,
            **fields,
        )

    async def whole(self, is_disconnected: Disconnected) -> CompletionResponse:
        echoes: dict[int, Echo] = {}
        choices: list[CompletionChoice] = []
        usage = None
        async for event in self.events(is_disconnected):
            if isinstance(event, Echo):
                echoes[event.index] = event
            elif isinstance(event, Finished):
                done = event.completion
                echo = echoes.get(event.index)
                prefix = echo.text if echo else ""
                lps = None
                if self.req.logprobs is not None:
                    lps = legacy_logprobs(done.logprobs or [], 0)
                    if echo is not None and echo.logprobs is not None:
                        lps = join_legacy(echo.logprobs, lps, len(prefix))
                choices.append(
                    CompletionChoice(
                        text=prefix + done.text,
                        index=event.index,
                        logprobs=lps,
                        finish_reason=done.finish_reason,
                    )
                )
            elif isinstance(event, Usage):
                usage = usage_info(event)
        return self.response(choices, usage, stream=False)

    async def stream(self) -> AsyncIterator[str]:
        offset = 0  # of the generated text in its choice, for the log-probabilities
        try:
            async for event in self.events():
                if isinstance(event, Started):
                    offset = 0
                elif isinstance(event, Echo):
                    choice = CompletionChoice(
                        text=event.text,
                        index=event.index,
                        logprobs=event.logprobs,
                        finish_reason=None,
                    )
                    yield sse_data(self.response([choice], stream=True))
                elif isinstance(event, Delta):
                    lps = None
                    if event.logprob is not None:
                        lps = legacy_logprobs([event.logprob], offset)
                    offset += len(event.text)
                    if event.text or event.finish_reason or lps is not None:
                        choice = CompletionChoice(
                            text=event.text,
                            index=event.index,
                            logprobs=lps,
                            finish_reason=event.finish_reason,
                        )
                        yield sse_data(self.response([choice], stream=True))
                elif isinstance(event, Usage) and self.req.include_usage():
                    yield sse_data(self.response([], usage_info(event), stream=True))
            yield "data: [DONE]\n\n"
        except Exception as e:  # the status is sent: a failure becomes an error event
            yield sse_data(api_error(e).openai_body())


def legacy_logprobs(lps: list[Any], text_offset: int) -> LegacyLogprobs:
    """Log-probabilities of generated tokens in the ``/v1/completions`` shape."""
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top: list[dict[str, float] | None] = []
    offsets: list[int] = []
    offset = text_offset
    for lp in lps:
        tokens.append(lp.token)
        token_logprobs.append(lp.logprob)
        top.append({t.token: t.logprob for t in lp.top_logprobs})
        offsets.append(offset)
        offset += len(lp.token)
    return LegacyLogprobs(
        tokens=tokens, token_logprobs=token_logprobs, top_logprobs=top, text_offset=offsets
    )


def prompt_logprobs(scheduler: Scheduler, ids: list[int], top: int) -> LegacyLogprobs:
    """The prompt's own tokens with their log-probabilities (``echo`` with ``logprobs``): the
    first token has no context, so ``None``."""
    model = scheduler.model
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
    return LegacyLogprobs(
        tokens=tokens, token_logprobs=token_logprobs, top_logprobs=tops, text_offset=offsets
    )


def join_legacy(first: LegacyLogprobs, second: LegacyLogprobs, shift: int) -> LegacyLogprobs:
    return LegacyLogprobs(
        tokens=first.tokens + second.tokens,
        token_logprobs=first.token_logprobs + second.token_logprobs,
        top_logprobs=first.top_logprobs + second.top_logprobs,
        text_offset=first.text_offset + [o + shift for o in second.text_offset],
    )


__all__ = ["ChatServing", "CompletionServing", "prompt_count", "prompt_id_lists"]

"""Serving a Messages request: admitted, created, then one generator of events
(:func:`~smolgen.server.common.generate`) rendered either as Anthropic's named SSE events or
collected into one reply."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ...chat import chat_prompt_ids, message_text
from ...errors import InvalidArgumentError
from ...tools import ToolCall, calls_text, may_be_calls, parse_tool_calls, result_text, with_tools
from ..common import (
    Delta,
    Finished,
    Job,
    Started,
    Usage,
    constrained,
    dump,
    generate,
    max_tokens_for,
    sse_event,
)
from ..errors import api_error, unknown_model
from ..scheduler import Scheduler
from .protocol import (
    CountTokensRequest,
    MessagesRequest,
    MessagesResponse,
    MessagesUsage,
    TextBlock,
    ToolUseBlock,
)

if TYPE_CHECKING:
    from ...model import Completion

STOP_REASONS = {"length": "max_tokens", "stop": "end_turn"}


def chat_messages(system: Any, messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Anthropic's request as chat messages: ``system`` first; only user/assistant turns."""
    out = []
    if system:
        out.append({"role": "system", "content": message_text(system, "system")})
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise InvalidArgumentError(
                f"messages.{i}.role: must be 'user' or 'assistant' (use the top-level system "
                f"field for a system prompt), got {role!r}",
                param=f"messages.{i}.role",
            )
        out.append({"role": role, "content": content_text(message.get("content"), role, i)})
    if not out or out[-1]["role"] == "system":
        raise InvalidArgumentError("messages: at least one message is required", param="messages")
    return out


def content_text(content: Any, role: str, i: int) -> str:
    """A message's content as the model reads it: text blocks, an assistant's ``tool_use``
    blocks as its calls, a user's ``tool_result`` blocks as tool responses."""
    where = f"messages.{i}"
    if not isinstance(content, list) or not any(
        isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result") for b in content
    ):
        return message_text(content, where)
    parts: list[str] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_use" and role == "assistant":
            name, arguments = block.get("name"), block.get("input", {})
            if not isinstance(name, str) or not isinstance(arguments, dict):
                raise InvalidArgumentError(
                    f"{where}.content.{j}: a tool_use block needs a name and an input object",
                    param=f"{where}.content",
                )
            calls.append(ToolCall(name, arguments))
        elif kind == "tool_result" and role == "user":
            result = block.get("content", "")
            parts.append(result_text(message_text(result, f"{where}.content.{j}")))
        else:
            parts.append(message_text([block], where))
    if calls:
        parts.append(calls_text(calls))
    return "\n".join(parts)


def prompt_ids(scheduler: Scheduler, req: MessagesRequest | CountTokensRequest) -> list[int]:
    """The prompt of a Messages request, as the model reads it. A request to answer is refused
    before tokenizing when its prompt is too long for any tokenization of it to fit the context
    window; one to count is counted (the body's limit bounds its cost)."""
    if not scheduler.serves(req.model):
        raise unknown_model(req.model, scheduler.model_id)
    req.check()
    messages: list[dict[str, Any]] = chat_messages(req.system, req.messages)
    use = req.tool_use()
    if use is not None:
        tools, choice, _ = use
        messages = with_tools(messages, tools, choice)
    # A final assistant message is the start of the reply, which goes on from it.
    prefilled = messages[-1]["role"] == "assistant"
    if prefilled and messages[-1]["content"] != messages[-1]["content"].rstrip():
        raise InvalidArgumentError(
            "messages: final assistant content cannot end with trailing whitespace",
            param="messages",
        )
    if isinstance(req, CountTokensRequest):
        return chat_prompt_ids(
            scheduler.model, messages, bounded=False, continue_final_message=prefilled
        )
    return scheduler.model.chat_prompt(messages, continue_final_message=prefilled)


def outcome(done: Completion) -> dict[str, Any]:
    """``stop_reason`` and ``stop_sequence`` of a finished reply."""
    reason: str = done.finish_reason
    if done.stop_sequence is not None:
        reason = "stop_sequence"
    return {
        "stop_reason": STOP_REASONS.get(reason, reason),
        "stop_sequence": done.stop_sequence,
    }


#: How a reply of tool calls ends.
TOOL_USE = {"stop_reason": "tool_use", "stop_sequence": None}


def tool_use_blocks(text: str) -> list[ToolUseBlock] | None:
    """A reply's calls as ``tool_use`` blocks; ``None`` for a text reply."""
    calls = parse_tool_calls(text)
    if calls is None:
        return None
    return [
        ToolUseBlock(id=f"toolu_{uuid.uuid4().hex[:24]}", name=c.name, input=c.arguments)
        for c in calls
    ]


def text_block_start() -> str:
    block = {"type": "text", "text": ""}
    return sse_event(
        "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    )


def text_delta(text: str) -> str:
    delta = {"type": "text_delta", "text": text}
    return sse_event(
        "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    )


def tool_use_events(index: int, block: ToolUseBlock) -> Iterator[str]:
    """A ``tool_use`` block as Anthropic streams one: started with an empty input, the input's
    JSON as a delta, stopped."""
    start = {**dump(block), "input": {}}
    yield sse_event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": start},
    )
    delta = {
        "type": "input_json_delta",
        "partial_json": json.dumps(block.input, ensure_ascii=False),
    }
    yield sse_event(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )
    yield sse_event("content_block_stop", {"type": "content_block_stop", "index": index})


class MessagesServing:
    """One ``/v1/messages`` request, admitted and with its generation created."""

    def __init__(self, scheduler: Scheduler, req: MessagesRequest, ids: list[int]) -> None:
        self.scheduler, self.ids = scheduler, ids
        model = scheduler.model
        max_tokens = max_tokens_for(model, len(ids), req.max_tokens, scheduler.max_tokens_default)
        sampling = req.sampling_kwargs(0, model.tokenizer.vocab_size, scheduler.sampling_defaults)
        stop = req.stop_sequences or None
        self.job = Job(0, ids, first_of_prompt=True)
        self.admitted = constrained(
            req.constraint(),
            lambda constraint: scheduler.start(
                1,
                lambda _: model.generate(
                    ids, max_tokens=max_tokens, stop=stop, stream=True, **constraint, **sampling
                ),
            ),
        )
        self.id = f"msg_{uuid.uuid4().hex[:24]}"
        self.tool_use = req.tool_use() is not None

    def usage(self, output_tokens: int, cached: int) -> MessagesUsage:
        return MessagesUsage(
            input_tokens=len(self.ids) - cached,
            output_tokens=output_tokens,
            cache_read_input_tokens=cached,
        )

    def reply(
        self, content: list[TextBlock | ToolUseBlock], usage: MessagesUsage, **end: Any
    ) -> MessagesResponse:
        return MessagesResponse(
            id=self.id,
            model=self.scheduler.model_id,
            content=content,
            usage=usage,
            **{"stop_reason": None, "stop_sequence": None, **end},
        )

    async def whole(self, is_disconnected: Callable[[], Awaitable[bool]]) -> MessagesResponse:
        done: Completion | None = None
        usage: Usage | None = None
        async for event in generate(self.scheduler, [self.job], self.admitted, is_disconnected):
            if isinstance(event, Finished):
                done = event.completion
            elif isinstance(event, Usage):
                usage = event
        assert done is not None and usage is not None  # the generator's last events
        blocks = tool_use_blocks(done.text) if self.tool_use else None
        return self.reply(
            [TextBlock(text=done.text)] if blocks is None else [*blocks],
            self.usage(usage.completion_tokens, usage.cached_tokens),
            **(outcome(done) if blocks is None else TOOL_USE),
        )

    async def stream(self) -> AsyncIterator[str]:
        done: Completion | None = None
        # With tools, the reply's start is held back until it is known to be calls (sent as
        # tool_use blocks when the reply ends) or text (sent, and the rest as it comes).
        holding, held = self.tool_use, ""
        blocks: list[ToolUseBlock] | None = None
        try:
            async for event in generate(self.scheduler, [self.job], self.admitted):
                if isinstance(event, Started):
                    start = self.reply([], self.usage(0, event.cached_tokens))
                    yield sse_event(
                        "message_start", {"type": "message_start", "message": dump(start)}
                    )
                    if not holding:
                        yield text_block_start()
                    yield sse_event("ping", {"type": "ping"})
                elif isinstance(event, Delta) and holding:
                    held += event.text
                    if event.finish_reason is None and may_be_calls(held):
                        continue
                    holding = False
                    blocks = tool_use_blocks(held) if event.finish_reason else None
                    if blocks is not None:
                        for index, block in enumerate(blocks):
                            for sse in tool_use_events(index, block):
                                yield sse
                    else:
                        yield text_block_start()
                        if held:
                            yield text_delta(held)
                elif isinstance(event, Delta) and event.text:
                    yield text_delta(event.text)
                elif isinstance(event, Finished):
                    done = event.completion
                elif isinstance(event, Usage) and done is not None:
                    if blocks is None:
                        yield sse_event(
                            "content_block_stop", {"type": "content_block_stop", "index": 0}
                        )
                    yield sse_event(
                        "message_delta",
                        {
                            "type": "message_delta",
                            "delta": outcome(done) if blocks is None else TOOL_USE,
                            "usage": {"output_tokens": event.completion_tokens},
                        },
                    )
                    yield sse_event("message_stop", {"type": "message_stop"})
        except Exception as e:  # the status is sent: a failure becomes an error event
            yield sse_event("error", api_error(e).anthropic_body())

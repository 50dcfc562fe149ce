"""The Anthropic routes: ``POST /v1/messages`` and ``/v1/messages/count_tokens``, so the
official ``anthropic`` client works with only ``base_url`` changed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..common import SSE_RESPONSE, dump, event_stream
from ..errors import AnthropicError, documented
from ..scheduler import Scheduler
from .protocol import CountTokensRequest, MessagesRequest, MessagesResponse, TokenCount
from .serving import MessagesServing, prompt_ids

# The errors each route may answer with, in Anthropic's shape (529: overloaded).
COUNTED = documented(AnthropicError, 400, 401, 404, 413, 500)
GENERATED = {**SSE_RESPONSE, **documented(AnthropicError, 400, 401, 404, 413, 500, 529)}


def router(scheduler: Scheduler) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/messages/count_tokens", response_model=TokenCount, responses=COUNTED)
    async def count_tokens(req: CountTokensRequest) -> JSONResponse:
        """Prompt tokens of a Messages request, counted with the model's own tokenizer."""
        ids = await scheduler.run_sync(prompt_ids, scheduler, req)
        return JSONResponse(dump(TokenCount(input_tokens=len(ids))))

    @api.post("/v1/messages", response_model=MessagesResponse, responses=GENERATED)
    async def messages(req: MessagesRequest, request: Request) -> JSONResponse | StreamingResponse:
        """A reply in the Anthropic Messages shape, whole or as its SSE events."""
        ids = await scheduler.run_sync(prompt_ids, scheduler, req)
        serving = MessagesServing(scheduler, req, ids)
        if req.stream:
            return event_stream(serving.stream())
        return JSONResponse(dump(await serving.whole(request.is_disconnected)))

    return api

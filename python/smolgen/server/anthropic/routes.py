"""The Anthropic routes: ``POST /v1/messages`` and ``/v1/messages/count_tokens``, so the
official ``anthropic`` client works with only ``base_url`` changed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..common import SSE_RESPONSE, dump, event_stream
from ..scheduler import Scheduler
from .protocol import CountTokensRequest, MessagesRequest, MessagesResponse, TokenCount
from .serving import MessagesServing, prompt_ids


def router(scheduler: Scheduler) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/messages/count_tokens", response_model=TokenCount)
    async def count_tokens(req: CountTokensRequest) -> JSONResponse:
        """Prompt tokens of a Messages request, counted with the model's own tokenizer."""
        ids = await scheduler.run_sync(prompt_ids, scheduler, req.model, req.system, req.messages)
        return JSONResponse(dump(TokenCount(input_tokens=len(ids))))

    @api.post("/v1/messages", response_model=MessagesResponse, responses=SSE_RESPONSE)
    async def messages(req: MessagesRequest, request: Request) -> JSONResponse | StreamingResponse:
        """A reply in the Anthropic Messages shape, whole or as its SSE events."""
        ids = await scheduler.run_sync(prompt_ids, scheduler, req.model, req.system, req.messages)
        serving = MessagesServing(scheduler, req, ids)
        if req.stream:
            return event_stream(serving.stream())
        return JSONResponse(dump(await serving.whole(request.is_disconnected)))

    return api

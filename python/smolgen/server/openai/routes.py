"""The OpenAI-compatible routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

Switching a client's ``base_url`` is the only change it makes. Each route checks the model,
reads the prompt, and hands the request to its serving class.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ...chat import chat_prompt_ids
from ..common import SSE_RESPONSE, dump, event_stream
from ..errors import unknown_model
from ..scheduler import Scheduler
from .protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
)
from .serving import ChatServing, CompletionServing, prompt_id_lists


def router(scheduler: Scheduler) -> APIRouter:
    api = APIRouter()

    def check_model(requested: str) -> None:
        if not scheduler.serves(requested):
            raise unknown_model(requested, scheduler.model_id)

    def card() -> ModelCard:
        return ModelCard(id=scheduler.model_id, created=scheduler.created, owned_by="smolgen")

    @api.get("/v1/models", response_model=ModelList)
    async def list_models() -> JSONResponse:
        """The model this server serves."""
        listed = card()
        listed.context_length = scheduler.model.context_length
        return JSONResponse(dump(ModelList(data=[listed])))

    @api.get("/v1/models/{model_id}", response_model=ModelCard)
    async def get_model(model_id: str) -> JSONResponse:
        check_model(model_id)
        return JSONResponse(dump(card()))

    @api.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=SSE_RESPONSE)
    async def chat_completions(
        req: ChatCompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        """A chat completion, whole or streamed as server-sent events."""
        check_model(req.model)
        ids = await scheduler.run_sync(chat_prompt_ids, scheduler.model, req.messages)
        serving = ChatServing(scheduler, req, ids)
        if req.stream:
            return event_stream(serving.stream())
        return JSONResponse(dump(await serving.whole(request.is_disconnected)))

    @api.post("/v1/completions", response_model=CompletionResponse, responses=SSE_RESPONSE)
    async def completions(
        req: CompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        """A text completion of one prompt or several (strings or token ids)."""
        check_model(req.model)
        prompts = await scheduler.run_sync(prompt_id_lists, scheduler, req.prompt)
        serving = CompletionServing(scheduler, req, prompts)
        if req.stream:
            return event_stream(serving.stream())
        return JSONResponse(dump(await serving.whole(request.is_disconnected)))

    return api

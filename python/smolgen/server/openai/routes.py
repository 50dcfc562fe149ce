"""The OpenAI-compatible routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

Switching a client's ``base_url`` is the only change it makes. Each route checks the model,
reads the prompt, and hands the request to its serving class.
"""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..common import SSE_RESPONSE, dump, event_stream
from ..errors import OpenAIError, documented, unknown_model
from ..scheduler import Scheduler
from .protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
)
from .serving import ChatServing, CompletionServing, prompt_count, prompt_id_lists

# The errors each route may answer with, in OpenAI's shape.
LISTED = documented(OpenAIError, 401, 500)
LOOKED_UP = documented(OpenAIError, 401, 404, 500)
GENERATED = {**SSE_RESPONSE, **documented(OpenAIError, 400, 401, 404, 413, 500, 503)}


def router(scheduler: Scheduler) -> APIRouter:
    api = APIRouter()

    def check_model(requested: str) -> None:
        if not scheduler.serves(requested):
            raise unknown_model(requested, scheduler.model_id)

    def card() -> ModelCard:
        return ModelCard(id=scheduler.model_id, created=scheduler.created, owned_by="smolgen")

    @api.get("/v1/models", response_model=ModelList, responses=LISTED)
    async def list_models() -> JSONResponse:
        """The model this server serves."""
        listed = card()
        listed.context_length = scheduler.model.context_length
        return JSONResponse(dump(ModelList(data=[listed])))

    @api.get("/v1/models/{model_id}", response_model=ModelCard, responses=LOOKED_UP)
    async def get_model(model_id: str) -> JSONResponse:
        check_model(model_id)
        return JSONResponse(dump(card()))

    @api.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=GENERATED)
    async def chat_completions(
        req: ChatCompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        """A chat completion, whole or streamed as server-sent events."""
        check_model(req.model)
        req.check()
        ids = await scheduler.run_sync(
            partial(scheduler.model.chat_prompt, continue_final_message=req.continue_final_message),
            req.prompt_messages(),
        )
        serving = ChatServing(scheduler, req, ids)
        if req.stream:
            return event_stream(serving.stream())
        return JSONResponse(dump(await serving.whole(request.is_disconnected)))

    @api.post("/v1/completions", response_model=CompletionResponse, responses=GENERATED)
    async def completions(
        req: CompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        """A text completion of one prompt or several (strings or token ids)."""
        check_model(req.model)
        req.check()
        scheduler.check_count(req.n * prompt_count(req.prompt))  # before tokenizing them
        prompts = await scheduler.run_sync(prompt_id_lists, scheduler, req.prompt)
        serving = CompletionServing(scheduler, req, prompts)
        if req.stream:
            return event_stream(serving.stream())
        return JSONResponse(dump(await serving.whole(request.is_disconnected)))

    return api

"""``smolgen serve``: the model behind OpenAI- and Anthropic-compatible HTTP endpoints.

``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``,
``POST /v1/messages`` (Anthropic), ``GET /health``, and the OpenAPI document at
``/openapi.json`` (browsable at ``/docs``). Needs the ``serve`` extra (FastAPI, uvicorn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..model import Model


def create_app(
    model: Model,
    model_id: str,
    *,
    aliases: tuple[str, ...] = (),
    api_key: str | None = None,
    max_concurrent: int = 4,
    max_queue: int = 32,
) -> FastAPI:
    """The ASGI app serving ``model`` as ``model_id``; run it with any ASGI server."""
    from .app import create_app as build
    from .scheduler import Scheduler

    scheduler = Scheduler(
        model, model_id, aliases=aliases, max_concurrent=max_concurrent, max_queue=max_queue
    )
    return build(scheduler, api_key=api_key)


__all__ = ["create_app"]

"""``smolgen serve``: the model behind OpenAI- and Anthropic-compatible HTTP endpoints.

``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``,
``POST /v1/messages`` (Anthropic), ``GET /health``, and the OpenAPI document at
``/openapi.json`` (browsable at ``/docs``). Needs the ``serve`` extra (FastAPI, uvicorn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..chat import CHAT_TEMPERATURE, CHAT_TOP_P
from ..limits import MAX_REQUEST_BYTES

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
    max_tokens_default: int = 512,
    max_body_bytes: int = MAX_REQUEST_BYTES,
    temperature: float | None = CHAT_TEMPERATURE,
    top_p: float | None = CHAT_TOP_P,
) -> FastAPI:
    """The ASGI app serving ``model`` as ``model_id``; run it with any ASGI server.

    ``max_tokens_default`` is the answer's length for a request that gives no ``max_tokens``
    (or ``null``); a request body over ``max_body_bytes`` is refused (413) before it is read.
    ``temperature`` and ``top_p`` are the sampling of a request that gives none of its own:
    ``smolgen chat``'s (:data:`smolgen.chat.CHAT_TEMPERATURE`, :data:`~smolgen.chat.CHAT_TOP_P`)
    by default; None keeps the core's 1.0 and 1.
    """
    from .app import create_app as build
    from .scheduler import Scheduler

    scheduler = Scheduler(
        model,
        model_id,
        aliases=aliases,
        max_concurrent=max_concurrent,
        max_queue=max_queue,
        max_tokens_default=max_tokens_default,
        temperature=temperature,
        top_p=top_p,
    )
    return build(scheduler, api_key=api_key, max_body_bytes=max_body_bytes)


__all__ = ["create_app"]

"""The ASGI application: routes, the API key, and errors in the shape each client parses."""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import InvalidArgumentError, SmolgenError
from . import anthropic, openai
from .body import DEFAULT_MAX_BODY_BYTES, RequestBodies
from .errors import ApiError, api_error, not_allowed, validation_error
from .scheduler import Scheduler


def create_app(
    scheduler: Scheduler,
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The server for ``scheduler``'s model. With ``api_key`` every ``/v1`` route asks for it, as
    ``Authorization: Bearer KEY`` (OpenAI's clients) or ``x-api-key: KEY`` (Anthropic's). A
    request body over ``max_body_bytes`` is refused (413) before it is read."""
    if max_body_bytes < 1:
        raise InvalidArgumentError(f"max_body_bytes must be >= 1, got {max_body_bytes}")

    async def require_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(
                401,
                "Incorrect API key provided." if given else "No API key provided.",
                param=None,
                code="invalid_api_key",
            )

    app = documented_app(
        title="smolgen",
        version=__version__,
        summary="OpenAI- and Anthropic-compatible endpoints for a local SmolLM2",
    )
    app.state.scheduler = scheduler
    app.add_middleware(RequestBodies, max_body_bytes=max_body_bytes)
    guarded = [Depends(require_key)]
    app.include_router(openai.router(scheduler), dependencies=guarded)
    app.include_router(anthropic.router(scheduler), dependencies=guarded)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, and what the server is doing: requests running, waiting, finished,
        cancelled by their clients, refused; batched steps (``tokens / steps`` is the mean
        batch size); the prefix cache's state."""
        return {
            "status": "ok",
            "model": scheduler.model_id,
            "requests": scheduler.counters.as_dict(),
            "max_concurrent": scheduler.max_concurrent,
            "max_queue": scheduler.max_queue,
            "limits": {
                "max_tokens_default": scheduler.max_tokens_default,
                "max_body_bytes": max_body_bytes,
            },
            "sampling_defaults": scheduler.sampling_defaults,
            "batching": {
                "steps": scheduler.batcher.steps,
                "tokens": scheduler.batcher.stepped_tokens,
            },
            "prefix_cache": scheduler.model.prefix_cache_stats(),
        }

    def respond(request: Request, error: ApiError) -> JSONResponse:
        return error.response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [dict(p) for p in exc.errors()]
        if any(p.get("type") == "json_invalid" for p in problems):
            return respond(request, ApiError(400, "The request body is not valid JSON."))
        return respond(request, validation_error(problems))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = f"Unknown route: {request.method} {request.url.path}"
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        if exc.status_code == 405 and "allow" in headers:
            allow = ", ".join(sorted(m.strip() for m in headers["allow"].split(",")))
            return respond(request, not_allowed(request.method, request.url.path, allow))
        return respond(request, ApiError(exc.status_code, message))

    async def on_expected(request: Request, exc: Exception) -> JSONResponse:
        return respond(request, api_error(exc))

    # Bad requests and a full queue: answered here, nothing to log (a SmolgenError that is a
    # bug, such as InternalError, is logged by `api_error`).
    for expected in (ApiError, SmolgenError):
        app.add_exception_handler(expected, on_expected)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        return respond(request, api_error(exc))  # logs the traceback; the client gets none

    return app


def documented_app(**kwargs: Any) -> FastAPI:
    """The FastAPI app, its ``/docs`` (Swagger UI) and ``/redoc`` pages served from files
    installed with the package (the ``serve`` extra's ``fastapi-offline``), so they work on a
    machine without the internet; without that package, FastAPI's pages, which load their
    scripts from a CDN."""
    try:
        from fastapi_offline import FastAPIOffline
    except ImportError:
        return FastAPI(**kwargs)
    return FastAPIOffline(**kwargs)

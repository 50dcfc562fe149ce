"""HTTP errors in the shapes clients parse: OpenAI's ``{"error": {message, type, param, code}}``
and Anthropic's ``{"type": "error", "error": {type, message}}``.

Statuses come from exception classes, never from message text. A bug is logged with its
traceback and answered with a generic 500 that leaks nothing. The same shapes, as models, document
each route's errors in ``/openapi.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .. import errors

log = logging.getLogger("smolgen.server")

# Anthropic names its error types after the status.
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
# Anthropic's clients know 529 as "overloaded"; OpenAI's know 503.
ANTHROPIC_STATUS = {503: 529}


@dataclass
class ApiError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    retry_after: int | None = None
    # Anthropic's wording where it differs from OpenAI's.
    anthropic_message: str | None = None
    # The methods a route takes, for a 405.
    allow: str | None = None

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic_status(self) -> int:
        return ANTHROPIC_STATUS.get(self.status, self.status)

    def anthropic_body(self) -> dict[str, Any]:
        status = self.anthropic_status()
        # Another client error (a 405) is the client's mistake all the same.
        kind = ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
        message = self.anthropic_message or self.message
        return {"type": "error", "error": {"type": kind, "message": message}}

    def headers(self) -> dict[str, str] | None:
        headers = {}
        if self.retry_after is not None:
            headers["retry-after"] = str(self.retry_after)
        if self.allow is not None:
            headers["allow"] = self.allow
        return headers or None

    def response(self, path: str) -> JSONResponse:
        """The error in the shape of the API ``path`` belongs to."""
        if path.startswith("/v1/messages"):
            body, status = self.anthropic_body(), self.anthropic_status()
        else:
            body, status = self.openai_body(), self.status
        return ErrorResponse(body, status, headers=self.headers())


class ErrorResponse(JSONResponse):
    """An error body that renders whatever text it quotes: a character UTF-8 cannot carry (a
    lone surrogate a client sent) is written as its JSON escape, not raised."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")


def api_error(exc: BaseException) -> ApiError:
    """The HTTP error for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, errors.ContextLengthExceededError):
        wording = (
            f"prompt is too long: {exc.prompt_tokens} tokens + {exc.max_tokens} max_tokens > "
            f"{exc.max_context} maximum"
        )
        if exc.at_least:  # counted from its bytes, without tokenizing
            wording = f"prompt is too long: at least {exc.prompt_tokens} tokens > "
            wording += f"{exc.max_context} maximum"
        return ApiError(
            400,
            exc.message,
            param="messages",
            code="context_length_exceeded",
            anthropic_message=wording,
        )
    if isinstance(exc, (errors.InvalidArgumentError, errors.ChatTemplateError)):
        return ApiError(400, str(exc), param=getattr(exc, "param", None), code="invalid_value")
    if isinstance(exc, errors.OverloadedError):
        return ApiError(503, str(exc), type="server_error", code="overloaded", retry_after=1)
    if isinstance(exc, errors.ClientDisconnectedError):
        # Not a fault, and logged as a hang-up where the generation stopped: no one is left
        # to read this answer (499: nginx's "client closed request").
        return ApiError(499, "The client closed the request.", code="client_closed_request")
    log.error("internal error while serving a request", exc_info=exc)
    return ApiError(
        500,
        "The server had an error while processing your request. The details are in its log.",
        type="server_error",
        code="internal_error",
    )


def unknown_model(requested: str, served: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{requested}` does not exist: this server serves `{served}`.",
        param="model",
        code="model_not_found",
    )


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is larger than this server's limit of {limit} bytes.",
        code="request_too_large",
    )


def not_allowed(method: str, path: str, allow: str) -> ApiError:
    return ApiError(
        405,
        f"{path} does not take {method}; it takes {allow}.",
        code="method_not_allowed",
        allow=allow,
    )


def validation_error(problems: list[dict[str, Any]]) -> ApiError:
    """A request body that does not fit the schema: 400, naming the first bad field."""
    first = problems[0] if problems else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = first.get("msg", "invalid request")
    if first.get("type") == "value_error":  # our own validators' words, without pydantic's prefix
        message = str(first.get("ctx", {}).get("error", message))
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return ApiError(
        400,
        f"{where}: {message}" if where else message,
        param=where or None,
        code="invalid_value" if where else "invalid_request",
    )


# --- the error shapes in the OpenAPI document ----------------------------------------------------


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error body."""

    error: OpenAIErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """Anthropic's error body."""

    type: Literal["error"]
    error: AnthropicErrorDetail


ERROR_DESCRIPTIONS: dict[int | str, str] = {
    400: "A malformed request, a field out of its range (named), or a prompt that does not fit "
    "the context window with max_tokens (context_length_exceeded)",
    401: "The server has an API key and the request did not give it",
    404: "Another model than the one this server serves",
    413: "A request body over the server's limit",
    "4XX": "Another client error, such as a method the route does not take (405, with Allow)",
    500: "A bug in the server: logged there, never detailed here",
    503: "Every slot busy and the queue full: retry after Retry-After seconds",
    529: "Every slot busy and the queue full: retry after Retry-After seconds",
}


def documented(model: type[BaseModel], *statuses: int | str) -> dict[int | str, dict[str, Any]]:
    """``responses`` of a route: each status with its description and the API's error body.
    Naming "4XX" also keeps FastAPI from documenting a 422 this server never sends (its
    validation errors are 400s)."""
    return {
        status: {"model": model, "description": ERROR_DESCRIPTIONS[status]}
        for status in (*statuses, "4XX")
    }

"""HTTP errors in the shapes clients parse: OpenAI's ``{"error": {message, type, param, code}}``
and Anthropic's ``{"type": "error", "error": {type, message}}``.

Statuses come from exception classes, never from message text. A bug is logged with its
traceback and answered with a generic 500 that leaks nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

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
        kind = ANTHROPIC_TYPES.get(self.anthropic_status(), "api_error")
        message = self.anthropic_message or self.message
        return {"type": "error", "error": {"type": kind, "message": message}}

    def headers(self) -> dict[str, str] | None:
        return None if self.retry_after is None else {"retry-after": str(self.retry_after)}


def api_error(exc: BaseException) -> ApiError:
    """The HTTP error for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, errors.ContextLengthExceededError):
        return ApiError(
            400,
            exc.message,
            param="messages",
            code="context_length_exceeded",
            anthropic_message=(
                f"prompt is too long: {exc.prompt_tokens} tokens + {exc.max_tokens} max_tokens "
                f"> {exc.max_context} maximum"
            ),
        )
    if isinstance(exc, (errors.InvalidArgumentError, errors.ChatTemplateError)):
        return ApiError(400, str(exc), param=getattr(exc, "param", None), code="invalid_value")
    if isinstance(exc, errors.OverloadedError):
        return ApiError(503, str(exc), type="server_error", code="overloaded", retry_after=1)
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


def validation_error(problems: list[dict[str, Any]]) -> ApiError:
    """A request body that does not fit the schema: 400, naming the first bad field."""
    first = problems[0] if problems else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = first.get("msg", "invalid request")
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return ApiError(
        400,
        f"{where}: {message}" if where else message,
        param=where or None,
        code="invalid_value" if where else "invalid_request",
    )

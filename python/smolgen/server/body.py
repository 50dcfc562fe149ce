"""What the server reads of a request body, before any route sees it: at most ``max_body_bytes``
(a larger body is refused with 413 from its ``Content-Length``, before a byte of it is read, or
as soon as a chunked body goes past the limit), JSON whatever the content type says, and text
every string of which is Unicode (a lone surrogate, escaped as ``\\ud800`` or sent as raw bytes,
is refused with a 400 that names its field: no encoder downstream could carry it)."""

from __future__ import annotations

import json
import re
from typing import Any

from ..limits import MAX_REQUEST_BYTES
from .errors import ApiError, too_large

#: The default of ``max_body_bytes``.
DEFAULT_MAX_BODY_BYTES = MAX_REQUEST_BYTES

# A JSON escape of a UTF-16 surrogate (\ud800 to \udfff). Most are halves of a pair (an emoji
# from a client that escapes everything non-ASCII), which JSON decoding joins into one character.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class RequestBodies:
    """The ASGI middleware that reads each request's body (see the module's docstring) and
    hands it on whole to the application."""

    def __init__(self, app: Any, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_length(scope["headers"])
        if declared is not None and declared > self.max_body_bytes:
            await too_large(self.max_body_bytes).response(scope["path"])(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left mid-body: no one to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await too_large(self.max_body_bytes).response(scope["path"])(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if scope["method"] == "POST":
            # Every body the API takes is JSON: read it as JSON whatever the content type says,
            # so `curl -d '{...}'` (which labels it a form) works as written.
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            headers.append((b"content-type", b"application/json"))
            scope = {**scope, "headers": headers}
            where = lone_surrogate(body)
            if where is not None:
                error = ApiError(
                    400,
                    f"{where or 'body'}: the text holds a lone surrogate (such as \\ud800), "
                    "which is not a Unicode character",
                    param=where or None,
                    code="invalid_value",
                )
                await error.response(scope["path"])(scope, receive, send)
                return

        delivered = False

        async def replay() -> Any:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # what comes after the body: the client leaving

        await self.app(scope, replay, send)


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def lone_surrogate(body: bytes) -> str | None:
    """Where the JSON ``body`` holds a string (or a key) with a lone surrogate: its field as
    ``messages.0.content`` (``""`` for the body itself), or ``None`` when it holds none or is not
    JSON (the route reports that)."""
    if _SURROGATE_ESCAPE.search(body) is None:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            pass  # raw surrogates, JSON in UTF-16 or UTF-32, or not text: look closer
        else:
            return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    todo: list[tuple[str, Any]] = [("", document)]
    while todo:
        where, value = todo.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return where
        elif isinstance(value, dict):
            if not all(_encodable(key) for key in value):
                return where
            todo.extend(reversed([(_join(where, key), item) for key, item in value.items()]))
        elif isinstance(value, list):
            todo.extend(reversed([(_join(where, i), item) for i, item in enumerate(value)]))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)

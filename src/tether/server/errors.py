"""Errors on the wire: one JSON shape for every failure, and the request-size bound.

Every error response has the body

    {"error": {"type": "<machine-readable kind>", "message": "<what went wrong and what to do>"}}

plus extra keys where useful (`active_run_id` for a busy thread, `detail` for validation errors).
The shape is the OpenAI one, so OpenAI clients raise their usual exceptions with our message.

| status | type                | raised for                                                   |
|--------|---------------------|--------------------------------------------------------------|
| 400    | `invalid_request`   | a `UserError` from the core (bad thread id, bad stop mode, …) |
| 401    | `unauthorized`      | a missing or unknown API key                                  |
| 404    | `not_found`         | no such thread/run, or it belongs to another key              |
| 405    | `method_not_allowed`|                                                               |
| 409    | `thread_busy`       | `ThreadBusyError` under `multitask_strategy="reject"`         |
| 409    | `conflict`          | creating a thread whose id is taken                           |
| 413    | `request_too_large` | a body over `max_body_bytes`                                  |
| 422    | `invalid_request`   | a body that does not match the schema, or is not JSON         |
| 500    | `internal_error`    | a bug; the message does not leak internals (and the response  |
|        |                     | says `Connection: close`)                                     |
| 503    | `coordination_unavailable` | the run registry (Redis) is unreachable: a stop or a new run could not be delivered; retry |

The size bound is enforced by `BodyLimitMiddleware` while the body is read: it counts the bytes that
actually arrive (a lying or missing `Content-Length` does not help a client), and fails the request
with 413 as soon as the count passes the limit, without reading the rest.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import CoordinationUnavailableError, NotFoundError, ThreadBusyError, UserError

__all__ = [
    "ERROR_RESPONSES",
    "ApiError",
    "BodyLimitMiddleware",
    "RequestTooLargeError",
    "error_body",
    "install_error_handlers",
]

log = logging.getLogger("tether.server")

_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


_FASTAPI_PARSE_ERROR = "There was an error parsing the body"
NOT_JSON = "the request body is not valid JSON (or nests too deep); send one JSON object"


# The error body as a JSON schema, written out (not a pydantic model): FastAPI would put a model's
# schema under the route's own media type, and the SSE routes' errors are JSON all the same.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

_DESCRIPTIONS = {
    400: "The core refused a value.",
    401: "The API key is missing or unknown.",
    404: "No such thread or run (or it is another key's).",
    409: "The thread is busy (`thread_busy`), or the thread id is taken (`conflict`).",
    413: "The body is larger than the server's limit.",
    422: "The body, a path or a query parameter is not valid (or the body is not JSON).",
    500: "A bug, or (`/v1`) a failed run; the message leaks no internals.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entries of error statuses, with the shared error body."""
    return {
        code: {
            "description": _DESCRIPTIONS[code],
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        for code in codes
    }


ERROR_RESPONSES = error_responses(400, 401, 404, 409, 413, 422)
"""The errors any authenticated endpoint can answer; routers add them to the OpenAPI spec."""


def error_body(
    status: int, message: str, *, type: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The JSON body of an error response."""
    kind = type or _TYPES.get(status, "internal_error" if status >= 500 else "error")
    return {"error": {"type": kind, "message": message, **extra}}


class ApiError(HTTPException):
    """An HTTP error with our JSON body; raise it from routes."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(status_code, message, headers=headers)
        self.type = type
        self.extra = extra


class RequestTooLargeError(ApiError):
    """The request body passed the server's `max_body_bytes`."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than the limit of {limit} bytes; send less, or raise "
            "max_body_bytes in create_app()",
        )


def _json(
    status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _json(
        exc.status_code,
        error_body(exc.status_code, str(exc.detail), type=exc.type, **exc.extra),
        exc.headers,
    )


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "the request failed"
    if exc.status_code == 400 and message == _FASTAPI_PARSE_ERROR:
        # FastAPI's answer to a body its JSON decoder gave up on (nested past Python's limit).
        return _json(422, error_body(422, NOT_JSON))
    if exc.status_code == 404 and message == "Not Found":
        message = f"there is no endpoint {request.method} {request.url.path}; see /docs"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        # Starlette names only the first route that matched the path; list every route's methods.
        return _json(405, error_body(405, message), {"Allow": ", ".join(_allowed(request))})
    return _json(exc.status_code, error_body(exc.status_code, message), exc.headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed(request: Request) -> list[str]:
    """The methods the app accepts on the request's path, as its OpenAPI spec lists them.

    As OpenAPI matches paths, the most concrete template wins: on `/threads/t/runs/stream` only
    `POST .../runs/stream` counts, not `GET .../runs/{run_id}` with the run id "stream". Paths
    the spec leaves out (the UI) fall back to what the routes accept.
    """
    path = request.scope["path"]
    best: tuple[int, list[str]] = (-1, [])
    for template, operations in request.app.openapi().get("paths", {}).items():
        if _template_regex(template).fullmatch(path):
            literals = sum(1 for part in template.split("/") if part and "{" not in part)
            if literals > best[0]:
                best = (literals, [m.upper() for m in operations if m.upper() in _METHODS])
    if best[0] >= 0:
        return [m for m in _METHODS if m in best[1]]
    base = {"type": "http", "path": path, "root_path": request.scope.get("root_path", "")}
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**base, "headers": [], "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    ]


@functools.cache
def _template_regex(template: str) -> re.Pattern[str]:
    """`/threads/{thread_id}/runs` as a regex over concrete paths."""
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        return _json(422, error_body(422, NOT_JSON))
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    message = "invalid request: " + "; ".join(parts) if parts else "invalid request"
    detail = [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type")}
        for err in errors[:20]
    ]
    return _json(422, error_body(422, message, detail=detail))


async def _on_not_found(request: Request, exc: Exception) -> JSONResponse:
    return _json(404, error_body(404, str(exc)))


async def _on_busy(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ThreadBusyError)
    return _json(
        409, error_body(409, str(exc), type="thread_busy", active_run_id=exc.active_run_id)
    )


async def _on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return _json(503, error_body(503, str(exc), type="coordination_unavailable"))


async def _on_user_error(request: Request, exc: Exception) -> JSONResponse:
    return _json(400, error_body(400, str(exc)))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    # `Connection: close`: the server state behind this connection is suspect, and a client
    # that pools connections must learn that this one ends, rather than meet a reset.
    return _json(
        500,
        error_body(500, f"internal error ({type(exc).__name__}); the server log has the details"),
        {"Connection": "close"},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Make every error a JSON body of the shape in the module docstring."""
    # Order matters only for subclasses registered separately: starlette picks the nearest class.
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ThreadBusyError, _on_busy)
    app.add_exception_handler(NotFoundError, _on_not_found)
    app.add_exception_handler(UserError, _on_user_error)
    app.add_exception_handler(CoordinationUnavailableError, _on_unavailable)
    app.add_exception_handler(Exception, _on_unexpected)


class BodyLimitMiddleware:
    """Fail requests whose body passes `max_bytes` with 413, counting the bytes that arrive.

    A declared `Content-Length` over the limit is refused before anything is read. Otherwise the
    middleware wraps `receive` and raises `RequestTooLargeError` from the read that passes the
    limit; the route's exception handling turns it into the 413 response.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            response = _json(413, error_body(413, str(RequestTooLargeError(self.max_bytes).detail)))
            await response(scope, receive, send)
            return
        seen = 0
        limit = self.max_bytes

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise RequestTooLargeError(limit)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

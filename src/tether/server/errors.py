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
| 500    | `internal_error`    | a bug; the message does not leak internals                    |
| 503    | `coordination_unavailable` | the run registry (Redis) is unreachable: a stop or a new run could not be delivered; retry |

The size bound is enforced by `BodyLimitMiddleware` while the body is read: it counts the bytes that
actually arrive (a lying or missing `Content-Length` does not help a client), and fails the request
with 413 as soon as the count passes the limit, without reading the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import CoordinationUnavailableError, NotFoundError, ThreadBusyError, UserError

__all__ = [
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
    if exc.status_code == 404 and message == "Not Found":
        message = f"there is no endpoint {request.method} {request.url.path}; see /docs"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; see /docs"
    return _json(exc.status_code, error_body(exc.status_code, message), exc.headers)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
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
    return _json(
        500,
        error_body(500, f"internal error ({type(exc).__name__}); the server log has the details"),
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

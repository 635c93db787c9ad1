"""RFC 9457 problem details: the one table from domain errors to HTTP, and the handlers that use it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from tenantry.core.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    InvalidInput,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from tenantry.http.context import request_id
from tenantry.identity.errors import InvalidToken, WrongPassword

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"

# Domain error class -> HTTP status. Looked up along the class hierarchy, most specific first.
STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Unauthorized: 401,
    Forbidden: 403,
    Conflict: 409,
    Gone: 410,
    Unavailable: 503,
    InvalidInput: 422,
    TooManyRequests: 429,
    InvalidToken: 400,
    WrongPassword: 400,
}

# Statuses Starlette raises itself (routing), with their stable codes.
HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("malformed_request", "Malformed request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


def status_of(error: DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "code": code}
    if detail:
        body["detail"] = detail
    rid = request_id.get()
    if rid:
        body["request_id"] = rid
    body.update(extra)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _domain_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    headers = None
    if isinstance(exc, TooManyRequests | Unavailable):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return problem(status_of(exc), exc.code, exc.title, exc.detail, headers=headers, **exc.extra)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") in ("json_invalid", "json_type") for e in errors):
        return problem(400, "malformed_request", "Malformed request", "The body is not valid JSON.")
    fields = [
        {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "message": e.get("msg", "")}
        for e in errors
    ]
    return problem(422, "validation_error", "Invalid input", "Some fields are missing or invalid.", errors=fields)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code, title = HTTP_CODES.get(exc.status_code, ("error", "Error"))
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
    return problem(exc.status_code, code, title, detail, headers=exc.headers)


def internal_error() -> Response:
    """The answer to an unexpected error: nothing of its internals, the request id to quote."""
    return problem(
        500,
        "internal_error",
        "Internal server error",
        "Something went wrong on our side. Quote the request id when you report it.",
    )


def _is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says a server could not be reached or dropped the connection."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ConnectionError | OperationalError | InterfaceError) or getattr(
            seen, "connection_invalidated", False
        ):
            return True
        if type(seen).__name__ in _DRIVER_OUTAGES:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return False


# asyncpg's names for a connection that is gone (they are not OSErrors, and SQLAlchemy does not always
# mark them as disconnects).
_DRIVER_OUTAGES = {"ConnectionDoesNotExistError", "CannotConnectNowError", "ConnectionFailureError"}


async def _outage(_request: Request, exc: Exception) -> Response:
    """A server a request needs (the database, most often: restarting, failed over, a connection cut, or
    busy) that cannot be reached is an outage to wait out, not a bug: 503 with Retry-After. Any other
    database error is unexpected (500)."""
    if not _is_outage(exc):
        raise exc
    log.warning("dependency.unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
    return problem(
        503,
        Unavailable.code,
        Unavailable.title,
        "A server this request needs cannot be reached right now; try again in a moment.",
        headers={"Retry-After": "1"},
    )


def install(app: FastAPI) -> None:
    """Make every error of ``app`` answer as problem+json (unexpected ones: ``RequestContext``)."""
    app.add_exception_handler(DBAPIError, _outage)
    app.add_exception_handler(ConnectionError, _outage)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

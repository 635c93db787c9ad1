"""Domain errors: what went wrong, in the domain's words, without HTTP.

Each error has a stable ``code`` that clients may rely on. The HTTP edge maps error classes to
status codes in one table (``tenantry.http.problems``).
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    code: ClassVar[str] = "error"
    title: ClassVar[str] = "Error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)


class NotFound(DomainError):
    code = "not_found"
    title = "Not found"


class Unauthorized(DomainError):
    code = "unauthorized"
    title = "Authentication required"


class Forbidden(DomainError):
    code = "forbidden"
    title = "Forbidden"


class Conflict(DomainError):
    code = "conflict"
    title = "Conflict"


class Gone(DomainError):
    code = "gone"
    title = "Gone"


class InvalidInput(DomainError):
    code = "validation_error"
    title = "Invalid input"


class TooManyRequests(DomainError):
    code = "too_many_requests"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """Cannot be answered right now (a dependency is down, the process is overloaded): try again."""

    code = "unavailable"
    title = "Temporarily unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

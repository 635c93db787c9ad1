"""The console's cookies: the session, the pending second step of a sign-in, and the CSRF token.

Every one is HttpOnly (no script reads them: the CSRF token reaches scripts through the page),
SameSite=Lax and Path=/. Over https they are Secure and named with the ``__Host-`` prefix, which a
browser accepts only from a secure origin, host-only and for the whole path: a sibling subdomain
can then neither read nor plant them (cookie tossing would otherwise defeat the CSRF check).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from tenantry.identity.views import ConsoleSession

SESSION = "tenantry_session"
PENDING_MFA = "tenantry_mfa"
CSRF = "tenantry_csrf"


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """How the console's cookies are named and flagged, decided once from the base URL."""

    origin: str
    secure: bool

    @classmethod
    def for_base_url(cls, base_url: str) -> CookiePolicy:
        parts = urlsplit(base_url)
        return cls(origin=f"{parts.scheme}://{parts.netloc}", secure=parts.scheme == "https")

    def name(self, base: str) -> str:
        return f"__Host-{base}" if self.secure else base

    def read(self, request: Request, base: str) -> str | None:
        return request.cookies.get(self.name(base)) or None

    def set(
        self, response: Response, base: str, value: str, *, expires: datetime | None = None, max_age: int | None = None
    ) -> None:
        response.set_cookie(
            self.name(base),
            value,
            expires=expires,
            max_age=max_age,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )

    def clear(self, response: Response, base: str) -> None:
        response.delete_cookie(self.name(base), path="/", secure=self.secure, httponly=True, samesite="lax")

    def open_session(self, response: Response, session: ConsoleSession) -> None:
        """Hand the browser its session; the cookie dies when the session does. Ends a pending sign-in."""
        self.set(response, SESSION, session.cookie, expires=session.expires_at)
        self.clear(response, PENDING_MFA)


def policy(request: Request) -> CookiePolicy:
    """The policy ``tenantry.console.install`` stored on the application."""
    found = request.app.state.console_cookies
    assert isinstance(found, CookiePolicy)
    return found

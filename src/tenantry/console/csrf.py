"""Cross-site request forgery: every state-changing console request proves it came from a console page.

Three checks, each enough to stop a forged form or fetch on its own in a browser that sends it:
- the browser's ``Sec-Fetch-Site`` must not say another site made the request;
- an ``Origin``, when sent, must be the console's own (``null`` included: it is refused);
- the request must echo the per-browser token (double-submit): from the cookie, which another site
  cannot read, into the form's hidden field or the ``X-CSRF-Token`` header, compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.exceptions import HTTPException
from starlette.requests import Request

from tenantry.console import cookies

FIELD = "csrf_token"
HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


class CsrfRefused(Exception):
    """A state-changing request that did not prove it came from a console page."""


def token(request: Request) -> str:
    """This browser's token: its cookie's, or a new one the response will set (see ``issued``)."""
    current = cookies.policy(request).read(request, cookies.CSRF)
    if current:
        return current
    fresh: str | None = getattr(request.state, "csrf_issued", None)
    if fresh is None:
        fresh = request.state.csrf_issued = secrets.token_urlsafe(32)
    return fresh


def issued(request: Request) -> str | None:
    """The token made during this request, that the response must set as a cookie."""
    fresh: str | None = getattr(request.state, "csrf_issued", None)
    return fresh


async def check(request: Request) -> None:
    """Raise ``CsrfRefused`` unless ``request`` comes from a console page of this deployment."""
    policy = cookies.policy(request)
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise CsrfRefused("sent from another site")
    origin = request.headers.get("origin")
    if origin is not None and origin != policy.origin:
        raise CsrfRefused(f"sent from {origin!r}, not {policy.origin!r}")
    expected = policy.read(request, cookies.CSRF)
    given = request.headers.get(HEADER) or await _form_field(request)
    if not expected or not given or not hmac.compare_digest(expected.encode(), given.encode()):
        raise CsrfRefused("the form's token is missing or wrong")


async def _form_field(request: Request) -> str | None:
    if not request.headers.get("content-type", "").startswith(_FORMS):
        return None
    try:
        value = (await request.form()).get(FIELD)
    except (HTTPException, ValueError):  # a malformed body cannot carry a valid token
        return None
    return value if isinstance(value, str) else None

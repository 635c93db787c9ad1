"""What every console view gets without asking: the CSRF check, errors as pages, security headers.

A view raises what went wrong; ``ConsoleRoute`` turns it into what a person (or the console's
script, for JSON calls) should see. Views only catch the errors after which they re-show a form.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import structlog
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import RedirectResponse, Response

from tenantry.console import cookies, csrf, messages, pages
from tenantry.core.errors import DomainError, Unauthorized
from tenantry.http.problems import status_of
from tenantry.identity.views import Principal

if TYPE_CHECKING:
    from tenantry.platform import Platform

log = structlog.get_logger(__name__)


class SignInNeeded(Exception):
    """The page needs a signed-in user and the browser has no live session."""


def platform(request: Request) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


async def signed_in(request: Request) -> Principal:
    """The user behind the session cookie. Raises ``SignInNeeded`` (missing, ended or unknown cookie)."""
    cookie = cookies.policy(request).read(request, cookies.SESSION)
    if cookie is None:
        raise SignInNeeded()
    try:
        return await platform(request).auth.authenticate_cookie(cookie)
    except Unauthorized as exc:
        raise SignInNeeded() from exc


SignedIn = Annotated[Principal, Depends(signed_in)]


def wants_json(request: Request) -> bool:
    """The console's script calls with JSON and reads JSON back; forms get pages."""
    return request.headers.get("content-type", "").startswith("application/json")


class ConsoleRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            moved = _named_address(request)
            if moved is not None:
                return moved
            try:
                if request.method not in csrf.SAFE_METHODS:
                    await csrf.check(request)
                response = await handler(request)
            except (csrf.CsrfRefused, SignInNeeded, RequestValidationError, DomainError) as exc:
                response = _answer(request, exc)
            return pages.finish(request, response)

        return console_handler


def _named_address(request: Request) -> Response | None:
    """``make run`` listens on 127.0.0.1 while the console's address is http://localhost:8000 (browsers
    refuse an IP address as a passkey's relying party, and cookies and CSRF checks are per origin). A
    browser that opened the IP is sent to the same page at the named address, instead of meeting
    refused forms there. Only for loopback addresses and the same port, so no proxy can loop on it."""
    base = urlsplit(cookies.policy(request).origin)
    if request.method not in csrf.SAFE_METHODS or base.hostname != "localhost":
        return None
    if request.url.hostname not in ("127.0.0.1", "::1") or request.url.port != base.port:
        return None
    target = f"{base.scheme}://{base.netloc}{request.url.path}"
    return RedirectResponse(f"{target}?{request.url.query}" if request.url.query else target, status_code=307)


def _answer(request: Request, exc: Exception) -> Response:
    if isinstance(exc, csrf.CsrfRefused):
        log.warning("console.csrf_refused", path=request.url.path, reason=str(exc))
        return _refused(request)
    if isinstance(exc, SignInNeeded):
        return _sign_in_needed(request)
    if isinstance(exc, RequestValidationError):
        text = "Some fields of the form are missing or not valid. Please fill them in and try again."
        return _say(request, "Please check the form", text, 400)
    assert isinstance(exc, DomainError)
    return _say(request, "That did not work", messages.explain(exc), status_of(exc))


def _say(request: Request, title: str, text: str, status: int) -> Response:
    if wants_json(request):
        return pages.json_error(text, status)
    return pages.message(request, title=title, text=text, status=status, action=("/account", "Back to your account"))


def _refused(request: Request) -> Response:
    origin = cookies.policy(request).origin
    text = (
        "This request could not be verified as coming from this site, so nothing was changed. "
        f"Go back, reload the page and try again (the console lives at {origin})."
    )
    if wants_json(request):
        return pages.json_error(text, 403)
    return pages.message(request, title="Request refused", text=text, status=403, action=("/", "Go to the start page"))


def _sign_in_needed(request: Request) -> Response:
    response: Response
    if wants_json(request):
        response = pages.json_error("Your session has ended. Please sign in again.", 401)
    else:
        response = pages.redirect("/")
    cookies.policy(request).clear(response, cookies.SESSION)
    return response

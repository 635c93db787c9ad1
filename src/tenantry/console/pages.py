"""Rendering console pages: one Jinja2 environment (autoescaped), the headers every page carries.

The Content-Security-Policy allows scripts and styles from this origin only, so no page has inline
script or style; images may be data: URLs (the QR code). Pages are never cached (they carry CSRF
tokens, recovery codes and secrets) and never framed. ``Referrer-Policy: same-origin`` keeps the
tokens of mailed links (``/reset-password?token=…``) from leaking to another site in a Referer.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tenantry.console import cookies, csrf, messages

HERE = Path(__file__).parent
STATIC = HERE / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cache-Control": "no-store",
}


def _when(value: datetime | None) -> str:
    return value.strftime("%d %b %Y, %H:%M UTC") if value else "never"


# (token in the User-Agent, what a person calls it), most specific first: Edge and Chrome both say "Safari".
_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (("Android", "Android"), ("iPhone", "iPhone"), ("iPad", "iPad"), ("Windows", "Windows"),
            ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"), ("Linux", "Linux"))  # fmt: skip


def _device(user_agent: str | None) -> str:
    """A session's device as a person would name it: "Chrome on Linux"; the raw agent otherwise."""
    if not user_agent:
        return "Unknown device"
    browser = next((name for token, name in _BROWSERS if token in user_agent), None)
    system = next((name for token, name in _SYSTEMS if token in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or user_agent[:60]


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["when"] = _when
_env.filters["device"] = _device


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """``template`` filled with ``context``, the CSRF token and any ``?done=`` notice."""
    context.setdefault("user", None)
    context.setdefault("error", None)
    context.setdefault("notice", messages.notice(request.query_params.get("done")))
    html = _env.get_template(template).render(csrf_token=csrf.token(request), **context)
    return HTMLResponse(html, status_code=status)


def message(request: Request, *, title: str, text: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page that only says something, with a way onwards."""
    context.setdefault("action", ("/", "Go to sign in"))
    return render(request, "message.html", status=status, title=title, text=text, **context)


def redirect(path: str, *, done: str | None = None) -> RedirectResponse:
    """See Other: after a POST the browser GETs ``path`` (and a refresh does not resend the form)."""
    return RedirectResponse(f"{path}?{urlencode({'done': done})}" if done else path, status_code=303)


def json_error(text: str, status: int) -> JSONResponse:
    """What the console's scripts show when a call fails."""
    return JSONResponse({"message": text}, status_code=status)


def finish(request: Request, response: Response) -> Response:
    """Add the security headers, and the CSRF cookie if this request made the token."""
    response.headers.update(SECURITY_HEADERS)
    fresh = csrf.issued(request)
    if fresh is not None:
        cookies.policy(request).set(response, cookies.CSRF, fresh)
    return response

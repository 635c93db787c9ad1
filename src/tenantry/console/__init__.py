"""The web console: server-rendered pages for signing in and up and managing one's account.

A browser holds a console session in an HttpOnly cookie; the REST API keeps Bearer tokens. Both
call the same identity services. ``install(app, settings)`` adds the pages and their static files.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tenantry.console.account_routes import router as account_router
from tenantry.console.cookies import CookiePolicy
from tenantry.console.mailbox_routes import router as mailbox_router
from tenantry.console.pages import STATIC
from tenantry.console.routes import router
from tenantry.settings import Settings

__all__ = ["install"]


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the console at ``/`` (its pages) and ``/console/static`` (its CSS and script)."""
    app.state.console_cookies = CookiePolicy.for_base_url(settings.base_url)
    app.include_router(router)
    app.include_router(account_router)
    app.include_router(mailbox_router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

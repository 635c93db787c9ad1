"""``create_app(settings)``: one ASGI application with every door of Tenantry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tenantry import __version__, console
from tenantry.core import runtime
from tenantry.http import problems
from tenantry.http.middleware import RequestContext
from tenantry.http.ratelimit import RateLimits
from tenantry.identity.api import jwks_router, me_router
from tenantry.identity.api import router as identity_router
from tenantry.identity.passkey_api import router as passkey_router
from tenantry.observability.health import router as health_router
from tenantry.observability.logging import configure as configure_logging
from tenantry.platform import Platform
from tenantry.settings import Settings
from tenantry.tenancy.api import hot_router as tenancy_hot_router
from tenantry.tenancy.api import router as tenancy_router
from tenantry.tenancy.audit_api import router as audit_router
from tenantry.tenancy.invitations_api import router as invitations_router
from tenantry.tenancy.roles_api import router as roles_router
from tenantry.tenancy.teams_api import router as teams_router
from tenantry.webhooks.api import router as webhooks_router


def create_app(settings: Settings | None = None, *, access_log: bool = True) -> FastAPI:
    """Build the application; its lifespan starts and stops the platform behind it."""
    settings = settings or Settings()
    configure_logging(level=settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        platform = Platform(settings)
        app.state.platform = platform
        await platform.start()
        runtime.settle()
        try:
            yield
        finally:
            await platform.stop()

    app = FastAPI(
        title="Tenantry",
        version=__version__,
        summary="Identity, tenancy, webhooks, billing, realtime and analytics for B2B SaaS products.",
        lifespan=lifespan,
    )
    problems.install(app)
    app.include_router(health_router)
    app.include_router(jwks_router)
    # Matched in order: the hottest routes first.
    app.include_router(me_router)
    app.include_router(tenancy_hot_router)
    app.include_router(identity_router)
    app.include_router(passkey_router)
    app.include_router(tenancy_router)
    app.include_router(roles_router)
    app.include_router(teams_router)
    app.include_router(invitations_router)
    app.include_router(audit_router)
    app.include_router(webhooks_router)
    console.install(app, settings)  # last: the console's `/` pages never shadow the routes above
    app.add_middleware(RateLimits)  # inside RequestContext: refusals carry the request id
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes, access_log=access_log)
    return app

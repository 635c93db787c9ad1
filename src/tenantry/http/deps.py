"""FastAPI dependencies every door of the REST API shares: the platform, the actor, the principal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from tenantry.core.context import Actor
from tenantry.core.errors import Unauthorized
from tenantry.http.client_ip import client_ip
from tenantry.identity.views import Principal

if TYPE_CHECKING:
    from tenantry.platform import Platform


def platform(request: Request) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


def request_ip(request: Request) -> str | None:
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.get("x-forwarded-for"), request.app.state.platform.trusted_proxies)


def actor(request: Request) -> Actor:
    """The caller as an anonymous actor with its address (sign-up, sign-in, token links)."""
    return Actor(type="anonymous", ip=request_ip(request), user_agent=request.headers.get("user-agent"))


async def principal(request: Request) -> Principal:
    """The signed-in user behind ``Authorization: Bearer …``. Raises ``Unauthorized``."""
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("Send an access token: Authorization: Bearer <token>.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Send an access token: Authorization: Bearer <token>.")
    found = await request.app.state.platform.auth.authenticate(token.strip())
    assert isinstance(found, Principal)
    return found


def user_actor(request: Request, who: Principal) -> Actor:
    """The caller as the signed-in user they are."""
    return actor(request).as_user(who.user.id)


PlatformDep = Annotated["Platform", Depends(platform)]
ActorDep = Annotated[Actor, Depends(actor)]
PrincipalDep = Annotated[Principal, Depends(principal)]

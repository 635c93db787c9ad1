"""FastAPI dependencies every door of the REST API shares: the platform, the actor, the principal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from tenantry.core.context import Actor
from tenantry.core.errors import Forbidden, Unauthorized
from tenantry.http.client_ip import client_ip
from tenantry.identity.views import Principal
from tenantry.tenancy.api_keys import PREFIX as API_KEY_PREFIX
from tenantry.tenancy.policy import Caller

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


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send an access token or API key: Authorization: Bearer <token>.")
    return token.strip()


async def principal(request: Request) -> Principal:
    """The signed-in user behind ``Authorization: Bearer …``. Raises ``Unauthorized``, and ``Forbidden``
    for a valid API key (these routes act for a person)."""
    token = _bearer(request)
    platform_ = request.app.state.platform
    if token.startswith(API_KEY_PREFIX):
        await platform_.api_keys.unscoped_authenticate(token, actor=actor(request))
        raise Forbidden("API keys cannot use this route: it acts for a signed-in user.")
    found = await platform_.auth.authenticate(token)
    assert isinstance(found, Principal)
    return found


async def caller(request: Request) -> Caller:
    """Who calls an org-scoped route: a signed-in user or an API key. Raises ``Unauthorized``."""
    token = _bearer(request)
    platform_ = request.app.state.platform
    if token.startswith(API_KEY_PREFIX):
        found: Caller = await platform_.api_keys.unscoped_authenticate(token, actor=actor(request))
        return found
    who = await platform_.auth.authenticate(token)
    assert isinstance(who, Principal)
    return Caller(actor=user_actor(request, who), user_id=who.user.id, has_mfa=who.user.mfa_enabled)


def user_actor(request: Request, who: Principal) -> Actor:
    """The caller as the signed-in user they are."""
    return actor(request).as_user(who.user.id)


# FastAPI runs a plain ``def`` dependency on a worker thread: a thread hop per request, measured at a
# third of a cheap route's throughput. The dependencies are therefore ``async def`` wrappers.
async def _platform(request: Request) -> Platform:
    return platform(request)


async def _actor(request: Request) -> Actor:
    return actor(request)


PlatformDep = Annotated["Platform", Depends(_platform)]
ActorDep = Annotated[Actor, Depends(_actor)]
PrincipalDep = Annotated[Principal, Depends(principal)]
CallerDep = Annotated[Caller, Depends(caller)]

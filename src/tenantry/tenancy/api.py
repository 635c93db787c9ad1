"""REST routes of organizations, members, permissions and API keys: thin, each parses, authenticates,
calls one service method and shapes the answer. Authorization happens in the services (the policy)."""

from __future__ import annotations

import uuid
import weakref
from dataclasses import asdict
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response, status

from tenantry.http.deps import CallerDep, PlatformDep
from tenantry.tenancy import policy, schemas
from tenantry.tenancy.api_keys import ApiKeyView
from tenantry.tenancy.orgs import OrgChanges
from tenantry.tenancy.views import MemberView, OrgView, Page

router = APIRouter(prefix="/v1", tags=["organizations"])
# The reads every page of a product's organization screens makes: matched right after GET /v1/me.
hot_router = APIRouter(prefix="/v1", tags=["organizations"])
Cursor = Annotated[str | None, Query(max_length=200)]
Limit = Annotated[int, Query(ge=1, le=200)]


_ENCODED: weakref.WeakKeyDictionary[Page[MemberView], bytes] = weakref.WeakKeyDictionary()


def _members_json(page: Page[MemberView]) -> Response:
    """A cached page is encoded once, then its bytes are served for as long as the page lives."""
    body = _ENCODED.get(page)
    if body is None:
        body = _ENCODED[page] = orjson.dumps(page, default=str, option=orjson.OPT_UTC_Z)
    return Response(body, media_type="application/json")


def _json(body: object) -> Response:
    """orjson writes the frozen view dataclasses itself, far faster than a model round trip."""
    # default=str: asyncpg hands back its own UUID subclass, which orjson does not take for a UUID.
    return Response(orjson.dumps(body, default=str, option=orjson.OPT_UTC_Z), media_type="application/json")


def _org(view: OrgView) -> schemas.Org:
    return schemas.Org(**asdict(view))


def _member(view: MemberView) -> schemas.Member:
    return schemas.Member(**asdict(view))


def _api_key(view: ApiKeyView) -> schemas.ApiKey:
    return schemas.ApiKey(**asdict(view))


@hot_router.get("/orgs/{org_id}/members", summary="The organization's members", response_model=schemas.MemberPage)
async def list_members(
    org_id: uuid.UUID, platform: PlatformDep, caller: CallerDep, cursor: Cursor = None, limit: Limit = 50
) -> Response:
    page = await platform.orgs.list_members(caller=caller, org_id=org_id, cursor=cursor, limit=limit)
    return _members_json(page)


@hot_router.get("/orgs/{org_id}", summary="One organization", response_model=schemas.Org)
async def get_org(org_id: uuid.UUID, platform: PlatformDep, caller: CallerDep) -> Response:
    # Hot: serialised straight from the cached view, skipping a model round trip (like GET /v1/me).
    return _json(await platform.orgs.get(caller=caller, org_id=org_id))


@router.get("/permissions", summary="Every permission, with what it allows")
async def permissions() -> schemas.PermissionList:
    return schemas.PermissionList(
        items=[schemas.Permission(key=k, description=d) for k, d in policy.PERMISSIONS.items()]
    )


@router.post("/orgs", status_code=status.HTTP_201_CREATED, summary="Create an organization (you become its owner)")
async def create_org(body: schemas.OrgCreate, platform: PlatformDep, caller: CallerDep) -> schemas.Org:
    return _org(await platform.orgs.create(caller=caller, name=body.name, slug=body.slug))


@router.get("/orgs", summary="Your organizations, with your role in each")
async def list_orgs(
    platform: PlatformDep, caller: CallerDep, cursor: Cursor = None, limit: Limit = 50
) -> schemas.MyOrgPage:
    page = await platform.orgs.unscoped_list_mine(caller=caller, cursor=cursor, limit=limit)
    return schemas.MyOrgPage(items=[schemas.MyOrg(**asdict(o)) for o in page.items], next_cursor=page.next_cursor)


@router.patch("/orgs/{org_id}", summary="Change an organization's name, slug or settings")
async def update_org(
    org_id: uuid.UUID, body: schemas.OrgUpdate, platform: PlatformDep, caller: CallerDep
) -> schemas.Org:
    changes = OrgChanges(**body.model_dump(exclude_unset=True))
    return _org(await platform.orgs.update(caller=caller, org_id=org_id, changes=changes))


@router.delete("/orgs/{org_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an organization (owners)")
async def delete_org(org_id: uuid.UUID, platform: PlatformDep, caller: CallerDep) -> Response:
    await platform.orgs.delete(caller=caller, org_id=org_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/orgs/{org_id}/join", summary="Join an organization that admits your verified email domain")
async def join_org(org_id: uuid.UUID, platform: PlatformDep, caller: CallerDep) -> schemas.Member:
    return _member(await platform.orgs.join(caller=caller, org_id=org_id))


@router.patch("/orgs/{org_id}/members/{user_id}", summary="Change a member's role")
async def update_member(
    org_id: uuid.UUID, user_id: uuid.UUID, body: schemas.MemberUpdate, platform: PlatformDep, caller: CallerDep
) -> schemas.Member:
    return _member(await platform.orgs.update_member(caller=caller, org_id=org_id, user_id=user_id, role=body.role))


@router.delete(
    "/orgs/{org_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member (or leave, with your own id)",
)
async def remove_member(org_id: uuid.UUID, user_id: uuid.UUID, platform: PlatformDep, caller: CallerDep) -> Response:
    await platform.orgs.remove_member(caller=caller, org_id=org_id, user_id=user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/orgs/{org_id}/api-keys", status_code=status.HTTP_201_CREATED, summary="Create an API key")
async def create_api_key(
    org_id: uuid.UUID, body: schemas.ApiKeyCreate, platform: PlatformDep, caller: CallerDep
) -> schemas.NewApiKey:
    made = await platform.api_keys.create(
        caller=caller,
        org_id=org_id,
        name=body.name,
        role=body.role,
        permissions=body.permissions,
        expires_at=body.expires_at,
    )
    return schemas.NewApiKey(**asdict(made.view), key=made.key)


@router.get("/orgs/{org_id}/api-keys", summary="The organization's API keys (no secrets)")
async def list_api_keys(
    org_id: uuid.UUID, platform: PlatformDep, caller: CallerDep, cursor: Cursor = None, limit: Limit = 50
) -> schemas.ApiKeyPage:
    page = await platform.api_keys.list(caller=caller, org_id=org_id, cursor=cursor, limit=limit)
    return schemas.ApiKeyPage(items=[_api_key(k) for k in page.items], next_cursor=page.next_cursor)


@router.delete("/orgs/{org_id}/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke an API key")
async def revoke_api_key(org_id: uuid.UUID, key_id: uuid.UUID, platform: PlatformDep, caller: CallerDep) -> Response:
    await platform.api_keys.revoke(caller=caller, org_id=org_id, key_id=key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

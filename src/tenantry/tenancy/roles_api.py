"""REST routes of roles (thin: parse, authenticate, call one service method, shape)."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from tenantry.http.deps import CallerDep, PlatformDep
from tenantry.tenancy import roles_schemas as schemas
from tenantry.tenancy.roles import RoleChanges, RoleView

router = APIRouter(prefix="/v1", tags=["organizations"])
RoleKey = Annotated[str, Path(max_length=64)]


def _role(view: RoleView) -> schemas.Role:
    return schemas.Role(**asdict(view))


@router.get("/orgs/{org_id}/roles", summary="The organization's roles: built-in and custom, with their permissions")
async def list_roles(org_id: uuid.UUID, platform: PlatformDep, caller: CallerDep) -> schemas.RoleList:
    return schemas.RoleList(items=[_role(r) for r in await platform.roles.list(caller=caller, org_id=org_id)])


@router.post("/orgs/{org_id}/roles", status_code=status.HTTP_201_CREATED, summary="Create a custom role")
async def create_role(
    org_id: uuid.UUID, body: schemas.RoleCreate, platform: PlatformDep, caller: CallerDep
) -> schemas.Role:
    made = await platform.roles.create(
        caller=caller, org_id=org_id, key=body.key, name=body.name, permissions=body.permissions
    )
    return _role(made)


@router.patch(
    "/orgs/{org_id}/roles/{key}",
    summary="Rename a custom role or change its permissions (built-in roles: 409 role_built_in)",
)
async def update_role(
    org_id: uuid.UUID, key: RoleKey, body: schemas.RoleUpdate, platform: PlatformDep, caller: CallerDep
) -> schemas.Role:
    changes = RoleChanges(**body.model_dump(exclude_unset=True))
    return _role(await platform.roles.update(caller=caller, org_id=org_id, key=key, changes=changes))


@router.delete(
    "/orgs/{org_id}/roles/{key}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a custom role nobody holds (409 role_in_use otherwise; built-in roles: 409 role_built_in)",
)
async def delete_role(org_id: uuid.UUID, key: RoleKey, platform: PlatformDep, caller: CallerDep) -> Response:
    await platform.roles.delete(caller=caller, org_id=org_id, key=key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

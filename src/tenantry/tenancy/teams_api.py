"""REST routes of teams (thin: parse, authenticate, call one service method, shape)."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from tenantry.http.deps import CallerDep, PlatformDep
from tenantry.tenancy import teams_schemas as schemas
from tenantry.tenancy.teams import TeamMemberView, TeamView

router = APIRouter(prefix="/v1", tags=["organizations"])
Cursor = Annotated[str | None, Query(max_length=200)]
Limit = Annotated[int, Query(ge=1, le=200)]


def _team(view: TeamView) -> schemas.Team:
    return schemas.Team(**asdict(view))


def _member(view: TeamMemberView) -> schemas.TeamMember:
    return schemas.TeamMember(**asdict(view))


@router.post("/orgs/{org_id}/teams", status_code=status.HTTP_201_CREATED, summary="Create a team")
async def create_team(
    org_id: uuid.UUID, body: schemas.TeamCreate, platform: PlatformDep, caller: CallerDep
) -> schemas.Team:
    return _team(await platform.teams.create(caller=caller, org_id=org_id, name=body.name))


@router.get("/orgs/{org_id}/teams", summary="The organization's teams")
async def list_teams(
    org_id: uuid.UUID, platform: PlatformDep, caller: CallerDep, cursor: Cursor = None, limit: Limit = 50
) -> schemas.TeamPage:
    page = await platform.teams.list(caller=caller, org_id=org_id, cursor=cursor, limit=limit)
    return schemas.TeamPage(items=[_team(t) for t in page.items], next_cursor=page.next_cursor)


@router.get("/orgs/{org_id}/teams/{team_id}", summary="One team")
async def get_team(org_id: uuid.UUID, team_id: uuid.UUID, platform: PlatformDep, caller: CallerDep) -> schemas.Team:
    return _team(await platform.teams.get(caller=caller, org_id=org_id, team_id=team_id))


@router.patch("/orgs/{org_id}/teams/{team_id}", summary="Rename a team")
async def update_team(
    org_id: uuid.UUID, team_id: uuid.UUID, body: schemas.TeamUpdate, platform: PlatformDep, caller: CallerDep
) -> schemas.Team:
    return _team(await platform.teams.update(caller=caller, org_id=org_id, team_id=team_id, name=body.name))


@router.delete("/orgs/{org_id}/teams/{team_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a team")
async def delete_team(org_id: uuid.UUID, team_id: uuid.UUID, platform: PlatformDep, caller: CallerDep) -> Response:
    await platform.teams.delete(caller=caller, org_id=org_id, team_id=team_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/orgs/{org_id}/teams/{team_id}/members", summary="A team's members")
async def list_team_members(
    org_id: uuid.UUID,
    team_id: uuid.UUID,
    platform: PlatformDep,
    caller: CallerDep,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> schemas.TeamMemberPage:
    page = await platform.teams.list_members(caller=caller, org_id=org_id, team_id=team_id, cursor=cursor, limit=limit)
    return schemas.TeamMemberPage(items=[_member(m) for m in page.items], next_cursor=page.next_cursor)


@router.post(
    "/orgs/{org_id}/teams/{team_id}/members",
    status_code=status.HTTP_201_CREATED,
    summary="Add a member of the organization to a team (teams.manage, or a maintainer of the team)",
)
async def add_team_member(
    org_id: uuid.UUID, team_id: uuid.UUID, body: schemas.TeamMemberAdd, platform: PlatformDep, caller: CallerDep
) -> schemas.TeamMember:
    added = await platform.teams.add_member(
        caller=caller, org_id=org_id, team_id=team_id, user_id=body.user_id, role=body.role
    )
    return _member(added)


@router.delete(
    "/orgs/{org_id}/teams/{team_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove someone from a team (or leave it, with your own id)",
)
async def remove_team_member(
    org_id: uuid.UUID, team_id: uuid.UUID, user_id: uuid.UUID, platform: PlatformDep, caller: CallerDep
) -> Response:
    await platform.teams.remove_member(caller=caller, org_id=org_id, team_id=team_id, user_id=user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""Teams inside an organization, and their members.

A team holds members of its organization only: a team membership points at the organization
membership (a foreign key with ON DELETE CASCADE), so leaving the organization leaves its teams.
Managing teams takes ``teams.manage``; a team's maintainers may also add and remove members of
that one team, and anyone may leave a team.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import ScalarSelect

from tenantry.core.clock import utcnow
from tenantry.core.errors import Forbidden, InvalidInput, NotFound
from tenantry.core.ids import new_id
from tenantry.db.engine import Database
from tenantry.events.outbox import emit
from tenantry.identity import directory
from tenantry.tenancy.errors import AlreadyTeamMember
from tenantry.tenancy.events import (
    TEAM_CREATED,
    TEAM_DELETED,
    TEAM_MEMBER_ADDED,
    TEAM_MEMBER_REMOVED,
    TEAM_UPDATED,
    target,
)
from tenantry.tenancy.models import Membership, Team, TeamMember
from tenantry.tenancy.policy import Access, Caller, Policy
from tenantry.tenancy.views import Page, uuid_cursor

MAINTAINER, MEMBER = "maintainer", "member"
TEAM_ROLES = (MAINTAINER, MEMBER)


@dataclass(frozen=True, slots=True)
class TeamView:
    id: uuid.UUID
    name: str
    member_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TeamMemberView:
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    added_at: datetime


def _view(team: Team, member_count: int) -> TeamView:
    return TeamView(team.id, team.name, member_count, team.created_at, team.updated_at)


def _team_data(team: Team) -> dict[str, Any]:
    return {"id": str(team.id), "name": team.name}


class TeamService:
    def __init__(self, *, db: Database, policy: Policy) -> None:
        self.db = db
        self.policy = policy

    # -- teams -----------------------------------------------------------------------------------------
    async def create(self, *, caller: Caller, org_id: uuid.UUID, name: str) -> TeamView:
        """A new, empty team. Raises ``NotFound``, ``Forbidden``."""
        async with self.db.transaction() as tx:
            await self.policy.authorize(tx, caller, org_id, "teams.manage")
            now = utcnow()
            team = Team(id=new_id(), org_id=org_id, name=name.strip(), created_at=now, updated_at=now)
            tx.add(team)
            await tx.flush()
            data = {"team": _team_data(team), "target": target("team", team.id)}
            await emit(tx, TEAM_CREATED, data=data, actor=caller.actor, org_id=org_id)
        return _view(team, 0)

    async def list(self, *, caller: Caller, org_id: uuid.UUID, cursor: str | None, limit: int) -> Page[TeamView]:
        """A page of the organization's teams, with their member counts, oldest first."""
        after = uuid_cursor(cursor)
        async with self.db.read() as tx:
            await self.policy.authorize(tx, caller, org_id, "teams.read")
            query = select(Team, _member_count(org_id)).where(Team.org_id == org_id)
            if after is not None:
                query = query.where(Team.id > after)
            rows = (await tx.execute(query.order_by(Team.id).limit(limit + 1))).all()
        items = [_view(team, count) for team, count in rows[:limit]]
        return Page(items, str(rows[limit - 1][0].id) if len(rows) > limit else None)

    async def get(self, *, caller: Caller, org_id: uuid.UUID, team_id: uuid.UUID) -> TeamView:
        """One team of the organization. Raises ``NotFound``, ``Forbidden``."""
        async with self.db.read() as tx:
            await self.policy.authorize(tx, caller, org_id, "teams.read")
            team = await _team(tx, org_id, team_id)
            return _view(team, await _count(tx, org_id, team_id))

    async def update(self, *, caller: Caller, org_id: uuid.UUID, team_id: uuid.UUID, name: str) -> TeamView:
        """Rename a team. Raises ``NotFound``, ``Forbidden``."""
        async with self.db.transaction() as tx:
            await self.policy.authorize(tx, caller, org_id, "teams.manage")
            team = await _team(tx, org_id, team_id)
            previous = team.name
            if name.strip() != previous:
                team.name, team.updated_at = name.strip(), utcnow()
                await tx.flush()
                data = {"team": _team_data(team), "previous_name": previous, "target": target("team", team.id)}
                await emit(tx, TEAM_UPDATED, data=data, actor=caller.actor, org_id=org_id)
            count = await _count(tx, org_id, team_id)
        return _view(team, count)

    async def delete(self, *, caller: Caller, org_id: uuid.UUID, team_id: uuid.UUID) -> None:
        """Delete a team (its memberships go with it; the members stay in the organization).
        Raises ``NotFound``, ``Forbidden``."""
        async with self.db.transaction() as tx:
            await self.policy.authorize(tx, caller, org_id, "teams.manage")
            team = await _team(tx, org_id, team_id)
            data = {"team": _team_data(team), "target": target("team", team.id)}
            await emit(tx, TEAM_DELETED, data=data, actor=caller.actor, org_id=org_id)
            await tx.delete(team)

    # -- members ---------------------------------------------------------------------------------------
    async def list_members(
        self, *, caller: Caller, org_id: uuid.UUID, team_id: uuid.UUID, cursor: str | None, limit: int
    ) -> Page[TeamMemberView]:
        """A page of a team's members, by user id. Raises ``NotFound``, ``Forbidden``."""
        after = uuid_cursor(cursor)
        async with self.db.read() as tx:
            await self.policy.authorize(tx, caller, org_id, "teams.read")
            await _team(tx, org_id, team_id)
            query = select(TeamMember).where(TeamMember.org_id == org_id, TeamMember.team_id == team_id)
            if after is not None:
                query = query.where(TeamMember.user_id > after)
            rows = list((await tx.scalars(query.order_by(TeamMember.user_id).limit(limit + 1))).all())
            users = await directory.find_users(tx, [r.user_id for r in rows[:limit]])
        items = [
            TeamMemberView(r.user_id, users[r.user_id].email, users[r.user_id].name, r.role, r.added_at)
            for r in rows[:limit]
            if r.user_id in users
        ]
        return Page(items, str(rows[limit - 1].user_id) if len(rows) > limit else None)

    async def add_member(
        self, *, caller: Caller, org_id: uuid.UUID, team_id: uuid.UUID, user_id: uuid.UUID, role: str
    ) -> TeamMemberView:
        """Put a member of the organization in a team (``teams.manage``, or a maintainer of that team).
        Raises ``NotFound`` (no such team, or the user is not a member of this organization),
        ``Forbidden``, ``InvalidInput`` (no such team role), ``AlreadyTeamMember``."""
        if role not in TEAM_ROLES:
            raise InvalidInput(f"A team role is one of: {', '.join(TEAM_ROLES)}.", field="role")
        try:
            async with self.db.transaction() as tx:
                access = await self.policy.authorize(tx, caller, org_id)
                await _require_manager(tx, access, team_id)
                team = await _team(tx, org_id, team_id)
                if await tx.get(Membership, (org_id, user_id)) is None:
                    raise NotFound("No such member in this organization.")
                if await tx.get(TeamMember, (team_id, user_id)) is not None:
                    raise AlreadyTeamMember()
                row = TeamMember(team_id=team_id, user_id=user_id, org_id=org_id, role=role, added_at=utcnow())
                tx.add(row)
                await tx.flush()
                await _emit_member(tx, TEAM_MEMBER_ADDED, team=team, user_id=user_id, role=role, caller=caller)
                users = await directory.find_users(tx, [user_id])
        except IntegrityError as exc:  # the same member added twice at once (PostgreSQL)
            raise AlreadyTeamMember() from exc
        user = users[user_id]
        return TeamMemberView(user_id, user.email, user.name, role, row.added_at)

    async def remove_member(self, *, caller: Caller, org_id: uuid.UUID, team_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Take someone out of a team (``teams.manage``, a maintainer of that team, or oneself).
        Raises ``NotFound``, ``Forbidden``."""
        async with self.db.transaction() as tx:
            access = await self.policy.authorize(tx, caller, org_id)
            if user_id != caller.user_id:
                await _require_manager(tx, access, team_id)
            team = await _team(tx, org_id, team_id)
            row = await tx.get(TeamMember, (team_id, user_id))
            if row is None or row.org_id != org_id:
                raise NotFound("No such member in this team.")
            await tx.delete(row)
            await _emit_member(tx, TEAM_MEMBER_REMOVED, team=team, user_id=user_id, role=row.role, caller=caller)


async def add_to_teams(
    tx: AsyncSession, *, org_id: uuid.UUID, user_id: uuid.UUID, team_ids: list[uuid.UUID], caller: Caller
) -> list[uuid.UUID]:
    """Put a new member of the organization in those of ``team_ids`` that still exist in it, as a plain
    member, with their events (accepting an invitation). Returns the teams joined."""
    teams = await find_teams(tx, org_id=org_id, team_ids=team_ids)
    for team in teams:
        tx.add(TeamMember(team_id=team.id, user_id=user_id, org_id=org_id, role=MEMBER, added_at=utcnow()))
    await tx.flush()
    for team in teams:
        await _emit_member(tx, TEAM_MEMBER_ADDED, team=team, user_id=user_id, role=MEMBER, caller=caller)
    return [team.id for team in teams]


async def find_teams(tx: AsyncSession, *, org_id: uuid.UUID, team_ids: list[uuid.UUID]) -> list[Team]:
    """Those of ``team_ids`` that are teams of this organization (others are left out)."""
    if not team_ids:
        return []
    query = select(Team).where(Team.org_id == org_id, Team.id.in_(team_ids)).order_by(Team.id)
    return list((await tx.scalars(query)).all())


async def _require_manager(tx: AsyncSession, access: Access, team_id: uuid.UUID) -> None:
    """Raises ``Forbidden`` unless the caller manages teams or maintains this one."""
    if access.can("teams.manage"):
        return
    if access.caller.user_id is not None:
        role = await tx.scalar(
            select(TeamMember.role).where(
                TeamMember.org_id == access.org_id,
                TeamMember.team_id == team_id,
                TeamMember.user_id == access.caller.user_id,
            )
        )
        if role == MAINTAINER:
            return
    raise Forbidden("You need the permission 'teams.manage', or to maintain this team.", permission="teams.manage")


async def _emit_member(
    tx: AsyncSession, type: str, *, team: Team, user_id: uuid.UUID, role: str, caller: Caller
) -> None:
    data = {
        "team": _team_data(team),
        "member": {"user_id": str(user_id), "role": role},
        "target": target("user", user_id),
    }
    await emit(tx, type, data=data, actor=caller.actor, org_id=team.org_id)


def _member_count(org_id: uuid.UUID) -> ScalarSelect[int]:
    return (
        select(func.count())
        .where(TeamMember.org_id == org_id, TeamMember.team_id == Team.id)
        .correlate(Team)
        .scalar_subquery()
    )


async def _count(tx: AsyncSession, org_id: uuid.UUID, team_id: uuid.UUID) -> int:
    found = await tx.scalar(
        select(func.count()).select_from(TeamMember).where(TeamMember.org_id == org_id, TeamMember.team_id == team_id)
    )
    return int(found or 0)


async def _team(tx: AsyncSession, org_id: uuid.UUID, team_id: uuid.UUID) -> Team:
    team = await tx.get(Team, team_id)
    if team is None or team.org_id != org_id:
        raise NotFound("No such team.")
    return team

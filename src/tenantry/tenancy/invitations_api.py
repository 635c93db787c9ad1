"""REST routes of invitations (thin: parse, authenticate, call one service method, shape)."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from tenantry.http.deps import CallerDep, PlatformDep
from tenantry.tenancy import teams_schemas as schemas
from tenantry.tenancy.invitations import InvitationView

router = APIRouter(prefix="/v1", tags=["organizations"])
Cursor = Annotated[str | None, Query(max_length=200)]
Limit = Annotated[int, Query(ge=1, le=200)]


def _invitation(view: InvitationView) -> schemas.Invitation:
    return schemas.Invitation(**asdict(view))


@router.post("/orgs/{org_id}/invitations", status_code=status.HTTP_201_CREATED, summary="Invite someone by email")
async def create_invitation(
    org_id: uuid.UUID, body: schemas.InvitationCreate, platform: PlatformDep, caller: CallerDep
) -> schemas.Invitation:
    made = await platform.invitations.invite(
        caller=caller, org_id=org_id, email=body.email, role=body.role, team_ids=body.team_ids
    )
    return _invitation(made)


@router.get("/orgs/{org_id}/invitations", summary="The organization's invitations, of every status")
async def list_invitations(
    org_id: uuid.UUID, platform: PlatformDep, caller: CallerDep, cursor: Cursor = None, limit: Limit = 50
) -> schemas.InvitationPage:
    page = await platform.invitations.list(caller=caller, org_id=org_id, cursor=cursor, limit=limit)
    return schemas.InvitationPage(items=[_invitation(i) for i in page.items], next_cursor=page.next_cursor)


@router.delete(
    "/orgs/{org_id}/invitations/{invitation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an invitation (its link stops working)",
)
async def revoke_invitation(
    org_id: uuid.UUID, invitation_id: uuid.UUID, platform: PlatformDep, caller: CallerDep
) -> Response:
    await platform.invitations.revoke(caller=caller, org_id=org_id, invitation_id=invitation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/orgs/{org_id}/invitations/{invitation_id}/resend",
    summary="Mail a new link with a new expiry (the old link stops working)",
)
async def resend_invitation(
    org_id: uuid.UUID, invitation_id: uuid.UUID, platform: PlatformDep, caller: CallerDep
) -> schemas.Invitation:
    return _invitation(await platform.invitations.resend(caller=caller, org_id=org_id, invitation_id=invitation_id))


@router.post("/invitations/accept", summary="Accept an invitation, as the signed-in user it was sent to")
async def accept_invitation(
    body: schemas.InvitationAccept, platform: PlatformDep, caller: CallerDep
) -> schemas.Membership:
    member = await platform.invitations.unscoped_accept(caller=caller, token=body.token)
    return schemas.Membership(**asdict(member))

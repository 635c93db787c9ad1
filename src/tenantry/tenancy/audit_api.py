"""REST routes of audit (thin: parse, authenticate, call one service method, shape)."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from tenantry.http.deps import CallerDep, PlatformDep
from tenantry.tenancy import audit_schemas as schemas

router = APIRouter(prefix="/v1", tags=["organizations"])
Cursor = Annotated[str | None, Query(max_length=200)]
Limit = Annotated[int, Query(ge=1, le=200)]
Action = Annotated[str | None, Query(max_length=100, description="Only entries of this event type.")]


@router.get("/orgs/{org_id}/audit-log", summary="Every change in the organization, who made it, newest first")
async def audit_log(
    org_id: uuid.UUID,
    platform: PlatformDep,
    caller: CallerDep,
    cursor: Cursor = None,
    limit: Limit = 50,
    action: Action = None,
) -> schemas.AuditPage:
    page = await platform.audit_log.list(caller=caller, org_id=org_id, cursor=cursor, limit=limit, action=action)
    return schemas.AuditPage(items=[schemas.AuditEntry(**asdict(e)) for e in page.items], next_cursor=page.next_cursor)

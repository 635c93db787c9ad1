"""Event types of the tenancy domain, and the shapes of their data.

Every event names its organization (``org_id`` on the outbox row), and, where the change is about
someone or something inside it, a ``target`` ({type, id}) that the audit log shows.
"""

from __future__ import annotations

from typing import Any

from tenantry.events.catalog import register
from tenantry.tenancy.models import Organization

ORG_CREATED = register("organization.created", "An organization was created.")
ORG_UPDATED = register("organization.updated", "An organization's name, slug or settings changed.")
ORG_DELETED = register("organization.deleted", "An organization was deleted, with everything in it.")
MEMBER_ADDED = register("organization.member_added", "Someone joined an organization.")
MEMBER_UPDATED = register("organization.member_updated", "A member's role changed.")
MEMBER_REMOVED = register("organization.member_removed", "A member left or was removed from an organization.")
ROLE_CREATED = register("role.created", "A custom role was created.")
ROLE_UPDATED = register("role.updated", "A custom role changed.")
ROLE_DELETED = register("role.deleted", "A custom role was deleted.")
TEAM_CREATED = register("team.created", "A team was created.")
TEAM_UPDATED = register("team.updated", "A team was renamed.")
TEAM_DELETED = register("team.deleted", "A team was deleted.")
TEAM_MEMBER_ADDED = register("team.member_added", "A member joined a team.")
TEAM_MEMBER_REMOVED = register("team.member_removed", "A member left a team.")
INVITATION_CREATED = register("invitation.created", "Someone was invited to an organization.")
INVITATION_ACCEPTED = register("invitation.accepted", "An invitation was accepted.")
INVITATION_REVOKED = register("invitation.revoked", "An invitation was revoked.")
API_KEY_CREATED = register("api_key.created", "An API key was created.")
API_KEY_REVOKED = register("api_key.revoked", "An API key was revoked.")


def org_data(org: Organization) -> dict[str, Any]:
    return {
        "id": str(org.id),
        "name": org.name,
        "slug": org.slug,
        "require_mfa": org.require_mfa,
        "allowed_email_domains": list(org.allowed_email_domains or []),
    }


def target(kind: str, id: object) -> dict[str, str]:
    return {"type": kind, "id": str(id)}

"""Event types of the tenancy domain, and the shapes of their data.

Every event names its organization (``org_id`` on the outbox row), and, where the change is about
someone or something inside it, a ``target`` ({type, id}) that the audit log shows. The ``*Data``
models are the objects events carry; the ``*Event`` models the ``data`` of one or more event types.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, with_config
from typing_extensions import TypedDict  # pydantic reads TypedDicts from typing_extensions only before 3.12

from tenantry.events.catalog import CLOSED, EventData, Id, register
from tenantry.tenancy.models import Organization

ROLE = "A role's key: a built-in role (`owner`, `admin`, `member`, `viewer`) or a custom role of the organization."
PERMISSIONS = "Permissions, sorted (`GET /v1/permissions` lists them all)."


class Target(EventData):
    """What the change is about, as the organization's audit log shows it."""

    type: Literal["user", "team", "role", "invitation", "api_key"]
    id: str = Field(description="The id of the user, team, invitation or API key; the key of a role.")


class OrganizationData(EventData):
    """An organization and its settings, as they stand once the change is made."""

    id: Id
    name: str
    slug: str = Field(description="Unique across the platform: lower-case letters, digits and inner hyphens.")
    require_mfa: bool = Field(description="Whether members must have two-factor authentication on to act in it.")
    allowed_email_domains: list[str] = Field(
        description="Email domains whose users (with a verified address) may join without an invitation, sorted."
    )


class OrganizationRef(EventData):
    """The organization a change happened in, by id only."""

    id: Id


@with_config(CLOSED)
class OrganizationChanges(TypedDict, total=False):
    """The fields that changed, with their new values; a field that did not change is absent."""

    name: str
    slug: str
    require_mfa: bool
    allowed_email_domains: list[str]


class OrganizationEvent(EventData):
    """The organization concerned (`organization.created`, `organization.deleted`)."""

    organization: OrganizationData


class OrganizationUpdatedEvent(EventData):
    """An organization's name, slug or settings changed (`organization.updated`)."""

    organization: OrganizationData
    changes: OrganizationChanges


class MemberData(EventData):
    """A member of an organization."""

    user_id: Id
    role: str = Field(description=ROLE)


class MemberUpdatedData(EventData):
    """A member whose role changed."""

    user_id: Id
    role: str = Field(description=f"The new role. {ROLE}")
    previous_role: str = Field(description="The role the member had before.")


class MemberEvent(EventData):
    """A member joined or left (`organization.member_added`, `organization.member_removed`)."""

    organization: OrganizationRef
    member: MemberData = Field(description="The member, with the role they got (added) or had (removed).")
    target: Target


class MemberUpdatedEvent(EventData):
    """A member's role changed (`organization.member_updated`)."""

    organization: OrganizationRef
    member: MemberUpdatedData
    target: Target


class RoleData(EventData):
    """A custom role of an organization."""

    key: str = Field(description="Unique in the organization; members and API keys hold the role by this key.")
    name: str
    permissions: list[str] = Field(description=f"What the role grants. {PERMISSIONS}")


@with_config(CLOSED)
class RoleChanges(TypedDict, total=False):
    """The fields that changed, with their new values; a field that did not change is absent."""

    name: str
    permissions: list[str]


class RoleEvent(EventData):
    """The custom role concerned (`role.created`, `role.deleted`)."""

    organization: OrganizationRef
    role: RoleData
    target: Target


class RoleUpdatedEvent(EventData):
    """A custom role changed (`role.updated`); members and API keys holding it have its new permissions."""

    organization: OrganizationRef
    role: RoleData
    target: Target
    changes: RoleChanges


class TeamData(EventData):
    """A team of an organization."""

    id: Id
    name: str


class TeamMemberData(EventData):
    """A member of a team (always also a member of the team's organization)."""

    user_id: Id
    role: Literal["maintainer", "member"] = Field(
        description="`maintainer`: may also add and remove the team's members; `member`: belongs to it."
    )


class TeamEvent(EventData):
    """The team concerned (`team.created`, `team.deleted`)."""

    team: TeamData
    target: Target


class TeamUpdatedEvent(EventData):
    """A team was renamed (`team.updated`)."""

    team: TeamData
    previous_name: str = Field(description="The team's name before the change.")
    target: Target


class TeamMemberEvent(EventData):
    """A member joined or left a team (`team.member_added`, `team.member_removed`)."""

    team: TeamData
    member: TeamMemberData
    target: Target


class InvitationData(EventData):
    """An invitation to join an organization."""

    id: Id
    email: str = Field(description="The invited address (its domain normalised); only its owner may accept.")
    role: str = Field(description=f"The role the invitee gets on accepting. {ROLE}")
    team_ids: list[Id] = Field(description="Teams the invitee joins on accepting (those that still exist then).")


class InvitationEvent(EventData):
    """The invitation concerned (`invitation.created`, `invitation.accepted`)."""

    invitation: InvitationData
    target: Target


class InvitationRevokedEvent(EventData):
    """An invitation was revoked; its token no longer works (`invitation.revoked`)."""

    invitation: InvitationData
    target: Target
    reason: Literal["revoked", "replaced"] = Field(
        description="`revoked`: someone revoked it; `replaced`: the same address was invited again, and only the "
        "newest invitation stays open."
    )


class ApiKeyData(EventData):
    """An API key of an organization (never the key itself)."""

    id: Id
    name: str
    prefix: str = Field(description="The key's first 12 characters (`tnt_…`), to recognise it by.")
    permissions: list[str] = Field(
        description=f"What the key may do at the time of the event: its own list, or its role's. {PERMISSIONS}"
    )


class ApiKeyEvent(EventData):
    """The API key concerned (`api_key.created`, `api_key.revoked`)."""

    api_key: ApiKeyData
    target: Target


ORG_CREATED = register("organization.created", "An organization was created.", OrganizationEvent)
ORG_UPDATED = register(
    "organization.updated", "An organization's name, slug or settings changed.", OrganizationUpdatedEvent
)
ORG_DELETED = register("organization.deleted", "An organization was deleted, with everything in it.", OrganizationEvent)
MEMBER_ADDED = register("organization.member_added", "Someone joined an organization.", MemberEvent)
MEMBER_UPDATED = register("organization.member_updated", "A member's role changed.", MemberUpdatedEvent)
MEMBER_REMOVED = register(
    "organization.member_removed", "A member left or was removed from an organization.", MemberEvent
)
ROLE_CREATED = register("role.created", "A custom role was created.", RoleEvent)
ROLE_UPDATED = register("role.updated", "A custom role changed.", RoleUpdatedEvent)
ROLE_DELETED = register("role.deleted", "A custom role was deleted.", RoleEvent)
TEAM_CREATED = register("team.created", "A team was created.", TeamEvent)
TEAM_UPDATED = register("team.updated", "A team was renamed.", TeamUpdatedEvent)
TEAM_DELETED = register("team.deleted", "A team was deleted.", TeamEvent)
TEAM_MEMBER_ADDED = register("team.member_added", "A member joined a team.", TeamMemberEvent)
TEAM_MEMBER_REMOVED = register("team.member_removed", "A member left a team.", TeamMemberEvent)
INVITATION_CREATED = register("invitation.created", "Someone was invited to an organization.", InvitationEvent)
INVITATION_ACCEPTED = register("invitation.accepted", "An invitation was accepted.", InvitationEvent)
INVITATION_REVOKED = register("invitation.revoked", "An invitation was revoked.", InvitationRevokedEvent)
API_KEY_CREATED = register("api_key.created", "An API key was created.", ApiKeyEvent)
API_KEY_REVOKED = register("api_key.revoked", "An API key was revoked.", ApiKeyEvent)


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

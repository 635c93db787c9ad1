"""Errors of the tenancy domain (codes are a public contract)."""

from __future__ import annotations

from tenantry.core.errors import Conflict, Forbidden, Gone, InvalidInput


class SlugTaken(Conflict):
    code = "slug_taken"
    title = "Another organization already uses this slug"


class LastOwner(Conflict):
    code = "last_owner"
    title = "An organization must keep at least one owner"


class MfaRequiredByOrg(Forbidden):
    code = "mfa_required"
    title = "This organization requires two-step verification"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            detail
            or "This organization requires two-step verification. Turn on an authenticator app "
            "(POST /v1/me/mfa/totp/setup, then /v1/me/mfa/totp/enable) and sign in again."
        )


class AlreadyMember(Conflict):
    code = "already_member"
    title = "Already a member of this organization"


class InvitationExpired(Gone):
    code = "invitation_expired"
    title = "This invitation has expired; ask for a new one"


class InvitationInvalid(Gone):
    code = "invitation_invalid"
    title = "This invitation was revoked or already used"


class InvitationEmailMismatch(Forbidden):
    code = "invitation_email_mismatch"
    title = "This invitation is for another email address"


class UnknownRole(InvalidInput):
    code = "unknown_role"
    title = "No such role in this organization"


class RoleInUse(Conflict):
    code = "role_in_use"
    title = "Members or API keys still have this role"


class RoleExists(Conflict):
    code = "role_exists"
    title = "A built-in or custom role already has this key"


class BuiltInRole(Conflict):
    """Built-in roles are the same in every organization and other code relies on them (the owner
    rule): nobody may change or delete them, whatever their permissions, hence a conflict, not 403."""

    code = "role_built_in"
    title = "Built-in roles cannot be changed or deleted"


class AlreadyTeamMember(Conflict):
    code = "already_team_member"
    title = "Already a member of this team"


class EmailNotVerified(Forbidden):
    code = "email_not_verified"
    title = "Verify your email address first"

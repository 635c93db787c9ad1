"""Invitations: mailed, single-use tokens that make someone a member."""

from __future__ import annotations

from tenantry.db.engine import Database
from tenantry.tenancy.policy import Policy


class InvitationService:
    def __init__(self, *, db: Database, policy: Policy) -> None:
        self.db = db
        self.policy = policy

"""Custom roles beside the built-in owner, admin, member and viewer."""

from __future__ import annotations

from tenantry.db.engine import Database
from tenantry.tenancy.policy import Policy


class RoleService:
    def __init__(self, *, db: Database, policy: Policy) -> None:
        self.db = db
        self.policy = policy

"""Teams inside an organization, and their members."""

from __future__ import annotations

from tenantry.db.engine import Database
from tenantry.tenancy.policy import Policy


class TeamService:
    def __init__(self, *, db: Database, policy: Policy) -> None:
        self.db = db
        self.policy = policy

"""Reading an organization's audit log (entries are written by the audit consumer in audit.py)."""

from __future__ import annotations

from tenantry.db.engine import Database
from tenantry.tenancy.policy import Policy


class AuditLogService:
    def __init__(self, *, db: Database, policy: Policy) -> None:
        self.db = db
        self.policy = policy

"""Forgetting old delivery logs: finished deliveries, and their attempts with them, after the retention."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from tenantry.db import scope
from tenantry.db.engine import Database
from tenantry.events.retention import BATCH
from tenantry.webhooks.models import PENDING, Delivery


async def unscoped_forget_finished(db: Database, *, before: datetime) -> int:
    """Delete deliveries (with their attempts) that finished before ``before``; pending ones always stay.
    Crosses organizations, hence unscoped. Returns how many deliveries went."""
    removed = 0
    while True:
        async with db.transaction() as tx:
            await scope.unscoped(tx)
            old = select(Delivery.id).where(Delivery.status != PENDING, Delivery.finished_at < before).limit(BATCH)
            done = await tx.execute(delete(Delivery).where(Delivery.id.in_(old.scalar_subquery())))
        count = int(done.rowcount or 0)  # type: ignore[attr-defined]
        removed += count
        if count < BATCH:
            return removed

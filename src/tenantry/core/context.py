"""Who is acting, and from where: built by every door (REST, CLI, workers) and handed to services."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """The author of a change, as recorded in events and the audit log."""

    type: str  # "user", "api_key", "system"
    id: str | None = None
    ip: str | None = None
    user_agent: str | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls(type="system")

    def as_user(self, user_id: object) -> Actor:
        """The same request, now known to be made by ``user_id`` (e.g. right after sign-in)."""
        return Actor(type="user", id=str(user_id), ip=self.ip, user_agent=self.user_agent)

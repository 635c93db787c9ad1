"""The catalog of event types the platform emits; each domain registers its own."""

from __future__ import annotations

EVENT_TYPES: dict[str, str] = {}


def register(name: str, description: str) -> str:
    """Declare an event type; returns its name so domains can keep it as a constant."""
    EVENT_TYPES[name] = description
    return name

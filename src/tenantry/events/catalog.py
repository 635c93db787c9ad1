"""The catalog of event types the platform emits; each domain registers its own, with the shape of its data.

The catalog is public: ``GET /v1/webhooks/event-types`` lists it, with a JSON Schema of each event's
``data``, so receivers can generate types and validate what they are sent.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    data: type[BaseModel] | None  # the shape of the event's ``data``

    @functools.cached_property
    def schema(self) -> dict[str, Any]:
        """The JSON Schema of ``data`` (computed once)."""
        return self.data.model_json_schema() if self.data else {"type": "object"}


EVENT_TYPES: dict[str, EventType] = {}


def register(name: str, description: str, data: type[BaseModel] | None = None) -> str:
    """Declare an event type and the model its ``data`` follows; returns its name so domains keep it as a constant."""
    EVENT_TYPES[name] = EventType(name, description, data)
    return name

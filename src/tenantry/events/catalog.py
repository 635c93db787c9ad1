"""The catalog of event types the platform emits; each domain registers its own, with the shape of its data.

The catalog is public: ``GET /v1/webhooks/event-types`` lists it, with a JSON Schema of each event's
``data``, so receivers can generate types and validate what they are sent.

Data models derive from ``EventData``: strict and closed (``extra="forbid"``), so the tests that
validate every emitted event against its model catch a field that is emitted but not described. The
published schema leaves ``additionalProperties: false`` out, though: adding a field to an event is
not a breaking change, and a receiver whose generated types refused unknown fields would break on it.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema

# The config of every model (and ``TypedDict``) in the catalog: an unexpected field, a number where a
# string is due, or ``null`` where no ``None`` is allowed fails validation rather than slipping through.
CLOSED = ConfigDict(extra="forbid", strict=True)


class EventData(BaseModel):
    """Base of the models of event data: strict and closed (see the module's docstring)."""

    model_config = CLOSED


def _canonical_uuid(value: str) -> str:
    if str(uuid.UUID(value)) != value:  # raises ValueError for what is not a UUID at all
        raise ValueError("expected a UUID in its canonical, lower-case, hyphenated form")
    return value


def _aware_timestamp(value: str) -> str:
    if datetime.fromisoformat(value).tzinfo is None:  # raises ValueError for what is not ISO 8601 at all
        raise ValueError("expected an ISO 8601 timestamp with its UTC offset")
    return value


# Events carry ids and moments as strings, as JSON does; these say which strings, in the schema too.
Id = Annotated[str, AfterValidator(_canonical_uuid), WithJsonSchema({"type": "string", "format": "uuid"})]
Timestamp = Annotated[str, AfterValidator(_aware_timestamp), WithJsonSchema({"type": "string", "format": "date-time"})]


def _open_to_additions(schema: Any) -> Any:
    """``schema`` without ``additionalProperties: false`` anywhere in it (see the module's docstring)."""
    if isinstance(schema, dict):
        return {k: _open_to_additions(v) for k, v in schema.items() if not (k == "additionalProperties" and v is False)}
    if isinstance(schema, list):
        return [_open_to_additions(v) for v in schema]
    return schema


Scope = Literal["organization", "user"]


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    data: type[BaseModel]  # the shape of the event's ``data``
    # "organization": happens inside one, and its webhook endpoints hear it. "user": about a person
    # across organizations (signing in, a profile): no organization's endpoint is sent it.
    scope: Scope = "organization"

    @functools.cached_property
    def schema(self) -> dict[str, Any]:
        """The JSON Schema of ``data``, as published (computed once); described by the model's docstring,
        else by the event type's description."""
        published: dict[str, Any] = _open_to_additions(self.data.model_json_schema())
        published.setdefault("description", self.description)
        return published


EVENT_TYPES: dict[str, EventType] = {}


def register(name: str, description: str, data: type[BaseModel], *, scope: Scope = "organization") -> str:
    """Declare an event type, the model its ``data`` follows and its scope (see ``EventType``); returns its
    name so domains keep it as a constant."""
    EVENT_TYPES[name] = EventType(name, description, data, scope)
    return name

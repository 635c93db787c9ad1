"""Request and response shapes of webhooks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
EventTypes = Annotated[list[Annotated[str, StringConstraints(max_length=100)]], Field(min_length=1, max_length=100)]
Headers = Annotated[
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=100)],
        Annotated[str, StringConstraints(max_length=1000)],
    ],
    Field(max_length=20, description="Extra headers sent with every request (not webhook-*, nor hop-by-hop ones)."),
]
RateLimit = Annotated[int, Field(ge=1, le=10_000, description="At most this many requests per second.")]
Status = Literal["pending", "succeeded", "failed"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointCreate(_In):
    url: Url
    event_types: EventTypes | None = Field(default=None, description="Leave out to receive every event.")
    description: Description = ""
    headers: Headers = Field(default_factory=dict)
    rate_limit: RateLimit | None = None


class EndpointUpdate(_In):
    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    headers: Headers | None = None
    rate_limit: RateLimit | None = None
    enabled: bool | None = None

    @field_validator("url", "description", "enabled")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Left out means unchanged; these have no empty value to set (null event_types, headers or
        # rate_limit do mean something: every event, none, no limit).
        if value is None:
            raise ValueError("cannot be null (leave it out to keep it as it is)")
        return value


class Endpoint(BaseModel):
    id: uuid.UUID
    url: str
    description: str
    event_types: list[str] | None
    headers: dict[str, str]
    rate_limit: int | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


class NewEndpoint(Endpoint):
    secret: str = Field(description="The signing secret (whsec_…). Read it again with GET …/secret.")


class EndpointPage(BaseModel):
    items: list[Endpoint]
    next_cursor: str | None


class Secret(BaseModel):
    secret: str


class EventType(BaseModel):
    name: str
    description: str
    scope: Literal["organization", "user"] = Field(
        description="`organization`: an organization's endpoints receive it. `user`: about a person across "
        "organizations; listed for completeness, never sent to an organization's endpoint."
    )
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema of the event's data.")

    model_config = ConfigDict(populate_by_name=True)


class EventTypeList(BaseModel):
    items: list[EventType]


class AttemptOut(BaseModel):
    at: datetime
    response_status: int | None
    duration_ms: int
    error: str | None
    response_body: str | None = Field(
        description="What was read of the answer: up to 64 KiB for one delivery, the first 1,024 characters in a page."
    )


class DeliveryOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: Status
    attempts: list[AttemptOut]
    next_attempt_at: datetime | None
    created_at: datetime


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class Recover(_In):
    since: AwareDatetime = Field(description="Every failed delivery made since then is sent again.")


class TestSent(BaseModel):
    event_id: uuid.UUID = Field(description="The test event's id: the webhook-id the receiver will see.")


class Retrying(BaseModel):
    delivery_id: uuid.UUID


class Recovering(BaseModel):
    deliveries: int = Field(description="How many failed deliveries will be sent again.")

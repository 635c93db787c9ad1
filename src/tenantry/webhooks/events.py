"""Event types of the webhooks domain, and the shapes of their data."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tenantry.events.catalog import EventData, Id, Timestamp, register


class WebhookTestEvent(EventData):
    """A test, sent on request to one endpoint and only to it."""

    endpoint_id: Id = Field(description="The endpoint this test was sent to.")
    message: str = Field(description="A human-readable line, for people watching their receiver's log.")


class EndpointDisabledEvent(EventData):
    """An endpoint stopped receiving: its pending deliveries wait until it is enabled again."""

    endpoint_id: Id
    url: str
    reason: Literal["gone", "failing"] = Field(
        description="`gone`: the receiver answered 410 Gone. `failing`: only failures for days "
        "(TENANTRY_WEBHOOK_DISABLE_AFTER_SECONDS, 5 days by default)."
    )
    failing_since: Timestamp | None = Field(description="When the run of failures began, if it had.")


class EndpointData(EventData):
    id: Id
    url: str
    description: str
    event_types: list[str] | None = Field(description="The event types it receives; null: every one.")
    enabled: bool


class EndpointRef(EventData):
    type: Literal["endpoint"]
    id: Id


class EndpointChangeEvent(EventData):
    """An endpoint as it is after the change (as it was, for a deletion); never its secret."""

    endpoint: EndpointData
    target: EndpointRef = Field(description="What the change is about, for the audit log.")


WEBHOOK_TEST = register("webhook.test", "A test event, sent on request to one endpoint.", WebhookTestEvent)
ENDPOINT_DISABLED = register(
    "endpoint.disabled",
    "A webhook endpoint was disabled: its receiver answered 410 Gone, or it only failed for days.",
    EndpointDisabledEvent,
)
ENDPOINT_CREATED = register("endpoint.created", "A webhook endpoint was added.", EndpointChangeEvent)
ENDPOINT_UPDATED = register(
    "endpoint.updated", "A webhook endpoint changed (URL, events, headers, enabled).", EndpointChangeEvent
)
ENDPOINT_DELETED = register("endpoint.deleted", "A webhook endpoint was removed.", EndpointChangeEvent)
ENDPOINT_SECRET_ROTATED = register(
    "endpoint.secret_rotated",
    "A webhook endpoint's signing secret was replaced; the old one signs beside it for 24 hours.",
    EndpointChangeEvent,
)

"""Errors of the webhooks domain (codes are a public contract)."""

from __future__ import annotations

from tenantry.core.errors import Conflict, InvalidInput


class UnsafeUrl(InvalidInput):
    code = "unsafe_url"
    title = "This URL cannot receive webhooks"


class EndpointDisabled(Conflict):
    code = "endpoint_disabled"
    title = "This endpoint is disabled"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "This endpoint is disabled: enable it (PATCH with enabled: true) first.")

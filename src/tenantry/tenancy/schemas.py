"""Request and response shapes of the tenancy API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Key = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrgCreate(_In):
    name: Name
    slug: str | None = Field(default=None, max_length=64)


class OrgUpdate(_In):
    name: Name | None = None
    slug: str | None = Field(default=None, max_length=64)
    require_mfa: bool | None = None
    allowed_email_domains: list[Annotated[str, StringConstraints(max_length=253)]] | None = Field(
        default=None, max_length=100
    )


class Org(BaseModel):
    id: uuid.UUID
    name: str
    slug: str
    require_mfa: bool
    allowed_email_domains: list[str]
    created_at: datetime
    updated_at: datetime


class MyOrg(BaseModel):
    id: uuid.UUID
    name: str
    slug: str
    role: str


class MyOrgPage(BaseModel):
    items: list[MyOrg]
    next_cursor: str | None


class Member(BaseModel):
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    joined_at: datetime


class MemberPage(BaseModel):
    items: list[Member]
    next_cursor: str | None


class MemberUpdate(_In):
    role: Key


class Permission(BaseModel):
    key: str
    description: str


class PermissionList(BaseModel):
    items: list[Permission]


class ApiKeyCreate(_In):
    name: Name
    role: Key | None = None
    permissions: list[Key] | None = Field(default=None, max_length=100)
    expires_at: datetime | None = None


class ApiKey(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    role: str | None
    permissions: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class NewApiKey(ApiKey):
    key: str = Field(description="The secret, shown only now: store it; only its hash is kept.")


class ApiKeyPage(BaseModel):
    items: list[ApiKey]
    next_cursor: str | None

"""Request and response shapes of custom roles."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

RoleName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
PermissionKey = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Permissions = Annotated[list[PermissionKey], Field(max_length=100)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RoleCreate(_In):
    key: str = Field(max_length=64, description="Lower-case letters, digits, '_' and '-', starting with a letter.")
    name: RoleName
    permissions: Permissions


class RoleUpdate(_In):
    name: RoleName | None = None
    permissions: Permissions | None = None


class Role(BaseModel):
    key: str
    name: str
    permissions: list[str]
    built_in: bool


class RoleList(BaseModel):
    items: list[Role]

"""Request and response shapes of the identity API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# A person's name: surrounding blanks dropped, and something must remain.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class SignupIn(_In):
    email: str = Field(max_length=320)
    password: str
    name: Name


class TokenIn(_In):
    token: str = Field(min_length=1, max_length=512)


class LoginIn(_In):
    email: str = Field(max_length=320)
    password: str = Field(max_length=4096)


class RefreshIn(_In):
    refresh_token: str = Field(min_length=1, max_length=512)


class ForgotPasswordIn(_In):
    email: str = Field(max_length=320)


class ResetPasswordIn(_In):
    token: str = Field(min_length=1, max_length=512)
    password: str


class PasswordChangeIn(_In):
    current_password: str = Field(max_length=4096)
    new_password: str


class UserUpdate(_In):
    name: Name | None = None


class User(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    email_verified: bool
    created_at: datetime
    updated_at: datetime


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_in: int = Field(description="Seconds until the access token expires.")


class Session(BaseModel):
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool


class SessionPage(BaseModel):
    items: list[Session]

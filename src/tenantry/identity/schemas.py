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
    mfa_enabled: bool = False
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


class MfaRequired(BaseModel):
    """Sign-in half done: send ``mfa_token`` with a code to ``POST /v1/auth/mfa``."""

    mfa_required: Literal[True] = True
    mfa_token: str
    methods: list[str] = Field(description="Second factors this account can answer with.")
    expires_in: int = Field(description="Seconds until the mfa_token expires.")


# A TOTP is 6 digits and a recovery code 14 characters; room for spaces a person may type.
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class CodeIn(_In):
    code: Code


class MfaIn(_In):
    mfa_token: str = Field(min_length=1, max_length=512)
    code: Code


class TotpSetup(BaseModel):
    secret: str = Field(description="Base32 secret, for typing into an authenticator app.")
    otpauth_uri: str = Field(description="The same secret as an otpauth:// URI, for a QR code.")


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(description="Single-use codes, shown only now.")


class MfaStatus(BaseModel):
    totp_enabled: bool
    recovery_codes_left: int
    passkeys: int

"""Errors of the identity domain (codes are a public contract)."""

from __future__ import annotations

from tenantry.core.errors import Conflict, DomainError, InvalidInput, Unauthorized


class EmailTaken(Conflict):
    code = "email_taken"
    title = "An account with this email already exists"


class WeakPassword(InvalidInput):
    code = "weak_password"
    title = "Password too weak"


class InvalidToken(DomainError):
    code = "invalid_token"
    title = "The token is invalid, used or expired"


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    title = "Wrong email or password"


class WrongPassword(DomainError):
    code = "wrong_password"
    title = "The current password is wrong"


class InvalidRefreshToken(Unauthorized):
    code = "invalid_token"
    title = "The refresh token is invalid or expired"


class RefreshTokenReused(Unauthorized):
    code = "refresh_token_reused"
    title = "This refresh token was already used; the session has been revoked"

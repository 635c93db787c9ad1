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


# -- second factors ---------------------------------------------------------------------------------
class InvalidCode(DomainError):
    """A wrong TOTP or recovery code while managing one's own factors (the session itself is fine)."""

    code = "invalid_code"
    title = "The code is wrong or expired"


class CodeReused(DomainError):
    code = "code_reused"
    title = "This code was already used; wait for the next one"


class MfaCodeRejected(Unauthorized):
    """A wrong second factor at sign-in."""

    code = "invalid_code"
    title = "The code is wrong or expired"


class MfaCodeReused(Unauthorized):
    code = "code_reused"
    title = "This code was already used; wait for the next one"


class InvalidMfaToken(Unauthorized):
    code = "invalid_mfa_token"
    title = "The sign-in attempt expired or was spent; sign in again"


class MfaNotEnabled(Conflict):
    code = "mfa_not_enabled"
    title = "Two-factor authentication is not enabled"


class MfaAlreadyEnabled(Conflict):
    code = "mfa_already_enabled"
    title = "Two-factor authentication is already enabled"


# -- passkeys ---------------------------------------------------------------------------------------
class InvalidCredential(DomainError):
    """A passkey registration that does not verify (attestation, origin, challenge)."""

    code = "invalid_credential"
    title = "The passkey could not be verified"


class PasskeyRejected(Unauthorized):
    """A passkey sign-in that does not verify (signature, origin, challenge, counter)."""

    code = "invalid_credential"
    title = "The passkey could not be verified"

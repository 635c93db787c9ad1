"""The identity domain's share of the settings, and the parts it is built from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from tenantry.identity.signing import KeyRing
from tenantry.ratelimit.gcra import Rate
from tenantry.settings import Settings


@dataclass(frozen=True)
class IdentityConfig:
    issuer: str
    base_url: str
    access_ttl: timedelta
    refresh_ttl: timedelta
    session_max_age: timedelta
    verification_ttl: timedelta
    reset_ttl: timedelta
    password_min_length: int
    password_max_length: int
    failures_per_email: Rate
    failures_per_ip: Rate
    mails_per_email: Rate
    mfa_token_ttl: timedelta
    mfa_failures_per_token: int
    passkey_challenge_ttl: timedelta
    # WebAuthn relying party: its id is the host of the base URL, and the only origin accepted is the base URL's.
    rp_id: str
    rp_name: str
    origin: str

    @classmethod
    def from_settings(cls, settings: Settings) -> IdentityConfig:
        window = settings.login_failure_window_seconds
        return cls(
            issuer=settings.issuer,
            base_url=settings.base_url.rstrip("/"),
            access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
            refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
            session_max_age=timedelta(seconds=settings.session_max_age_seconds),
            verification_ttl=timedelta(seconds=settings.email_verification_ttl_seconds),
            reset_ttl=timedelta(seconds=settings.password_reset_ttl_seconds),
            password_min_length=settings.password_min_length,
            password_max_length=settings.password_max_length,
            failures_per_email=Rate(settings.login_failures_per_email, window, settings.login_failures_per_email),
            failures_per_ip=Rate(settings.login_failures_per_ip, window, settings.login_failures_per_ip),
            mails_per_email=Rate(
                settings.mail_requests_per_email, settings.mail_request_window_seconds, settings.mail_requests_per_email
            ),
            mfa_token_ttl=timedelta(seconds=settings.mfa_token_ttl_seconds),
            mfa_failures_per_token=settings.mfa_failures_per_token,
            passkey_challenge_ttl=timedelta(seconds=settings.passkey_challenge_ttl_seconds),
            rp_id=urlsplit(settings.base_url).hostname or "localhost",
            rp_name=settings.relying_party_name,
            origin=_origin(settings.base_url),
        )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def key_ring(settings: Settings) -> KeyRing:
    """The signing keys of this deployment, where the settings keep them."""
    return KeyRing(settings.data_dir / "keys", token_ttl=timedelta(seconds=settings.access_token_ttl_seconds))

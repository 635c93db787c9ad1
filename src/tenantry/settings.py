"""Every knob of Tenantry, read from ``TENANTRY_*`` environment variables.

The defaults give the embedded shape: SQLite and the in-process adapters under ``./var``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of one Tenantry process."""

    model_config = SettingsConfigDict(env_prefix="TENANTRY_", extra="ignore", frozen=True)

    env: Literal["dev", "prod"] = "dev"
    database_url: str = "sqlite+aiosqlite:///./var/tenantry.db"
    # PostgreSQL: the role the application switches to after connecting (made by the migrations; it owns
    # no table, so row-level security holds for it). The login user must be a member; empty: stay as is.
    database_role: str = "tenantry_app"
    redis_url: str | None = None
    smtp_url: str | None = None
    data_dir: Path = Path("./var")
    # Where people reach this deployment: links in mails, the token issuer, and the WebAuthn relying party
    # (its host is the passkeys' rp id, which browsers refuse to be an IP address: hence localhost).
    base_url: str = "http://localhost:8000"
    mail_from: str = "Tenantry <no-reply@tenantry.localhost>"
    log_level: str = "info"
    log_json: bool = False

    # Migrations: applied by `tenantry serve` itself on SQLite, by `tenantry migrate` elsewhere.
    auto_migrate: bool | None = None
    embedded_worker: bool = True

    # HTTP
    max_body_bytes: int = 1024 * 1024
    # Comma-separated addresses or networks whose X-Forwarded-For is believed.
    trusted_proxies: str = ""

    # Tokens and sessions
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    session_max_age_seconds: int = 90 * 24 * 3600
    email_verification_ttl_seconds: int = 24 * 3600
    password_reset_ttl_seconds: int = 3600

    # Passwords: argon2id at OWASP's recommendation (19 MiB, 2 passes, 1 lane) or stronger.
    argon2_memory_kib: int = 19 * 1024
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    password_min_length: int = 8
    password_max_length: int = 1024
    password_hash_threads: int = 2

    # Brute-force protection: failures allowed per window, per email and per client address.
    login_failures_per_email: int = 10
    login_failures_per_ip: int = 100
    login_failure_window_seconds: int = 15 * 60
    mail_requests_per_email: int = 5
    mail_request_window_seconds: int = 3600

    # Rate limits (see tenantry.ratelimit.policies): JSON overrides of any policy's numbers or shadow mode,
    # e.g. {"api.principal": {"limit": 100, "period": 60, "burst": 20}, "costs": {"write": 3}}.
    rate_limits: str = ""
    rate_limits_enabled: bool = True
    # In-flight requests: per principal (leases expire after 60 s if a process dies), and per process
    # before low-priority traffic is shed (503), then normal traffic; shedding also starts when the
    # event loop runs late by more than the soft (low) or hard (normal) lag, in seconds.
    concurrent_requests_per_principal: int = 64
    max_in_flight: int = 1000
    shed_lag_soft: float = 0.1
    shed_lag_hard: float = 0.3

    # Second factors. The key seals TOTP secrets at rest (32 bytes, base64url); unset, one is created
    # under the data dir. Several processes on several machines must share it, like the signing keys.
    encryption_key: str | None = None
    mfa_token_ttl_seconds: int = 5 * 60
    mfa_failures_per_token: int = 5
    passkey_challenge_ttl_seconds: int = 5 * 60
    relying_party_name: str = "Tenantry"

    # Organizations
    invitation_ttl_seconds: int = 7 * 24 * 3600

    # Webhooks. Seconds to wait before each retry (jittered by ±10%); after the last one a delivery has failed.
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    webhook_timeout_seconds: float = 15.0  # a 2xx must arrive within this; then the attempt has failed
    # Loopback, private, link-local and metadata addresses are refused unless this is set (tests, private networks).
    webhook_allow_private: bool = False
    webhook_concurrency: int = 256  # requests in flight per delivering process
    webhook_concurrency_per_endpoint: int = 32  # per endpoint and process: a slow receiver holds only its own
    webhook_disable_after_seconds: int = 5 * 24 * 3600  # an endpoint that has only failed for this long is disabled
    webhook_response_body_limit: int = 64 * 1024  # bytes of a response read and kept in the log

    # Retention, in days: outbox events (once every consumer has read them), finished webhook deliveries
    # with their attempts, finished background jobs. Swept hourly by whichever process runs background work.
    event_retention_days: float = 30
    webhook_log_retention_days: float = 30
    job_retention_days: float = 7

    # Caches on the request path
    token_cache_size: int = 50_000
    session_cache_size: int = 50_000

    @cached_property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @cached_property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    @cached_property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        """The retry schedule in seconds (validated at start: a malformed one stops the process)."""
        try:
            delays = tuple(float(part) for part in self.webhook_retry_schedule.split(",") if part.strip())
        except ValueError as exc:
            raise ValueError(f"TENANTRY_WEBHOOK_RETRY_SCHEDULE must be comma-separated seconds: {exc}") from exc
        if any(d < 0 for d in delays):
            raise ValueError("TENANTRY_WEBHOOK_RETRY_SCHEDULE cannot hold negative delays")
        return delays

    @cached_property
    def issuer(self) -> str:
        return self.base_url.rstrip("/")

"""Second factors: TOTP (RFC 6238) with single-use recovery codes, and the second step of a sign-in.

Three rules this module protects:
- a TOTP code is accepted once: the step it belongs to is recorded, and a code of that step or an
  earlier one is refused afterwards (``code_reused``), even within the ±1 step of allowed drift;
- a recovery code works once, and regenerating them kills every earlier one;
- a sign-in waiting for its second factor (an ``mfa_token``) survives at most a few wrong codes,
  and every wrong code also counts against the user, so fresh tokens do not buy fresh guesses.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import cast

import pyotp
from sqlalchemy import Table, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.core.context import Actor
from tenantry.core.errors import NotFound
from tenantry.core.ids import digest, new_id, new_secret
from tenantry.db.engine import Database
from tenantry.db.statements import Lane, Statement
from tenantry.events.outbox import emit
from tenantry.identity import sessions
from tenantry.identity.auth import Authenticator
from tenantry.identity.config import IdentityConfig
from tenantry.identity.errors import (
    CodeReused,
    InvalidCode,
    InvalidMfaToken,
    MfaAlreadyEnabled,
    MfaCodeRejected,
    MfaCodeReused,
    MfaNotEnabled,
)
from tenantry.identity.events import USER_MFA_DISABLED, USER_MFA_ENABLED, user_data
from tenantry.identity.models import MfaChallenge, Passkey, RecoveryCode, TotpFactor, User
from tenantry.identity.sealing import Sealer
from tenantry.identity.signing import KeyRing
from tenantry.identity.views import Channel, ConsoleSession, MfaRequired, MfaStatus, SignIn, TokenPair, TotpSetup
from tenantry.ratelimit.gcra import Rate
from tenantry.ratelimit.throttle import FailureThrottle

TOTP = "totp"
RECOVERY_CODE = "recovery_code"
PASSKEY = "passkey"
MFA_TOKEN_PREFIX = "mfa_"  # noqa: S105 (a readable prefix, not a secret)
RECOVERY_CODES = 10
STEP_SECONDS = 30
_KEEP_DEAD = timedelta(hours=1)
# A sign-in's first factor for a user with a second one: it runs in the sign-in's transaction (hot statements).
_CHALLENGES = cast(Table, MfaChallenge.__table__)
_SWEEP_DEAD_CHALLENGES = Statement(
    delete(_CHALLENGES).where(
        _CHALLENGES.c.user_id == bindparam("user_id"), _CHALLENGES.c.expires_at < bindparam("dead_before")
    ),
    ("user_id", "dead_before"),
)
_INSERT_CHALLENGE = Statement(
    insert(_CHALLENGES), ("id", "user_id", "token_hash", "channel", "attempts", "created_at", "expires_at", "used_at")
)
# No 0/o, 1/l/i: a recovery code is read off paper and typed by a person.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def new_recovery_code() -> str:
    """Twelve characters (about 59 bits) in three groups: ``xxxx-xxxx-xxxx``."""
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def _normalize(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def _matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step (±1 for clock drift) whose TOTP equals ``code``, compared in constant time."""
    totp = pyotp.TOTP(secret)
    current = int(now // STEP_SECONDS)
    found = None
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


class MfaService:
    def __init__(
        self,
        *,
        db: Database,
        config: IdentityConfig,
        sealer: Sealer,
        throttle: FailureThrottle,
        auth: Authenticator,
        keys: KeyRing,
    ) -> None:
        self.db = db
        self.config = config
        self.sealer = sealer
        self.throttle = throttle
        self.auth = auth
        self.keys = keys
        self.clock: Callable[[], float] = time.time  # the TOTP clock; tests move it

    # -- managing one's factors -----------------------------------------------------------------------
    async def status(self, *, user_id: uuid.UUID) -> MfaStatus:
        """Which second factors the user has."""
        async with self.db.read() as tx:
            user = await _user(tx, user_id)
            left = await tx.scalar(
                select(func.count()).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
            )
            passkeys = await tx.scalar(select(func.count()).where(Passkey.user_id == user_id))
        return MfaStatus(totp_enabled=user.has_mfa, recovery_codes_left=left or 0, passkeys=passkeys or 0)

    async def setup_totp(self, *, user_id: uuid.UUID) -> TotpSetup:
        """A new secret for an authenticator app, not active until confirmed with ``enable_totp``.
        Raises ``MfaAlreadyEnabled`` (disable first to change apps)."""
        secret = pyotp.random_base32()
        async with self.db.transaction() as tx:
            user = await _user(tx, user_id)
            if user.has_mfa:
                raise MfaAlreadyEnabled("Turn two-factor authentication off before setting up another app.")
            await tx.execute(delete(TotpFactor).where(TotpFactor.user_id == user_id))
            tx.add(TotpFactor(user_id=user_id, secret_sealed=self.sealer.seal(secret.encode(), owner=user_id.bytes)))
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=self.config.rp_name)
        return TotpSetup(secret=secret, otpauth_uri=uri)

    async def enable_totp(self, *, user_id: uuid.UUID, code: str, actor: Actor) -> list[str]:
        """Confirm the app with a current code; returns fresh recovery codes (shown once).
        Raises ``InvalidCode``, ``MfaNotEnabled`` (no set-up), ``MfaAlreadyEnabled``."""
        keys = self._throttle_keys(user_id)
        await self.throttle.check(keys)
        async with self.db.transaction() as tx:
            user = await _user(tx, user_id)
            if user.has_mfa:
                raise MfaAlreadyEnabled()
            factor = await tx.get(TotpFactor, user_id)
            if factor is None:
                raise MfaNotEnabled("Start with POST /v1/me/mfa/totp/setup.")
            step = self._totp_step(factor, code)
            if step is None:
                await self.throttle.fail(keys)
                raise InvalidCode()
            now = utcnow()
            factor.confirmed_at, factor.last_used_step = now, step
            user.mfa_enabled_at = user.updated_at = now
            codes = await self._replace_recovery_codes(tx, user_id)
            await emit(tx, USER_MFA_ENABLED, data={"user": user_data(user), "method": TOTP}, actor=actor)
        await self.auth.forget_user(user_id)
        return codes

    async def disable_totp(self, *, user_id: uuid.UUID, code: str, actor: Actor) -> None:
        """Turn TOTP off (and drop the recovery codes), proven with a current TOTP or recovery code.
        Raises ``InvalidCode``, ``CodeReused``, ``MfaNotEnabled``."""
        async with self._proven(user_id, code) as tx:
            user = await _user(tx, user_id)
            await tx.execute(delete(TotpFactor).where(TotpFactor.user_id == user_id))
            await tx.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
            user.mfa_enabled_at, user.updated_at = None, utcnow()
            data = {"user": user_data(user), "method": TOTP, "reason": "disabled_by_user"}
            await emit(tx, USER_MFA_DISABLED, data=data, actor=actor)
        await self.auth.forget_user(user_id)

    async def regenerate_recovery_codes(self, *, user_id: uuid.UUID, code: str, actor: Actor) -> list[str]:
        """A fresh set of recovery codes; every earlier one stops working. Raises like ``disable_totp``."""
        async with self._proven(user_id, code) as tx:
            return await self._replace_recovery_codes(tx, user_id)

    async def reset(self, *, email: str, actor: Actor) -> bool:
        """An operator's way back in for someone who lost both their app and their recovery codes: turn
        TOTP off and drop the codes. Returns whether the account had a second factor. Raises ``NotFound``."""
        async with self.db.transaction() as tx:
            user = await tx.scalar(select(User).where(User.email_normalized == email.strip().lower()))
            if user is None:
                raise NotFound("No account with this email.")
            had = user.has_mfa
            await tx.execute(delete(TotpFactor).where(TotpFactor.user_id == user.id))
            await tx.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
            await self.abandon_sign_ins(tx, user_id=user.id)
            if had:
                user.mfa_enabled_at, user.updated_at = None, utcnow()
                data = {"user": user_data(user), "method": TOTP, "reason": "reset_by_operator"}
                await emit(tx, USER_MFA_DISABLED, data=data, actor=actor)
        await self.auth.forget_user(user.id)
        return had

    # -- the second step of a sign-in ------------------------------------------------------------------
    async def sign_in(self, tx: Lane, *, user_id: uuid.UUID, has_mfa: bool, channel: Channel, actor: Actor) -> SignIn:
        """After a first factor: open the session, or, if the user has a second factor, hand out an
        ``mfa_token`` for :meth:`complete` instead. Runs inside the caller's transaction."""
        if not has_mfa:
            return await sessions.open_on(tx, channel, user_id=user_id, actor=actor, config=self.config, keys=self.keys)
        token, now = new_secret(MFA_TOKEN_PREFIX), utcnow()
        # Sweep this user's long-dead challenges as new ones are made: the table stays small without a job.
        await _SWEEP_DEAD_CHALLENGES.run(tx, user_id, now - _KEEP_DEAD)
        expires_at = now + self.config.mfa_token_ttl
        await _INSERT_CHALLENGE.run(tx, new_id(), user_id, digest(token), channel, 0, now, expires_at, None)
        methods = (TOTP, RECOVERY_CODE)
        return MfaRequired(token, methods, int(self.config.mfa_token_ttl.total_seconds()))

    async def abandon_sign_ins(self, tx: AsyncSession, *, user_id: uuid.UUID) -> None:
        """Spend every sign-in of the user still waiting for its second factor (their password changed)."""
        await tx.execute(
            update(MfaChallenge)
            .where(MfaChallenge.user_id == user_id, MfaChallenge.used_at.is_(None))
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )

    async def complete(
        self, *, mfa_token: str, code: str, actor: Actor, channel: Channel = "api"
    ) -> TokenPair | ConsoleSession:
        """Finish a sign-in begun on ``channel`` with a TOTP or recovery code. Raises ``InvalidMfaToken``
        (unknown, expired, spent, or begun on the other channel), ``MfaCodeRejected``, ``MfaCodeReused``,
        ``TooManyRequests``."""
        user_id, attempts = await self._claim_attempt(digest(mfa_token), channel)
        keys = self._throttle_keys(user_id)
        await self.throttle.check(keys)
        try:
            async with self.db.transaction() as tx:
                await self._spend_code(tx, user_id, code)
                spent = await tx.execute(
                    update(MfaChallenge)
                    .where(MfaChallenge.token_hash == digest(mfa_token), MfaChallenge.used_at.is_(None))
                    .values(used_at=utcnow())
                )
                if spent.rowcount != 1:  # type: ignore[attr-defined]  # a concurrent attempt won
                    raise InvalidMfaToken()
                return await sessions.open_on(
                    tx, channel, user_id=user_id, actor=actor.as_user(user_id), config=self.config, keys=self.keys
                )
        except (InvalidCode, CodeReused) as exc:
            if attempts >= self.config.mfa_failures_per_token:
                await self._spend_challenge(digest(mfa_token))
            await self.throttle.fail(keys)
            raise (MfaCodeReused() if isinstance(exc, CodeReused) else MfaCodeRejected()) from exc

    # -- internals -----------------------------------------------------------------------------------------
    def _throttle_keys(self, user_id: uuid.UUID) -> list[tuple[str, Rate]]:
        return [(f"mfa:user:{user_id}", self.config.failures_per_email)]

    def _totp_step(self, factor: TotpFactor, code: str) -> int | None:
        code = _normalize(code)
        if len(code) != 6 or not code.isdigit():
            return None
        secret = self.sealer.open(factor.secret_sealed, owner=factor.user_id.bytes).decode()
        return _matching_step(secret, code, self.clock())

    async def _spend_code(self, tx: AsyncSession, user_id: uuid.UUID, code: str) -> str:
        """Accept a TOTP or recovery code of an enabled factor, once. Returns which method it was.
        Raises ``InvalidCode``, ``CodeReused``, ``MfaNotEnabled``."""
        factor = await tx.get(TotpFactor, user_id)
        if factor is None or factor.confirmed_at is None:
            raise MfaNotEnabled()
        normalized = _normalize(code)
        if len(normalized) == 6 and normalized.isdigit():
            step = self._totp_step(factor, normalized)
            if step is None:
                raise InvalidCode()
            # One conditional UPDATE: of two requests with the same code, exactly one gets it.
            taken = await tx.execute(
                update(TotpFactor)
                .where(
                    TotpFactor.user_id == user_id,
                    or_(TotpFactor.last_used_step.is_(None), TotpFactor.last_used_step < step),
                )
                .values(last_used_step=step)
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise CodeReused()
            return TOTP
        taken = await tx.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user_id,
                RecoveryCode.code_hash == self.sealer.mac(normalized),
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise InvalidCode()
        return RECOVERY_CODE

    @contextlib.asynccontextmanager
    async def _proven(self, user_id: uuid.UUID, code: str) -> AsyncIterator[AsyncSession]:
        """A write transaction opened with a current second factor spent in it. A wrong code counts
        against the user's throttle, and the transaction is rolled back."""
        keys = self._throttle_keys(user_id)
        await self.throttle.check(keys)
        try:
            async with self.db.transaction() as tx:
                await self._spend_code(tx, user_id, code)
                yield tx
        except (InvalidCode, CodeReused):
            await self.throttle.fail(keys)
            raise

    async def _claim_attempt(self, token_hash: str, channel: Channel) -> tuple[uuid.UUID, int]:
        """Count one more attempt on a live sign-in challenge, before the code is even looked at, so that
        concurrent guesses cannot exceed the limit. Returns the user and the attempts made so far.
        Raises ``InvalidMfaToken``."""
        limit = self.config.mfa_failures_per_token
        async with self.db.core_transaction() as tx:
            claimed = await tx.execute(
                update(MfaChallenge)
                .where(
                    MfaChallenge.token_hash == token_hash,
                    MfaChallenge.channel == channel,
                    MfaChallenge.used_at.is_(None),
                    MfaChallenge.expires_at > utcnow(),
                    MfaChallenge.attempts < limit,
                )
                .values(attempts=MfaChallenge.attempts + 1)
                .returning(MfaChallenge.user_id, MfaChallenge.attempts)
            )
            row = claimed.first()
        if row is None:
            raise InvalidMfaToken()
        return row.user_id, row.attempts

    async def _spend_challenge(self, token_hash: str) -> None:
        """The last allowed wrong code: the challenge is spent, and the sign-in must start over."""
        async with self.db.core_transaction() as tx:
            await tx.execute(
                update(MfaChallenge)
                .where(MfaChallenge.token_hash == token_hash, MfaChallenge.used_at.is_(None))
                .values(used_at=utcnow())
            )

    async def _replace_recovery_codes(self, tx: AsyncSession, user_id: uuid.UUID) -> list[str]:
        await tx.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        now: datetime = utcnow()
        await tx.execute(
            insert(RecoveryCode.__table__),  # type: ignore[arg-type]
            [
                {"id": new_id(), "user_id": user_id, "code_hash": self.sealer.mac(_normalize(c)), "created_at": now}
                for c in codes
            ],
        )
        return codes


async def _user(tx: AsyncSession, user_id: uuid.UUID) -> User:
    user = await tx.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user

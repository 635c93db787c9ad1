"""The rules of identity: accounts, email verification, sign-in, sessions and passwords.

Each public method is one use case and owns its transactions. Most need exactly one; sign-in,
sign-up and password changes need a read, then a password hash (tens of milliseconds on a worker
thread), then a write, and must not hold the database's write lock while hashing (SQLite has one
writer), so they open two.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple, cast

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.core.context import Actor
from tenantry.core.errors import InvalidInput, NotFound, TooManyRequests
from tenantry.core.ids import digest, new_secret
from tenantry.db.engine import Database
from tenantry.db.statements import Statement
from tenantry.events.outbox import emit
from tenantry.identity import mails, sessions
from tenantry.identity.auth import Authenticator
from tenantry.identity.config import IdentityConfig
from tenantry.identity.errors import EmailTaken, InvalidCredentials, InvalidToken, RefreshTokenReused, WrongPassword
from tenantry.identity.events import (
    USER_CREATED,
    USER_EMAIL_VERIFIED,
    USER_PASSWORD_CHANGED,
    USER_UPDATED,
    user_data,
)
from tenantry.identity.mfa import MfaService
from tenantry.identity.models import EmailToken, Session, User
from tenantry.identity.passwords import PasswordService, check_strength
from tenantry.identity.signing import KeyRing
from tenantry.identity.views import Channel, Principal, SessionView, SignIn, TokenPair, UserView
from tenantry.mail import Message
from tenantry.mail.outbox import queue_mail
from tenantry.ratelimit.gcra import Rate
from tenantry.ratelimit.throttle import FailureThrottle

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"  # noqa: S105 (a token purpose, not a secret)

# A sign-in's own statements (hot: every sign-in reads one user, and may store a stronger hash of its password).
_USERS = cast(Table, User.__table__)


class _SignInUser(NamedTuple):
    id: uuid.UUID
    password_hash: str
    mfa_enabled_at: datetime | None


_SIGN_IN_USER = Statement(
    select(_USERS.c.id, _USERS.c.password_hash, _USERS.c.mfa_enabled_at).where(
        _USERS.c.email_normalized == bindparam("email")
    ),
    ("email",),
    row=_SignInUser._make,
)
_REHASH = Statement(
    update(_USERS).where(_USERS.c.id == bindparam("user_id")).values(password_hash=bindparam("new_hash")),
    ("user_id", "new_hash"),
)


def normalize_email(raw: str) -> tuple[str, str]:
    """The address as the person wrote it (domain normalised) and its lower-case uniqueness key."""
    try:
        valid = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"Invalid email address: {exc}", field="email") from exc
    return valid.normalized, valid.normalized.lower()


async def _queue_mail(tx: AsyncSession, message: Message) -> None:
    await queue_mail(tx, message)


class IdentityService:
    def __init__(
        self,
        *,
        db: Database,
        config: IdentityConfig,
        passwords: PasswordService,
        keys: KeyRing,
        throttle: FailureThrottle,
        auth: Authenticator,
        mfa: MfaService,
    ) -> None:
        self.db = db
        self.mfa = mfa
        self.config = config
        self.passwords = passwords
        self.keys = keys
        self.throttle = throttle
        self.auth = auth

    # -- accounts ----------------------------------------------------------------------------------
    async def signup(self, *, email: str, password: str, name: str, actor: Actor) -> UserView:
        """Create an account and mail a verification link. Raises ``EmailTaken``, ``WeakPassword``,
        ``InvalidInput``."""
        email, key = normalize_email(email)
        check_strength(
            password,
            email=email,
            min_length=self.config.password_min_length,
            max_length=self.config.password_max_length,
        )
        async with self.db.read() as tx:
            if await tx.scalar(select(User.id).where(User.email_normalized == key)) is not None:
                raise EmailTaken()
        password_hash = await self.passwords.hash(password)
        try:
            async with self.db.transaction() as tx:
                user = User(email=email, email_normalized=key, name=name.strip(), password_hash=password_hash)
                tx.add(user)
                await tx.flush()
                await emit(tx, USER_CREATED, data={"user": user_data(user)}, actor=actor.as_user(user.id))
                await self._send_token(tx, user, VERIFY_EMAIL)
        except IntegrityError as exc:  # a concurrent sign-up with the same address won
            raise EmailTaken() from exc
        return UserView.of(user)

    async def resend_verification(self, *, user_id: uuid.UUID) -> None:
        """Mail a fresh verification link, unless the email is already verified (then nothing happens)."""
        await self.throttle.spend(f"mail:user:{user_id}", self.config.mails_per_email)
        async with self.db.transaction() as tx:
            user = await self._user(tx, user_id)
            if not user.is_email_verified:
                await self._send_token(tx, user, VERIFY_EMAIL)

    async def verify_email(self, *, token: str, actor: Actor) -> UserView:
        """Mark the email verified. Raises ``InvalidToken`` for an unknown, used or expired token."""
        async with self.db.transaction() as tx:
            user = await self._spend_token(tx, token, VERIFY_EMAIL)
            if not user.is_email_verified:
                user.email_verified_at = user.updated_at = utcnow()
                await emit(tx, USER_EMAIL_VERIFIED, data={"user": user_data(user)}, actor=actor.as_user(user.id))
        await self.auth.forget_user(user.id)
        return UserView.of(user)

    async def update_profile(self, *, user_id: uuid.UUID, name: str | None, actor: Actor) -> UserView:
        """Change what the user may change about themselves (their name)."""
        async with self.db.transaction() as tx:
            user = await self._user(tx, user_id)
            changes: dict[str, Any] = {}
            if name is not None and name.strip() != user.name:
                changes["name"] = {"from": user.name, "to": name.strip()}
                user.name = name.strip()
            if changes:
                user.updated_at = utcnow()
                await emit(tx, USER_UPDATED, data={"user": user_data(user), "changes": changes}, actor=actor)
        if changes:
            await self.auth.forget_user(user_id)
        return UserView.of(user)

    # -- signing in ----------------------------------------------------------------------------------
    def _login_keys(self, email_key: str, ip: str | None) -> list[tuple[str, Rate]]:
        keys = [(f"login:email:{email_key}", self.config.failures_per_email)]
        if ip:
            keys.append((f"login:ip:{ip}", self.config.failures_per_ip))
        return keys

    async def login(self, *, email: str, password: str, actor: Actor, channel: Channel = "api") -> SignIn:
        """Check the password and open a session on ``channel`` or, for a user with a second factor, hand
        out an ``mfa_token`` instead. Raises ``InvalidCredentials`` (the same, and after the same work,
        for an unknown email) and ``TooManyRequests`` once failures pile up."""
        key = email.strip().lower()
        throttle_keys = self._login_keys(key, actor.ip)
        await self.throttle.check(throttle_keys)
        async with self.db.direct_read() as reader:
            user = await _SIGN_IN_USER.first(reader, key)
        if user is None:
            await self.passwords.burn(password)
        if user is None or not await self.passwords.verify(user.password_hash, password):
            await self.throttle.fail(throttle_keys)
            raise InvalidCredentials()
        new_hash = await self.passwords.hash(password) if self.passwords.needs_rehash(user.password_hash) else None
        async with self.db.direct() as tx:
            if new_hash is not None:
                await _REHASH.run(tx, user.id, new_hash)
            return await self.mfa.sign_in(
                tx, user_id=user.id, has_mfa=user.mfa_enabled_at is not None, channel=channel, actor=actor
            )

    async def refresh(self, *, refresh_token: str, actor: Actor) -> TokenPair:
        """Trade a refresh token for a new pair. Raises ``InvalidRefreshToken``, or ``RefreshTokenReused``
        after revoking the session when the token had been spent already."""
        async with self.db.transaction() as tx:
            outcome = await sessions.rotate(
                tx, refresh_token=refresh_token, actor=actor, config=self.config, keys=self.keys
            )
        if isinstance(outcome, Session):
            await self.auth.forget_sessions([outcome.id])
            raise RefreshTokenReused()
        return outcome

    async def logout(self, *, principal: Principal, actor: Actor) -> None:
        """End the caller's current session."""
        await self.revoke_session(
            user_id=principal.user.id, session_id=principal.session_id, actor=actor, reason="logout"
        )

    async def list_sessions(self, *, principal: Principal) -> list[SessionView]:
        """The caller's open sessions, most recently used first, the current one marked."""
        async with self.db.read() as tx:
            found = await sessions.open_sessions(tx, principal.user.id)
        return [sessions.view(s, current_id=principal.session_id) for s in found]

    async def revoke_session(
        self, *, user_id: uuid.UUID, session_id: uuid.UUID, actor: Actor, reason: str = "revoked"
    ) -> None:
        """End one of the user's sessions. Raises ``NotFound`` for another user's or an ended session."""
        async with self.db.transaction() as tx:
            session = await sessions.get_open(tx, user_id=user_id, session_id=session_id)
            ended = await sessions.revoke(tx, [session], reason=reason, actor=actor)
        await self.auth.forget_sessions(ended)

    # -- passwords -------------------------------------------------------------------------------------
    async def change_password(
        self, *, principal: Principal, current_password: str, new_password: str, actor: Actor
    ) -> None:
        """Replace the password and end every other session. Raises ``WrongPassword``, ``WeakPassword``."""
        user_id = principal.user.id
        throttle_keys = [(f"password:user:{user_id}", self.config.failures_per_email)]
        await self.throttle.check(throttle_keys)
        async with self.db.read() as tx:
            user = await self._user(tx, user_id)
        if not await self.passwords.verify(user.password_hash, current_password):
            await self.throttle.fail(throttle_keys)
            raise WrongPassword()
        check_strength(
            new_password,
            email=user.email,
            min_length=self.config.password_min_length,
            max_length=self.config.password_max_length,
        )
        password_hash = await self.passwords.hash(new_password)
        async with self.db.transaction() as tx:
            user = await self._user(tx, user_id)
            ended = await self._set_password(
                tx, user, password_hash, keep=principal.session_id, reason="password_changed", actor=actor
            )
        await self.auth.forget_sessions(ended)

    async def forgot_password(self, *, email: str, actor: Actor) -> None:
        """Mail a reset link if the account exists; says nothing either way."""
        key = email.strip().lower()
        try:
            await self.throttle.spend(f"mail:email:{key}", self.config.mails_per_email)
        except TooManyRequests:
            return  # silently: answering differently would tell whether the account exists
        async with self.db.transaction() as tx:
            user = await tx.scalar(select(User).where(User.email_normalized == key))
            if user is not None:
                await self._send_token(tx, user, RESET_PASSWORD)

    async def check_reset_token(self, *, token: str) -> None:
        """Whether a mailed reset token would still work, without spending it (the page it opens asks
        for the new password first). Raises ``InvalidToken``."""
        if not token:
            raise InvalidToken()
        async with self.db.read() as tx:
            await self._token_owner(tx, token, RESET_PASSWORD)

    async def reset_password(self, *, token: str, password: str, actor: Actor) -> None:
        """Set a new password with a mailed token; ends every session. Raises ``InvalidToken``, ``WeakPassword``."""
        async with self.db.read() as tx:
            user = await self._token_owner(tx, token, RESET_PASSWORD)
        check_strength(
            password,
            email=user.email,
            min_length=self.config.password_min_length,
            max_length=self.config.password_max_length,
        )
        password_hash = await self.passwords.hash(password)
        async with self.db.transaction() as tx:
            user = await self._spend_token(tx, token, RESET_PASSWORD)
            if not user.is_email_verified:  # the mail reached its owner: that proves the address too
                user.email_verified_at = utcnow()
                await emit(tx, USER_EMAIL_VERIFIED, data={"user": user_data(user)}, actor=actor.as_user(user.id))
            ended = await self._set_password(
                tx, user, password_hash, keep=None, reason="password_reset", actor=actor.as_user(user.id)
            )
        await self.auth.forget_user(user.id)
        await self.auth.forget_sessions(ended)

    # -- internals ---------------------------------------------------------------------------------------
    async def _user(self, tx: AsyncSession, user_id: uuid.UUID) -> User:
        user = await tx.get(User, user_id)
        if user is None:
            raise NotFound("No such user.")
        return user

    async def _set_password(
        self, tx: AsyncSession, user: User, password_hash: str, *, keep: uuid.UUID | None, reason: str, actor: Actor
    ) -> list[uuid.UUID]:
        now = utcnow()
        user.password_hash = password_hash
        user.password_changed_at = user.updated_at = now
        await emit(tx, USER_PASSWORD_CHANGED, data={"user": user_data(user), "reason": reason}, actor=actor)
        await self.mfa.abandon_sign_ins(tx, user_id=user.id)  # they were begun with the old password
        others = [s for s in await sessions.open_sessions(tx, user.id) if s.id != keep]
        return await sessions.revoke(tx, others, reason=reason, actor=actor)

    async def _send_token(self, tx: AsyncSession, user: User, purpose: str) -> None:
        """Issue a mailed token for ``purpose``; earlier unused tokens of that purpose stop working."""
        now = utcnow()
        await tx.execute(
            update(EmailToken)
            .where(EmailToken.user_id == user.id, EmailToken.purpose == purpose, EmailToken.used_at.is_(None))
            .values(used_at=now)
        )
        token = new_secret()
        ttl = self.config.verification_ttl if purpose == VERIFY_EMAIL else self.config.reset_ttl
        tx.add(
            EmailToken(
                user_id=user.id,
                purpose=purpose,
                email=user.email_normalized,
                token_hash=digest(token),
                expires_at=now + ttl,
            )
        )
        compose = mails.verification if purpose == VERIFY_EMAIL else mails.password_reset
        await _queue_mail(
            tx, compose(to=user.email, name=user.name, token=token, base_url=self.config.base_url, ttl=ttl)
        )

    async def _token_row(self, tx: AsyncSession, token: str, purpose: str) -> tuple[EmailToken, User]:
        row = await tx.scalar(
            select(EmailToken).where(EmailToken.token_hash == digest(token), EmailToken.purpose == purpose)
        )
        now: datetime = utcnow()
        if row is None or row.used_at is not None or row.expires_at <= now:
            raise InvalidToken()
        user = await tx.get(User, row.user_id)
        if user is None or user.email_normalized != row.email:  # the address changed since it was mailed
            raise InvalidToken()
        return row, user

    async def _token_owner(self, tx: AsyncSession, token: str, purpose: str) -> User:
        return (await self._token_row(tx, token, purpose))[1]

    async def _spend_token(self, tx: AsyncSession, token: str, purpose: str) -> User:
        row, user = await self._token_row(tx, token, purpose)
        spent = await tx.execute(
            update(EmailToken)
            .where(EmailToken.id == row.id, EmailToken.used_at.is_(None))
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            raise InvalidToken()
        return user

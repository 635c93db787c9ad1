"""Sessions and their tokens: sign-in, refresh-token rotation with reuse detection, revocation.

A session is one signed-in device. Its access tokens are short-lived JWTs naming it (``sid``); its
refresh tokens form a chain in which each token works once. Presenting a spent refresh token
means it was stolen (or replayed): the whole session is revoked, so the thief's newer tokens die
with it. Revocation is published to every process before the call returns, and checked on every
request, so a revoked session's access token stops working at once, not when it expires.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.clock import utcnow
from tenantry.core.context import Actor
from tenantry.core.errors import NotFound
from tenantry.core.ids import digest, new_id, new_secret
from tenantry.db.statements import Lane, Statement
from tenantry.events.outbox import emit
from tenantry.identity.config import IdentityConfig
from tenantry.identity.errors import InvalidRefreshToken
from tenantry.identity.events import SESSION_CREATED, SESSION_REVOKED, session_data, session_row_data
from tenantry.identity.models import RefreshToken, Session
from tenantry.identity.signing import KeyRing
from tenantry.identity.views import Channel, ConsoleSession, SessionView, TokenPair

REFRESH_PREFIX = "rt_"
COOKIE_PREFIX = "cs_"

# Hot statements: a sign-in writes one of each, under the write lock.
_SESSIONS = cast(Table, Session.__table__)
_REFRESH_TOKENS = cast(Table, RefreshToken.__table__)
_INSERT_SESSION = Statement(
    insert(_SESSIONS),
    ("id", "user_id", "created_at", "last_used_at", "expires_at", "ip", "user_agent", "cookie_hash"),
)
_INSERT_REFRESH_TOKEN = Statement(
    insert(_REFRESH_TOKENS), ("id", "session_id", "token_hash", "created_at", "expires_at", "used_at")
)


async def open_on(
    tx: Lane, channel: Channel, *, user_id: uuid.UUID, actor: Actor, config: IdentityConfig, keys: KeyRing
) -> TokenPair | ConsoleSession:
    """Open a session on ``channel``: a token pair for the API, a cookie for the console."""
    if channel == "console":
        return await start_console(tx, user_id=user_id, actor=actor, config=config)
    return await start(tx, user_id=user_id, actor=actor, config=config, keys=keys)


async def _insert(
    tx: Lane, *, user_id: uuid.UUID, actor: Actor, config: IdentityConfig, cookie_hash: str | None = None
) -> tuple[uuid.UUID, datetime, datetime]:
    """Runs on every sign-in, under the write lock: hot statements rather than ORM flushes."""
    now = utcnow()
    session_id, expires_at = new_id(), now + config.session_max_age
    user_agent = (actor.user_agent or "")[:512] or None
    await _INSERT_SESSION.run(tx, session_id, user_id, now, now, expires_at, actor.ip, user_agent, cookie_hash)
    data = session_data(id=session_id, user_id=user_id, ip=actor.ip, user_agent=user_agent, created_at=now)
    await emit(tx, SESSION_CREATED, data={"session": data}, actor=actor.as_user(user_id))
    return session_id, expires_at, now


async def start_console(tx: Lane, *, user_id: uuid.UUID, actor: Actor, config: IdentityConfig) -> ConsoleSession:
    """Open a console session for ``user_id``: one cookie value, kept only as its hash."""
    cookie = new_secret(COOKIE_PREFIX)
    session_id, expires_at, _ = await _insert(
        tx, user_id=user_id, actor=actor, config=config, cookie_hash=digest(cookie)
    )
    return ConsoleSession(session_id=session_id, cookie=cookie, expires_at=expires_at)


async def start(tx: Lane, *, user_id: uuid.UUID, actor: Actor, config: IdentityConfig, keys: KeyRing) -> TokenPair:
    """Open an API session for ``user_id`` and return its first token pair."""
    session_id, expires_at, now = await _insert(tx, user_id=user_id, actor=actor, config=config)
    return await _issue(
        tx,
        session_id=session_id,
        user_id=user_id,
        session_expires_at=expires_at,
        config=config,
        keys=keys,
        now=now,
    )


async def _issue(
    tx: Lane,
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    session_expires_at: datetime,
    config: IdentityConfig,
    keys: KeyRing,
    now: datetime,
) -> TokenPair:
    refresh = new_secret(REFRESH_PREFIX)
    expires_at = min(now + config.refresh_ttl, session_expires_at)
    await _INSERT_REFRESH_TOKEN.run(tx, new_id(), session_id, digest(refresh), now, expires_at, None)
    issued = int(now.timestamp())
    ttl = int(config.access_ttl.total_seconds())
    access = keys.sign(
        {
            "iss": config.issuer,
            "sub": str(user_id),
            "sid": str(session_id),
            "iat": issued,
            "exp": issued + ttl,
            "jti": uuid.uuid4().hex,
        }
    )
    return TokenPair(access, refresh, ttl)


async def rotate(
    tx: AsyncSession, *, refresh_token: str, actor: Actor, config: IdentityConfig, keys: KeyRing
) -> TokenPair | Session:
    """Spend ``refresh_token`` and issue the next pair.

    Returns the (now revoked) ``Session`` instead when the token had already been spent: the
    caller commits that revocation and then reports the reuse. Raises ``InvalidRefreshToken``
    for an unknown or expired token or a session that has ended.
    """
    now = utcnow()
    token = await tx.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest(refresh_token)))
    if token is None:
        raise InvalidRefreshToken()
    session = await tx.get(Session, token.session_id)
    if session is None:
        raise InvalidRefreshToken()
    if token.used_at is not None:
        return await _reused(tx, session, actor=actor)
    if session.revoked_at is not None or session.expires_at <= now:
        raise InvalidRefreshToken()
    # Spending is one conditional UPDATE, so of two concurrent refreshes exactly one wins.
    spent = await tx.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        return await _reused(tx, session, actor=actor)
    if token.expires_at <= now:
        raise InvalidRefreshToken()
    session.last_used_at = now
    session.ip = actor.ip or session.ip
    return await _issue(
        tx,
        session_id=session.id,
        user_id=session.user_id,
        session_expires_at=session.expires_at,
        config=config,
        keys=keys,
        now=now,
    )


async def _reused(tx: AsyncSession, session: Session, *, actor: Actor) -> Session:
    """A spent token came back: whoever holds the chain now may be a thief, so the session ends."""
    await revoke(tx, [session], reason="refresh_token_reused", actor=actor.as_user(session.user_id))
    return session


async def revoke(tx: AsyncSession, sessions: Sequence[Session], *, reason: str, actor: Actor) -> list[uuid.UUID]:
    """End ``sessions`` (those still open); returns the ids that were ended, for cache invalidation."""
    now = utcnow()
    ended = []
    for session in sessions:
        if session.revoked_at is not None:
            continue
        session.revoked_at = now
        session.revoked_reason = reason
        await emit(tx, SESSION_REVOKED, data={"session": session_row_data(session), "reason": reason}, actor=actor)
        ended.append(session.id)
    await tx.flush()
    return ended


async def open_sessions(tx: AsyncSession, user_id: uuid.UUID) -> list[Session]:
    """The user's sessions that are neither revoked nor expired, most recently used first."""
    query = (
        select(Session)
        .where(Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > utcnow())
        .order_by(Session.last_used_at.desc())
    )
    return list((await tx.scalars(query)).all())


async def get_open(tx: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID) -> Session:
    """One of the user's open sessions; raises ``NotFound`` for anyone else's or an ended one."""
    session = await tx.get(Session, session_id)
    if session is None or session.user_id != user_id or session.revoked_at is not None:
        raise NotFound("No such session.")
    return session


def view(session: Session, *, current_id: uuid.UUID | None) -> SessionView:
    """What the session list shows of a session."""
    return SessionView(
        id=session.id,
        created_at=session.created_at,
        last_used_at=session.last_used_at,
        ip=session.ip,
        user_agent=session.user_agent,
        current=session.id == current_id,
    )

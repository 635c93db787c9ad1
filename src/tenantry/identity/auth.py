"""Authenticating a request's bearer token, from memory on the hot path.

Three caches answer almost every request without the database:
- verified access tokens (a signature never becomes invalid; expiry is checked on each use),
- session states (alive or not), dropped on every process when a session ends,
- user views, dropped on every process when a user changes.
A value read from the database is only cached if no invalidation arrived while it was being read,
so a revocation racing with a cache fill cannot be undone by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import select, update

from tenantry.core.clock import utcnow
from tenantry.core.errors import Unauthorized
from tenantry.core.ids import digest
from tenantry.db.engine import Database
from tenantry.identity.models import Session, User
from tenantry.identity.signing import KeyRing
from tenantry.identity.views import Principal, UserView
from tenantry.perf.cache import Invalidation, LRUCache

log = structlog.get_logger(__name__)

SESSIONS = "identity.session"
USERS = "identity.user"
TOUCH_EVERY = 60.0  # seconds between two writes of a session's last_used_at


@dataclass(frozen=True, slots=True)
class _Claims:
    user_key: str  # ids as the token spells them: the cache keys, with no UUID formatting per request
    session_key: str
    session_id: uuid.UUID
    expires_at: float


@dataclass(slots=True)
class _SessionState:
    user_key: str
    is_alive: bool
    expires_at: float
    touched_at: float = field(default=0.0)


class Authenticator:
    def __init__(
        self,
        *,
        db: Database,
        keys: KeyRing,
        issuer: str,
        invalidation: Invalidation,
        token_cache_size: int = 50_000,
        session_cache_size: int = 50_000,
    ) -> None:
        self.db = db
        self.keys = keys
        self.issuer = issuer
        self.invalidation = invalidation
        self.tokens: LRUCache[str, _Claims] = LRUCache("identity.token", token_cache_size)
        self.sessions: LRUCache[str, object] = LRUCache(SESSIONS, session_cache_size)
        self.users: LRUCache[str, object] = LRUCache(USERS, session_cache_size)
        invalidation.attach(self.sessions)
        invalidation.attach(self.users)
        self._touched: dict[uuid.UUID, datetime] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def authenticate(self, token: str) -> Principal:
        """The principal behind an access token. Raises ``Unauthorized``."""
        trusted = self.invalidation.check()
        claims = self.tokens.get(token)
        if claims is None:
            claims = self._verify(token)
            self.tokens.put(token, claims)
        now = time.time()
        if claims.expires_at <= now:
            raise Unauthorized("The access token has expired.")
        state = self.sessions.get(claims.session_key) if trusted else None
        if not isinstance(state, _SessionState):
            state = await self._load_session(claims, cache=trusted)
        if not state.is_alive or state.expires_at <= now or state.user_key != claims.user_key:
            raise Unauthorized("This session has ended.")
        user = self.users.get(claims.user_key) if trusted else None
        if not isinstance(user, UserView):
            user = await self._load_user(claims.user_key, cache=trusted)
        if now - state.touched_at > TOUCH_EVERY:
            state.touched_at = now
            self._touched[claims.session_id] = utcnow()
        return Principal(user=user, session_id=claims.session_id)

    def user_key(self, token: str) -> str | None:
        """The user a valid, unexpired access token names, or None (no session check: rate limits key on
        it before the request is authenticated). Verified signatures are cached, as for ``authenticate``."""
        claims = self.tokens.get(token)
        if claims is None:
            try:
                claims = self._verify(token)
            except Unauthorized:
                return None
            self.tokens.put(token, claims)
        return claims.user_key if claims.expires_at > time.time() else None

    async def authenticate_cookie(self, cookie: str) -> Principal:
        """The principal behind a console session cookie. Raises ``Unauthorized``.

        Read from the database on every call: console pages are few next to API calls, and a
        revoked console session must stop at once in every process without any cache to drop.
        """
        query = select(Session.id, Session.user_id, Session.revoked_at, Session.expires_at).where(
            Session.cookie_hash == digest(cookie)
        )
        async with self.db.reader.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
            raise Unauthorized("This session has ended. Sign in again.")
        trusted = self.invalidation.check()
        user_key = str(row.user_id)
        user = self.users.get(user_key) if trusted else None
        if not isinstance(user, UserView):
            user = await self._load_user(user_key, cache=trusted)
        self._touched[row.id] = utcnow()
        return Principal(user=user, session_id=row.id)

    def _verify(self, token: str) -> _Claims:
        raw = self.keys.verify(token, issuer=self.issuer)
        if raw is None:
            raise Unauthorized("The access token is invalid or expired.")
        try:
            session_id = uuid.UUID(raw["sid"])
            return _Claims(str(uuid.UUID(raw["sub"])), str(session_id), session_id, float(raw["exp"]))
        except (ValueError, TypeError) as exc:
            raise Unauthorized("The access token is invalid.") from exc

    def _version(self) -> int:
        return self.invalidation.version

    async def _load_session(self, claims: _Claims, *, cache: bool) -> _SessionState:
        version = self._version()
        query = select(Session.user_id, Session.revoked_at, Session.expires_at).where(Session.id == claims.session_id)
        async with self.db.reader.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            raise Unauthorized("This session has ended.")
        state = _SessionState(str(row.user_id), row.revoked_at is None, row.expires_at.timestamp())
        if cache and version == self._version():
            self.sessions.put(claims.session_key, state)
        return state

    async def _load_user(self, user_key: str, *, cache: bool) -> UserView:
        version = self._version()
        async with self.db.read() as tx:
            user = await tx.get(User, uuid.UUID(user_key))
        if user is None:
            raise Unauthorized("This account no longer exists.")
        view = UserView.of(user)
        if cache and version == self._version():
            self.users.put(user_key, view)
        return view

    # -- invalidation --------------------------------------------------------------------------------
    async def forget_sessions(self, session_ids: Iterable[uuid.UUID]) -> None:
        """Make every process re-read these sessions (they were just ended)."""
        for session_id in session_ids:
            await self.invalidation.publish(SESSIONS, str(session_id))

    async def forget_user(self, user_id: uuid.UUID) -> None:
        await self.invalidation.publish(USERS, str(user_id))

    # -- last_used_at, written in batches ----------------------------------------------------------
    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever(), name="session-touch")

    async def stop(self) -> None:
        self._stopping.set()
        if self._flusher is not None:
            await self._flusher
        await self.flush_touches()

    async def _flush_forever(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._stopping.wait()
            try:
                await self.flush_touches()
            except Exception:
                log.exception("session.touch.failed")

    async def flush_touches(self) -> None:
        """Write the pending ``last_used_at`` stamps, all in one transaction."""
        if not self._touched:
            return
        pending, self._touched = self._touched, {}
        async with self.db.transaction() as tx:
            for session_id, at in pending.items():
                await tx.execute(
                    update(Session).where(Session.id == session_id, Session.last_used_at < at).values(last_used_at=at)
                )

"""A minimal fastapi-users application: the peer that Tenantry's ``GET /v1/me`` is compared with.

It is written the way the fastapi-users documentation writes one (module-level engine, user manager
and backend), because the point is to measure what a typical user of that library gets: users in
SQLite through ``SQLAlchemyUserDatabase``, JWT bearer tokens (``JWTStrategy`` + ``BearerTransport``),
``POST /auth/register``, ``POST /auth/jwt/login``, ``GET /users/me``, and a bare ``GET /healthz`` for
the readiness poll. Tables are created at startup.

The benchmark runs it as ``python -m uvicorn bench.peers.fastapi_users_app:app`` with
``BENCH_PEER_DATABASE_URL`` pointing at a SQLite file in its temporary directory; without it, a
fresh temporary file is used.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Response
from fastapi_users import BaseUserManager, FastAPIUsers, UUIDIDMixin, schemas
from fastapi_users.authentication import AuthenticationBackend, BearerTransport, JWTStrategy
from fastapi_users_db_sqlalchemy import SQLAlchemyBaseUserTableUUID, SQLAlchemyUserDatabase
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

TOKEN_LIFETIME_SECONDS = 3600


def _database_url() -> str:
    configured = os.environ.get("BENCH_PEER_DATABASE_URL")
    if configured:
        return configured
    return f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='fastapi-users-')) / 'users.db'}"


# Tokens only need to outlive one benchmark run, so a fresh secret per process is enough.
SECRET = os.environ.get("BENCH_PEER_JWT_SECRET") or secrets.token_urlsafe(32)


class Base(DeclarativeBase):
    pass


class User(SQLAlchemyBaseUserTableUUID, Base):
    pass


class UserRead(schemas.BaseUser[uuid.UUID]):
    pass


class UserCreate(schemas.BaseUserCreate):
    pass


class UserUpdate(schemas.BaseUserUpdate):
    pass


engine = create_async_engine(_database_url())
sessions = async_sessionmaker(engine, expire_on_commit=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session


async def get_user_db(session: AsyncSession = Depends(get_session)) -> AsyncIterator[SQLAlchemyUserDatabase]:
    yield SQLAlchemyUserDatabase(session, User)


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    reset_password_token_secret = SECRET
    verification_token_secret = SECRET


async def get_user_manager(user_db: SQLAlchemyUserDatabase = Depends(get_user_db)) -> AsyncIterator[UserManager]:
    yield UserManager(user_db)


def get_jwt_strategy() -> JWTStrategy[User, uuid.UUID]:
    return JWTStrategy(secret=SECRET, lifetime_seconds=TOKEN_LIFETIME_SECONDS)


auth_backend = AuthenticationBackend(
    name="jwt", transport=BearerTransport(tokenUrl="auth/jwt/login"), get_strategy=get_jwt_strategy
)
fastapi_users = FastAPIUsers[User, uuid.UUID](get_user_manager, [auth_backend])


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    try:
        yield
    finally:
        await engine.dispose()


app = FastAPI(title="fastapi-users peer", lifespan=lifespan)
app.include_router(fastapi_users.get_auth_router(auth_backend), prefix="/auth/jwt", tags=["auth"])
app.include_router(fastapi_users.get_register_router(UserRead, UserCreate), prefix="/auth", tags=["auth"])
app.include_router(fastapi_users.get_users_router(UserRead, UserUpdate), prefix="/users", tags=["users"])


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")

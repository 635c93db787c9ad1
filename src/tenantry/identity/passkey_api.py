"""REST routes of passkeys: registering them (signed in) and signing in with them.

The shapes live here rather than in ``schemas.py``: they are used by these routes only.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from tenantry.http.deps import ActorDep, PlatformDep, PrincipalDep, user_actor
from tenantry.identity import schemas
from tenantry.identity.api import sign_in_answer
from tenantry.identity.views import PasskeyView

router = APIRouter(prefix="/v1", tags=["passkeys"])


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PasskeyCreate(_In):
    credential: dict[str, Any] = Field(
        description="The JSON form of the PublicKeyCredential from navigator.credentials.create()."
    )
    name: str = Field(default="", max_length=1000, description="A label for the user; blank names it 'Passkey'.")


class PasskeyUpdate(_In):
    name: str = Field(max_length=1000)


class PasskeySignInOptionsIn(_In):
    email: str | None = Field(default=None, max_length=320)


class PasskeySignInIn(_In):
    challenge_id: uuid.UUID
    credential: dict[str, Any] = Field(
        description="The JSON form of the PublicKeyCredential from navigator.credentials.get()."
    )


class Passkey(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None


class PasskeyPage(BaseModel):
    items: list[Passkey]


class PasskeySignInOptions(BaseModel):
    challenge_id: uuid.UUID = Field(description="Send it back with the credential to POST /v1/auth/passkey.")
    options: dict[str, Any] = Field(description="PublicKeyCredentialRequestOptions, JSON form.")


def _passkey(view: PasskeyView) -> Passkey:
    return Passkey(id=view.id, name=view.name, created_at=view.created_at, last_used_at=view.last_used_at)


@router.post("/me/passkeys/options", summary="Options for registering a passkey (navigator.credentials.create)")
async def registration_options(platform: PlatformDep, who: PrincipalDep) -> dict[str, Any]:
    return await platform.passkeys.registration_options(user=who.user)


@router.post("/me/passkeys", status_code=status.HTTP_201_CREATED, summary="Register a passkey")
async def register(body: PasskeyCreate, request: Request, platform: PlatformDep, who: PrincipalDep) -> Passkey:
    view = await platform.passkeys.register(
        user_id=who.user.id, credential=body.credential, name=body.name, actor=user_actor(request, who)
    )
    return _passkey(view)


@router.get("/me/passkeys", summary="The signed-in user's passkeys")
async def list_passkeys(platform: PlatformDep, who: PrincipalDep) -> PasskeyPage:
    return PasskeyPage(items=[_passkey(p) for p in await platform.passkeys.list(user_id=who.user.id)])


@router.patch("/me/passkeys/{passkey_id}", summary="Rename a passkey")
async def rename(
    passkey_id: uuid.UUID, body: PasskeyUpdate, request: Request, platform: PlatformDep, who: PrincipalDep
) -> Passkey:
    view = await platform.passkeys.rename(
        user_id=who.user.id, passkey_id=passkey_id, name=body.name, actor=user_actor(request, who)
    )
    return _passkey(view)


@router.delete("/me/passkeys/{passkey_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a passkey")
async def remove(passkey_id: uuid.UUID, request: Request, platform: PlatformDep, who: PrincipalDep) -> Response:
    await platform.passkeys.remove(user_id=who.user.id, passkey_id=passkey_id, actor=user_actor(request, who))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/auth/passkey/options", summary="Options for signing in with a passkey (navigator.credentials.get)")
async def sign_in_options(platform: PlatformDep, body: PasskeySignInOptionsIn | None = None) -> PasskeySignInOptions:
    challenge_id, options = await platform.passkeys.authentication_options(email=body.email if body else None)
    return PasskeySignInOptions(challenge_id=challenge_id, options=options)


@router.post("/auth/passkey", summary="Sign in with a passkey")
async def sign_in(
    body: PasskeySignInIn, platform: PlatformDep, actor: ActorDep
) -> schemas.TokenPair | schemas.MfaRequired:
    outcome = await platform.passkeys.authenticate(
        challenge_id=body.challenge_id, credential=body.credential, actor=actor
    )
    return sign_in_answer(outcome)

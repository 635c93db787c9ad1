"""REST routes of identity: thin, each parses, authenticates, calls one service method, shapes."""

from __future__ import annotations

import uuid

import orjson
from fastapi import APIRouter, Request, Response, status

from tenantry.http.deps import ActorDep, PlatformDep, PrincipalDep, user_actor
from tenantry.identity import schemas
from tenantry.identity.views import MfaRequired, SessionView, SignIn, TokenPair, UserView

router = APIRouter(prefix="/v1", tags=["identity"])
# Routes are matched in order, one pattern after another: the app includes this one first of all.
me_router = APIRouter(prefix="/v1", tags=["identity"])


def _user(view: UserView) -> schemas.User:
    return schemas.User(
        id=view.id,
        email=view.email,
        name=view.name,
        email_verified=view.email_verified,
        mfa_enabled=view.mfa_enabled,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


def _user_json(view: UserView) -> bytes:
    return orjson.dumps(
        {
            "id": str(view.id),
            "email": view.email,
            "name": view.name,
            "email_verified": view.email_verified,
            "mfa_enabled": view.mfa_enabled,
            "created_at": view.created_at,
            "updated_at": view.updated_at,
        },
        option=orjson.OPT_UTC_Z,
    )


def _pair(pair: TokenPair) -> schemas.TokenPair:
    return schemas.TokenPair(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


def sign_in_answer(outcome: SignIn) -> schemas.TokenPair | schemas.MfaRequired:
    """A sign-in step as the API answers it: the token pair, or what the second step needs."""
    if isinstance(outcome, MfaRequired):
        return schemas.MfaRequired(
            mfa_token=outcome.mfa_token, methods=list(outcome.methods), expires_in=outcome.expires_in
        )
    assert isinstance(outcome, TokenPair), "the API opens API sessions only"
    return _pair(outcome)


def _session(view: SessionView) -> schemas.Session:
    return schemas.Session(
        id=view.id,
        created_at=view.created_at,
        last_used_at=view.last_used_at,
        ip=view.ip,
        user_agent=view.user_agent,
        current=view.current,
    )


# Called on nearly every page view of a product built on us.
@me_router.get("/me", summary="The signed-in user", response_model=schemas.User)
async def me(who: PrincipalDep) -> Response:
    # The hottest route of all: serialised straight from the cached view, skipping a model round trip.
    return Response(_user_json(who.user), media_type="application/json")


@router.post("/auth/signup", status_code=status.HTTP_201_CREATED, summary="Create an account")
async def signup(body: schemas.SignupIn, platform: PlatformDep, actor: ActorDep) -> schemas.User:
    user = await platform.identity.signup(email=body.email, password=body.password, name=body.name, actor=actor)
    return _user(user)


@router.post("/auth/verify-email", summary="Confirm an email address with the mailed token")
async def verify_email(body: schemas.TokenIn, platform: PlatformDep, actor: ActorDep) -> schemas.User:
    return _user(await platform.identity.verify_email(token=body.token, actor=actor))


@router.post("/auth/verify-email/resend", status_code=status.HTTP_202_ACCEPTED, summary="Mail a new verification link")
async def resend_verification(platform: PlatformDep, who: PrincipalDep) -> Response:
    await platform.identity.resend_verification(user_id=who.user.id)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post("/auth/login", summary="Sign in with email and password")
async def login(
    body: schemas.LoginIn, platform: PlatformDep, actor: ActorDep
) -> schemas.TokenPair | schemas.MfaRequired:
    return sign_in_answer(await platform.identity.login(email=body.email, password=body.password, actor=actor))


@router.post("/auth/mfa", summary="Finish a sign-in with a TOTP or recovery code")
async def complete_mfa(body: schemas.MfaIn, platform: PlatformDep, actor: ActorDep) -> schemas.TokenPair:
    outcome = await platform.mfa.complete(mfa_token=body.mfa_token, code=body.code, actor=actor)
    assert isinstance(outcome, TokenPair), "an mfa_token from the API opens an API session"
    return _pair(outcome)


@router.post("/auth/refresh", summary="Trade a refresh token for a new token pair")
async def refresh(body: schemas.RefreshIn, platform: PlatformDep, actor: ActorDep) -> schemas.TokenPair:
    return _pair(await platform.identity.refresh(refresh_token=body.refresh_token, actor=actor))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End the current session")
async def logout(request: Request, platform: PlatformDep, who: PrincipalDep) -> Response:
    await platform.identity.logout(principal=who, actor=user_actor(request, who))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/auth/password/forgot", status_code=status.HTTP_202_ACCEPTED, summary="Mail a password reset link")
async def forgot_password(body: schemas.ForgotPasswordIn, platform: PlatformDep, actor: ActorDep) -> Response:
    await platform.identity.forgot_password(email=body.email, actor=actor)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/auth/password/reset", status_code=status.HTTP_204_NO_CONTENT, summary="Set a new password with a mailed token"
)
async def reset_password(body: schemas.ResetPasswordIn, platform: PlatformDep, actor: ActorDep) -> Response:
    await platform.identity.reset_password(token=body.token, password=body.password, actor=actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.patch("/me", summary="Change the signed-in user's profile")
async def update_me(
    body: schemas.UserUpdate, request: Request, platform: PlatformDep, who: PrincipalDep
) -> schemas.User:
    user = await platform.identity.update_profile(user_id=who.user.id, name=body.name, actor=user_actor(request, who))
    return _user(user)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT, summary="Change the password")
async def change_password(
    body: schemas.PasswordChangeIn, request: Request, platform: PlatformDep, who: PrincipalDep
) -> Response:
    await platform.identity.change_password(
        principal=who,
        current_password=body.current_password,
        new_password=body.new_password,
        actor=user_actor(request, who),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me/sessions", summary="The signed-in user's open sessions")
async def list_sessions(platform: PlatformDep, who: PrincipalDep) -> schemas.SessionPage:
    return schemas.SessionPage(items=[_session(s) for s in await platform.identity.list_sessions(principal=who)])


@router.delete("/me/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT, summary="End one session")
async def revoke_session(session_id: uuid.UUID, request: Request, platform: PlatformDep, who: PrincipalDep) -> Response:
    await platform.identity.revoke_session(user_id=who.user.id, session_id=session_id, actor=user_actor(request, who))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me/mfa", summary="Which second factors the signed-in user has")
async def mfa_status(platform: PlatformDep, who: PrincipalDep) -> schemas.MfaStatus:
    status_ = await platform.mfa.status(user_id=who.user.id)
    return schemas.MfaStatus(
        totp_enabled=status_.totp_enabled, recovery_codes_left=status_.recovery_codes_left, passkeys=status_.passkeys
    )


@router.post("/me/mfa/totp/setup", summary="Start setting up an authenticator app (TOTP)")
async def setup_totp(platform: PlatformDep, who: PrincipalDep) -> schemas.TotpSetup:
    setup = await platform.mfa.setup_totp(user_id=who.user.id)
    return schemas.TotpSetup(secret=setup.secret, otpauth_uri=setup.otpauth_uri)


@router.post("/me/mfa/totp/enable", summary="Confirm the authenticator app with a code; returns recovery codes")
async def enable_totp(
    body: schemas.CodeIn, request: Request, platform: PlatformDep, who: PrincipalDep
) -> schemas.RecoveryCodes:
    codes = await platform.mfa.enable_totp(user_id=who.user.id, code=body.code, actor=user_actor(request, who))
    return schemas.RecoveryCodes(recovery_codes=codes)


@router.delete("/me/mfa/totp", status_code=status.HTTP_204_NO_CONTENT, summary="Turn the authenticator app off")
async def disable_totp(body: schemas.CodeIn, request: Request, platform: PlatformDep, who: PrincipalDep) -> Response:
    await platform.mfa.disable_totp(user_id=who.user.id, code=body.code, actor=user_actor(request, who))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/me/mfa/recovery-codes", summary="Replace the recovery codes (the old ones stop working)")
async def regenerate_recovery_codes(
    body: schemas.CodeIn, request: Request, platform: PlatformDep, who: PrincipalDep
) -> schemas.RecoveryCodes:
    codes = await platform.mfa.regenerate_recovery_codes(
        user_id=who.user.id, code=body.code, actor=user_actor(request, who)
    )
    return schemas.RecoveryCodes(recovery_codes=codes)


jwks_router = APIRouter(tags=["identity"])


@jwks_router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens")
async def jwks(platform: PlatformDep) -> Response:
    body = orjson.dumps({"keys": platform.keys.public_keys()})
    return Response(body, media_type="application/json", headers={"Cache-Control": "public, max-age=60"})

"""The ``/account`` pages: profile, password, sessions, two-factor authentication and passkeys.

Every view needs a live session (``SignedIn``: otherwise a redirect to ``/``). A change is a POST
(CSRF-checked by ``ConsoleRoute``) that calls one service method and redirects back with a notice;
a failure re-shows the account page with the message next to the form that failed.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import JSONResponse, Response

from tenantry.console import messages, pages, qr
from tenantry.console.routing import ConsoleRoute, SignedIn, platform
from tenantry.console.schemas import PasskeyCreate
from tenantry.core.errors import DomainError
from tenantry.http.deps import user_actor
from tenantry.http.problems import status_of
from tenantry.identity.views import Principal, TotpSetup

router = APIRouter(prefix="/account", route_class=ConsoleRoute, include_in_schema=False)

Text = Annotated[str, Form(max_length=1024)]
Secret = Annotated[str, Form(max_length=4096)]
_BASE32 = re.compile(r"^[A-Z2-7]{16,128}$")


async def _account_page(
    request: Request, who: Principal, *, failed: tuple[str, DomainError] | None = None, **context: Any
) -> Response:
    """The account page; ``failed`` names the form whose action failed, and why."""
    found = platform(request)
    sessions = await found.identity.list_sessions(principal=who)
    mfa = await found.mfa.status(user_id=who.user.id)
    passkeys = await found.passkeys.list(user_id=who.user.id)
    errors = {failed[0]: messages.explain(failed[1])} if failed else {}
    status = status_of(failed[1]) if failed else 200
    return pages.render(
        request, "account.html", status=status, user=who.user, sessions=sessions, mfa=mfa, passkeys=passkeys,
        errors=errors, **context,
    )  # fmt: skip


def _setup_page(request: Request, who: Principal, setup: TotpSetup | None, *, error: str | None = None) -> Response:
    qr_code = qr.data_uri(setup.otpauth_uri) if setup else None
    status = 400 if error else 200
    return pages.render(request, "totp_setup.html", status=status, user=who.user, setup=setup, qr=qr_code, error=error)


def _shown_setup(secret: str, otpauth_uri: str) -> TotpSetup | None:
    """The set-up the page showed, to show again after a wrong code; only if it is one (base32, otpauth)."""
    if _BASE32.match(secret) and otpauth_uri.startswith("otpauth://totp/") and f"secret={secret}" in otpauth_uri:
        return TotpSetup(secret=secret, otpauth_uri=otpauth_uri)
    return None


@router.get("")
async def account(request: Request, who: SignedIn) -> Response:
    return await _account_page(request, who)


# -- profile, password, sessions ------------------------------------------------------------------------------
@router.post("/profile")
async def save_profile(request: Request, who: SignedIn, name: Text) -> Response:
    await platform(request).identity.update_profile(user_id=who.user.id, name=name, actor=user_actor(request, who))
    return pages.redirect("/account", done="profile_saved")


@router.post("/verification")
async def resend_verification(request: Request, who: SignedIn) -> Response:
    await platform(request).identity.resend_verification(user_id=who.user.id)
    return pages.redirect("/account", done="verification_sent")


@router.post("/password")
async def change_password(request: Request, who: SignedIn, current_password: Secret, new_password: Secret) -> Response:
    try:
        await platform(request).identity.change_password(
            principal=who, current_password=current_password, new_password=new_password,
            actor=user_actor(request, who),
        )  # fmt: skip
    except DomainError as exc:
        return await _account_page(request, who, failed=("password", exc))
    return pages.redirect("/account", done="password_changed")


@router.post("/sessions/{session_id}/revoke")
async def revoke_session(request: Request, who: SignedIn, session_id: uuid.UUID) -> Response:
    await platform(request).identity.revoke_session(
        user_id=who.user.id, session_id=session_id, actor=user_actor(request, who)
    )
    return pages.redirect("/account", done="session_revoked")


# -- two-factor authentication -------------------------------------------------------------------------------
@router.post("/mfa/totp/setup")
async def setup_totp(request: Request, who: SignedIn) -> Response:
    setup = await platform(request).mfa.setup_totp(user_id=who.user.id)
    return _setup_page(request, who, setup)


@router.post("/mfa/totp/enable")
async def enable_totp(
    request: Request, who: SignedIn, code: Text, secret: Text = "", otpauth_uri: Text = ""
) -> Response:
    try:
        codes = await platform(request).mfa.enable_totp(user_id=who.user.id, code=code, actor=user_actor(request, who))
    except DomainError as exc:
        return _setup_page(request, who, _shown_setup(secret, otpauth_uri), error=messages.explain(exc))
    return pages.render(request, "recovery_codes.html", user=who.user, codes=codes, enabled=True)


@router.post("/mfa/totp/disable")
async def disable_totp(request: Request, who: SignedIn, code: Text) -> Response:
    try:
        await platform(request).mfa.disable_totp(user_id=who.user.id, code=code, actor=user_actor(request, who))
    except DomainError as exc:
        return await _account_page(request, who, failed=("mfa", exc))
    return pages.redirect("/account", done="totp_disabled")


@router.post("/mfa/recovery-codes")
async def regenerate_recovery_codes(request: Request, who: SignedIn, code: Text) -> Response:
    try:
        codes = await platform(request).mfa.regenerate_recovery_codes(
            user_id=who.user.id, code=code, actor=user_actor(request, who)
        )
    except DomainError as exc:
        return await _account_page(request, who, failed=("mfa", exc))
    return pages.render(request, "recovery_codes.html", user=who.user, codes=codes, enabled=False)


# -- passkeys -------------------------------------------------------------------------------------------------
@router.post("/passkeys/options")
async def passkey_options(request: Request, who: SignedIn) -> Response:
    return JSONResponse(await platform(request).passkeys.registration_options(user=who.user))


@router.post("/passkeys")
async def add_passkey(request: Request, who: SignedIn, body: PasskeyCreate) -> Response:
    await platform(request).passkeys.register(
        user_id=who.user.id, credential=body.credential, name=body.name.strip(), actor=user_actor(request, who)
    )
    return JSONResponse({"redirect": "/account?done=passkey_added"})


@router.post("/passkeys/{passkey_id}/rename")
async def rename_passkey(request: Request, who: SignedIn, passkey_id: uuid.UUID, name: Text) -> Response:
    try:
        await platform(request).passkeys.rename(
            user_id=who.user.id, passkey_id=passkey_id, name=name, actor=user_actor(request, who)
        )
    except DomainError as exc:
        return await _account_page(request, who, failed=("passkeys", exc))
    return pages.redirect("/account", done="passkey_renamed")


@router.post("/passkeys/{passkey_id}/remove")
async def remove_passkey(request: Request, who: SignedIn, passkey_id: uuid.UUID) -> Response:
    await platform(request).passkeys.remove(user_id=who.user.id, passkey_id=passkey_id, actor=user_actor(request, who))
    return pages.redirect("/account", done="passkey_removed")

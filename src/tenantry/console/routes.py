"""Console pages for signing in and up, and the pages mailed links open. Thin: each view parses,
calls one service method, and renders or redirects. Errors not caught here become pages in
``ConsoleRoute``; the ones caught re-show the form with what the person typed (never a password).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import JSONResponse, Response

from tenantry.console import cookies, messages, pages
from tenantry.console.mailbox_routes import local_mailbox
from tenantry.console.routing import ConsoleRoute, SignedIn, SignInNeeded, platform, signed_in
from tenantry.console.schemas import PasskeySignIn
from tenantry.core.errors import DomainError
from tenantry.http.deps import actor, user_actor
from tenantry.http.problems import status_of
from tenantry.identity.errors import InvalidMfaToken, InvalidToken
from tenantry.identity.views import ConsoleSession, MfaRequired, SignIn

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

Text = Annotated[str, Form(max_length=1024)]
Secret = Annotated[str, Form(max_length=4096)]


def _after_sign_in(request: Request, outcome: SignIn, *, as_json: bool = False) -> Response:
    """Open the console session, or park the sign-in at its second step (a short-lived cookie)."""
    target = "/mfa" if isinstance(outcome, MfaRequired) else "/account"
    response: Response = JSONResponse({"redirect": target}) if as_json else pages.redirect(target)
    jar = cookies.policy(request)
    if isinstance(outcome, MfaRequired):
        jar.set(response, cookies.PENDING_MFA, outcome.mfa_token, max_age=outcome.expires_in)
    else:
        assert isinstance(outcome, ConsoleSession), "the console opens console sessions only"
        jar.open_session(response, outcome)
    return response


def _inbox(request: Request, fallback: tuple[str, str]) -> tuple[str, str]:
    """Where to go after "check your inbox": the development mailbox, when there is one to see."""
    return ("/mailbox", "Open the development mailbox") if local_mailbox(request) else fallback


def _invalid_link(request: Request) -> Response:
    return pages.message(
        request,
        title="This link is invalid or expired",
        text="Links we mail work once, for a limited time. Ask for a new one and use the latest mail.",
        status=400,
    )


# -- signing in -----------------------------------------------------------------------------------------
@router.get("/")
async def sign_in_page(request: Request) -> Response:
    if cookies.policy(request).read(request, cookies.SESSION):
        try:
            await signed_in(request)
            return pages.redirect("/account")
        except SignInNeeded:
            pass
    return pages.render(request, "sign_in.html", email="")


@router.post("/")
async def sign_in(request: Request, email: Text, password: Secret) -> Response:
    try:
        outcome = await platform(request).identity.login(
            email=email, password=password, actor=actor(request), channel="console"
        )
    except DomainError as exc:
        return pages.render(request, "sign_in.html", status=status_of(exc), email=email, error=messages.explain(exc))
    return _after_sign_in(request, outcome)


@router.get("/mfa")
async def second_step_page(request: Request, method: str = "totp") -> Response:
    if not cookies.policy(request).read(request, cookies.PENDING_MFA):
        return pages.redirect("/")
    return pages.render(request, "mfa.html", recovery=method == "recovery")


@router.post("/mfa")
async def second_step(request: Request, code: Text, method: Text = "totp") -> Response:
    jar = cookies.policy(request)
    token = jar.read(request, cookies.PENDING_MFA)
    try:
        if token is None:
            raise InvalidMfaToken()
        outcome = await platform(request).mfa.complete(
            mfa_token=token, code=code, actor=actor(request), channel="console"
        )
    except InvalidMfaToken:
        response = pages.redirect("/", done="mfa_expired")
        jar.clear(response, cookies.PENDING_MFA)
        return response
    except DomainError as exc:
        error = messages.explain(exc)
        return pages.render(request, "mfa.html", status=status_of(exc), recovery=method == "recovery", error=error)
    return _after_sign_in(request, outcome)


@router.post("/sign-in/passkey/options")
async def passkey_challenge(request: Request) -> Response:
    challenge_id, options = await platform(request).passkeys.authentication_options(email=None)
    return JSONResponse({"challenge_id": str(challenge_id), "options": options})


@router.post("/sign-in/passkey")
async def passkey_sign_in(request: Request, body: PasskeySignIn) -> Response:
    outcome = await platform(request).passkeys.authenticate(
        challenge_id=body.challenge_id, credential=body.credential, actor=actor(request), channel="console"
    )
    return _after_sign_in(request, outcome, as_json=True)


@router.post("/logout")
async def sign_out(request: Request, who: SignedIn) -> Response:
    await platform(request).identity.logout(principal=who, actor=user_actor(request, who))
    response = pages.redirect("/", done="signed_out")
    cookies.policy(request).clear(response, cookies.SESSION)
    return response


# -- signing up, and forgotten passwords ----------------------------------------------------------------------
@router.get("/signup")
async def sign_up_page(request: Request) -> Response:
    return pages.render(request, "signup.html", name="", email="")


@router.post("/signup")
async def sign_up(request: Request, name: Text, email: Text, password: Secret) -> Response:
    try:
        user = await platform(request).identity.signup(email=email, password=password, name=name, actor=actor(request))
    except DomainError as exc:
        error = messages.explain(exc)
        return pages.render(request, "signup.html", status=status_of(exc), name=name, email=email, error=error)
    return pages.message(
        request,
        title="Check your inbox",
        text=f"Your account is ready. We sent a link to {user.email}: open it to confirm your address.",
        action=_inbox(request, ("/", "Continue to sign in")),
    )


@router.get("/forgot-password")
async def forgot_password_page(request: Request) -> Response:
    return pages.render(request, "forgot_password.html", email="")


@router.post("/forgot-password")
async def forgot_password(request: Request, email: Text) -> Response:
    await platform(request).identity.forgot_password(email=email, actor=actor(request))
    return pages.message(
        request,
        title="Check your inbox",
        text=f"If an account exists for {email}, we sent it a link to choose a new password.",
        action=_inbox(request, ("/", "Back to sign in")),
    )


# -- the pages mailed links open -------------------------------------------------------------------------------
@router.get("/reset-password")
async def reset_password_page(request: Request, token: str = "") -> Response:
    try:
        await platform(request).identity.check_reset_token(token=token)
    except InvalidToken:
        return _invalid_link(request)
    return pages.render(request, "reset_password.html", token=token)


@router.post("/reset-password")
async def reset_password(request: Request, token: Secret, password: Secret) -> Response:
    try:
        await platform(request).identity.reset_password(token=token, password=password, actor=actor(request))
    except InvalidToken:
        return _invalid_link(request)
    except DomainError as exc:
        error = messages.explain(exc)
        return pages.render(request, "reset_password.html", status=status_of(exc), token=token, error=error)
    return pages.redirect("/", done="password_reset")


@router.get("/verify-email")
async def verify_email(request: Request, token: str = "") -> Response:
    # Opening the mailed link is the confirmation (as the mail says): the token itself is the proof,
    # which no other site can forge, so this GET needs no CSRF token.
    try:
        user = await platform(request).identity.verify_email(token=token, actor=actor(request))
    except InvalidToken:
        return _invalid_link(request)
    return pages.message(
        request,
        title="Email address confirmed",
        text=f"Thank you: {user.email} is confirmed.",
        action=("/account", "Go to your account"),
    )

"""Passkeys (WebAuthn): registering them, and signing in with them, with the ``webauthn`` library.

The relying party id is the host of ``TENANTRY_BASE_URL`` and the only accepted origin is that URL's.
A challenge is stored server-side, works once, and for ``passkey_challenge_ttl`` (5 minutes).

Three rules this module protects:
- a challenge is spent by one conditional UPDATE, committed BEFORE the response is verified, so a
  replayed or failed response can never be tried again with the same challenge;
- a signature counter must go up (when either side has ever counted): a cloned authenticator shows
  itself by repeating a count, and of two concurrent uses with the same count only one wins;
- a passkey without user verification is only a first factor: a user with TOTP still owes a code.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import parse_authentication_credential_json, parse_client_data_json
from webauthn.helpers import parse_registration_credential_json as parse_registration_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialCreationOptions,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialRequestOptions,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from tenantry.core.clock import utcnow
from tenantry.core.context import Actor
from tenantry.core.errors import InvalidInput, NotFound
from tenantry.core.ids import new_id
from tenantry.db.engine import Database
from tenantry.events.outbox import emit
from tenantry.identity.config import IdentityConfig
from tenantry.identity.errors import InvalidCredential, PasskeyRejected
from tenantry.identity.events import USER_PASSKEY_ADDED, USER_PASSKEY_REMOVED
from tenantry.identity.mfa import MfaService
from tenantry.identity.models import Passkey, User, WebauthnChallenge
from tenantry.identity.views import Channel, PasskeyView, SignIn, UserView

REGISTER = "register"
AUTHENTICATE = "authenticate"
DEFAULT_NAME = "Passkey"
NAME_MAX_LENGTH = 100
CREDENTIAL_ID_MAX_LENGTH = 1023  # WebAuthn Level 3 caps credential ids at 1023 bytes
# Expired challenges are useless; they are kept a little while only so a late answer is refused as
# "expired" rather than "unknown" in the logs, then swept whenever a new challenge is made.
EXPIRED_KEPT_FOR = timedelta(hours=1)
# What a garbled or hostile credential makes the library (or Python under it) raise: the library's
# own errors for what it checks, ValueError (binascii, JSON, CBOR, UTF-8), KeyError, TypeError and
# IndexError for what it trips over. All of them mean "this credential does not verify".
MALFORMED = (WebAuthnException, ValueError, KeyError, TypeError, IndexError, OverflowError)
# Registration options ask for a discoverable credential (sign-in without typing an email) and for
# user verification (so the passkey alone can stand for two factors), preferring but not requiring.
_SELECTION = AuthenticatorSelectionCriteria(
    resident_key=ResidentKeyRequirement.PREFERRED, user_verification=UserVerificationRequirement.PREFERRED
)


class PasskeyService:
    def __init__(self, *, db: Database, config: IdentityConfig, mfa: MfaService) -> None:
        self.db = db
        self.config = config
        self.mfa = mfa

    # -- managing one's passkeys ------------------------------------------------------------------------
    async def registration_options(self, *, user: UserView) -> dict[str, Any]:
        """Creation options (the JSON form of ``PublicKeyCredentialCreationOptions``) for ``user``.
        The user's existing passkeys are excluded, so an authenticator is not registered twice."""
        async with self.db.read() as tx:
            rows = (
                await tx.execute(select(Passkey.credential_id, Passkey.transports).where(Passkey.user_id == user.id))
            ).all()
        options = generate_registration_options(
            rp_id=self.config.rp_id,
            rp_name=self.config.rp_name,
            user_id=user.id.bytes,
            user_name=user.email,
            user_display_name=user.name or user.email,
            timeout=self._timeout_ms,
            authenticator_selection=_SELECTION,
            exclude_credentials=[_descriptor(row.credential_id, row.transports) for row in rows],
        )
        await self._store_challenge(options.challenge, purpose=REGISTER, user_id=user.id)
        return _json(options)

    async def register(self, *, user_id: uuid.UUID, credential: dict[str, Any], name: str, actor: Actor) -> PasskeyView:
        """Verify and keep a new passkey, answering a challenge from :meth:`registration_options`.
        Raises ``InvalidCredential`` (bad attestation, wrong origin or rp id, unknown, expired or used
        challenge, a passkey already registered), ``InvalidInput`` (a name over 100 characters)."""
        label = _name(name, blank=DEFAULT_NAME)
        try:
            parsed = parse_registration_json(credential)
            challenge = parse_client_data_json(parsed.response.client_data_json).challenge
        except MALFORMED as exc:
            raise InvalidCredential("The credential is malformed.") from exc
        # Spent in a transaction of its own, committed before verifying: a failed answer spends it too.
        async with self.db.core_transaction() as tx:
            spent = await tx.execute(
                update(WebauthnChallenge)
                .where(
                    WebauthnChallenge.challenge == challenge,
                    WebauthnChallenge.purpose == REGISTER,
                    WebauthnChallenge.user_id == user_id,
                    WebauthnChallenge.used_at.is_(None),
                    WebauthnChallenge.expires_at > utcnow(),
                )
                .values(used_at=utcnow())
            )
        if spent.rowcount != 1:
            raise InvalidCredential("The challenge is unknown, expired or already used; ask for new options.")
        try:
            verified = verify_registration_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_origin=self.config.origin,
                expected_rp_id=self.config.rp_id,
                require_user_verification=False,
            )
        except MALFORMED as exc:
            raise InvalidCredential(str(exc) or None) from exc
        if len(verified.credential_id) > CREDENTIAL_ID_MAX_LENGTH:
            raise InvalidCredential("The credential id is too long.")
        transports = ",".join(t.value for t in parsed.response.transports or [])[:200] or None
        passkey = Passkey(
            id=new_id(),
            user_id=user_id,
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=transports,
            aaguid=verified.aaguid,
            is_backed_up=verified.credential_backed_up,
            name=label,
            created_at=utcnow(),
        )
        try:
            async with self.db.transaction() as session:
                session.add(passkey)
                await session.flush()
                await emit(session, USER_PASSKEY_ADDED, data=_event_data(passkey), actor=actor)
        except IntegrityError as exc:  # the unique credential id: this authenticator is registered already
            raise InvalidCredential("This passkey is already registered.") from exc
        return _view(passkey)

    async def list(self, *, user_id: uuid.UUID) -> list[PasskeyView]:
        """The user's passkeys, oldest first."""
        async with self.db.read() as tx:
            found = await tx.scalars(
                select(Passkey).where(Passkey.user_id == user_id).order_by(Passkey.created_at, Passkey.id)
            )
            return [_view(p) for p in found]

    async def rename(self, *, user_id: uuid.UUID, passkey_id: uuid.UUID, name: str, actor: Actor) -> PasskeyView:
        """Give a passkey a new name. Raises ``NotFound`` (also for another user's passkey),
        ``InvalidInput`` (a blank name, or one over 100 characters)."""
        label = _name(name, blank=None)
        async with self.db.transaction() as tx:
            passkey = await _own(tx, user_id=user_id, passkey_id=passkey_id)
            passkey.name = label
        return _view(passkey)

    async def remove(self, *, user_id: uuid.UUID, passkey_id: uuid.UUID, actor: Actor) -> None:
        """Delete one of the user's passkeys. Raises ``NotFound`` (also for another user's passkey)."""
        async with self.db.transaction() as tx:
            passkey = await _own(tx, user_id=user_id, passkey_id=passkey_id)
            await tx.delete(passkey)
            await emit(tx, USER_PASSKEY_REMOVED, data=_event_data(passkey), actor=actor)

    # -- signing in --------------------------------------------------------------------------------------
    async def authentication_options(self, *, email: str | None) -> tuple[uuid.UUID, dict[str, Any]]:
        """A challenge id and request options; with no email, any discoverable credential may answer.

        With an email, ``allowCredentials`` lists that user's passkeys; an unknown email answers the
        same shape as an account without passkeys (an empty list). The email only narrows what the
        browser offers: the challenge is not tied to the account, because a challenge that refused
        other passkeys for a known email (and took any for an unknown one) would tell anyone holding a
        passkey of their own which accounts exist. The signature alone decides who signs in."""
        descriptors: list[PublicKeyCredentialDescriptor] = []
        key = (email or "").strip().lower()
        if key:
            async with self.db.read() as tx:
                query = (
                    select(Passkey.credential_id, Passkey.transports)
                    .join(User, User.id == Passkey.user_id)
                    .where(User.email_normalized == key)
                    .order_by(Passkey.created_at)
                )
                descriptors = [_descriptor(r.credential_id, r.transports) for r in (await tx.execute(query)).all()]
        options = generate_authentication_options(
            rp_id=self.config.rp_id,
            timeout=self._timeout_ms,
            allow_credentials=descriptors,
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        challenge_id = await self._store_challenge(options.challenge, purpose=AUTHENTICATE, user_id=None)
        return challenge_id, _json(options)

    async def authenticate(
        self, *, challenge_id: uuid.UUID, credential: dict[str, Any], actor: Actor, channel: Channel = "api"
    ) -> SignIn:
        """Sign in with a passkey: open a session on ``channel``, or, for a user with TOTP whose
        authenticator did not verify them, hand out an ``mfa_token`` instead. Raises ``PasskeyRejected``
        (unknown, expired or used challenge; unknown credential; bad signature; wrong origin or rp id;
        a user handle not the owner's; a signature counter that did not go up; a malformed credential)."""
        try:
            parsed = parse_authentication_credential_json(credential)
        except MALFORMED:
            parsed = None
        async with self.db.core_transaction() as tx:
            expected = await _spend_sign_in_challenge(tx, challenge_id)
            owner = await _owner(tx, parsed.raw_id) if parsed is not None else None
        if parsed is None or owner is None:
            raise PasskeyRejected()
        # Clients send an empty handle for "none" as often as null; only a non-empty one is a claim.
        if parsed.response.user_handle and parsed.response.user_handle != owner.user_id.bytes:
            raise PasskeyRejected()
        try:
            verified = verify_authentication_response(
                credential=parsed,
                expected_challenge=expected,
                expected_rp_id=self.config.rp_id,
                expected_origin=self.config.origin,
                credential_public_key=owner.public_key,
                credential_current_sign_count=owner.sign_count,
                require_user_verification=False,
            )
        except MALFORMED as exc:
            raise PasskeyRejected() from exc
        async with self.db.core_transaction() as tx:
            # Conditional on the count just verified against: of two uses with the same count, one loses.
            used = await tx.execute(
                update(Passkey)
                .where(Passkey.id == owner.id, Passkey.sign_count == owner.sign_count)
                .values(
                    sign_count=verified.new_sign_count,
                    last_used_at=utcnow(),
                    is_backed_up=verified.credential_backed_up,
                )
            )
            if used.rowcount != 1:
                raise PasskeyRejected()
            has_mfa = owner.mfa_enabled_at is not None and not verified.user_verified
            return await self.mfa.sign_in(
                tx, user_id=owner.user_id, has_mfa=has_mfa, channel=channel, actor=actor.as_user(owner.user_id)
            )

    # -- internals ---------------------------------------------------------------------------------------
    @property
    def _timeout_ms(self) -> int:
        return int(self.config.passkey_challenge_ttl.total_seconds() * 1000)

    async def _store_challenge(self, challenge: bytes, *, purpose: str, user_id: uuid.UUID | None) -> uuid.UUID:
        """Keep a fresh challenge; sweep the ones long expired so the table does not grow forever."""
        challenge_id, now = new_id(), utcnow()
        async with self.db.core_transaction() as tx:
            await tx.execute(delete(WebauthnChallenge).where(WebauthnChallenge.expires_at < now - EXPIRED_KEPT_FOR))
            await tx.execute(
                insert(WebauthnChallenge.__table__),  # type: ignore[arg-type]
                {
                    "id": challenge_id,
                    "purpose": purpose,
                    "user_id": user_id,
                    "challenge": challenge,
                    "created_at": now,
                    "expires_at": now + self.config.passkey_challenge_ttl,
                    "used_at": None,
                },
            )
        return challenge_id


async def _spend_sign_in_challenge(tx: AsyncConnection, challenge_id: uuid.UUID) -> bytes:
    """Mark a live sign-in challenge used and return it. Raises ``PasskeyRejected`` for an unknown,
    expired or used one."""
    now = utcnow()
    row = (
        await tx.execute(
            update(WebauthnChallenge)
            .where(
                WebauthnChallenge.id == challenge_id,
                WebauthnChallenge.purpose == AUTHENTICATE,
                WebauthnChallenge.used_at.is_(None),
                WebauthnChallenge.expires_at > now,
            )
            .values(used_at=now)
            .returning(WebauthnChallenge.challenge)
        )
    ).first()
    if row is None:
        raise PasskeyRejected("The sign-in attempt is unknown, expired or already used; ask for new options.")
    challenge: bytes = row.challenge
    return challenge


async def _owner(tx: AsyncConnection, credential_id: bytes) -> Row[Any] | None:
    """The passkey with ``credential_id``, with what sign-in needs of its owner."""
    query = (
        select(
            Passkey.id,
            Passkey.user_id,
            Passkey.public_key,
            Passkey.sign_count,
            User.mfa_enabled_at,
        )
        .join(User, User.id == Passkey.user_id)
        .where(Passkey.credential_id == credential_id)
    )
    return (await tx.execute(query)).first()


async def _own(tx: AsyncSession, *, user_id: uuid.UUID, passkey_id: uuid.UUID) -> Passkey:
    passkey = await tx.get(Passkey, passkey_id)
    if passkey is None or passkey.user_id != user_id:
        raise NotFound("No such passkey.")
    return passkey


def _name(raw: str, *, blank: str | None) -> str:
    name = raw.strip()
    if not name and blank is not None:
        return blank
    if not name:
        raise InvalidInput("A passkey needs a name.", field="name")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidInput(f"A passkey's name has at most {NAME_MAX_LENGTH} characters.", field="name")
    return name


def _descriptor(credential_id: bytes, transports: str | None) -> PublicKeyCredentialDescriptor:
    known = {t.value: t for t in AuthenticatorTransport}
    listed = [known[t] for t in (transports or "").split(",") if t in known]
    return PublicKeyCredentialDescriptor(id=credential_id, transports=listed or None)


def _json(options: PublicKeyCredentialCreationOptions | PublicKeyCredentialRequestOptions) -> dict[str, Any]:
    """The options as a browser's ``PublicKeyCredential.parse*OptionsFromJSON`` takes them."""
    found = orjson.loads(options_to_json(options))
    assert isinstance(found, dict)
    return found


def _event_data(passkey: Passkey) -> dict[str, Any]:
    return {
        "user": {"id": str(passkey.user_id)},
        "passkey": {"id": str(passkey.id), "name": passkey.name, "created_at": passkey.created_at.isoformat()},
    }


def _view(passkey: Passkey) -> PasskeyView:
    return PasskeyView(
        id=passkey.id,
        name=passkey.name,
        created_at=passkey.created_at,
        last_used_at=passkey.last_used_at,
        is_backed_up=passkey.is_backed_up,
    )

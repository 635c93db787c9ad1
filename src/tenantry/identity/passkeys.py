"""Passkeys (WebAuthn): registering them, and signing in with them, with the ``webauthn`` library.

The relying party id is the host of ``TENANTRY_BASE_URL`` and the only accepted origin is that URL's.
A challenge is stored server-side, works once, and for ``passkey_challenge_ttl`` (5 minutes).
"""

from __future__ import annotations

import uuid
from typing import Any

from tenantry.core.context import Actor
from tenantry.db.engine import Database
from tenantry.identity.auth import Authenticator
from tenantry.identity.config import IdentityConfig
from tenantry.identity.mfa import MfaService
from tenantry.identity.views import Channel, PasskeyView, SignIn, UserView


class PasskeyService:
    def __init__(self, *, db: Database, config: IdentityConfig, mfa: MfaService, auth: Authenticator) -> None:
        self.db = db
        self.config = config
        self.mfa = mfa
        self.auth = auth

    async def registration_options(self, *, user: UserView) -> dict[str, Any]:
        """Creation options (the JSON form of ``PublicKeyCredentialCreationOptions``) for ``user``."""
        raise NotImplementedError

    async def register(self, *, user_id: uuid.UUID, credential: dict[str, Any], name: str, actor: Actor) -> PasskeyView:
        """Verify and keep a new passkey. Raises ``InvalidCredential``."""
        raise NotImplementedError

    async def list(self, *, user_id: uuid.UUID) -> list[PasskeyView]:
        """The user's passkeys, oldest first."""
        raise NotImplementedError

    async def rename(self, *, user_id: uuid.UUID, passkey_id: uuid.UUID, name: str, actor: Actor) -> PasskeyView:
        """Give a passkey a new name. Raises ``NotFound``."""
        raise NotImplementedError

    async def remove(self, *, user_id: uuid.UUID, passkey_id: uuid.UUID, actor: Actor) -> None:
        """Delete one of the user's passkeys. Raises ``NotFound``."""
        raise NotImplementedError

    async def authentication_options(self, *, email: str | None) -> tuple[uuid.UUID, dict[str, Any]]:
        """A challenge id and request options; with no email, any discoverable credential may answer."""
        raise NotImplementedError

    async def authenticate(
        self, *, challenge_id: uuid.UUID, credential: dict[str, Any], actor: Actor, channel: Channel = "api"
    ) -> SignIn:
        """Sign in with a passkey. Raises ``PasskeyRejected``."""
        raise NotImplementedError

"""Signing keys for access tokens (Ed25519, EdDSA JWTs) and the JWKS that publishes them.

Keys live in ``<data dir>/keys/signing-keys.json`` (mode 0600). The newest key signs; older keys
stay published, and keep verifying, until every token they signed has expired. Processes notice a
rotation made by another process (``tenantry keys rotate``) by the file's change stamp.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from tenantry.core.clock import utcnow

ALGORITHM = "EdDSA"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    created_at: datetime
    retired_at: datetime | None

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(self.public_key))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}


def _serialize(key: SigningKey) -> dict[str, Any]:
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "kid": key.kid,
        "private_key": pem.decode(),
        "created_at": key.created_at.isoformat(),
        "retired_at": key.retired_at.isoformat() if key.retired_at else None,
    }


def _deserialize(raw: dict[str, Any]) -> SigningKey:
    private_key = serialization.load_pem_private_key(raw["private_key"].encode(), password=None)
    assert isinstance(private_key, Ed25519PrivateKey)
    retired = raw.get("retired_at")
    return SigningKey(
        kid=raw["kid"],
        private_key=private_key,
        created_at=datetime.fromisoformat(raw["created_at"]),
        retired_at=datetime.fromisoformat(retired) if retired else None,
    )


def _new_key() -> SigningKey:
    return SigningKey(
        kid=uuid.uuid4().hex[:16], private_key=Ed25519PrivateKey.generate(), created_at=utcnow(), retired_at=None
    )


class KeyRing:
    """The signing keys of this deployment, as kept in one file."""

    def __init__(self, directory: Path, *, token_ttl: timedelta) -> None:
        self.path = directory / "signing-keys.json"
        self.token_ttl = token_ttl
        self._keys: list[SigningKey] = []
        self._stamp: tuple[int, int] | None = None
        self._checked_at = 0.0

    # -- file handling -------------------------------------------------------------------------
    def _locked_update(self, change: Any) -> None:
        """Read, change and rewrite the key file under an exclusive lock (several processes start at once)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = self._read()
            keys = change(keys)
            if keys is not None:
                temporary = self.path.with_suffix(".tmp")
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    json.dump({"keys": [_serialize(k) for k in keys]}, handle)
                os.replace(temporary, self.path)
        self._load()

    def _read(self) -> list[SigningKey]:
        if not self.path.exists():
            return []
        return [_deserialize(raw) for raw in json.loads(self.path.read_text())["keys"]]

    def _load(self) -> None:
        st = os.stat(self.path)
        self._stamp = (st.st_ino, st.st_mtime_ns)
        self._keys = self._read()

    def _reload_if_changed(self, *, every: float = 1.0) -> None:
        now = time.monotonic()
        if now - self._checked_at < every:
            return
        self._checked_at = now
        st = os.stat(self.path)
        if (st.st_ino, st.st_mtime_ns) != self._stamp:
            self._load()

    # -- public ------------------------------------------------------------------------------------
    def load_or_create(self) -> None:
        """Load the keys, making the first one if there is none yet."""
        self._locked_update(lambda keys: None if keys else [_new_key()])

    def rotate(self) -> str:
        """Add a new signing key; the previous ones retire now and are dropped once their tokens expire."""
        fresh = _new_key()

        def change(keys: list[SigningKey]) -> list[SigningKey]:
            now = utcnow()
            kept = [k for k in keys if k.retired_at is None or k.retired_at + self.token_ttl * 2 > now]
            retired = [k if k.retired_at else SigningKey(k.kid, k.private_key, k.created_at, now) for k in kept]
            return [*retired, fresh]

        self._locked_update(change)
        return fresh.kid

    @property
    def active(self) -> SigningKey:
        self._reload_if_changed()
        return self._keys[-1]

    def public_keys(self) -> list[dict[str, Any]]:
        """The JWKS ``keys``: every key whose tokens may still be alive."""
        self._reload_if_changed()
        now = utcnow()
        return [k.public_jwk() for k in self._keys if k.retired_at is None or k.retired_at + self.token_ttl * 2 > now]

    def verification_key(self, kid: str) -> Ed25519PublicKey | None:
        for key in self._keys:
            if key.kid == kid:
                return key.public_key
        # Maybe another process just rotated and signs with the new key: look now (one stat), not
        # after a pause, or a valid token would be refused in the moments after a rotation.
        self._reload_if_changed(every=0)
        return next((k.public_key for k in self._keys if k.kid == kid), None)

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.active
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})

    def verify(self, token: str, *, issuer: str) -> dict[str, Any] | None:
        """The claims of a valid, unexpired token signed by one of our keys, else ``None``."""
        try:
            header = jwt.get_unverified_header(token)
            key = self.verification_key(str(header.get("kid", "")))
            if key is None:
                return None
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=issuer,
                options={"require": ["exp", "iat", "sub", "sid", "jti", "iss"]},
            )
        except jwt.PyJWTError:
            return None
        return claims

"""Secrets kept at rest: sealed with AES-256-GCM, or reduced to a keyed hash.

A TOTP seed must be read back to check a code, so it cannot be hashed like a password; it is
sealed instead, with the owner's id as associated data, so that a sealed value copied onto another
row does not open. Recovery codes are only ever compared, so they are kept as an HMAC under a
sub-key of the same key: a copy of the database alone is not enough to test guesses offline.

The key comes from ``TENANTRY_ENCRYPTION_KEY`` (32 bytes, base64url) or, unset, from a file
under the data dir made on first use. Every process of a deployment must use the same key.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_FILE = "encryption.key"
_VERSION = "v1"


class SealError(Exception):
    """A sealed value that does not open: another key, another owner, or tampered with."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    # validate=True: the lenient default silently drops characters outside the alphabet.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def parse_key(text: str) -> bytes:
    """A key as written in settings. Raises ``ValueError`` unless it is 32 bytes of base64url."""
    try:
        key = _b64decode(text.strip().rstrip("="))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("TENANTRY_ENCRYPTION_KEY is not base64url") from exc
    if len(key) != 32:
        raise ValueError("TENANTRY_ENCRYPTION_KEY must decode to 32 bytes")
    return key


def load_or_create_key(directory: Path) -> bytes:
    """The key kept in ``directory``, made (mode 0600) by whichever process gets there first."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / KEY_FILE
    with open(directory / f"{KEY_FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(_b64encode(secrets.token_bytes(32)) + "\n")
        return parse_key(path.read_text())


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        # Sub-keys, so the cipher key is never also used as a MAC key.
        self._mac_key = hmac.digest(key, b"tenantry/recovery-code", "sha256")
        self.key_id = hashlib.sha256(key).hexdigest()[:8]

    def seal(self, plaintext: bytes, *, owner: bytes) -> str:
        """``plaintext`` encrypted and authenticated, bound to ``owner``."""
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext, owner)
        return f"{_VERSION}.{self.key_id}.{_b64encode(nonce + sealed)}"

    def open(self, sealed: str, *, owner: bytes) -> bytes:
        """The plaintext of a value made by :meth:`seal` for ``owner``. Raises ``SealError``."""
        version, key_id, body = [*sealed.split(".", 2), "", ""][:3]
        if version != _VERSION or key_id != self.key_id:
            raise SealError("sealed with another key")
        raw = _b64decode(body)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], owner)
        except InvalidTag as exc:
            raise SealError("the sealed value does not open") from exc

    def mac(self, text: str) -> str:
        """A keyed hash of a short secret (a recovery code), as stored in its place."""
        return hmac.new(self._mac_key, text.encode(), "sha256").hexdigest()

    @classmethod
    def for_deployment(cls, *, configured: str | None, data_dir: Path) -> Sealer:
        return cls(parse_key(configured) if configured else load_or_create_key(data_dir / "keys"))

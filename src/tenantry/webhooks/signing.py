"""Standard Webhooks signatures (https://www.standardwebhooks.com), so its published verifiers accept ours.

The secret is ``whsec_`` + base64 of random bytes; the signed content is ``{id}.{timestamp}.{body}``;
the header holds ``v1,<base64 HMAC-SHA256>``, several space-separated while a rotated-out secret
still signs beside the new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec allows 24 to 64


def new_secret() -> str:
    """A fresh signing secret, as shown to the endpoint's owner."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a secret stands for: its base64 part, decoded."""
    return base64.b64decode(secret.removeprefix(PREFIX))


class Signer:
    """Signs for one endpoint: one ``v1,…`` per key (the current secret, and a rotated-out one for a day).

    Each key's HMAC state is made once and copied for every message, rather than set up afresh per
    signature (OpenSSL 3 looks the digest up again each time a one-shot HMAC starts)."""

    __slots__ = ("_macs",)

    def __init__(self, keys: Iterable[bytes]) -> None:
        self._macs = tuple(hmac.new(key, digestmod=hashlib.sha256) for key in keys)

    def __len__(self) -> int:
        """How many keys it signs with (0: the secret could not be opened, nothing can be signed)."""
        return len(self._macs)

    def sign(self, *, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` header value."""
        content = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
        signatures = []
        for base in self._macs:
            mac = base.copy()
            mac.update(content)
            signatures.append("v1," + base64.b64encode(mac.digest()).decode())
        return " ".join(signatures)

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


def sign(keys: Iterable[bytes], *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: one ``v1,…`` per key."""
    content = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    return " ".join("v1," + base64.b64encode(hmac.digest(key, content, hashlib.sha256)).decode() for key in keys)

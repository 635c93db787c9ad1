"""A software WebAuthn authenticator (and the browser in front of it), for driving passkey ceremonies.

It holds one EC P-256 credential, answers ``navigator.credentials.create()`` with a "none" attestation
and ``navigator.credentials.get()`` with an ES256 assertion, and has knobs for what a test needs to
get wrong on purpose: the origin, the rp id, user verification, the counter and the user handle.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

ORIGIN = "http://testserver"
RP_ID = "testserver"

# Authenticator data flags (WebAuthn §6.1).
UP = 0x01  # user present
UV = 0x04  # user verified
BE = 0x08  # backup eligible
BS = 0x10  # backed up
AT = 0x40  # attested credential data included

_UNSET: Any = object()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftAuthenticator:
    origin: str = ORIGIN
    rp_id: str = RP_ID
    user_verification: bool = True
    backed_up: bool = False
    counter: int = 0
    # Bumped by each assertion (a real authenticator's count goes up); 0 keeps it at zero for good.
    counter_step: int = 1
    aaguid: bytes = bytes(16)
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    # Learnt from the creation options (user.id); sent back in assertions, as a discoverable credential does.
    user_handle: bytes | None = None

    @property
    def id(self) -> str:
        return b64url(self.credential_id)

    # -- building blocks -----------------------------------------------------------------------------------
    def cose_public_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})

    def authenticator_data(
        self, *, rp_id: str, user_verified: bool, counter: int, attested: bool = False, user_present: bool = True
    ) -> bytes:
        flags = (UP if user_present else 0) | (UV if user_verified else 0) | BE | (BS if self.backed_up else 0)
        data = hashlib.sha256(rp_id.encode()).digest()
        if attested:
            flags |= AT
        data += bytes([flags]) + struct.pack(">I", counter)
        if attested:
            data += self.aaguid + struct.pack(">H", len(self.credential_id)) + self.credential_id
            data += self.cose_public_key()
        return data

    @staticmethod
    def client_data(kind: str, challenge: str, origin: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}).encode()

    # -- ceremonies ----------------------------------------------------------------------------------------------
    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        user_verified: bool | None = None,
        challenge: str | None = None,
    ) -> dict[str, Any]:
        """Answer creation options (their JSON form) as a browser's ``credential.toJSON()`` would."""
        self.user_handle = from_b64url(options["user"]["id"])
        client_data = self.client_data("webauthn.create", challenge or options["challenge"], origin or self.origin)
        auth_data = self.authenticator_data(
            rp_id=rp_id or self.rp_id,
            user_verified=self.user_verification if user_verified is None else user_verified,
            counter=self.counter,
            attested=True,
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal", "hybrid"],
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        user_verified: bool | None = None,
        counter: int | None = None,
        user_handle: bytes | None = _UNSET,
    ) -> dict[str, Any]:
        """Answer request options (their JSON form) with an assertion, signed with ES256."""
        if counter is None:
            self.counter += self.counter_step
            counter = self.counter
        client_data = self.client_data("webauthn.get", options["challenge"], origin or self.origin)
        auth_data = self.authenticator_data(
            rp_id=rp_id or self.rp_id,
            user_verified=self.user_verification if user_verified is None else user_verified,
            counter=counter,
        )
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        handle = self.user_handle if user_handle is _UNSET else user_handle
        return {
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(handle) if handle is not None else None,
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        }

"""Signing keys: rotation keeps old tokens verifiable, other processes notice, expired keys go."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import jwt

from tenantry.identity.signing import KeyRing

ISSUER = "http://testserver"


def _claims() -> dict[str, object]:
    now = int(time.time())
    return {"iss": ISSUER, "sub": "u", "sid": "s", "iat": now, "exp": now + 60, "jti": "j"}


def test_a_rotated_ring_signs_with_the_new_key_and_still_verifies_the_old_one(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path, token_ttl=timedelta(minutes=15))
    ring.load_or_create()
    old_token = ring.sign(_claims())

    new_kid = ring.rotate()
    new_token = ring.sign(_claims())

    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert ring.verify(old_token, issuer=ISSUER) is not None
    assert ring.verify(new_token, issuer=ISSUER) is not None
    assert len(ring.public_keys()) == 2


def test_another_process_notices_a_rotation(tmp_path: Path) -> None:
    server = KeyRing(tmp_path, token_ttl=timedelta(minutes=15))
    server.load_or_create()
    cli = KeyRing(tmp_path, token_ttl=timedelta(minutes=15))
    cli.load_or_create()

    new_kid = cli.rotate()
    token = cli.sign(_claims())

    assert server.verify(token, issuer=ISSUER) is not None  # an unknown kid makes it reread the file
    server._checked_at = 0  # the periodic check is due
    assert new_kid in {k["kid"] for k in server.public_keys()}


def test_keys_retired_longer_than_their_tokens_live_are_dropped(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path, token_ttl=timedelta(seconds=0))
    ring.load_or_create()
    first = ring.active.kid

    ring.rotate()
    ring.rotate()

    assert first not in {k["kid"] for k in ring.public_keys()}


def test_a_token_for_another_issuer_or_algorithm_is_refused(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path, token_ttl=timedelta(minutes=15))
    ring.load_or_create()
    other_issuer = ring.sign({**_claims(), "iss": "https://evil.example"})
    hs256 = jwt.encode(
        _claims(), "secret-of-32-bytes-or-more-for-hmac!", algorithm="HS256", headers={"kid": ring.active.kid}
    )

    assert ring.verify(other_issuer, issuer=ISSUER) is None
    assert ring.verify(hs256, issuer=ISSUER) is None


def test_the_key_file_is_private(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path, token_ttl=timedelta(minutes=15))
    ring.load_or_create()

    assert (tmp_path / "signing-keys.json").stat().st_mode & 0o077 == 0


def test_a_token_signed_right_after_another_process_rotated_is_accepted_at_once(tmp_path: Path) -> None:
    server = KeyRing(tmp_path, token_ttl=timedelta(minutes=15))
    server.load_or_create()
    server.public_keys()  # the server has just looked at the key file
    cli = KeyRing(tmp_path, token_ttl=timedelta(minutes=15))
    cli.load_or_create()

    cli.rotate()
    token = cli.sign(_claims())

    assert server.verify(token, issuer=ISSUER) is not None

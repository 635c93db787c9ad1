"""REST routes of passkeys: registering them (signed in) and signing in with them."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["passkeys"])

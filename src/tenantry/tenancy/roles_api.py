"""REST routes of roles (thin: parse, authenticate, call one service method, shape)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["organizations"])

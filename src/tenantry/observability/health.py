"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: its dependencies answer)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import text

from tenantry.http.deps import PlatformDep

router = APIRouter(tags=["operations"])

_OK = b'{"status":"ok"}'


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Response:
    return Response(_OK, media_type="application/json")


@router.get("/readyz", summary="The process can serve: database (and Redis) reachable")
async def readyz(platform: PlatformDep) -> Response:
    checks: dict[str, str] = {}
    try:
        async with platform.db.reader.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    if platform.redis is not None:
        try:
            await platform.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    import orjson

    body = orjson.dumps({"status": "ok" if ready else "unavailable", "checks": checks})
    return Response(body, status_code=200 if ready else 503, media_type="application/json")

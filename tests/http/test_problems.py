"""Hostile and malformed input: every answer is RFC 9457 problem+json with a stable code."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.factories.identity import signed_in


def _is_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]


async def test_malformed_json_is_a_malformed_request(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/auth/login", content=b'{"email": "a@b.c", "password":', headers={"content-type": "application/json"}
    )

    _is_problem(response, 400, "malformed_request")


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null"])
async def test_json_of_the_wrong_shape_is_refused(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/v1/auth/login", content=body, headers={"content-type": "application/json"})

    assert response.status_code in (400, 422)
    assert response.json()["code"] in ("malformed_request", "validation_error")


async def test_an_oversized_body_is_refused_before_it_is_read(client: httpx.AsyncClient) -> None:
    big = b'{"email": "' + b"a" * (1024 * 1024 + 10) + b'"}'

    response = await client.post("/v1/auth/signup", content=big, headers={"content-type": "application/json"})

    _is_problem(response, 413, "payload_too_large")


async def test_an_oversized_body_without_a_length_is_refused_too(client: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * (64 * 1024)

    response = await client.post("/v1/auth/signup", content=chunks(), headers={"content-type": "application/json"})

    _is_problem(response, 413, "payload_too_large")


async def test_an_unknown_route_is_not_found(client: httpx.AsyncClient) -> None:
    _is_problem(await client.get("/v1/nothing-here"), 404, "not_found")


async def test_a_wrong_method_is_method_not_allowed(client: httpx.AsyncClient) -> None:
    _is_problem(await client.delete("/v1/auth/login"), 405, "method_not_allowed")


async def test_a_bad_path_parameter_is_a_validation_error(client: httpx.AsyncClient) -> None:
    account = await signed_in(client)

    response = await client.delete("/v1/me/sessions/not-a-uuid", headers=account.headers)

    _is_problem(response, 422, "validation_error")


async def test_an_unexpected_error_is_a_500_with_the_request_id(app: FastAPI) -> None:
    @app.get("/v1/explode")
    async def explode() -> None:
        raise RuntimeError("boom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/v1/explode", headers={"X-Request-Id": "trace-me-123"})

    _is_problem(response, 500, "internal_error")
    assert response.json()["request_id"] == "trace-me-123"
    assert "boom" not in response.text  # internals stay in the log


async def test_a_hostile_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces<script>"})

    assert response.headers["x-request-id"] != "bad id\twith spaces<script>"
    assert len(response.headers["x-request-id"]) == 32


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


async def test_the_openapi_document_lists_the_identity_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    for path in ("/v1/auth/signup", "/v1/auth/login", "/v1/auth/refresh", "/v1/me", "/v1/me/sessions/{session_id}"):
        assert path in paths

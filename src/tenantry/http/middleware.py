"""Pure ASGI middleware (no per-request task or body copy, unlike ``BaseHTTPMiddleware``).

``RequestContext`` gives every request an id (echoed as ``X-Request-Id``, bound into logs and
problem bodies), refuses bodies over the size limit before they are read, and logs the outcome.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantry.http.context import request_id
from tenantry.http.problems import internal_error, problem

log = structlog.get_logger("tenantry.access")

EXTRA_HEADERS = "tenantry.response_headers"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContext:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, access_log: bool = True) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        rid = incoming if incoming and _SAFE_ID.match(incoming) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        started_response = False
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                # Inner layers (the rate limits) leave their response headers in the scope: one wrapper
                # of ``send`` per request instead of one per layer.
                message["headers"] = [*message.get("headers", []), header, *scope.get(EXTRA_HEADERS, ())]
            await send(message)

        try:
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                response = problem(
                    413, "payload_too_large", "Payload too large", f"Bodies are limited to {self.max_body_bytes} bytes."
                )
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        except Exception:
            # Answered here, inside the request's context, so the 500 carries its request id.
            log.exception("request.failed", method=scope["method"], path=scope["path"], request_id=rid)
            if started_response:
                raise
            await internal_error()(scope, receive, send_with_id)
        finally:
            if self.access_log:
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 2),
                    request_id=rid,
                )
            request_id.reset(token)

    def _limited(self, receive: Receive) -> Receive:
        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"Bodies are limited to {limit} bytes.")
            return message

        return limited_receive

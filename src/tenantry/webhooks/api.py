"""REST routes of webhooks (thin: parse, authenticate, call one service method, shape)."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from tenantry.http.deps import CallerDep, PlatformDep
from tenantry.webhooks import schemas
from tenantry.webhooks.service import DeliveryView, EndpointView, WebhookService

router = APIRouter(prefix="/v1", tags=["webhooks"])
Cursor = Annotated[str | None, Query(max_length=200)]
Limit = Annotated[int, Query(ge=1, le=200)]
ENDPOINT = "/orgs/{org_id}/webhooks/{endpoint_id}"


def _endpoint(view: EndpointView) -> schemas.Endpoint:
    return schemas.Endpoint(**asdict(view))


def _delivery(view: DeliveryView) -> schemas.DeliveryOut:
    return schemas.DeliveryOut.model_validate(asdict(view))


@router.get("/webhooks/event-types", summary="Every event the platform emits, with a JSON Schema of its data")
async def list_event_types() -> schemas.EventTypeList:
    items = [
        schemas.EventType(name=t.name, description=t.description, scope=t.scope, schema_=t.schema)
        for t in WebhookService.event_types()
    ]
    return schemas.EventTypeList(items=items)


@router.post("/orgs/{org_id}/webhooks", status_code=status.HTTP_201_CREATED, summary="Add a webhook endpoint")
async def create_endpoint(
    org_id: uuid.UUID, body: schemas.EndpointCreate, platform: PlatformDep, caller: CallerDep
) -> schemas.NewEndpoint:
    new = await platform.webhooks.create(caller=caller, org_id=org_id, **body.model_dump())
    return schemas.NewEndpoint(**asdict(new.view), secret=new.secret)


@router.get("/orgs/{org_id}/webhooks", summary="The organization's webhook endpoints")
async def list_endpoints(
    org_id: uuid.UUID, platform: PlatformDep, caller: CallerDep, cursor: Cursor = None, limit: Limit = 50
) -> schemas.EndpointPage:
    page = await platform.webhooks.list(caller=caller, org_id=org_id, cursor=cursor, limit=limit)
    return schemas.EndpointPage(items=[_endpoint(e) for e in page.items], next_cursor=page.next_cursor)


@router.get(ENDPOINT, summary="One webhook endpoint (without its secret)")
async def get_endpoint(
    org_id: uuid.UUID, endpoint_id: uuid.UUID, platform: PlatformDep, caller: CallerDep
) -> schemas.Endpoint:
    return _endpoint(await platform.webhooks.get(caller=caller, org_id=org_id, endpoint_id=endpoint_id))


@router.patch(ENDPOINT, summary="Change a webhook endpoint, or enable or disable it")
async def update_endpoint(
    org_id: uuid.UUID, endpoint_id: uuid.UUID, body: schemas.EndpointUpdate, platform: PlatformDep, caller: CallerDep
) -> schemas.Endpoint:
    changes = body.model_dump(exclude_unset=True)
    view = await platform.webhooks.update(caller=caller, org_id=org_id, endpoint_id=endpoint_id, changes=changes)
    return _endpoint(view)


@router.delete(ENDPOINT, status_code=status.HTTP_204_NO_CONTENT, summary="Remove a webhook endpoint")
async def delete_endpoint(
    org_id: uuid.UUID, endpoint_id: uuid.UUID, platform: PlatformDep, caller: CallerDep
) -> Response:
    await platform.webhooks.delete(caller=caller, org_id=org_id, endpoint_id=endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(ENDPOINT + "/secret", summary="The endpoint's signing secret")
async def get_secret(
    org_id: uuid.UUID, endpoint_id: uuid.UUID, platform: PlatformDep, caller: CallerDep
) -> schemas.Secret:
    return schemas.Secret(secret=await platform.webhooks.secret(caller=caller, org_id=org_id, endpoint_id=endpoint_id))


@router.post(ENDPOINT + "/rotate-secret", summary="A new signing secret; the old one signs beside it for 24 hours")
async def rotate_secret(
    org_id: uuid.UUID, endpoint_id: uuid.UUID, platform: PlatformDep, caller: CallerDep
) -> schemas.Secret:
    secret = await platform.webhooks.rotate_secret(caller=caller, org_id=org_id, endpoint_id=endpoint_id)
    return schemas.Secret(secret=secret)


@router.post(
    ENDPOINT + "/test", status_code=status.HTTP_202_ACCEPTED, summary="Send a webhook.test event to this endpoint"
)
async def send_test(
    org_id: uuid.UUID, endpoint_id: uuid.UUID, platform: PlatformDep, caller: CallerDep
) -> schemas.TestSent:
    event_id = await platform.webhooks.send_test(caller=caller, org_id=org_id, endpoint_id=endpoint_id)
    return schemas.TestSent(event_id=event_id)


@router.get(ENDPOINT + "/deliveries", summary="The endpoint's deliveries, newest first, with every attempt")
async def list_deliveries(
    org_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    platform: PlatformDep,
    caller: CallerDep,
    status: schemas.Status | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> schemas.DeliveryPage:
    page = await platform.webhooks.deliveries(
        caller=caller, org_id=org_id, endpoint_id=endpoint_id, status=status, cursor=cursor, limit=limit
    )
    return schemas.DeliveryPage(items=[_delivery(d) for d in page.items], next_cursor=page.next_cursor)


@router.get(
    ENDPOINT + "/deliveries/{delivery_id}", summary="One delivery, with every attempt and its whole logged answer"
)
async def get_delivery(
    org_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID, platform: PlatformDep, caller: CallerDep
) -> schemas.DeliveryOut:
    view = await platform.webhooks.delivery(
        caller=caller, org_id=org_id, endpoint_id=endpoint_id, delivery_id=delivery_id
    )
    return _delivery(view)


@router.post(
    ENDPOINT + "/deliveries/{delivery_id}/retry", status_code=status.HTTP_202_ACCEPTED, summary="One more attempt, now"
)
async def retry_delivery(
    org_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID, platform: PlatformDep, caller: CallerDep
) -> schemas.Retrying:
    await platform.webhooks.retry(caller=caller, org_id=org_id, endpoint_id=endpoint_id, delivery_id=delivery_id)
    return schemas.Retrying(delivery_id=delivery_id)


@router.post(
    ENDPOINT + "/recover", status_code=status.HTTP_202_ACCEPTED, summary="Send again every failed delivery since a time"
)
async def recover(
    org_id: uuid.UUID, endpoint_id: uuid.UUID, body: schemas.Recover, platform: PlatformDep, caller: CallerDep
) -> schemas.Recovering:
    count = await platform.webhooks.recover(caller=caller, org_id=org_id, endpoint_id=endpoint_id, since=body.since)
    return schemas.Recovering(deliveries=count)

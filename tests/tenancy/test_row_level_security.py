"""Tenant isolation's second wall: on PostgreSQL, row-level security alone keeps organizations apart,
even for a query that forgot its ``WHERE org_id = …``; and the first wall fails closed everywhere."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError

from tenantry.db import scope
from tenantry.db.base import Base
from tenantry.platform import Platform
from tenantry.tenancy import models as tenancy
from tenantry.tenancy.models import Membership, Organization, Team
from tenantry.webhooks import models as webhooks
from tests.factories.tenancy import add_member, create_org

postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
# Tables with an org_id that are not tenant data: the outbox names an event's organization to route it.
NOT_TENANT_DATA = {"events_outbox"}
ORG_SCOPED_TABLES = tenancy.ORG_SCOPED_TABLES + webhooks.ORG_SCOPED_TABLES


def test_every_table_with_an_organization_is_org_scoped() -> None:
    with_org = {t.name for t in Base.metadata.sorted_tables if "org_id" in t.c} - NOT_TENANT_DATA
    assert with_org | {"tenancy_organization"} == set(ORG_SCOPED_TABLES)


@pytest.mark.parametrize("org_id", [None, "", str(uuid.uuid4())])
async def test_a_transaction_cannot_be_scoped_without_an_organization(platform: Platform, org_id: object) -> None:
    async with platform.db.read() as tx:
        with pytest.raises(TypeError, match="needs an organization"):
            await scope.to_org(tx, org_id)  # type: ignore[arg-type]


@postgresql_only
async def test_the_application_role_is_subject_to_row_level_security(platform: Platform) -> None:
    async with platform.db.read() as tx:
        me = (
            await tx.execute(
                text("SELECT r.rolname, r.rolsuper, r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user")
            )
        ).one()
        tables = (
            await tx.execute(
                text(
                    "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) AS owner,"
                    " (SELECT count(*) FROM pg_policies p WHERE p.tablename = c.relname) AS policies"
                    " FROM pg_class c WHERE c.relname = ANY(:names)"
                ),
                {"names": list(ORG_SCOPED_TABLES)},
            )
        ).all()
    assert me.rolname == "tenantry_app"
    assert not me.rolsuper
    assert not me.rolbypassrls
    assert {t.relname for t in tables} == set(ORG_SCOPED_TABLES)
    for table in tables:
        assert table.relrowsecurity, table.relname
        assert table.relforcerowsecurity, table.relname
        assert table.policies == 1, table.relname
        assert table.owner != me.rolname, table.relname


@postgresql_only
async def test_row_level_security_alone_hides_another_organizations_rows(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    a, b = await create_org(client), await create_org(client)
    await add_member(client, b, platform)
    a_id, b_id = uuid.UUID(a.id), uuid.UUID(b.id)
    async with platform.db.transaction() as tx:
        await scope.to_org(tx, b_id)
        tx.add(Team(org_id=b_id, name="B's secret team"))

    async with platform.db.read() as tx:
        await scope.to_org(tx, a_id)
        # Each query "forgot" its org filter: the database alone decides what it sees.
        orgs = (await tx.scalars(select(Organization.id))).all()
        members = await tx.scalar(select(func.count()).select_from(Membership))
        teams = (await tx.scalars(select(Team.name))).all()
    async with platform.db.read() as tx:
        unscoped_to_nothing = await tx.scalar(select(func.count()).select_from(Membership))

    assert orgs == [a_id]
    assert members == 1  # A's owner only; B has two members
    assert teams == []
    assert unscoped_to_nothing == 0


@postgresql_only
async def test_row_level_security_refuses_to_write_into_another_organization(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    a, b = await create_org(client), await create_org(client)

    async def join_b_while_scoped_to_a() -> None:
        async with platform.db.transaction() as tx:
            await scope.to_org(tx, uuid.UUID(a.id))
            await tx.execute(
                insert(Membership.__table__),  # type: ignore[arg-type]
                {"org_id": uuid.UUID(b.id), "user_id": uuid.UUID(a.owner.user_id), "role": "owner"},
            )

    with pytest.raises(DBAPIError, match="row-level security"):
        await join_b_while_scoped_to_a()

    listed = await client.get(b.path("/members"), headers=b.owner.headers)
    assert [m["user_id"] for m in listed.json()["items"]] == [b.owner.user_id]

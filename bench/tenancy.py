"""The tenancy benchmark: an organization's member list (50 members) and a permission check, against
``GET /v1/me`` on the same server in the same run.

- ``members``: one ``tenantry serve --workers 1`` (pinned like ``me``) whose SQLite file was seeded
  beforehand, through the services, with an organization of 50 members. wrk then loads, with one
  owner's token: ``GET /v1/me`` (1st half), ``GET /v1/orgs/{id}/members`` (all 50 in one page),
  ``GET /v1/orgs/{id}`` (the permission check and one read), ``GET /v1/me`` (2nd half).
  Targets: requests/s and p50 of each, as a ratio of ``/v1/me``'s, at least 0.5.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from bench import wrk
from bench.identity import ME_CONNECTIONS, Run, _authorized, _note, tenantry_server, tenantry_token
from bench.report import Figure, Target
from tenantry.core.context import Actor
from tenantry.db import migrate, scope
from tenantry.platform import Platform
from tenantry.settings import Settings
from tenantry.tenancy.orgs import add_member
from tenantry.tenancy.policy import Caller

MEMBERS = 50
PASSWORD = "bench organization passphrase"


async def _seed(data_dir: Path) -> tuple[str, str]:
    """An owner and ``MEMBERS - 1`` others in one organization; returns (owner email, org id)."""
    url = f"sqlite+aiosqlite:///{data_dir / 'tenantry.db'}"
    migrate.upgrade(url)
    platform = Platform(Settings(database_url=url, data_dir=data_dir, log_level="warning"))
    await platform.start(background=False)
    try:
        system = Actor(type="system", id="bench")
        users = [
            await platform.identity.signup(
                email=f"member-{n}@bench.example.com", password=PASSWORD, name=f"Member {n}", actor=system
            )
            for n in range(MEMBERS)
        ]
        org = await platform.orgs.create(caller=Caller(actor=system, user_id=users[0].id), name="Bench Org", slug=None)
        async with platform.db.transaction() as tx:
            await scope.to_org(tx, org.id)
            for user in users[1:]:
                await add_member(tx, org_id=org.id, user_id=user.id, role="member", caller=Caller(actor=system))
    finally:
        await platform.stop()
    return users[0].email, str(org.id)


def bench_members(run: Run) -> None:
    """Member list and permission check against ``GET /v1/me`` of the same server."""
    server = tenantry_server(run, "members", pinning=run.pinning)
    owner, org_id = asyncio.run(_seed(run.workdir / "tenantry-members"))
    members_path, org_path = f"/v1/orgs/{org_id}/members?limit=50", f"/v1/orgs/{org_id}"
    with server, httpx.Client(base_url=server.base_url) as client:
        token = tenantry_token(client, owner, PASSWORD)
        listed = client.get(members_path, headers={"Authorization": f"Bearer {token}"}).json()
        if len(listed["items"]) != MEMBERS:
            raise RuntimeError(f"expected {MEMBERS} members, got {len(listed['items'])}")
        auth = {"connections": ME_CONNECTIONS, "headers": _authorized(client, "/v1/me", token)}
        _authorized(client, org_path, token)
        run.say(f"GET /v1/me, members (50), org, GET /v1/me: wrk -c{ME_CONNECTIONS}, {run.pinning.description}")
        run.load(None, server, members_path, duration=run.warmup, **auth)
        before = run.load("GET /v1/me (1st half)", server, "/v1/me", duration=run.half, **auth)
        members = run.load("GET /v1/orgs/{id}/members", server, members_path, duration=run.duration, **auth)
        check = run.load("GET /v1/orgs/{id}", server, org_path, duration=run.duration, **auth)
        after = run.load("GET /v1/me (2nd half)", server, "/v1/me", duration=run.half, **auth)
    _report(run, before, after, members, check)


def _report(
    run: Run, before: wrk.WrkResult, after: wrk.WrkResult, members: wrk.WrkResult, check: wrk.WrkResult
) -> None:
    me_rps = run.report.add(
        Figure(
            "tenancy_me_rps",
            "GET /v1/me (tenancy baseline)",
            wrk.ok_per_second(before, after),
            "req/s",
            note=_note(f"{before.ok_per_second:,.0f} before, {after.ok_per_second:,.0f} after", before, after),
        )
    )
    me_p50 = (before.p50_ms + after.p50_ms) / 2
    me_speed = run.report.add(
        Figure("tenancy_me_p50", "GET /v1/me p50 (as 1/p50)", 1000 / me_p50, "1/s", note=f"p50 {me_p50:.2f} ms")
    )
    for key, label, result in (
        ("members", "GET /v1/orgs/{id}/members (50)", members),
        ("org", "GET /v1/orgs/{id} (permission check)", check),
    ):
        run.report.add(
            Figure(
                f"tenancy_{key}_rps",
                label,
                result.ok_per_second,
                "req/s",
                baseline=me_rps,
                target=Target(">=", 0.5),
                note=_note(f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms", result),
            )
        )
        run.report.add(
            Figure(
                f"tenancy_{key}_p50",
                f"{label} p50 (as 1/p50)",
                1000 / result.p50_ms,
                "1/s",
                baseline=me_speed,
                target=Target(">=", 0.5),
                note=f"p50 {result.p50_ms:.2f} ms vs {me_p50:.2f} ms",
            )
        )
    run.report.details["members"] = {
        "members": MEMBERS,
        "pinning": run.pinning.description,
        "me_before": before.as_dict(),
        "members_list": members.as_dict(),
        "org": check.as_dict(),
        "me_after": after.as_dict(),
    }

"""The composition root: builds every adapter and service from ``Settings`` and runs their lifecycle.

Nothing connects at import. ``create_app`` (HTTP), ``tenantry worker`` and tests each build a
``Platform`` and ``start()`` it; ``stop()`` releases everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from datetime import timedelta
from typing import Any

import structlog
from redis.asyncio import Redis

from tenantry.db.engine import Database
from tenantry.events.dispatcher import Dispatcher
from tenantry.events.jobs import JobRunner
from tenantry.events.outbox import NEWEST_EVENT
from tenantry.events.retention import Sweeper, forget_finished_jobs, forget_old_events
from tenantry.http.client_ip import parse_networks
from tenantry.identity.auth import Authenticator
from tenantry.identity.config import IdentityConfig, key_ring
from tenantry.identity.mfa import MfaService
from tenantry.identity.passkeys import PasskeyService
from tenantry.identity.passwords import PasswordService
from tenantry.identity.sealing import Sealer
from tenantry.identity.service import IdentityService
from tenantry.mail import Message, build_mailer
from tenantry.mail.outbox import MAIL_JOB
from tenantry.perf.cache import FileInvalidation, Invalidation, RedisInvalidation
from tenantry.ratelimit.batching import RedisBatcher
from tenantry.ratelimit.concurrency import ConcurrencyStore, MemoryConcurrency, RedisConcurrency
from tenantry.ratelimit.limiter import Limiter
from tenantry.ratelimit.policies import NoOrgRates, OrgRates, Policies
from tenantry.ratelimit.shedding import LoadShedder
from tenantry.ratelimit.store import LimiterStore, MemoryStore, RedisStore
from tenantry.ratelimit.throttle import FailureThrottle
from tenantry.settings import Settings
from tenantry.tenancy import audit
from tenantry.tenancy.api_keys import ApiKeyService
from tenantry.tenancy.audit_log import AuditLogService
from tenantry.tenancy.invitations import InvitationService
from tenantry.tenancy.orgs import OrgService
from tenantry.tenancy.policy import Policy
from tenantry.tenancy.roles import RoleService
from tenantry.tenancy.teams import TeamService
from tenantry.webhooks import fanout, retention
from tenantry.webhooks.delivery import Deliverer
from tenantry.webhooks.service import WebhookService
from tenantry.webhooks.work import DeliveryConfig

log = structlog.get_logger(__name__)


class Platform:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node_id = f"{socket.gethostname()}:{os.getpid()}"
        self.db = Database(settings.database_url, role=settings.database_role or None)
        self.redis: Redis | None = Redis.from_url(settings.redis_url) if settings.redis_url else None
        self.invalidation: Invalidation = (
            RedisInvalidation(self.redis) if self.redis else FileInvalidation(settings.data_dir / "cache-generation")
        )
        self.trusted_proxies = parse_networks(settings.trusted_proxies)
        config = IdentityConfig.from_settings(settings)
        self.keys = key_ring(settings)
        self.passwords = PasswordService(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
            threads=settings.password_hash_threads,
        )
        self.batcher = RedisBatcher(self.redis) if self.redis else None
        self.limiter_store: LimiterStore = RedisStore(self.redis, batcher=self.batcher) if self.redis else MemoryStore()
        self.auth = Authenticator(
            db=self.db,
            keys=self.keys,
            issuer=config.issuer,
            invalidation=self.invalidation,
            token_cache_size=settings.token_cache_size,
            session_cache_size=settings.session_cache_size,
        )
        self.limiter = Limiter(self.limiter_store)
        self.rate_limits = Policies.from_settings(settings.rate_limits, enabled=settings.rate_limits_enabled)
        self.org_rates: OrgRates = NoOrgRates()
        self.concurrency: ConcurrencyStore = (
            RedisConcurrency(self.redis, batcher=self.batcher) if self.redis else MemoryConcurrency()
        )
        self.local_concurrency = MemoryConcurrency()  # when Redis is down: in-flight limits hold per process
        self.shedder = LoadShedder(
            max_in_flight=settings.max_in_flight, lag_soft=settings.shed_lag_soft, lag_hard=settings.shed_lag_hard
        )
        throttle = FailureThrottle(self.limiter)
        self.sealer = Sealer.for_deployment(configured=settings.encryption_key, data_dir=settings.data_dir)
        self.mfa = MfaService(
            db=self.db, config=config, sealer=self.sealer, throttle=throttle, auth=self.auth, keys=self.keys
        )
        self.passkeys = PasskeyService(db=self.db, config=config, mfa=self.mfa)
        self.identity = IdentityService(
            db=self.db,
            config=config,
            passwords=self.passwords,
            keys=self.keys,
            throttle=throttle,
            auth=self.auth,
            mfa=self.mfa,
        )
        self.policy = Policy(invalidation=self.invalidation)
        self.orgs = OrgService(db=self.db, policy=self.policy)
        self.api_keys = ApiKeyService(db=self.db, policy=self.policy)
        self.roles = RoleService(db=self.db, policy=self.policy)
        self.teams = TeamService(db=self.db, policy=self.policy)
        self.invitations = InvitationService(
            db=self.db, policy=self.policy, ttl_seconds=settings.invitation_ttl_seconds, base_url=settings.base_url
        )
        self.audit_log = AuditLogService(db=self.db, policy=self.policy)
        self.mailer = build_mailer(smtp_url=settings.smtp_url, data_dir=settings.data_dir, sender=settings.mail_from)
        self.webhooks = WebhookService(
            db=self.db,
            policy=self.policy,
            sealer=self.sealer,
            require_https=settings.env == "prod",
            allow_private=settings.webhook_allow_private,
        )
        self.deliverer = Deliverer(
            self.db,
            sealer=self.sealer,
            limiter=self.limiter,
            config=DeliveryConfig.from_settings(settings),
            node_id=self.node_id,
        )
        self.dispatcher = Dispatcher(self.db, node_id=self.node_id)
        # Webhooks first: a receiver waits on it, the audit log does not.
        self.dispatcher.register(fanout.CONSUMER, functools.partial(fanout.unscoped_fan_out, deliverer=self.deliverer))
        self.dispatcher.register(audit.CONSUMER, audit.record)
        self.jobs = JobRunner(self.db, node_id=self.node_id)
        self.jobs.register(MAIL_JOB, self._send_mail, erase_payload=True)
        self.sweeper = Sweeper()
        self.sweeper.register(
            "events", functools.partial(forget_old_events, self.db), keep=timedelta(days=settings.event_retention_days)
        )
        self.sweeper.register(
            "jobs", functools.partial(forget_finished_jobs, self.db), keep=timedelta(days=settings.job_retention_days)
        )
        self.sweeper.register(
            "webhook_deliveries",
            functools.partial(retention.unscoped_forget_finished, self.db),
            keep=timedelta(days=settings.webhook_log_retention_days),
        )
        self.db.on_commit(self._wake)
        self._tasks: list[asyncio.Task[Any]] = []

    async def _send_mail(self, payload: dict[str, Any]) -> None:
        await self.mailer.send(Message(**payload))

    def _wake(self, info: dict[str, Any]) -> None:
        if info.get("events"):
            self.dispatcher.wake(newest=info.get(NEWEST_EVENT))
        if info.get("jobs"):
            self.jobs.wake()
        if info.get(fanout.HANDED):
            self.deliverer.take(info[fanout.HANDED])
        if info.get(fanout.HINTED):
            self.deliverer.hint(info[fanout.HINTED])
        if info.get(fanout.WOKEN):
            self.deliverer.wake()

    async def start(self, *, background: bool | None = None) -> None:
        """Load keys, start listening for invalidations and, unless told otherwise, the background work."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.keys.load_or_create)
        await self.passwords.prepare()
        await self.invalidation.start()
        await self.auth.start()
        await self.shedder.start()
        if self.settings.embedded_worker if background is None else background:
            self.start_background()

    def start_background(self) -> None:
        self._tasks += [
            asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
            asyncio.create_task(self.jobs.run(), name="jobs"),
            asyncio.create_task(self.deliverer.run(), name="webhooks"),
            asyncio.create_task(self.sweeper.run(), name="retention"),
        ]

    async def drain(self) -> None:
        """Run the dispatcher and the jobs until nothing is left to do (tests, ``worker --once``)."""
        await self.dispatcher.drain()
        while await self.dispatcher.run_once() or await self.jobs.run_once() or await self.deliverer.drain():
            pass

    async def stop(self, *, grace: float = 10.0) -> None:
        """Let background work finish what it holds (up to ``grace`` seconds), then release everything."""
        self.dispatcher.request_stop()
        self.jobs.request_stop()
        self.deliverer.request_stop()
        self.sweeper.request_stop()
        if self._tasks:
            # A webhook request in flight ends within its timeout (15 s by default): cut short, it would not be
            # logged and would be sent again once its lease ran out. So the grace is never shorter than that.
            grace = max(grace, self.deliverer.config.timeout + 5.0)
            _, late = await asyncio.wait(self._tasks, timeout=grace)
            for task in late:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks.clear()
        await self.deliverer.close()
        await self.shedder.stop()
        await self.auth.stop()
        await self.invalidation.stop()
        if self.batcher is not None:
            await self.batcher.close()
        if self.redis is not None:
            await self.redis.aclose()
        self.passwords.close()
        await self.db.dispose()

"""Rate limits for tests that are not about rate limits.

Functional tests send many requests from one address in a few seconds; rate limits have tests of
their own, so everywhere else every budget is made too large to matter (the middleware still runs).
"""

from __future__ import annotations

import json

from tenantry.ratelimit.policies import DEFAULT_POLICIES

GENEROUS_LIMITS = json.dumps({p.name: {"limit": 1_000_000, "period": 60, "burst": 1_000_000} for p in DEFAULT_POLICIES})

# Event-loop lag (seconds) before pages, then the API, are shed, for every test but shedding's own.
SHED_LAG_SOFT, SHED_LAG_HARD = "2.0", "5.0"

"""The interpreter's settings for a long-running Tenantry process (``serve``, ``worker``)."""

from __future__ import annotations

import gc

# CPython's defaults (700, 10, 10) run a young collection every 700 net allocations. A server allocates and
# frees that many short-lived objects (rows, dicts, coroutines, futures) in a request or two, so it collected
# hundreds of times a second and found next to nothing: measured in the webhooks benchmark, 0.105 s of the
# delivering process's CPU per 8,000 deliveries (about 8 %), against about 5 ms with a young threshold of
# 20,000 (one or two collections in the whole run). Young cyclic garbage
# (an exception and its traceback's frames, say) is kept a little longer, a few MB at most.
GC_THRESHOLDS = (20_000, 20, 20)


def settle() -> None:
    """Call when startup is done. What startup built lives as long as the process: collected once, then frozen
    out of the collector's sight, so later full collections walk only what requests create (shorter pauses);
    and collections come less often (``GC_THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

"""Performance building blocks: caches and their invalidation, worker pools, batching."""

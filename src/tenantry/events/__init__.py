"""The event spine: the transactional outbox, its dispatcher, and durable jobs."""

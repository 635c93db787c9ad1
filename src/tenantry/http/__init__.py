"""What every HTTP door shares: problem responses, middleware, request context."""

"""Storage: the engine, sessions, the declarative base and the Alembic history."""

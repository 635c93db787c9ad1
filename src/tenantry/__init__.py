"""Tenantry: a self-hosted backend platform for teams that build B2B SaaS products."""

__version__ = "0.1.0"

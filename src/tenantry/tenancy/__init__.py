"""Tenancy: organizations, teams, memberships, roles, invitations, API keys and the audit log."""

"""``python -m tenantry``: the same as the ``tenantry`` command."""

from tenantry.cli import app

app()

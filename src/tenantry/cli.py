"""The ``tenantry`` command: serve, worker, migrate, keys, mail, users, webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tenantry.settings import Settings

app = typer.Typer(help="Tenantry: identity, tenancy and more for B2B SaaS products.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys of access tokens.", no_args_is_help=True)
mail_app = typer.Typer(help="The local mailbox (used when no SMTP server is configured).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(mail_app, name="mail")
users_app = typer.Typer(help="Accounts, for operators.", no_args_is_help=True)
app.add_typer(users_app, name="users")
webhooks_app = typer.Typer(help="Webhook deliveries, for operators.", no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")
console = Console()
err = Console(stderr=True)


def _migrate(settings: Settings) -> None:
    from tenantry.db import migrate

    with console.status("Applying database migrations…"):
        migrate.upgrade(settings.database_url)
    console.print(f"[green]Database is at revision {migrate.head_revision()}.[/green]")


def _check_migrated(settings: Settings) -> None:
    from tenantry.db import migrate

    current = asyncio.run(migrate.current_revision(settings.database_url))
    if current != migrate.head_revision():
        err.print(
            f"[red]The database is at revision {current or 'none'}, the code expects {migrate.head_revision()}.[/red]\n"
            "Run [bold]tenantry migrate[/bold] first."
        )
        raise typer.Exit(code=1)


@app.command()
def migrate() -> None:
    """Apply pending database migrations."""
    _migrate(Settings())


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="Number of server processes."),
    reload: bool = typer.Option(False, help="Restart on code changes (development)."),
) -> None:
    """Serve the HTTP API (and, unless TENANTRY_EMBEDDED_WORKER=false, the background work)."""
    import uvicorn

    from tenantry.identity.config import key_ring

    settings = Settings()
    if settings.should_auto_migrate:
        _migrate(settings)
    else:
        _check_migrated(settings)
    key_ring(settings).load_or_create()  # before the workers start, so they all agree on the first key
    console.print(
        f"Tenantry serving on http://{host}:{port} ({workers} process(es)); open [bold]{settings.base_url}[/bold]"
    )
    uvicorn.run(
        "tenantry.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        access_log=False,
        log_level=settings.log_level,
        ws_per_message_deflate=False,
        proxy_headers=False,
        server_header=False,
    )


@app.command()
def worker(once: bool = typer.Option(False, help="Do what is pending, then exit.")) -> None:
    """Run background work (event dispatch, mail, webhook deliveries) without serving HTTP."""
    from tenantry.core import runtime
    from tenantry.observability.logging import configure
    from tenantry.platform import Platform

    settings = Settings()
    configure(level=settings.log_level, json=settings.log_json)
    _check_migrated(settings)

    async def run() -> None:
        platform = Platform(settings)
        await platform.start(background=not once)
        runtime.settle()
        try:
            if once:
                await platform.drain()
            else:
                # SIGTERM (systemd, Kubernetes, a rolling deploy) and Ctrl-C stop it gracefully: the
                # requests in flight finish and are logged, what it holds unstarted is handed back.
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(signum, stop.set)
                console.print(f"Worker {platform.node_id} running; Ctrl-C or SIGTERM stops it.")
                await stop.wait()
        finally:
            await platform.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@users_app.command("reset-mfa")
def users_reset_mfa(email: str = typer.Argument(..., help="The account's email address.")) -> None:
    """Turn off a user's authenticator app and recovery codes (they lost both); passkeys stay."""
    from tenantry.core.context import Actor
    from tenantry.core.errors import NotFound
    from tenantry.platform import Platform

    settings = Settings()
    _check_migrated(settings)

    async def run() -> bool:
        platform = Platform(settings)
        await platform.start(background=False)
        try:
            return await platform.mfa.reset(email=email, actor=Actor(type="system", id="cli"))
        finally:
            await platform.stop()

    try:
        had = asyncio.run(run())
    except NotFound:
        console.print(f"No account with the email {email}.")
        raise typer.Exit(code=1) from None
    if had:
        console.print(f"Two-factor authentication is off for {email}; they sign in with their password now.")
    else:
        console.print(f"{email} had no two-factor authentication; nothing changed.")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    org: uuid.UUID = typer.Option(..., "--org", help="The organization's id."),
    status: str = typer.Option("", help="Only deliveries in this state: pending, succeeded or failed."),
    last: int = typer.Option(50, min=1, max=1000, help="How many of the newest deliveries to show."),
) -> None:
    """List an organization's recent webhook deliveries, newest first, with their last attempt."""
    from tenantry.platform import Platform

    if status not in ("", "pending", "succeeded", "failed"):
        err.print("--status is one of pending, succeeded, failed.")
        raise typer.Exit(code=2)
    settings = Settings()
    _check_migrated(settings)

    async def run() -> list[Any]:
        platform = Platform(settings)
        await platform.start(background=False)
        try:
            return await platform.webhooks.recent_for_operator(org_id=org, status=status or None, limit=last)
        finally:
            await platform.stop()

    found = asyncio.run(run())
    if not found:
        console.print("No deliveries.")
        return
    table = Table()
    for name in ("made at", "event", "endpoint", "status", "attempts", "last answer", "next attempt"):
        # Narrow terminals fold the URL and the answer, never a status or a time.
        table.add_column(name, overflow="fold", no_wrap=name not in ("endpoint", "last answer"))
    for url, d in found:
        last_attempt = d.attempts[-1] if d.attempts else None
        answer = "" if last_attempt is None else str(last_attempt.response_status or last_attempt.error or "")
        table.add_row(
            f"{d.created_at:%Y-%m-%d %H:%M:%S}",
            d.event_type,
            url,
            d.status,
            str(len(d.attempts)),
            answer[:60],
            f"{d.next_attempt_at:%H:%M:%S}" if d.next_attempt_at else "",
        )
    # Piped to a file or another program, the table is not squeezed into 80 columns.
    (console if console.is_terminal else Console(width=160)).print(table)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Add a new signing key; older keys keep verifying until their tokens expire."""
    from tenantry.identity.config import key_ring

    ring = key_ring(Settings())
    ring.load_or_create()
    kid = ring.rotate()
    console.print(f"New signing key [bold]{kid}[/bold]; {len(ring.public_keys())} key(s) published.")


@keys_app.command("list")
def keys_list() -> None:
    """Show the published signing keys."""
    from tenantry.identity.config import key_ring

    ring = key_ring(Settings())
    ring.load_or_create()
    table = Table("key id", "algorithm", "curve")
    for key in ring.public_keys():
        table.add_row(key["kid"], key["alg"], key["crv"])
    console.print(table)


@mail_app.command("list")
def mail_list(
    full: bool = typer.Option(False, "--full", help="Print each mail's whole text."),
    last: int = typer.Option(20, help="How many of the newest mails to show."),
) -> None:
    """Print the mails kept in the local mailbox, newest last."""
    from tenantry.mail.mailer import MailboxMailer

    settings = Settings()
    if settings.smtp_url:
        err.print(f"Mail goes to SMTP ({settings.smtp_url}); the local mailbox is not used.")
    messages = MailboxMailer(settings.data_dir / "mailbox", sender=settings.mail_from).messages()[-last:]
    if not messages:
        console.print("The mailbox is empty.")
        return
    for message in messages:
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        console.rule(f"[bold]{message['Subject']}[/bold]")
        console.print(f"To: {message['To']}    Date: {message['Date']}")
        shown = text if full else "\n".join(line for line in text.splitlines() if line.strip())
        console.print(shown, markup=False, highlight=False, soft_wrap=True)  # links and tokens stay whole


if __name__ == "__main__":  # pragma: no cover
    app()

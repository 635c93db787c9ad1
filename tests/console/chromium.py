"""Driving the console in Debian's Chromium (Playwright, async) against a real ``tenantry serve``.

The server's base URL is ``http://localhost:<port>``: WebAuthn refuses an IP address as relying
party id. It listens on 127.0.0.1, which is where ``localhost`` leads (checked by each test: the
pages load). Passkeys come from Chromium's virtual authenticator, driven over CDP.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Playwright

from tests.conftest import free_port
from tests.servers import TENANTRY, Fleet, Server, _wait_until_healthy, tenantry_env

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"


class ConsoleFleet(Fleet):
    """A ``Fleet`` whose servers know their own address as their base URL."""

    async def start_console(self, **settings: str) -> str:
        """Start one server for ``settings`` at ``http://localhost:<port>``; returns that URL."""
        server, base_url = self._spawn_console(settings)
        async with httpx.AsyncClient(timeout=1) as http:
            await _wait_until_healthy(http, server, time.monotonic() + 60)
        return base_url

    def _spawn_console(self, settings: dict[str, str]) -> tuple[Server, str]:
        port = free_port()
        base_url = f"http://localhost:{port}"
        log = self.directory / f"serve-{port}.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [TENANTRY, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=tenantry_env(base_url=base_url, **settings),
                cwd=self.directory,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(port=port, log=log, process=process)
        self.servers.append(server)
        return server, base_url


def require_chromium() -> str:
    """Debian's Chromium; its absence fails the test (``make test`` installs it), never skips it."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the console's browser tests need Debian's Chromium. "
            "Install it with `sudo apt-get install -y chromium` (`make test` does it when run as root).",
            pytrace=False,
        )
    return str(CHROMIUM)


async def launch(playwright: Playwright) -> Browser:
    return await playwright.chromium.launch(executable_path=require_chromium(), args=ARGS)


async def device(browser: Browser) -> tuple[BrowserContext, Page]:
    """A fresh browser profile (its own cookies) with a virtual platform authenticator that verifies
    its user (like a fingerprint reader), and one page in it."""
    context = await browser.new_context(viewport={"width": 1180, "height": 900}, locale="en-GB")
    page = await context.new_page()
    page.set_default_timeout(15_000)
    cdp = await context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    await cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return context, page


async def screenshot(page: Page, name: str) -> None:
    """Keep a full-page picture of ``page`` as ``test-artifacts/console/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)

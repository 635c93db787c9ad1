"""The console end to end, in Chromium, against a real server: what a person does and sees.

Each page visited is saved as ``test-artifacts/console/<name>.png``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pyotp
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.console.chromium import ConsoleFleet, device, launch, screenshot
from tests.factories.identity import PASSWORD, new_email
from tests.mailsink import MailSink

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[ConsoleFleet]:
    servers = ConsoleFleet(tmp_path)
    yield servers
    servers.stop()


@pytest.fixture
async def console(database_url: str, tmp_path: Path, fleet: ConsoleFleet, mail: MailSink) -> str:
    """The base URL of a real ``tenantry serve`` mailing to the test's SMTP sink."""
    return await fleet.start_console(
        database_url=database_url, data_dir=str(tmp_path / "data"), smtp_url=f"smtp://127.0.0.1:{mail.port}"
    )


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await launch(playwright)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> Page:
    return (await device(browser))[1]


async def sign_up_and_confirm(page: Page, console: str, mail: MailSink, *, shots: bool = False) -> str:
    """Create an account on the sign-up page and open the mailed confirmation link; returns the email."""
    email = new_email()
    await page.goto(f"{console}/")
    await page.get_by_role("link", name="Create an account").click()
    await expect(page.get_by_role("heading", name="Create your account")).to_be_visible()
    if shots:
        await screenshot(page, "sign-up")
    await page.get_by_label("Your name").fill("Ada Lovelace")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    if shots:
        await screenshot(page, "sign-up-done")
    token = await mail.await_token(email)
    await page.goto(f"{console}/verify-email?token={token}")
    await expect(page.get_by_role("heading", name="Email address confirmed")).to_be_visible()
    if shots:
        await screenshot(page, "email-confirmed")
    return email


async def sign_in_with_password(page: Page, console: str, email: str, password: str = PASSWORD) -> None:
    await page.goto(f"{console}/")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in", exact=True).click()


async def sign_out(page: Page) -> None:
    await page.get_by_role("navigation", name="Account").get_by_role("button", name="Sign out").click()
    await expect(page.get_by_text("You are signed out.")).to_be_visible()


async def test_a_passkey_registered_on_the_account_page_signs_in_on_its_own(
    page: Page, console: str, mail: MailSink
) -> None:
    await page.goto(f"{console}/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await screenshot(page, "sign-in")
    email = await sign_up_and_confirm(page, console, mail, shots=True)

    await sign_in_with_password(page, console, email, "not my password")
    await expect(page.get_by_role("alert")).to_contain_text("don't match an account")
    await expect(page.get_by_label("Email")).to_have_value(email)
    await expect(page.get_by_label("Password")).to_have_value("")
    await screenshot(page, "sign-in-wrong-password")

    await sign_in_with_password(page, console, email)
    await expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    await expect(page.get_by_text("You have no passkeys yet.")).to_be_visible()
    await screenshot(page, "account")

    await page.get_by_label("Name of the new passkey").fill("This laptop")
    await page.get_by_role("button", name="Add a passkey").click()
    await expect(page.get_by_text("Your passkey was added.")).to_be_visible()
    await expect(page.locator("[data-passkeys]")).to_contain_text("This laptop")
    await screenshot(page, "account-passkey-added")

    await sign_out(page)
    await screenshot(page, "signed-out")
    await page.get_by_role("button", name="Sign in with a passkey").click()

    await expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    await expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
    await expect(page.locator("[data-passkeys]")).to_contain_text("Last used")
    await expect(page.locator("[data-sessions] > li")).to_have_count(1)  # the first session ended at sign-out
    await page.set_viewport_size({"width": 390, "height": 844})
    await screenshot(page, "account-phone")

    await page.get_by_label("New name for This laptop").fill("Ada's laptop")
    await page.get_by_role("button", name="Rename").click()
    await expect(page.get_by_text("Your passkey was renamed.")).to_be_visible()
    await page.get_by_role("button", name="Remove Ada's laptop").click()
    await expect(page.get_by_text("Your passkey was removed.")).to_be_visible()
    await expect(page.get_by_text("You have no passkeys yet.")).to_be_visible()


async def test_two_step_verification_from_set_up_to_sign_in_and_revoking_another_session(
    browser: Browser, page: Page, console: str, mail: MailSink
) -> None:
    email = await sign_up_and_confirm(page, console, mail)
    await sign_in_with_password(page, console, email)
    await page.get_by_role("button", name="Set up an authenticator app").click()
    await expect(page.get_by_role("img", name=re.compile("QR code"))).to_be_visible()
    await screenshot(page, "totp-setup")
    shown = await page.locator("[data-totp-secret]").inner_text()
    secret = shown.replace(" ", "")

    await page.get_by_label("Verification code").fill("000000")
    await page.get_by_role("button", name="Turn on two-step verification").click()
    await expect(page.get_by_role("alert")).to_contain_text("That code is wrong or has expired")
    await screenshot(page, "totp-wrong-code")
    await page.get_by_label("Verification code").fill(pyotp.TOTP(secret).now())
    await page.get_by_role("button", name="Turn on two-step verification").click()
    await expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    codes = await page.locator("[data-recovery-codes] code").all_inner_texts()
    assert len(codes) == 10
    await screenshot(page, "recovery-codes")
    await page.get_by_role("link", name="I have saved them").click()
    await expect(page.locator("[data-recovery-codes-left]")).to_have_text("10")
    await screenshot(page, "account-two-step-on")

    await sign_out(page)
    await sign_in_with_password(page, console, email)
    await expect(page.get_by_role("heading", name="Two-step verification")).to_be_visible()
    await screenshot(page, "second-step")
    await page.get_by_label("Verification code").fill("123456")
    await page.get_by_role("button", name="Verify and sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("That code is wrong or has expired")
    await screenshot(page, "second-step-wrong-code")
    # The code that turned the app on is spent; the app's next one is already accepted (±1 step).
    await page.get_by_label("Verification code").fill(pyotp.TOTP(secret).at(time.time() + 30))
    await page.get_by_role("button", name="Verify and sign in").click()
    await expect(page.get_by_role("heading", name="Your account")).to_be_visible()

    other_context, other = await device(browser)
    await sign_in_with_password(other, console, email)
    await other.get_by_role("link", name="Use a recovery code").click()
    await screenshot(other, "second-step-recovery-code")
    await other.get_by_label("Recovery code").fill(codes[0])
    await other.get_by_role("button", name="Verify and sign in").click()
    await expect(other.locator("[data-recovery-codes-left]")).to_have_text("9")

    await page.reload()
    await expect(page.locator("[data-sessions] > li")).to_have_count(2)
    await page.get_by_role("button", name="Sign out this session").click()
    await expect(page.get_by_text("That session was signed out.")).to_be_visible()
    await expect(page.locator("[data-sessions] > li")).to_have_count(1)
    await screenshot(page, "account-session-revoked")
    await other.reload()
    await expect(other.get_by_role("heading", name="Sign in")).to_be_visible()
    await other_context.close()


async def test_the_pages_mailed_links_open(page: Page, console: str, mail: MailSink) -> None:
    email = await sign_up_and_confirm(page, console, mail)
    await page.goto(f"{console}/verify-email?token=not-a-real-token")
    await expect(page.get_by_role("heading", name="This link is invalid or expired")).to_be_visible()
    await screenshot(page, "link-invalid")

    await page.goto(f"{console}/")
    await page.get_by_role("link", name="Forgot password?").click()
    await screenshot(page, "forgot-password")
    await page.get_by_label("Email").fill(email)
    await page.get_by_role("button", name="Send me a link").click()
    await expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    token = await mail.await_token(email, count=2)
    await page.goto(f"{console}/reset-password?token={token}")
    await screenshot(page, "reset-password")
    await page.get_by_label("New password", exact=True).fill("an entirely new passphrase")
    await page.get_by_role("button", name="Set new password").click()
    await expect(page.get_by_text("Your password was changed.")).to_be_visible()

    await sign_in_with_password(page, console, email, "an entirely new passphrase")
    await expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    await page.emulate_media(color_scheme="dark")
    await page.reload()  # not mid-way through the colour transitions
    await screenshot(page, "account-dark")

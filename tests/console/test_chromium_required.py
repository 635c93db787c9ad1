"""Without Chromium the browser tests fail, saying what to install: they are never skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.console import chromium


def test_a_missing_chromium_fails_with_the_command_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chromium, "CHROMIUM", Path("/nonexistent/chromium"))

    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        chromium.require_chromium()

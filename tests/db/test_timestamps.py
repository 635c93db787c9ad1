"""Timestamps read back from SQLite are aware and in UTC, whichever form the stored text takes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite.base import DATETIME

from tenantry.db.base import UTCDateTime
from tenantry.db.statements import _sqlite_datetime

DIALECT = sqlite.dialect()
READ = UTCDateTime().dialect_impl(DIALECT).result_processor(DIALECT, None)


def _as_sqlalchemy_reads(text: str) -> datetime:
    """What SQLAlchemy's own SQLite reading, then ``process_result_value``, makes of ``text``."""
    parsed = DATETIME().result_processor(DIALECT, None)(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@pytest.mark.parametrize(
    "written",
    [
        datetime(2026, 12, 5, 6, 39, 49, 367042, tzinfo=UTC),
        datetime(2026, 12, 5, 6, 39, 49, tzinfo=UTC),  # no fraction: still written with six digits
        datetime(2026, 12, 5, 8, 39, 49, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(1, 1, 1, tzinfo=UTC),
    ],
)
def test_what_is_written_is_read_back_the_same_instant_in_utc(written: datetime) -> None:
    assert READ is not None
    text = _sqlite_datetime(written)
    assert text is not None
    read = READ(text)
    assert read == written
    assert read.tzinfo is UTC
    assert read == _as_sqlalchemy_reads(text)


@pytest.mark.parametrize("text", ["2026-12-05", "2026-12-05 06:39:49", "2026-12-05 06:39:49.5"])
def test_other_forms_a_hand_written_row_may_hold_read_as_sqlalchemy_reads_them(text: str) -> None:
    assert READ is not None
    read = READ(text)
    assert read == _as_sqlalchemy_reads(text)
    assert read is not None
    assert read.tzinfo is UTC


def test_none_is_read_as_none_and_garbage_is_refused() -> None:
    assert READ is not None
    assert READ(None) is None
    with pytest.raises(ValueError, match="not a time"):
        READ("not a time")

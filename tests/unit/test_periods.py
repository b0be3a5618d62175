"""Period labels: months, quarters and trailing windows; bad labels are PeriodError, never a
calendar exception (the HTTP API turns PeriodError into 400)."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.periods import MAX_YEAR, MIN_YEAR, PeriodError, parse_period

UTC = ZoneInfo("UTC")
NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def days(first: str, last: str) -> tuple[int, int]:
    return date.fromisoformat(first).toordinal(), date.fromisoformat(last).toordinal()


@pytest.mark.parametrize(
    ("label", "first", "last"),
    [
        ("2024-02", "2024-02-01", "2024-02-29"),  # leap year
        ("2023-12", "2023-12-01", "2023-12-31"),  # December: the next month is in the next year
        ("2017-Q4", "2017-10-01", "2017-12-31"),
        ("2024-Q1", "2024-01-01", "2024-03-31"),
        ("0001-01", "0001-01-01", "0001-01-31"),  # the calendar's first month
        ("9998-Q4", "9998-10-01", "9998-12-31"),  # the last quarter whose next day exists
        ("last-30d", "2023-10-16", "2023-11-14"),  # 30 days ending today (14 Nov), inclusive
    ],
)
def test_labels_give_their_inclusive_day_range(label: str, first: str, last: str) -> None:
    period = parse_period(label, NOW, UTC)
    assert (period.label, (period.first_day, period.last_day)) == (label, days(first, last))


@pytest.mark.parametrize(
    ("label", "message"),
    [
        # the calendar ends on 9999-12-31: these raised ValueError ("year 10000 is out of
        # range") from datetime, which the API answered with a 500
        ("9999-Q4", "0001..9998"),
        ("9999-12", "0001..9998"),
        ("9999-01", "0001..9998"),
        # year 0 does not exist: ValueError ("year 0 is out of range") before
        ("0000-01", "0001..9998"),
        ("0000-Q1", "0001..9998"),
        ("2017-13", "YYYY-MM"),
        ("2017-Q5", "YYYY-MM"),
        ("last-0d", "YYYY-MM"),
        ("last-10000d", "YYYY-MM"),
        ("", "YYYY-MM"),
        ("17-11", "YYYY-MM"),
    ],
)
def test_bad_or_out_of_range_labels_are_period_errors(label: str, message: str) -> None:
    with pytest.raises(PeriodError, match=message):
        parse_period(label, NOW, UTC)


@given(
    year=st.integers(0, 9999),
    month=st.integers(1, 12),
    quarter=st.integers(1, 4),
    now=st.integers(0, 4_102_444_800_000),  # 1970..2100
)
def test_any_well_formed_label_is_a_period_or_a_period_error(
    year: int, month: int, quarter: int, now: int
) -> None:
    for label in (f"{year:04d}-{month:02d}", f"{year:04d}-Q{quarter}"):
        try:
            period = parse_period(label, now, UTC)
        except PeriodError:
            assert not MIN_YEAR <= year <= MAX_YEAR
        else:
            assert MIN_YEAR <= year <= MAX_YEAR
            # a period is whole months: it starts on a 1st and the day after it is a 1st
            assert date.fromordinal(period.first_day).day == 1
            assert date.fromordinal(period.last_day + 1).day == 1

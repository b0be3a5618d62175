"""Period labels: months, quarters, years, fiscal years and quarters, ranges and trailing
windows; bad labels are PeriodError, never a calendar exception (the HTTP API turns
PeriodError into 400)."""

from __future__ import annotations

from datetime import date
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.periods import (
    MAX_YEAR,
    MIN_YEAR,
    PeriodError,
    day_of,
    fiscal_quarter_of,
    fiscal_quarter_period,
    fiscal_year_of,
    fiscal_year_period,
    parse_period,
    period_bounds_ms,
    range_period,
)

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


# --------------------------------------------------------------------------- years, fiscal
# years and explicit ranges


@pytest.mark.parametrize(
    ("label", "start_month", "first", "last"),
    [
        ("2017", 1, "2017-01-01", "2017-12-31"),
        ("2024", 10, "2024-01-01", "2024-12-31"),  # a plain year ignores the fiscal start
        # start month 1: the fiscal year is the calendar year and its quarters calendar ones
        ("FY2018", 1, "2018-01-01", "2018-12-31"),
        ("FY2018-Q1", 1, "2018-01-01", "2018-03-31"),
        ("FY2018-Q4", 1, "2018-10-01", "2018-12-31"),
        # start month 10 (US federal style): FY2018 is named by the year it ends in
        ("FY2018", 10, "2017-10-01", "2018-09-30"),
        ("FY2018-Q1", 10, "2017-10-01", "2017-12-31"),
        ("FY2018-Q2", 10, "2018-01-01", "2018-03-31"),  # crosses into the calendar year
        ("FY2018-Q4", 10, "2018-07-01", "2018-09-30"),
        # start month 2: Q1 is Feb-Apr of the previous calendar year, Q4 ends on 31 January
        ("FY2024", 2, "2023-02-01", "2024-01-31"),
        ("FY2024-Q4", 2, "2023-11-01", "2024-01-31"),
        # start month 12: Q1 is Dec-Feb, in a leap year ending on 29 February
        ("FY2024-Q1", 12, "2023-12-01", "2024-02-29"),
        ("FY2024", 12, "2023-12-01", "2024-11-30"),
        ("FY0002", 7, "0001-07-01", "0002-06-30"),  # the first fiscal year after a start month 7
        ("FY9998", 7, "9997-07-01", "9998-06-30"),
        ("2017-03-01..2017-05-15", 1, "2017-03-01", "2017-05-15"),
        ("2017-03-01..2017-03-01", 1, "2017-03-01", "2017-03-01"),  # one day
        ("2016-12-31..2017-01-01", 1, "2016-12-31", "2017-01-01"),
    ],
)
def test_years_fiscal_periods_and_ranges(label: str, start_month: int, first: str, last: str) -> None:
    period = parse_period(label, NOW, UTC, fiscal_start_month=start_month)
    assert (period.label, (period.first_day, period.last_day)) == (label, days(first, last))


@pytest.mark.parametrize(
    ("label", "start_month", "message"),
    [
        ("FY0001", 10, "0001..9998"),  # would start in year 0
        ("FY0001-Q1", 2, "0001..9998"),
        ("FY9999", 10, "0001..9998"),  # would end in 9999, whose next day does not exist
        ("FY9999", 1, "0001..9998"),
        ("0000", 1, "0001..9998"),
        ("9999", 1, "0001..9998"),
        ("FY2018-Q5", 1, "FYYYYY-Qn"),
        ("FY18", 1, "FYYYYY"),
        ("fy2018", 1, "FYYYYY"),
        ("2017-05-15..2017-03-01", 1, "end before it starts"),
        ("2017-02-30..2017-03-01", 1, "not a calendar day"),
        ("2017-3-1..2017-05-15", 1, "YYYY-MM-DD..YYYY-MM-DD"),
        ("0000-12-31..2017-01-01", 1, "0001..9998"),
        ("2017-01-01..9999-01-01", 1, "0001..9998"),
    ],
)
def test_bad_year_fiscal_and_range_labels_are_period_errors(
    label: str, start_month: int, message: str
) -> None:
    with pytest.raises(PeriodError, match=message):
        parse_period(label, NOW, UTC, fiscal_start_month=start_month)


def test_range_period_takes_strings_or_dates_and_rejects_bad_days() -> None:
    assert range_period("2017-03-01", "2017-05-15") == range_period(date(2017, 3, 1), date(2017, 5, 15))
    assert range_period("2017-03-01", "2017-05-15").label == "2017-03-01..2017-05-15"
    with pytest.raises(PeriodError, match="YYYY-MM-DD"):
        range_period("2017-03", "2017-05-15")
    with pytest.raises(PeriodError, match="end before"):
        range_period("2017-05-16", "2017-05-15")


def test_a_bad_fiscal_start_month_is_a_configuration_error_not_a_period_error() -> None:
    for month in (0, 13):
        with pytest.raises(ValueError, match=r"1\.\.12") as info:
            fiscal_year_period(2018, month)
        assert not isinstance(info.value, PeriodError)  # not a 400 for a caller's label


def test_period_bounds_follow_the_time_zone() -> None:
    # 2024-03 in New York: starts at 05:00 UTC (EST, UTC-5), ends 2024-04-01 04:00 UTC
    # (EDT since 10 March, UTC-4)
    ny = ZoneInfo("America/New_York")
    start, end = period_bounds_ms(parse_period("2024-03", NOW, ny), ny)
    assert start == 1_709_269_200_000  # 2024-03-01T05:00:00Z
    assert end == 1_711_944_000_000  # 2024-04-01T04:00:00Z
    assert day_of(start, ny) == date(2024, 3, 1).toordinal()
    assert day_of(end - 1, ny) == date(2024, 3, 31).toordinal()


@given(
    fiscal_year=st.integers(2, 9998),
    start_month=st.integers(1, 12),
    day=st.integers(date(2, 1, 1).toordinal(), date(9997, 12, 31).toordinal()),
)
def test_fiscal_quarters_tile_their_year(fiscal_year: int, start_month: int, day: int) -> None:
    year = fiscal_year_period(fiscal_year, start_month)
    quarters = [fiscal_quarter_period(fiscal_year, q, start_month) for q in (1, 2, 3, 4)]
    # the four quarters are consecutive, start on a 1st and cover the year exactly
    assert quarters[0].first_day == year.first_day and quarters[-1].last_day == year.last_day
    for a, b in pairwise(quarters):
        assert b.first_day == a.last_day + 1
    assert all(date.fromordinal(q.first_day).day == 1 for q in quarters)
    assert date.fromordinal(year.first_day).month == start_month
    # the fiscal year ends in the calendar year it is named after
    assert date.fromordinal(year.last_day).year == fiscal_year
    # every day lies in exactly the fiscal quarter fiscal_quarter_of names
    q = fiscal_quarter_of(day, start_month)
    assert q.contains(day)
    assert fiscal_year_period(fiscal_year_of(day, start_month), start_month).contains(day)

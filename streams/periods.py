"""Event-time calendar: days, months, quarters and trailing windows in one time zone.

Every windowed number in salesops is kept in *day buckets*: the calendar day of the
event's time in the configured time zone (``SALESOPS_TIMEZONE``, default UTC), as an
integer ordinal (``date.toordinal()``).  A period is an inclusive range of day ordinals:

* ``2017-11``  -> the calendar month;
* ``2017-Q4``  -> the calendar quarter;
* ``last-30d`` -> the 30 calendar days ending with the day of ``now`` (inclusive).

Months and quarters exist for the years ``MIN_YEAR``..``MAX_YEAR`` (0001..9998): the
calendar (``datetime.date``) ends on 9999-12-31 and a period's end is found, and its
views compare, with the first day after it, which must exist too.  Any other label,
including a year outside that range (``0000-01``, ``9999-Q4``), is a :class:`PeriodError`
(the HTTP API answers 400), never an exception from the calendar.

Day buckets make trailing windows and calendar periods two views of one store, and keep
merging per-partition partials a plain sum.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_TRAILING = re.compile(r"^last-([1-9]\d{0,3})d$")
MIN_YEAR = 1
MAX_YEAR = 9998  # the day after 9998-12-31 still exists; the day after 9999-12-31 does not


class PeriodError(ValueError):
    """A period label that is not ``YYYY-MM``, ``YYYY-Qn`` or ``last-Nd``, or whose year is
    outside ``MIN_YEAR..MAX_YEAR``."""


@dataclass(frozen=True, slots=True)
class Period:
    label: str
    first_day: int
    last_day: int

    def contains(self, day: int) -> bool:
        return self.first_day <= day <= self.last_day


def day_of(ts_ms: int, tz: ZoneInfo) -> int:
    """Calendar day ordinal of an epoch-ms instant in ``tz``."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).astimezone(tz).date().toordinal()


def month_label(day: int) -> str:
    d = date.fromordinal(day)
    return f"{d.year:04d}-{d.month:02d}"


def quarter_label(day: int) -> str:
    d = date.fromordinal(day)
    return f"{d.year:04d}-Q{(d.month - 1) // 3 + 1}"


def _check_year(year: int) -> None:
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise PeriodError(f"period year must be within {MIN_YEAR:04d}..{MAX_YEAR:04d}, got {year:04d}")


def month_period(year: int, month: int) -> Period:
    _check_year(year)
    first = date(year, month, 1)
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return Period(f"{year:04d}-{month:02d}", first.toordinal(), nxt.toordinal() - 1)


def quarter_period(year: int, quarter: int) -> Period:
    _check_year(year)
    first = date(year, 3 * quarter - 2, 1)
    nxt = date(year + (quarter == 4), (3 * quarter) % 12 + 1, 1)
    return Period(f"{year:04d}-Q{quarter}", first.toordinal(), nxt.toordinal() - 1)


def trailing_period(days: int, now_ms: int, tz: ZoneInfo) -> Period:
    today = day_of(now_ms, tz)
    return Period(f"last-{days}d", today - days + 1, today)


def parse_period(label: str, now_ms: int, tz: ZoneInfo) -> Period:
    """Parse ``YYYY-MM``, ``YYYY-Qn`` or ``last-Nd``; raise :class:`PeriodError` otherwise
    (also for a year outside ``MIN_YEAR..MAX_YEAR``)."""
    if m := _MONTH.match(label):
        return month_period(int(m[1]), int(m[2]))
    if m := _QUARTER.match(label):
        return quarter_period(int(m[1]), int(m[2]))
    if m := _TRAILING.match(label):
        return trailing_period(int(m[1]), now_ms, tz)
    raise PeriodError(f"period must be YYYY-MM, YYYY-Qn or last-Nd, got {label!r}")


def current_month(now_ms: int, tz: ZoneInfo) -> Period:
    d = date.fromordinal(day_of(now_ms, tz))
    return month_period(d.year, d.month)


def current_quarter(now_ms: int, tz: ZoneInfo) -> Period:
    d = date.fromordinal(day_of(now_ms, tz))
    return quarter_period(d.year, (d.month - 1) // 3 + 1)

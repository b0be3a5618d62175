"""Event-time calendar: days, months, quarters, years and trailing windows in one time zone.

Every windowed number in salesops is kept in *day buckets*: the calendar day of the
event's time in the configured time zone (``SALESOPS_TIMEZONE``, default UTC), as an
integer ordinal (``date.toordinal()``).  A period is an inclusive range of day ordinals:

* ``2017-11``  -> the calendar month;
* ``2017-Q4``  -> the calendar quarter;
* ``2017``     -> the calendar year;
* ``FY2018``   -> the fiscal year, and ``FY2018-Q1`` its first quarter (below);
* ``2017-03-01..2017-05-15`` -> an explicit range of days, both ends included (what the
  API's ``from=2017-03-01&to=2017-05-15`` means; :func:`range_period`);
* ``last-30d`` -> the 30 calendar days ending with the day of ``now`` (inclusive).

**Fiscal years.** A fiscal year starts on the 1st of a configurable month (``start_month``,
``SALESOPS_FISCAL_YEAR_START_MONTH``, default 1) and lasts 12 months.  It is named by the
calendar year in which it *ends*, like most US companies: with a start month of 10,
``FY2018`` runs from 2017-10-01 to 2018-09-30 and ``FY2018-Q1`` is 2017-10-01..2017-12-31.
With a start month of 1 the fiscal year is the calendar year (``FY2018`` = ``2018``) and its
quarters are the calendar quarters.

Periods exist for the years ``MIN_YEAR``..``MAX_YEAR`` (0001..9998): the calendar
(``datetime.date``) ends on 9999-12-31 and a period's end is found, and its views compare,
with the first day after it, which must exist too.  Every day of a period lies in that
range (so ``FY0001`` with a start month other than 1, which would begin in year 0, does not
exist).  Any other label, including a year outside that range (``0000-01``, ``9999-Q4``)
or a range that ends before it starts, is a :class:`PeriodError` (the HTTP API answers
400), never an exception from the calendar.

Day buckets make trailing windows and calendar periods two views of one store, and keep
merging per-partition partials a plain sum.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_YEAR = re.compile(r"^(\d{4})$")
_FISCAL_YEAR = re.compile(r"^FY(\d{4})$")
_FISCAL_QUARTER = re.compile(r"^FY(\d{4})-Q([1-4])$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TRAILING = re.compile(r"^last-([1-9]\d{0,3})d$")
MIN_YEAR = 1
MAX_YEAR = 9998  # the day after 9998-12-31 still exists; the day after 9999-12-31 does not
LABELS = "YYYY-MM, YYYY-Qn, YYYY, FYYYYY, FYYYYY-Qn, YYYY-MM-DD..YYYY-MM-DD or last-Nd"


class PeriodError(ValueError):
    """A period label that is not one of :data:`LABELS`, or one with a day outside the
    years ``MIN_YEAR..MAX_YEAR``, or a range that ends before it starts."""


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


def year_period(year: int) -> Period:
    """The calendar year ``year`` (label ``YYYY``)."""
    _check_year(year)
    return Period(f"{year:04d}", date(year, 1, 1).toordinal(), date(year, 12, 31).toordinal())


def _check_start_month(start_month: int) -> None:
    # a configuration value, validated by the settings: not a PeriodError (not a 400)
    if not 1 <= start_month <= 12:
        raise ValueError(f"fiscal year start month must be within 1..12, got {start_month}")


def _fiscal_month(fiscal_year: int, start_month: int, months_in: int) -> date:
    """The 1st of the month ``months_in`` months after the start of ``fiscal_year``."""
    first_year = fiscal_year - (start_month != 1)  # named by the calendar year it ends in
    index = first_year * 12 + start_month - 1 + months_in
    year, month0 = divmod(index, 12)
    _check_year(year)
    return date(year, month0 + 1, 1)


def fiscal_year_period(fiscal_year: int, start_month: int = 1) -> Period:
    """Fiscal year ``fiscal_year`` (label ``FYYYYY``): the 12 months from the 1st of
    ``start_month``, named by the calendar year in which they end."""
    _check_start_month(start_month)
    first = _fiscal_month(fiscal_year, start_month, 0)
    last = _fiscal_month(fiscal_year, start_month, 11)
    return Period(f"FY{fiscal_year:04d}", first.toordinal(), month_period(last.year, last.month).last_day)


def fiscal_quarter_period(fiscal_year: int, quarter: int, start_month: int = 1) -> Period:
    """Quarter ``quarter`` (1..4) of fiscal year ``fiscal_year`` (label ``FYYYYY-Qn``)."""
    _check_start_month(start_month)
    first = _fiscal_month(fiscal_year, start_month, 3 * (quarter - 1))
    last = _fiscal_month(fiscal_year, start_month, 3 * quarter - 1)
    return Period(
        f"FY{fiscal_year:04d}-Q{quarter}", first.toordinal(), month_period(last.year, last.month).last_day
    )


def fiscal_year_of(day: int, start_month: int = 1) -> int:
    """The fiscal year (its name, see the module docstring) that contains ``day``."""
    _check_start_month(start_month)
    d = date.fromordinal(day)
    return d.year + (start_month != 1 and d.month >= start_month)


def fiscal_quarter_of(day: int, start_month: int = 1) -> Period:
    """The fiscal quarter that contains ``day``."""
    fiscal_year = fiscal_year_of(day, start_month)
    months_in = (date.fromordinal(day).month - start_month) % 12
    return fiscal_quarter_period(fiscal_year, months_in // 3 + 1, start_month)


def _day(text: str | date) -> date:
    if isinstance(text, date):
        return text
    if not _DAY.match(text):
        raise PeriodError(f"a day must be YYYY-MM-DD, got {text!r}")
    _check_year(int(text[:4]))
    try:
        return date.fromisoformat(text)
    except ValueError as exc:  # 2017-02-30
        raise PeriodError(f"not a calendar day: {text!r} ({exc})") from None


def range_period(first: str | date, last: str | date) -> Period:
    """The days ``first``..``last``, both included (``YYYY-MM-DD`` strings or dates): the
    API's ``from=...&to=...``.  Labelled ``YYYY-MM-DD..YYYY-MM-DD``, which
    :func:`parse_period` reads back.  A range that ends before it starts is a PeriodError;
    a one-day range (``from`` = ``to``) is fine."""
    a, b = _day(first), _day(last)
    _check_year(a.year)  # a date object can be 9999-12-31
    _check_year(b.year)
    if b < a:
        raise PeriodError(f"a range must not end before it starts, got {a.isoformat()}..{b.isoformat()}")
    return Period(f"{a.isoformat()}..{b.isoformat()}", a.toordinal(), b.toordinal())


def day_start_ms(day: int, tz: ZoneInfo) -> int:
    """Epoch ms of the first instant of calendar day ``day`` in ``tz``."""
    return int(datetime.combine(date.fromordinal(day), time(0), tzinfo=tz).timestamp() * 1000)


def period_bounds_ms(period: Period, tz: ZoneInfo) -> tuple[int, int]:
    """``(start, end)`` epoch ms of ``period`` in ``tz``: an instant ``t`` lies in the period
    when ``start <= t < end`` (``end`` is the first instant of the day after it)."""
    return day_start_ms(period.first_day, tz), day_start_ms(period.last_day + 1, tz)


def trailing_period(days: int, now_ms: int, tz: ZoneInfo) -> Period:
    today = day_of(now_ms, tz)
    return Period(f"last-{days}d", today - days + 1, today)


def parse_period(label: str, now_ms: int, tz: ZoneInfo, fiscal_start_month: int = 1) -> Period:
    """Parse one of :data:`LABELS` (fiscal labels with ``fiscal_start_month``); raise
    :class:`PeriodError` otherwise (also for a day outside ``MIN_YEAR..MAX_YEAR``)."""
    if m := _MONTH.match(label):
        return month_period(int(m[1]), int(m[2]))
    if m := _QUARTER.match(label):
        return quarter_period(int(m[1]), int(m[2]))
    if m := _YEAR.match(label):
        return year_period(int(m[1]))
    if m := _FISCAL_YEAR.match(label):
        return fiscal_year_period(int(m[1]), fiscal_start_month)
    if m := _FISCAL_QUARTER.match(label):
        return fiscal_quarter_period(int(m[1]), int(m[2]), fiscal_start_month)
    if m := _RANGE.match(label):
        return range_period(m[1], m[2])
    if m := _TRAILING.match(label):
        return trailing_period(int(m[1]), now_ms, tz)
    raise PeriodError(f"period must be {LABELS}, got {label!r}")


def current_month(now_ms: int, tz: ZoneInfo) -> Period:
    d = date.fromordinal(day_of(now_ms, tz))
    return month_period(d.year, d.month)


def current_quarter(now_ms: int, tz: ZoneInfo) -> Period:
    d = date.fromordinal(day_of(now_ms, tz))
    return quarter_period(d.year, (d.month - 1) // 3 + 1)

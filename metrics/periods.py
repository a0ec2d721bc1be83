"""Reporting periods: half-open ``[start, end)`` intervals in the reporting time zone (KPIS.md G1).

A period is identified by its granularity and its start, an aware datetime at local midnight in
``settings.TIME_ZONE``. Weeks are ISO weeks (Monday start).
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

from django.conf import settings

from metrics.models import Granularity

GRANULARITIES: tuple[str, ...] = tuple(Granularity.values)
# SQL ``date_trunc`` field names of each granularity.
TRUNC_KIND = {"week": "week", "month": "month", "quarter": "quarter", "year": "year"}


def reporting_tz() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


def local_midnight(day: date) -> datetime:
    """The aware instant at which ``day`` starts in the reporting time zone."""
    return datetime.combine(day, time(), tzinfo=reporting_tz())


def floor_date(day: date, granularity: str) -> date:
    """First day of the period of ``granularity`` that contains ``day``."""
    if granularity == Granularity.WEEK:
        return day - timedelta(days=day.weekday())
    if granularity == Granularity.MONTH:
        return day.replace(day=1)
    if granularity == Granularity.QUARTER:
        return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    if granularity == Granularity.YEAR:
        return date(day.year, 1, 1)
    raise ValueError(f"unknown granularity {granularity!r}")


def shift_date(day: date, granularity: str, steps: int) -> date:
    """``day`` (a period's first day) moved by ``steps`` whole periods."""
    if granularity == Granularity.WEEK:
        return day + timedelta(weeks=steps)
    months = {"month": 1, "quarter": 3, "year": 12}[granularity] * steps
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def period_index(day: date, granularity: str) -> int:
    """A running number of the period containing ``day``; consecutive periods differ by one."""
    if granularity == Granularity.WEEK:
        return floor_date(day, granularity).toordinal() // 7
    if granularity == Granularity.MONTH:
        return day.year * 12 + day.month - 1
    if granularity == Granularity.QUARTER:
        return day.year * 4 + (day.month - 1) // 3
    return day.year


@dataclass(frozen=True, order=True)
class Period:
    granularity: str
    first_day: date

    @cached_property
    def start(self) -> datetime:
        return local_midnight(self.first_day)

    @cached_property
    def end(self) -> datetime:
        return local_midnight(self.next().first_day)

    @property
    def index(self) -> int:
        return period_index(self.first_day, self.granularity)

    def next(self, steps: int = 1) -> "Period":
        return Period(self.granularity, shift_date(self.first_day, self.granularity, steps))

    def previous(self, steps: int = 1) -> "Period":
        return self.next(-steps)

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def __str__(self) -> str:
        return f"{self.granularity} {self.first_day.isoformat()}"


def local_date(moment: datetime) -> date:
    return moment.astimezone(reporting_tz()).date()


def period_of(moment: datetime | date, granularity: str) -> Period:
    """The period of ``granularity`` that contains ``moment`` (an aware datetime or a local date)."""
    day = local_date(moment) if isinstance(moment, datetime) else moment
    return Period(granularity, floor_date(day, granularity))


def periods_between(granularity: str, start: datetime | date, end: datetime | date) -> list[Period]:
    """Every period of ``granularity`` that overlaps the half-open range ``[start, end)``."""
    period = period_of(start, granularity)
    end_at = end if isinstance(end, datetime) else local_midnight(end)
    result = []
    while period.start < end_at:
        result.append(period)
        period = period.next()
    return result


def recent_periods(granularity: str, now: datetime, back: int) -> list[Period]:
    """The current period and the ``back`` periods before it, oldest first."""
    current = period_of(now, granularity)
    return [current.previous(steps) for steps in range(back, -1, -1)]

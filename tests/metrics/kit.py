"""Helpers for the KPI tests: local times in the reporting zone and one-KPI computations."""

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from metrics.kpis import get_kpi
from metrics.kpis.base import Context, Row, Run
from metrics.models import Scope
from metrics.periods import Period
from metrics.services import kpi_rows

BERLIN = ZoneInfo("Europe/Berlin")


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """An aware instant given as wall-clock time in the reporting zone (Europe/Berlin in the tests)."""
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN)


NOW = local(2026, 6, 15, 12)
MARCH = date(2026, 3, 1)


def compute(
    code: str,
    *,
    granularity: str = "month",
    first_day: date = MARCH,
    now: datetime = NOW,
    also: tuple[date, ...] = (),
) -> dict[tuple[str, str], Row]:
    """One KPI's rows for one period (computed together with the ``also`` periods), by (scope, scope id)."""
    kpi = get_kpi(code)
    period = Period(granularity, first_day)
    ctx = Context(Run(periods={granularity: [period, *(Period(granularity, d) for d in also)]}, now=now))
    rows, _cover = kpi_rows(ctx, kpi)
    return {(row.scope, row.scope_id): row for row, p in rows if p == period}


def row(code: str, scope: str = Scope.COMPANY, scope_id: object = "", **kwargs: object) -> Row | None:
    return compute(code, **kwargs).get((scope, str(scope_id)))


def value(code: str, scope: str = Scope.COMPANY, scope_id: object = "", **kwargs: object) -> Decimal | None:
    """The KPI's value rounded to the 6 places snapshots store; None when missing or NULL."""
    found = row(code, scope, scope_id, **kwargs)
    if found is None or found.value is None:
        return None
    return Decimal(found.value).quantize(Decimal("0.000001"))


def d(text: str) -> Decimal:
    return Decimal(text).quantize(Decimal("0.000001"))


def detail(extra: Any) -> dict[str, Any]:
    """A row's details as a plain dict of the fields that are set (tuples as lists), for comparisons."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in extra.to_json().items()
        if value is not None
    }

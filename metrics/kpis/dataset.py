"""Declarative datasets: a base queryset bucketed into periods by one date, with named measures.

A KPI definition names a :class:`Dataset` and the measures it divides or reports; ``builders.grouped``
turns the dataset into every requested period × scope. Additive datasets (counts and integer sums
only) are kept as day and month facts (``facts``), so a recompute of recent periods reads a few
thousand fact rows instead of scanning the records again.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

from django.db.models import Expression, F, FloatField, Func, Q, QuerySet
from psycopg import sql as pg

from metrics.periods import Period

if TYPE_CHECKING:
    from metrics.kpis.base import Context


@dataclass(frozen=True)
class Measure:
    """One aggregate over a dataset's rows: ``agg`` of ``value`` over the rows matching ``where``."""

    agg: str
    value: str | Expression | None = None
    where: Q | None = None
    fraction: float = 0.5
    # Sums of money are added as integers (value × scale), far cheaper than numeric, and stay exact.
    scale: int | None = None
    # The value is already an integer multiple of 1 / scale (no rounding needed in SQL).
    prescaled: bool = False
    # A condition that depends on the granularity (e.g. "before the start of the row's period").
    where_by_granularity: Callable[[str], Q] | None = None


def count(where: Q | None = None, *, where_by_granularity: Callable[[str], Q] | None = None) -> Measure:
    return Measure("count", where=where, where_by_granularity=where_by_granularity)


def count_distinct(value: str | Expression, where: Q | None = None) -> Measure:
    return Measure("count_distinct", value, where)


def total(
    value: str | Expression,
    where: Q | None = None,
    *,
    scale: int | None = None,
    prescaled: bool = False,
    where_by_granularity: Callable[[str], Q] | None = None,
) -> Measure:
    """Σ value; ``scale`` (e.g. 100 for cents) makes value × scale an exact integer to add up.

    With ``prescaled`` the value already is that integer (e.g. an amount in cents). Without ``scale``
    the value must be an integer (facts hold integers).
    """
    return Measure(
        "sum", value, where, scale=scale, prescaled=prescaled, where_by_granularity=where_by_granularity
    )


def mean(value: str | Expression, where: Q | None = None) -> Measure:
    return Measure("avg", value, where)


def percentile(value: str | Expression, fraction: float, where: Q | None = None) -> Measure:
    return Measure("percentile", value, where, fraction)


def hours_between(start: str, end: str) -> Expression:
    """``end − start`` in hours, as a float."""
    return Func(
        F(end) - F(start),
        template="(EXTRACT(EPOCH FROM %(expressions)s)::float8 / 3600.0)",
        output_field=FloatField(),
    )


def days_between(start: str, end: str) -> Expression:
    """``end − start`` in days, as a float."""
    return Func(
        F(end) - F(start),
        template="(EXTRACT(EPOCH FROM %(expressions)s)::float8 / 86400.0)",
        output_field=FloatField(),
    )


ADDITIVE = ("count", "sum")

# Scope -> the field (path) holding a row's scope id, e.g. ``{Scope.USER: "owner_id"}``.
ScopePaths = Mapping[str, str]

# (context, instant) -> the local days whose rows may have changed since that instant.
Touch = Callable[["Context", datetime], Iterable[date]]
# (context, half-open ranges of local days) -> SQL and parameters of the day rows of those days:
# ``on_day, scope, scope_id, part_0 … part_n``, one row per day and scope, the measures in declared order.
# SQL (composed with psycopg.sql) of day rows ``on_day, scope, scope_id, part_0 …``, and its parameters.
DaySql = Callable[["Context", Sequence[tuple[date, date]]], tuple[pg.Composable, list]]
DayRows = Callable[["Context", Sequence[tuple[date, date]]], Iterable[tuple]]


@dataclass(frozen=True)
class Dataset:
    """A base queryset bucketed into periods by one date; its measures come from one grouped query.

    ``compare``: the periods each period is compared with; they are computed too, and a change in them
    counts as a change of the period. ``opening_balance``: rows before the first requested period fall
    into the period before it (a stock's opening balance), so :func:`builders.stock` can accumulate
    deltas. ``date_is_day``: the
    date is a local calendar date (``DateField``), not an instant. ``window``: the queryset uses window
    functions, so the period range is applied outside it (after the window is computed).

    Incremental runs (see ``facts``) rewrite the days whose rows changed since the last run: every
    day since then, the days of rows whose ``changed`` timestamp (``updated_at`` when the model has
    one) moved since then, and the days ``touches`` name (effects on other rows' days, such as a
    reopened deal leaving the day it was won). ``refresh=False``: only a full rebuild rewrites the
    facts (their periods no longer change once under way). ``always``: no facts; every run computes
    it from the records (a current state or a tiny table).
    """

    name: str
    rows: Callable[["Context"], QuerySet]
    date: str | Expression
    measures: Mapping[str, Measure]
    scopes: ScopePaths = field(default_factory=dict)
    granularities: tuple[str, ...] = ("week", "month", "quarter", "year")
    # The earlier periods a period's figures are compared with (growth: the previous one, a year before).
    compare: Callable[[Period], Iterable[Period]] | None = None
    opening_balance: bool = False
    date_is_day: bool = False
    window: bool = False
    changed: tuple[str, ...] | None = None
    touches: tuple[Touch, ...] = ()
    refresh: bool = True
    always: bool = False
    # Day rows written by hand where the records do not fit one queryset (``rows`` is then unused): SQL,
    # or Python computing them (in the same shape, as tuples).
    day_sql: DaySql | None = None
    day_rows: DayRows | None = None
    # Read only for the current period (the data-quality checks describe the records as they are now).
    current_only: bool = False
    # A state as of the run (``date`` is the run's instant): every record counts in every current period.
    as_of_run: bool = False
    # Facts kept per user only, the user being this field of the record (``owner``): an incremental run
    # rescans a day whose only changes are records stamped as changed (``updated_at``) for their users
    # alone, now and before (the model's history), not every record of the day (20 000 deals a day at
    # 10 M). The scan narrows itself to ``Context.scan_users`` (``rows`` by this field; ``day_sql`` too).
    by_user: str | None = None

    @property
    def additive(self) -> bool:
        return all(m.agg in ADDITIVE for m in self.measures.values())

    @property
    def uses_facts(self) -> bool:
        return self.additive and not self.always

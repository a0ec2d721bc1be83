"""Builders that turn declarative datasets into every requested period × scope, and measures into rows.

:func:`grouped` answers a :class:`~metrics.kpis.dataset.Dataset` for every requested period and scope,
memoised per recompute so every KPI that reads a dataset shares one computation: additive datasets
from their facts (``facts``), the others straight from the records (``sql``). :func:`ratio`,
:func:`measure` and :func:`stock` turn the grouped measures into snapshot rows.
"""

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from django.db.models import Q

from metrics.kpis import facts
from metrics.kpis.base import Context, Kpi, Row
from metrics.kpis.dataset import (
    Dataset,
    Measure,
    ScopePaths,
    count,
    count_distinct,
    days_between,
    hours_between,
    mean,
    percentile,
    total,
)
from metrics.kpis.drilldown import DENOMINATOR, NUMERATOR, SAMPLE, VALUE, Drill, dataset_part
from metrics.kpis.sql import Grouped, current_grouped, grouping_sets_query, in_spans, part, records_query
from metrics.models import Scope
from metrics.periods import Period

__all__ = [
    "Dataset",
    "Grouped",
    "Measure",
    "count",
    "count_distinct",
    "days_between",
    "grouping_sets_query",
    "hours_between",
    "in_spans",
    "mean",
    "part",
    "percentile",
    "total",
]

HUNDRED = Decimal(100)
ZERO = Decimal(0)


def grouped(ctx: Context, dataset: Dataset) -> Grouped:
    """The dataset's measures for every requested period × scope (memoised: computed once per recompute).

    Incremental contexts answer only what changed: datasets without facts then compute just the
    periods that changed records fall in; ``always`` datasets are read from the records in every run,
    for the periods it needs (or the current ones).
    """
    compute = lambda: ctx.timed(dataset.name, "scan", lambda: _compute(ctx, dataset))  # noqa: E731
    return ctx.memo(("dataset", dataset.name), compute, reads=(dataset.name,))


def _compute(ctx: Context, ds: Dataset) -> Grouped:
    grans = ctx.requested(ds.granularities)
    if not grans:
        return {}
    if ds.uses_facts:
        data = facts.grouped(ctx, ds, grans)
    elif ds.always:
        data = _every_time(ctx, ds, grans)
    else:
        data = _from_records(ctx, ds, grans)
    scaled = {name: Decimal(m.scale) for name, m in ds.measures.items() if m.scale}
    if scaled:
        for values in data.values():
            for name, scale in scaled.items():
                if values.get(name) is not None:
                    values[name] = Decimal(values[name]) / scale
    return data


def _every_time(ctx: Context, ds: Dataset, grans: list[str]) -> Grouped:
    """A dataset computed from its records in every run (a current state, a tiny table): one grouped
    query over the periods the run needs."""
    if ds.current_only:
        return current_grouped(ctx, ds, grans)
    needed = [p for g in grans for p in ctx.needed(g, ds.compare, ds.name)]
    if not needed:
        return {}
    spans = [(min(p.first_day for p in needed), max(p.next().first_day for p in needed))]
    return records_query(ctx, ds, grans, spans).run()


def _from_records(ctx: Context, ds: Dataset, grans: list[str]) -> Grouped:
    """Non-additive measures from the records: every requested period in a full run; in an incremental
    one the touched periods (and those they are compared with), one granularity at a time."""
    ctx.tracked[ds.name] = ds
    if not ctx.incremental:
        return facts.run_records_query(ctx, ds, grans)
    out: Grouped = {}
    for g in grans:
        needed = [p for p in ctx.needed(g, ds.compare, ds.name) if p not in ctx.skipped.get(ds.name, ())]
        if needed:
            spans = [(p.first_day, p.next().first_day) for p in needed]
            out.update(records_query(ctx, ds, [g], spans).run())
    return out


# Turning measures into rows
# ---------------------------------------------------------------------------------------------------------


def dec(value: Any) -> Decimal:
    """A measure as a Decimal; SQL NULL (an empty sum) is zero."""
    if value is None:
        return ZERO
    return value if isinstance(value, Decimal) else Decimal(str(value))


def opt_dec(value: Any) -> Decimal | None:
    return None if value is None else dec(value)


def divide(numerator: Decimal, denominator: Decimal, scale: Decimal = Decimal(1)) -> Decimal | None:
    """``numerator / denominator × scale``; None (NULL, "no data") for an empty denominator."""
    if not denominator:
        return None
    return numerator * scale / denominator


def rows_from(
    ctx: Context,
    kpi: Kpi,
    data: Grouped,
    fn: Callable[[Mapping[str, Any], Period, str, str], tuple | None],
    *,
    dense_company: bool = True,
) -> Iterator[Row]:
    """Rows for every grouped key in range (``fn`` gives value, numerator, denominator, n, extra).

    The company gets a row for every requested period even without data, so an empty period reads
    as 0 or "no data" rather than missing.
    """
    for (g, first_day, scope, scope_id), values in data.items():
        if scope not in kpi.scopes or g not in kpi.granularities:
            continue
        period = ctx.period(g, first_day)
        if period is None or not ctx.answers(period):
            continue
        result = fn(values, period, scope, scope_id)
        if result is not None:
            yield Row(g, first_day, scope, scope_id, *result)
    if dense_company and Scope.COMPANY in kpi.scopes:
        for g in ctx.requested(kpi.granularities):
            for period in ctx.periods[g]:
                if (g, period.first_day, Scope.COMPANY, "") not in data and ctx.answers(period):
                    result = fn({}, period, Scope.COMPANY, "")
                    if result is not None:
                        yield Row(g, period.first_day, Scope.COMPANY, "", *result)


class DayFactsComparison(ABC):
    """Like for like for a KPI made of one dataset's sums and counts (``facts_dataset``): the same function
    of the measures (``to_date``), summed over the day facts of the same elapsed days of the period before
    (KPIS.md §10.1)."""

    @property
    @abstractmethod
    def facts_dataset(self) -> Dataset | None: ...

    @abstractmethod
    def to_date(self, kpi: Kpi, values: Mapping[str, Any]) -> tuple: ...

    @property
    def day_datasets(self) -> tuple[Dataset, ...]:
        ds = self.facts_dataset
        return () if ds is None else (ds,)

    def at_offset(self, ctx: Context, kpi: Kpi, at: "Offset") -> tuple | None:
        """(value, numerator, denominator, n) over those days; None without day facts (a median, say)."""
        ds = self.facts_dataset
        return None if ds is None else self.to_date(kpi, at.days(ds))


@dataclass(frozen=True)
class Ratio(DayFactsComparison):
    """KPI = measure ``numerator`` ÷ measure ``denominator`` of one dataset (× 100 for percent KPIs);
    NULL on 0. Its sample size is the denominator, or the count measure ``sample`` where the denominator
    is not a count (a sum of money). Its drill-down parts are the records of the two measures."""

    dataset: Dataset | Callable[[Context], Grouped]
    numerator: str
    denominator: str
    provisional: Callable[[Context, Period], bool] | None = None
    sample: str | None = None

    def _n(self, values: Mapping[str, Any], den: Decimal) -> int:
        return int(den) if self.sample is None else int(values.get(self.sample) or 0)

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        ds = self.dataset
        data = grouped(ctx, ds) if isinstance(ds, Dataset) else ds(ctx)
        scale = HUNDRED if kpi.is_percent else Decimal(1)

        def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
            num, den = dec(values.get(self.numerator)), dec(values.get(self.denominator))
            is_prov = bool(self.provisional and self.provisional(ctx, period))
            return divide(num, den, scale), num, den, self._n(values, den), None, is_prov

        return rows_from(ctx, kpi, data, fn)

    @property
    def facts_dataset(self) -> Dataset | None:
        """The dataset whose day facts give this KPI for any span of days (like-for-like comparisons)."""
        ds = self.dataset
        return ds if isinstance(ds, Dataset) and ds.uses_facts and not ds.opening_balance else None

    def to_date(self, kpi: Kpi, values: Mapping[str, Any]) -> tuple:
        """(value, numerator, denominator, n) of the measures summed over a span of days."""
        num, den = dec(values.get(self.numerator)), dec(values.get(self.denominator))
        return divide(num, den, HUNDRED if kpi.is_percent else Decimal(1)), num, den, self._n(values, den)

    @property
    def drill(self) -> Drill | None:
        if not isinstance(self.dataset, Dataset):
            return None
        return Drill(
            {
                NUMERATOR: dataset_part(self.dataset, self.numerator, NUMERATOR),
                DENOMINATOR: dataset_part(self.dataset, self.denominator, DENOMINATOR),
            }
        )


def ratio(
    dataset: Dataset | Callable[[Context], Grouped],
    numerator: str,
    denominator: str,
    *,
    provisional: Callable[[Context, Period], bool] | None = None,
    sample: str | None = None,
) -> Ratio:
    """KPI = measure ``numerator`` ÷ measure ``denominator`` (× 100 for percent KPIs); NULL on 0.
    ``sample``: the count measure that is its sample size when the denominator is a sum of money."""
    return Ratio(dataset, numerator, denominator, provisional, sample)


@dataclass(frozen=True)
class Measured(DayFactsComparison):
    """KPI = one measure of the dataset (a count, a sum, a mean or a percentile).

    ``sample`` names the count measure that is the sample size; when it is 0 the value is NULL (a
    median of nothing), except for counts and sums, which are 0. ``extra`` copies more measures. Its
    drill-down parts: the records the value is made of, and those of the sample.
    """

    dataset: Dataset
    name: str
    sample: str | None = None
    extra: Mapping[str, str] | None = None

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        data = grouped(ctx, self.dataset)
        is_aggregate_of_sample = self.dataset.measures[self.name].agg in ("avg", "percentile")

        def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
            n = int(values.get(self.sample) or 0) if self.sample else None
            raw = values.get(self.name)
            value = (opt_dec(raw) if n is None or n > 0 else None) if is_aggregate_of_sample else dec(raw)
            copied = {key: _jsonable(values.get(m)) for key, m in (self.extra or {}).items()}
            details = kpi.detail(**copied) if copied else None
            return value, None, None, n, details

        return rows_from(ctx, kpi, data, fn)

    @property
    def facts_dataset(self) -> Dataset | None:
        ds = self.dataset
        return ds if ds.uses_facts and not ds.opening_balance else None

    @property
    def statistics_dataset(self) -> Dataset | None:
        """The dataset whose records give this KPI (a median, a percentile) for any span of days."""
        ds = self.dataset
        plain = not (ds.additive or ds.always or ds.current_only or ds.opening_balance)
        return ds if plain and ds.day_sql is None and ds.day_rows is None else None

    def to_date(self, kpi: Kpi, values: Mapping[str, Any]) -> tuple:
        n = int(values.get(self.sample) or 0) if self.sample else None
        return dec(values.get(self.name)), None, None, n

    @property
    def drill(self) -> Drill:
        parts = {NUMERATOR: dataset_part(self.dataset, self.name, VALUE)}
        if self.sample:
            parts[DENOMINATOR] = dataset_part(self.dataset, self.sample, SAMPLE)
        return Drill(parts)


def measure(
    dataset: Dataset,
    name: str,
    *,
    sample: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> Measured:
    """KPI = one measure of the dataset; see :class:`Measured`."""
    return Measured(dataset, name, sample, extra)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return value


def stock(ctx: Context, dataset: Dataset) -> Grouped:
    """Accumulate a dataset of deltas (``opening_balance=True``) into its level at each period's end.

    The level at the end of period P is the sum of every delta dated before P's end. Non-company scopes
    get a key only where the level is non-zero or moved in the period; the company gets every period.
    """

    def build() -> Grouped:
        deltas = grouped(ctx, dataset)
        series: dict[tuple[str, str, str], list[tuple[date, dict[str, Any]]]] = defaultdict(list)
        for (g, first_day, scope, scope_id), values in deltas.items():
            series[(g, scope, scope_id)].append((first_day, values))
        for g in ctx.requested(dataset.granularities):
            series.setdefault((g, Scope.COMPANY, ""), [])
        out: Grouped = {}
        names = list(dataset.measures)
        for (g, scope, scope_id), points in series.items():
            points.sort(key=lambda item: item[0])
            level = dict.fromkeys(names, ZERO)
            i = 0
            for period in ctx.periods[g]:
                moved = False
                while i < len(points) and points[i][0] <= period.first_day:
                    for name in names:
                        level[name] += dec(points[i][1].get(name))
                    moved = moved or points[i][0] == period.first_day
                    i += 1
                if scope == Scope.COMPANY or moved or any(level.values()):
                    out[(g, period.first_day, scope, scope_id)] = dict(level)
        return out

    return ctx.memo(("stock", dataset.name), build, reads=(dataset.name,))


def with_current(ctx: Context, levels: Grouped, now: Dataset) -> Grouped:
    """A stock's levels with each current period's replaced by the state now (dataset ``now``).

    A stock's level at the end of the current period is the state now; read from the records it
    already reflects edits (an amount, an owner) that the history reaches only at the nightly rebuild.
    """
    current = {g: ctx.current(g).first_day for g in ctx.granularities}
    out = {key: values for key, values in levels.items() if current.get(key[0]) != key[1]}
    out.update(grouped(ctx, now))
    return out


@dataclass(frozen=True)
class Offset:
    """What a running week or month is compared with (KPIS.md §10.1): the period ``before`` it from its
    first day until ``until`` (exclusive; the same elapsed days), for one scope. ``totals``: each day
    dataset's measures summed over those days, by scope."""

    before: Period
    until: date
    scope: str
    scope_id: str
    totals: facts.DayTotals

    @property
    def key(self) -> tuple[str, date, str, str]:
        """The grouped key of ``before`` for this scope."""
        return self.before.granularity, self.before.first_day, self.scope, self.scope_id

    @property
    def company_key(self) -> tuple[str, date, str, str]:
        return self.before.granularity, self.before.first_day, Scope.COMPANY, ""

    def days(self, dataset: Dataset) -> Mapping[str, Decimal]:
        """The dataset's measures summed over those days, for this scope."""
        return self.totals.get(dataset.name, {}).get((self.scope, self.scope_id), {})


@runtime_checkable
class ComparedFromFacts(Protocol):
    """A builder whose KPI, while a week or month runs, is compared with the same elapsed days of the period
    before through the day facts of ``day_datasets`` (``at_offset``: None when it cannot be)."""

    @property
    def day_datasets(self) -> tuple[Dataset, ...]: ...

    def at_offset(self, ctx: Context, kpi: Kpi, at: Offset) -> tuple | None: ...


@runtime_checkable
class ComparedFromRecords(Protocol):
    """A builder whose KPI (a median, a percentile) is compared like for like from the records of those days:
    of ``statistics_dataset`` (None: not this way), through ``to_date``."""

    @property
    def statistics_dataset(self) -> Dataset | None: ...

    def to_date(self, kpi: Kpi, values: Mapping[str, Any]) -> tuple: ...


# (measures of one period and scope, the period, scope, scope id) -> (value, numerator, denominator, n,
# details[, provisional]), or None for no row.
RowFn = Callable[[Mapping[str, Any], Period, str, str], tuple | None]


@dataclass(frozen=True)
class OfDataset:
    """KPI = a function of each period's measures of one dataset (NPS, CSAT, CES, response rates): ``row``
    gives that function for a recompute (it may read other periods, e.g. for details).

    While a week or month runs, the same function of the measures summed over the same elapsed days of
    the period before is what it is compared with (KPIS.md §10.1)."""

    dataset: Dataset
    row: Callable[[Context, Kpi], RowFn]

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        return rows_from(ctx, kpi, grouped(ctx, self.dataset), self.row(ctx, kpi))

    @property
    def day_datasets(self) -> tuple[Dataset, ...]:
        return (self.dataset,) if self.dataset.uses_facts else ()

    def at_offset(self, ctx: Context, kpi: Kpi, at: Offset) -> tuple | None:
        if not self.dataset.uses_facts:
            return None
        fn = ctx.memo(("row of", kpi.code), lambda: self.row(ctx, kpi))
        found = fn(at.days(self.dataset), at.before, at.scope, at.scope_id)
        return (None, ZERO, ZERO, 0) if found is None else tuple(found[:4])


@dataclass(frozen=True)
class Stocked:
    """KPI = one measure of a stock (KPIS.md G2): the deltas of ``deltas`` accumulated to each period's
    end, the current period's level read from the state now (``now``). ``sample`` names the measure that
    is its n; ``details`` gives a period's details (e.g. the backlog's net change).

    While a period runs, its level is compared with the level at the same offset of the period before
    (KPIS.md §10.1): that period's opening level plus its deltas of the same elapsed days."""

    deltas: Dataset
    now: Dataset
    name: str
    sample: str | None = None
    details: Callable[[Context], Callable[[Period, str, str], Any]] | None = None

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        details = self.details(ctx) if self.details else None

        def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
            n = int(values.get(self.sample) or 0) if self.sample else None
            extra = details(period, scope, scope_id) if details else None
            return dec(values.get(self.name)), None, None, n, extra

        return rows_from(ctx, kpi, with_current(ctx, stock(ctx, self.deltas), self.now), fn)

    @property
    def day_datasets(self) -> tuple[Dataset, ...]:
        return (self.deltas,)

    def at_offset(self, ctx: Context, kpi: Kpi, at: Offset) -> tuple | None:
        """(value, None, None, n) of the stock after the first days of the period before; None when the run
        did not compute that period."""
        levels = stock(ctx, self.deltas)
        if at.company_key not in levels:
            return None
        end, moved, to_date = (
            levels.get(at.key, {}),
            grouped(ctx, self.deltas).get(at.key, {}),
            at.days(self.deltas),
        )

        def level(name: str) -> Decimal:
            return dec(end.get(name)) - dec(moved.get(name)) + dec(to_date.get(name))

        return level(self.name), None, None, int(level(self.sample)) if self.sample else None


def period_range(period: Period, *, date_field: str, day: bool = False) -> Q:
    """Rows whose ``date_field`` falls in the period (a local date when ``day``)."""
    if day:
        return Q(**{f"{date_field}__gte": period.first_day, f"{date_field}__lt": period.next().first_day})
    return Q(**{f"{date_field}__gte": period.start, f"{date_field}__lt": period.end})


def scope_filter(scope: str, scope_id: str, paths: ScopePaths) -> Q:
    """Rows of one scope: ``paths`` maps team/user/source to the field holding the scope id."""
    if scope == Scope.COMPANY:
        return Q()
    if scope not in paths:
        raise ValueError(f"scope {scope!r} is not available here")
    return Q(**{paths[scope]: scope_id})

"""Builders that turn a declarative dataset into ONE grouped SQL query for all periods and scopes.

A :class:`Dataset` is a base queryset (exclusions applied), the event time that puts a row into a
period, the field behind each scope and named measures (counts, sums, means, percentiles, each with an
optional condition). :func:`grouped` compiles the queryset with the ORM (``Trunc*`` in the reporting
time zone), wraps it in ``GROUP BY GROUPING SETS`` over every requested granularity × scope and runs it
once per recompute, so every KPI that reads the dataset shares one scan. :func:`ratio` and
:func:`measure` turn the grouped measures into snapshot rows.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.db.models import (
    BooleanField,
    DateField,
    DateTimeField,
    Expression,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Q,
    QuerySet,
    Value,
)
from django.db.models.functions import Greatest, Trunc

from metrics.kpis.base import Context, Drilldown, Kpi, Row
from metrics.models import Scope
from metrics.periods import Period, reporting_tz

if TYPE_CHECKING:
    from accounts.models import User

# (granularity, first day of the period, scope, scope id) -> measure name -> value
Key = tuple[str, date, str, str]
Grouped = dict[Key, dict[str, Any]]
HUNDRED = Decimal(100)
ZERO = Decimal(0)


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


def count(where: Q | None = None) -> Measure:
    return Measure("count", where=where)


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

    With ``prescaled`` the value already is that integer (e.g. an amount in cents).
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
        template="(EXTRACT(EPOCH FROM %(expressions)s) / 3600.0)",
        output_field=FloatField(),
    )


def days_between(start: str, end: str) -> Expression:
    """``end − start`` in days, as a float."""
    return Func(
        F(end) - F(start),
        template="(EXTRACT(EPOCH FROM %(expressions)s) / 86400.0)",
        output_field=FloatField(),
    )


@dataclass(frozen=True)
class Dataset:
    """A base queryset bucketed into periods by one date; its measures come from one grouped query.

    ``opening_balance``: rows before the first requested period fall into the period before it (a
    stock's opening balance), so :func:`stock` can accumulate deltas. ``date_is_day``: the date is a
    local calendar date (``DateField``), not an instant. ``window``: the queryset uses window
    functions, so the period range is applied outside it (after the window is computed).
    """

    name: str
    rows: Callable[[Context], QuerySet]
    date: str | Expression
    measures: Mapping[str, Measure]
    scopes: Mapping[str, str] = field(default_factory=dict)
    granularities: tuple[str, ...] = ("week", "month", "quarter", "year")
    lookback: Callable[[Period], Period] | None = None
    opening_balance: bool = False
    date_is_day: bool = False
    window: bool = False


ADDITIVE = ("count", "sum")
_AGG_SQL = {
    "count": "count(*)",
    "count_distinct": "count(DISTINCT {v})",
    "sum": "sum({v})",
    "avg": "avg({v})",
    "percentile": "percentile_cont({f}) WITHIN GROUP (ORDER BY {v})",
}


def grouped(ctx: Context, dataset: Dataset) -> Grouped:
    """The dataset's measures for every requested period × scope (memoised: one query per recompute)."""
    return ctx.memo(("dataset", dataset.name), lambda: _run_dataset(ctx, dataset))


def _run_dataset(ctx: Context, ds: Dataset) -> Grouped:
    grans = [g for g in ctx.granularities if g in ds.granularities]
    if not grans:
        return {}
    lo, hi = ctx.bounds(grans, ds.lookback)
    tz = reporting_tz()
    date_expr = F(ds.date) if isinstance(ds.date, str) else ds.date
    bucket_expr = date_expr
    if ds.opening_balance:
        bucket_expr = Greatest(date_expr, Value(lo - timedelta(microseconds=1), output_field=DateTimeField()))
    # Counts and sums are first added up per local day and scope, then rolled up into every period:
    # the grouping sets then work on a few hundred thousand day rows instead of every record.
    additive = all(m.agg in ADDITIVE for m in ds.measures.values())
    annotations: dict[str, Any] = {"k_at": date_expr}
    if additive:
        annotations["k_day"] = (
            bucket_expr
            if ds.date_is_day
            else Trunc(bucket_expr, "day", output_field=DateTimeField(), tzinfo=tz)
        )
    else:
        for g in grans:
            if ds.date_is_day:
                annotations[f"k_b_{g}"] = Trunc(bucket_expr, g, output_field=DateField())
            else:
                annotations[f"k_b_{g}"] = Trunc(bucket_expr, g, output_field=DateTimeField(), tzinfo=tz)
    for scope, path in ds.scopes.items():
        annotations[f"k_s_{scope}"] = F(path)
    aggregates: dict[str, str | dict[str, str]] = {}
    for i, (name, m) in enumerate(ds.measures.items()):
        v = w = ""
        if m.value is not None:
            v = f"k_v{i}"
            annotations[v] = F(m.value) if isinstance(m.value, str) else m.value
        if m.where is not None:
            w = f"k_w{i}"
            annotations[w] = ExpressionWrapper(m.where, output_field=BooleanField())
        if m.scale and m.prescaled:
            sql = f"sum({v})"
        elif m.scale:
            sql = f"sum(round({v} * {int(m.scale)})::bigint)"
        else:
            sql = _AGG_SQL[m.agg].format(v=v, f=float(m.fraction))
        if m.where_by_granularity is not None:
            by_g = {}
            for g in grans:
                annotations[f"k_w{i}_{g}"] = ExpressionWrapper(
                    m.where_by_granularity(g), output_field=BooleanField()
                )
                conditions = " AND ".join(c for c in (w, f"k_w{i}_{g}") if c)
                by_g[g] = f"{sql} FILTER (WHERE {conditions})"
            aggregates[name] = by_g
        else:
            aggregates[name] = f"{sql} FILTER (WHERE {w})" if w else sql
    qs = ds.rows(ctx).order_by().annotate(**annotations)
    lo_v, hi_v = (lo.astimezone(tz).date(), hi.astimezone(tz).date()) if ds.date_is_day else (lo, hi)
    where, where_params = "", []
    if ds.window:
        where, where_params = "WHERE k_at < %s" + ("" if ds.opening_balance else " AND k_at >= %s"), [hi_v]
        if not ds.opening_balance:
            where_params.append(lo_v)
    else:
        qs = qs.filter(k_at__lt=hi_v) if ds.opening_balance else qs.filter(k_at__gte=lo_v, k_at__lt=hi_v)
    inner_sql, inner_params = qs.values(*annotations).query.sql_with_params()
    params = [*inner_params, *where_params]
    if additive:
        data = _additive_rollup(ds, grans, inner_sql, params, aggregates, where)
    else:
        data = grouping_sets_query(
            inner_sql,
            params,
            buckets={g: f"k_b_{g}" for g in grans},
            scopes={s: f"k_s_{s}" for s in ds.scopes},
            aggregates=aggregates,
            where=where,
        )
    scaled = {name: Decimal(m.scale) for name, m in ds.measures.items() if m.scale}
    if scaled:
        for values in data.values():
            for name, scale in scaled.items():
                if values[name] is not None:
                    values[name] = Decimal(values[name]) / scale
    if additive and Scope.USER in ds.scopes:
        return _roll_up_users(ctx, data, team=Scope.TEAM in ds.scopes)
    return data


def _additive_rollup(
    ds: Dataset,
    grans: list[str],
    inner_sql: str,
    params: list[Any],
    aggregates: dict[str, str | dict[str, str]],
    where: str,
) -> Grouped:
    """Counts and sums: one scan adds rows up per local day and scope into a temporary table, then
    each period × scope is summed from those day rows. Team and company figures are not grouped in
    SQL when there is a user scope: they are the sums of the users' figures (see _roll_up_users).
    """
    scope_sets = [s for s in ds.scopes if s != Scope.TEAM or Scope.USER not in ds.scopes]
    sets: list[str | None] = list(scope_sets)
    if Scope.USER not in ds.scopes:
        sets.append(None)
    columns = [f"k_s_{s}" for s in scope_sets]
    level1 = ", ".join(f"(k_day{', ' + f'k_s_{s}' if s else ''})" for s in sets)
    grouping = f"GROUPING({', '.join(columns)})" if columns else "0"
    flat: list[str] = []
    sums: dict[str, str | dict[str, str]] = {}
    for name, sql in aggregates.items():
        if isinstance(sql, str):
            sums[name] = f"sum(k_p{len(flat)})"
            flat.append(sql)
        else:
            sums[name] = {}
            for g, g_sql in sql.items():
                sums[name][g] = f"sum(k_p{len(flat)})"
                flat.append(g_sql)
    partials = ", ".join(f"{sql} AS k_p{i}" for i, sql in enumerate(flat))
    table = f"kpi_day_{ds.name}"
    out: Grouped = {}
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")
        cursor.execute(
            f"CREATE TEMP TABLE {table} AS SELECT k_day, {', '.join([*columns, ''])}{grouping} AS k_set, "  # noqa: S608
            f"{partials} "
            f"FROM ({inner_sql}) AS t {where} GROUP BY GROUPING SETS ({level1})",
            params,
        )
    try:
        for scope in sets:
            mask = sum(1 << (len(columns) - 1 - i) for i, s in enumerate(scope_sets) if s != scope)
            buckets = ", ".join(f"date_trunc('{g}', k_day::timestamp)::date AS k_b_{g}" for g in grans)
            scope_col = [f"k_s_{scope}"] if scope else []
            day_rows = (
                f"SELECT {buckets}, {', '.join([*scope_col, ''])}"  # noqa: S608
                f"{', '.join(f'k_p{i}' for i in range(len(flat)))} FROM {table} WHERE k_set = {mask}"
            )
            out.update(
                grouping_sets_query(
                    day_rows,
                    [],
                    buckets={g: f"k_b_{g}" for g in grans},
                    scopes={scope: f"k_s_{scope}"} if scope else {},
                    aggregates=sums,
                    company=scope is None,
                    keep_null=scope == Scope.USER,
                )
            )
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {table}")
    return out


def team_of_users(ctx: Context) -> dict[str, str]:
    """Each user's current team (as scope ids); users without a team are absent."""
    from accounts.models import User

    return ctx.memo(
        "team_of_users",
        lambda: {
            str(u): str(t) for u, t in User.objects.filter(team__isnull=False).values_list("id", "team_id")
        },
    )


def _roll_up_users(ctx: Context, data: Grouped, *, team: bool) -> Grouped:
    """Add the user rows (and the no-user row) of each period into team and company rows."""
    teams = team_of_users(ctx) if team else {}
    out: Grouped = {}
    for (g, first_day, scope, scope_id), values in data.items():
        if scope != Scope.USER:
            if scope_id is not None:
                out[(g, first_day, scope, scope_id)] = values
            continue
        targets = [(g, first_day, Scope.COMPANY, "")]
        if scope_id is not None:
            out[(g, first_day, scope, scope_id)] = values
            if scope_id in teams:
                targets.append((g, first_day, Scope.TEAM, teams[scope_id]))
        for key in targets:
            acc = out.get(key)
            if acc is None:
                out[key] = dict(values)
            else:
                for name, v in values.items():
                    if v is not None:
                        acc[name] = v if acc[name] is None else acc[name] + v
    return out


def grouping_sets_query(
    inner_sql: str,
    params: Sequence[Any],
    *,
    buckets: Mapping[str, str],
    scopes: Mapping[str, str],
    aggregates: Mapping[str, str | Mapping[str, str]],
    where: str = "",
    company: bool = True,
    keep_null: bool = False,
) -> Grouped:
    """Run ``aggregates`` over ``inner_sql`` grouped by every (bucket) and (bucket, scope) set at once.

    ``buckets`` maps a granularity to the inner column holding the period start (local, truncated);
    ``scopes`` maps a scope to the column holding its id. An aggregate given per granularity
    (a mapping) is computed once per granularity and read only for that granularity's rows.
    Without ``company`` the (bucket) sets are left out; with ``keep_null`` rows whose scope id is
    NULL are kept (scope id None) so a caller can roll them up.
    """
    columns = [*buckets.values(), *scopes.values()]
    sets, masks = [], {}
    full = (1 << len(columns)) - 1
    for gi, (g, bucket) in enumerate(buckets.items()):
        bit_g = 1 << (len(columns) - 1 - gi)
        if company or not scopes:
            sets.append(f"({bucket})")
            masks[full ^ bit_g] = (g, Scope.COMPANY, None)
        for si, (scope, col) in enumerate(scopes.items()):
            bit_s = 1 << (len(columns) - 1 - len(buckets) - si)
            sets.append(f"({bucket}, {col})")
            masks[full ^ bit_g ^ bit_s] = (g, scope, len(buckets) + si)
    agg_cols: list[str] = []
    agg_index: dict[str, int | dict[str, int]] = {}
    for name, sql in aggregates.items():
        if isinstance(sql, str):
            agg_index[name] = len(agg_cols)
            agg_cols.append(sql)
        else:
            agg_index[name] = {}
            for g, g_sql in sql.items():
                agg_index[name][g] = len(agg_cols)
                agg_cols.append(g_sql)
    grouping = f"GROUPING({', '.join(columns)})"
    select = ", ".join([grouping, *columns, *agg_cols])
    sql = f"SELECT {select} FROM ({inner_sql}) AS t {where} GROUP BY GROUPING SETS ({', '.join(sets)})"  # noqa: S608
    bucket_pos = {g: i + 1 for i, g in enumerate(buckets)}
    first_agg = 1 + len(columns)
    out: Grouped = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            g, scope, scope_pos = masks[row[0]]
            bucket = row[bucket_pos[g]]
            if bucket is None:
                continue
            scope_id = ""
            if scope_pos is not None:
                raw = row[1 + scope_pos]
                if raw is None or raw == "":
                    if not keep_null:
                        continue
                    scope_id = None
                else:
                    scope_id = str(raw)
            first_day = bucket.date() if isinstance(bucket, datetime) else bucket
            values = {}
            for name, idx in agg_index.items():
                values[name] = row[first_agg + (idx if isinstance(idx, int) else idx[g])]
            out[(g, first_day, scope, scope_id)] = values
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
        period = ctx.period(g, first_day)
        if period is None or scope not in kpi.scopes or g not in kpi.granularities:
            continue
        result = fn(values, period, scope, scope_id)
        if result is not None:
            yield Row(g, first_day, scope, scope_id, *result)
    if dense_company and Scope.COMPANY in kpi.scopes:
        for g in ctx.granularities:
            if g not in kpi.granularities:
                continue
            for period in ctx.periods[g]:
                if (g, period.first_day, Scope.COMPANY, "") not in data:
                    result = fn({}, period, Scope.COMPANY, "")
                    if result is not None:
                        yield Row(g, period.first_day, Scope.COMPANY, "", *result)


def ratio(
    dataset: Dataset | Callable[[Context], Grouped],
    numerator: str,
    denominator: str,
    *,
    provisional: Callable[[Context, Period], bool] | None = None,
) -> Callable[[Context, Kpi], Iterable[Row]]:
    """KPI = measure ``numerator`` ÷ measure ``denominator`` (× 100 for percent KPIs); NULL on 0."""

    def compute(ctx: Context, kpi: Kpi) -> Iterator[Row]:
        data = grouped(ctx, dataset) if isinstance(dataset, Dataset) else dataset(ctx)
        scale = HUNDRED if kpi.is_percent else Decimal(1)

        def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
            num, den = dec(values.get(numerator)), dec(values.get(denominator))
            is_prov = bool(provisional and provisional(ctx, period))
            return divide(num, den, scale), num, den, int(den), None, is_prov

        return rows_from(ctx, kpi, data, fn)

    return compute


def measure(
    dataset: Dataset,
    name: str,
    *,
    sample: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> Callable[[Context, Kpi], Iterable[Row]]:
    """KPI = one measure of the dataset (a count, a sum, a mean or a percentile).

    ``sample`` names the count measure that is the sample size; when it is 0 the value is NULL (a
    median of nothing), except for counts and sums, which are 0. ``extra`` copies more measures.
    """

    def compute(ctx: Context, kpi: Kpi) -> Iterator[Row]:
        data = grouped(ctx, dataset)
        is_aggregate_of_sample = dataset.measures[name].agg in ("avg", "percentile")

        def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
            n = int(values.get(sample) or 0) if sample else None
            raw = values.get(name)
            value = (opt_dec(raw) if n is None or n > 0 else None) if is_aggregate_of_sample else dec(raw)
            details = {key: _jsonable(values.get(m)) for key, m in (extra or {}).items()} or None
            return value, None, None, n, details

        return rows_from(ctx, kpi, data, fn)

    return compute


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
        for g in ctx.granularities:
            if g in dataset.granularities:
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

    return ctx.memo(("stock", dataset.name), build)


def period_range(period: Period, *, date_field: str, day: bool = False) -> Q:
    """Rows whose ``date_field`` falls in the period (a local date when ``day``)."""
    if day:
        return Q(**{f"{date_field}__gte": period.first_day, f"{date_field}__lt": period.next().first_day})
    return Q(**{f"{date_field}__gte": period.start, f"{date_field}__lt": period.end})


def scope_filter(scope: str, scope_id: str, paths: Mapping[str, str]) -> Q:
    """Rows of one scope: ``paths`` maps team/user/source to the field holding the scope id."""
    if scope == Scope.COMPANY:
        return Q()
    if scope not in paths:
        raise ValueError(f"scope {scope!r} is not available here")
    return Q(**{paths[scope]: scope_id})


def drill(
    records: Callable[["User"], QuerySet],
    *,
    date: str,
    scopes: Mapping[str, str],
    numerator: Q | None = None,
    denominator: Q | None = None,
    base: Q | None = None,
    day: bool = False,
) -> Drilldown:
    """A drill-down over the access-scoped ``records(user)`` with ``date`` in the period.

    ``base`` mirrors the dataset's exclusions; ``numerator`` / ``denominator`` narrow it to each part.
    """

    def drilldown(user: "User", period: Period, scope: str, scope_id: str, part: str) -> QuerySet:
        part_filter = numerator if part == "numerator" else denominator
        return records(user).filter(
            base or Q(),
            part_filter or Q(),
            period_range(period, date_field=date, day=day),
            scope_filter(scope, scope_id, scopes),
        )

    return drilldown

"""The SQL behind the datasets: one grouped scan of the records, and periods from day rows.

A dataset's queryset is compiled by the ORM (``Trunc*`` in the reporting time zone, conditions as
boolean columns) and wrapped in hand-written grouping SQL:

* additive datasets are first added up per local day and scope into a *day table* (temporary), whose
  shape is the facts' shape: ``on_day, scope, scope_id, part_0 … part_n``; periods are then summed from
  such day-shaped rows (:func:`periods_from_days`), whether they come from the day table or from the
  stored facts;
* other datasets (percentiles, means, distinct counts) are grouped straight from the records with
  ``GROUP BY GROUPING SETS`` over every granularity × scope (:func:`records_query`,
  :func:`grouping_sets`); datasets of the current periods only in one pass over the widest of them
  (:func:`current_grouped`).

The text is composed with ``psycopg.sql``: identifiers as ``Identifier``, the few constants (a grain's
name, a percentile's fraction) as ``Literal``, and the SQL Django compiled as ``SQL``; every value
from a record or a request is a parameter.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    BooleanField,
    DateField,
    DateTimeField,
    ExpressionWrapper,
    F,
    Func,
    Q,
    QuerySet,
    Value,
)
from django.db.models.functions import Greatest, Trunc
from django.db.models.sql.compiler import SQLCompiler
from psycopg import sql as pg

from metrics.kpis.base import Context
from metrics.kpis.dataset import Dataset
from metrics.models import Scope
from metrics.periods import local_midnight, reporting_tz

# (granularity, first day of the period, scope, scope id) -> measure name -> value
Key = tuple[str, date, str, str]
Grouped = dict[Key, dict[str, Any]]

_AGG_SQL = {
    "count": pg.SQL("count(*)"),
    "count_distinct": pg.SQL("count(DISTINCT {v})"),
    "sum": pg.SQL("sum({v})"),
    "avg": pg.SQL("avg({v})"),
    "percentile": pg.SQL("percentile_cont({f}) WITHIN GROUP (ORDER BY {v})"),
}
# An empty piece of SQL (no WHERE clause, say).
NOTHING = pg.SQL("")
# Half-open ranges of local days, [first, after).
Spans = Sequence[tuple[date, date]]


@dataclass(frozen=True)
class Column:
    """One aggregate column: a measure, or one granularity's variant of a per-granularity measure."""

    measure: str
    granularity: str | None
    aggregate: pg.Composable
    where: tuple[pg.Composable, ...] = ()

    @property
    def sql(self) -> pg.Composable:
        return self.filtered()

    def filtered(self, *more: pg.Composable) -> pg.Composable:
        """The aggregate, filtered by its conditions and ``more``."""
        where = [*self.where, *more]
        if not where:
            return self.aggregate
        return pg.SQL("{} FILTER (WHERE {})").format(self.aggregate, pg.SQL(" AND ").join(where))


def _conditions(ds: Dataset) -> tuple[list[tuple[str, dict[str, str]]], dict[str, Q]]:
    """Aliases of each measure's condition (and per-granularity conditions), one alias per distinct
    condition: aggregates filtered alike share PostgreSQL's work (one sort for a median and a p90)."""
    aliases: dict[str, Q] = {}

    def alias(condition: Q) -> str:
        for name, known in aliases.items():
            if known == condition:
                return name
        name = f"where_{len(aliases)}"
        aliases[name] = condition
        return name

    per_measure: list[tuple[str, dict[str, str]]] = []
    for m in ds.measures.values():
        where = alias(m.where) if m.where is not None else ""
        by_g = (
            {g: alias(m.where_by_granularity(g)) for g in ds.granularities} if m.where_by_granularity else {}
        )
        per_measure.append((where, by_g))
    return per_measure, aliases


def fact_columns(ds: Dataset) -> list[Column]:
    """The aggregate columns of a dataset, in the fixed order its facts store them.

    Per-granularity measures get one column per granularity of the dataset, so the facts do not
    depend on which granularities a run asks for.
    """
    columns = []
    conditions, _aliases = _conditions(ds)
    for i, ((name, m), (w, by_g)) in enumerate(zip(ds.measures.items(), conditions, strict=True)):
        v = pg.Identifier(f"value_{i}")
        if m.scale and m.prescaled:
            sql = pg.SQL("sum({})").format(v)
        elif m.scale:
            sql = pg.SQL("sum(round({} * {})::bigint)").format(v, pg.Literal(int(m.scale)))
        else:
            sql = _AGG_SQL[m.agg].format(v=v, f=pg.Literal(float(m.fraction)))
        if by_g:
            for g in ds.granularities:
                where = tuple(pg.Identifier(c) for c in (w, by_g[g]) if c)
                columns.append(Column(name, g, sql, where))
        else:
            columns.append(Column(name, None, sql, (pg.Identifier(w),) if w else ()))
    return columns


def part(i: int) -> pg.Identifier:
    """The column of a day table holding a dataset's ``i``-th (0-based) fact value."""
    return pg.Identifier(f"part_{i}")


def stored(i: int) -> pg.Composable:
    """A stored fact's ``i``-th (0-based) value: its ``values`` array is 1-based."""
    return pg.SQL("{}[{}]").format(pg.Identifier("values"), pg.Literal(i + 1))


def each_value(n: int, column: Callable[[int], pg.Composable]) -> pg.Composed:
    """``column(i)`` for each of a dataset's ``n`` fact values (``i`` 0-based), comma-separated."""
    return pg.SQL(", ").join(column(i) for i in range(n))


def parts(n: int) -> pg.Composed:
    """``part_0, part_1, …``: the value columns of a day table."""
    return each_value(n, part)


def sum_parts(n: int) -> pg.Composed:
    """``sum(part_0) AS part_0, …``."""
    return each_value(n, lambda i: pg.SQL("sum({0}) AS {0}").format(part(i)))


def stored_parts(n: int) -> pg.Composed:
    """``values[1] AS part_0, …``: stored facts read in a day table's shape."""
    return each_value(n, lambda i: pg.SQL("{} AS {}").format(stored(i), part(i)))


# Whether ``with_plans_off`` switches plans off: tests/bench/bench_kpis.py --variants no_plans_off measures
# what that buys (21 % of the full rebuild at 1 M deals; README "Measured").
PLAN_SWITCHES = {"on": True}
# The 5-minute run's index reads hit cached pages: at the default cost of a random page PostgreSQL reads
# the open deals through the heap (16 000 pages) rather than from the covering index alone (1 000 pages).
# Measured at 1 M deals: 15 % of that run (--variants no_random_page_cost). JIT compilation is off in that
# run too: its queries read little, but a rescan's per-deal lookups (the funnel's) are estimated costly
# enough to compile, about a second per query on this machine; at 1 M deals, two pairs of runs alternated:
# 6.42 / 7.03 s with JIT, 5.07 / 5.60 s without (8 December). The other run-wide settings once set
# (work_mem, parallel costs; JIT then for the rebuild too) each bought under 15 % and are gone.
INCREMENTAL_SETTINGS = {
    "random_page_cost": "SET LOCAL random_page_cost = 1.1",
    "jit": "SET LOCAL jit = off",
}


def with_plans_off(plans: Sequence[str], sql: pg.Composable) -> pg.Composable:
    """``sql`` run with the planner's ``enable_<plan>`` settings off (this transaction), then on again."""
    if not PLAN_SWITCHES["on"]:
        return sql

    def switch(plan: str, value: str) -> pg.Composable:
        return pg.SQL("SET LOCAL {} = {}").format(pg.Identifier(f"enable_{plan}"), pg.SQL(value))

    return pg.SQL("; ").join([*(switch(p, "off") for p in plans), sql, *(switch(p, "on") for p in plans)])


ON_DAY = pg.Identifier("on_day")


def trunc_day(grain: str, day: pg.Composable = ON_DAY) -> pg.Composable:
    """SQL: the first day of the ``grain`` period holding the date ``day`` (a calendar truncation: as a
    timestamp without time zone, twice as fast as the session-zone one a bare date gets)."""
    return pg.SQL("date_trunc({}, ({})::timestamp)::date").format(pg.Literal(grain), day)


class LocalDay(Func):
    """The calendar day of an instant in the reporting time zone."""

    output_field = DateField()

    def as_sql(
        self,
        compiler: SQLCompiler,
        connection: BaseDatabaseWrapper,
        function: str | None = None,
        template: str | None = None,
        arg_joiner: str | None = None,
        **extra_context: Any,
    ) -> tuple[str, tuple[str | int, ...]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(({sql}) AT TIME ZONE %s)::date", (*params, settings.TIME_ZONE)


def _annotations(ds: Dataset, *, bucket: Any, day: bool, grans: Sequence[str]) -> dict[str, Any]:
    """The ORM expressions of the inner query: event time, day or period buckets, scopes, measures.

    Day rows keep users and sources only (teams are added up from users when periods are read).
    """
    tz = reporting_tz()
    date_expr = F(ds.date) if isinstance(ds.date, str) else ds.date
    annotations: dict[str, Any] = {"at_time": date_expr}
    if day:
        annotations["on_day"] = bucket if ds.date_is_day else LocalDay(bucket)
    else:
        for g in grans:
            field = DateField() if ds.date_is_day else DateTimeField()
            annotations[f"period_{g}"] = Trunc(
                bucket, g, output_field=field, **({} if ds.date_is_day else {"tzinfo": tz})
            )
    for scope, path in ds.scopes.items():
        if not (day and scope == Scope.TEAM):
            annotations[f"by_{scope}"] = F(path)
    for i, m in enumerate(ds.measures.values()):
        if m.value is not None:
            annotations[f"value_{i}"] = F(m.value) if isinstance(m.value, str) else m.value
    _per_measure, aliases = _conditions(ds)
    for name, condition in aliases.items():
        annotations[name] = ExpressionWrapper(condition, output_field=BooleanField())
    return annotations


def _instant(ds: Dataset, day: date) -> date | datetime:
    return day if ds.date_is_day else local_midnight(day)


def inner_query(
    ctx: Context,
    ds: Dataset,
    *,
    day: bool,
    grans: Sequence[str] = (),
    spans: Spans = (),
    opening_before: date | None = None,
) -> tuple[pg.Composable, list[Any], pg.Composable]:
    """The compiled inner SQL over the rows dated in ``spans``, its parameters and the outer WHERE.

    With ``opening_before`` (a stock's opening balance), every row dated before that day is also
    included and bucketed on the day before it.
    """
    date_expr = F(ds.date) if isinstance(ds.date, str) else ds.date
    bucket = date_expr
    if opening_before is not None:
        floor = _instant(ds, opening_before)
        if ds.date_is_day:
            bucket = Greatest(date_expr, Value(floor - timedelta(days=1), output_field=DateField()))
        else:
            bucket = Greatest(
                date_expr, Value(floor - timedelta(microseconds=1), output_field=DateTimeField())
            )
    # (None, end): every row before end.
    ranges: list[tuple[date | None, date]] = [(_instant(ds, a), _instant(ds, b)) for a, b in spans]
    if opening_before is not None:
        ranges = [(None, _instant(ds, opening_before)), *ranges]
    annotations = _annotations(ds, bucket=bucket, day=day, grans=grans)
    # A windowed queryset may narrow itself to what the scan needs (see Context.scan).
    ctx.scan = ranges
    try:
        qs: QuerySet = ds.rows(ctx).order_by().annotate(**annotations)
    finally:
        ctx.scan = []
    if ctx.scan_users is not None and ds.by_user:
        qs = qs.filter(**{f"{ds.by_user}__in": ctx.scan_users})
    where: pg.Composable = NOTHING
    where_params: list[Any] = []
    if ds.window:
        in_range = []
        for lo, hi in ranges:
            in_range.append(pg.SQL("(at_time < %s)" if lo is None else "(at_time >= %s AND at_time < %s)"))
            where_params += [hi] if lo is None else [lo, hi]
        where = pg.SQL("WHERE {}").format(pg.SQL(" OR ").join(in_range) if in_range else pg.SQL("false"))
    else:
        condition = Q(pk__in=[])
        for lo, hi in ranges:
            condition |= Q(at_time__lt=hi) if lo is None else Q(at_time__gte=lo, at_time__lt=hi)
        qs = qs.filter(condition)
    sql, params = qs.values(*annotations).query.sql_with_params()
    # SQL the ORM compiled (values are its parameters).
    return pg.SQL(sql), [*params, *where_params], where


def scope_sets(ds: Dataset) -> list[str | None]:
    """The scopes a dataset's day rows are kept for: users (teams and the company are sums of users),
    sources, and the company itself when there is no user scope (None)."""
    sets: list[str | None] = [s for s in ds.scopes if s != Scope.TEAM]
    if Scope.TEAM in ds.scopes and Scope.USER not in ds.scopes:
        raise ValueError(f"{ds.name}: a team scope needs the user scope (teams are sums of users)")
    if Scope.USER not in ds.scopes:
        sets.append(None)
    return sets


Statements = list[tuple[pg.Composable, list[Any]]]


def create_day_table(
    ctx: Context, ds: Dataset, table: str, *, spans: Spans, opening_before: date | None
) -> None:
    """One scan of the records into a temporary day table ``on_day, scope, scope_id, part_0 …``."""
    with connection.cursor() as cursor:
        if ds.day_rows is not None:
            _create_python_day_table(ctx, ds, table, cursor, spans=spans, opening_before=opening_before)
            return
        for sql, params in day_table_statements(ctx, ds, table, spans=spans, opening_before=opening_before):
            cursor.execute(sql, params)


def day_table_statements(
    ctx: Context,
    ds: Dataset,
    table: str,
    *,
    spans: Spans,
    opening_before: date | None,
    kind: str = "TEMP",
) -> Statements:
    """The SQL that scans a dataset's records into a day table (``kind``: TEMP, or UNLOGGED for a table
    another connection fills, see ``facts.Prefetch``)."""
    if ds.day_rows is not None:
        raise ValueError(f"{ds.name}: its day rows are computed in Python")
    if ds.day_sql is not None:
        if opening_before is not None:
            spans = [(EARLIEST, opening_before), *spans]
        sql, params = ds.day_sql(ctx, spans)
        statements: Statements = [
            (pg.SQL("DROP TABLE IF EXISTS {}").format(pg.Identifier(table)), []),
            (_create(kind, table, sql), params),
        ]
        if opening_before is not None:
            statements.append(_opening_update(table, opening_before))
        return statements
    inner_sql, params, where = inner_query(ctx, ds, day=True, spans=spans, opening_before=opening_before)
    sets = scope_sets(ds)
    columns = [by(s) for s in sets if s is not None]
    aggregates = fact_columns(ds)
    n = len(aggregates)
    partials = each_value(n, lambda i: pg.SQL("({})::bigint AS {}").format(aggregates[i].sql, part(i)))
    # A plain GROUP BY (PostgreSQL can run it in parallel, grouping sets it cannot) of the records by
    # day and every scope column, then the scope sets from that much smaller table.
    first = pg.SQL("SELECT on_day::date AS on_day{}, {} FROM ({}) AS t {} GROUP BY {}").format(
        pg.SQL("").join(pg.SQL(", {}").format(c) for c in columns),
        partials,
        inner_sql,
        where,
        pg.SQL(", ").join(pg.Literal(i + 1) for i in range(1 + len(columns))),
    )
    all_rows = pg.Identifier(f"{table}_all")
    statements = [(pg.SQL("DROP TABLE IF EXISTS {}, {}").format(pg.Identifier(table), all_rows), [])]
    if len(sets) == 1:
        scope_id = pg.SQL("COALESCE({}::text, '')").format(columns[0]) if columns else pg.Literal("")
        select = pg.SQL("SELECT on_day, {}::text AS scope, {} AS scope_id, {} FROM ({}) AS g").format(
            pg.Literal(sets[0] or ""), scope_id, parts(n), first
        )
        return [*statements, (_create(kind, table, select), params)]
    statements.append((_create(kind, f"{table}_all", first), params))
    sums = each_value(n, lambda i: pg.SQL("sum({0})::bigint AS {0}").format(part(i)))
    selects = []
    for scope in sets:
        scope_id, group = (
            (pg.SQL("COALESCE({}::text, '')").format(by(scope)), pg.SQL("on_day, {}").format(by(scope)))
            if scope
            else (pg.Literal(""), ON_DAY)
        )
        selects.append(
            pg.SQL("SELECT on_day, {}::text AS scope, {} AS scope_id, {} FROM {} GROUP BY {}").format(
                pg.Literal(scope or ""), scope_id, sums, all_rows, group
            )
        )
    statements.append((_create(kind, table, pg.SQL(" UNION ALL ").join(selects)), []))
    statements.append((pg.SQL("DROP TABLE {}").format(all_rows), []))
    return statements


def in_spans(column: pg.Composable, n: int) -> pg.Composable:
    """SQL: ``column`` lies in one of ``n`` half-open ranges, each given as two parameters [lo, hi)."""
    return pg.SQL(" OR ").join(pg.SQL("({0} >= %s AND {0} < %s)").format(column) for _ in range(n))


def by(scope: str) -> pg.Identifier:
    """The column of a record's (or day row's) ``scope`` id."""
    return pg.Identifier(f"by_{scope}")


def _create(kind: str, table: str, select: pg.Composable) -> pg.Composable:
    """CREATE ``kind`` (TEMP or UNLOGGED) TABLE ``table`` AS ``select``."""
    kinds = {"TEMP": pg.SQL("TEMP"), "UNLOGGED": pg.SQL("UNLOGGED")}
    return pg.SQL("CREATE {} TABLE {} AS {}").format(kinds[kind], pg.Identifier(table), select)


EARLIEST = date(1970, 1, 1)


def _opening_update(table: str, opening_before: date) -> tuple[pg.Composable, list[Any]]:
    """Everything before the range is the opening balance, on the day before it."""
    sql = pg.SQL("UPDATE {} SET on_day = %s WHERE on_day < %s").format(pg.Identifier(table))
    return sql, [opening_before - timedelta(days=1), opening_before]


def _create_python_day_table(
    ctx: Context, ds: Dataset, table: str, cursor: Any, *, spans: Spans, opening_before: date | None
) -> None:
    """The day table of a dataset whose day rows Python computes (``day_rows``)."""
    if opening_before is not None:
        spans = [(EARLIEST, opening_before), *spans]
    n = len(fact_columns(ds))
    if ds.day_rows is None:
        raise ValueError(f"{ds.name}: its day rows are not computed in Python")
    # Computed before the COPY starts: computing them reads from the same connection.
    rows = list(ds.day_rows(ctx, spans))
    name = pg.Identifier(table)
    cursor.execute(pg.SQL("DROP TABLE IF EXISTS {}").format(name))
    cursor.execute(
        pg.SQL("CREATE TEMP TABLE {} (on_day date, scope text, scope_id text, {})").format(
            name, each_value(n, lambda i: pg.SQL("{} bigint").format(part(i)))
        )
    )
    with cursor.cursor.copy(pg.SQL("COPY {} FROM STDIN").format(name)) as copy:
        for row in rows:
            copy.write_row(row)
    if opening_before is not None:
        cursor.execute(*_opening_update(table, opening_before))


def _per_granularity(
    aggregates: dict[str, pg.Composable | dict[str, pg.Composable]], measure: str
) -> dict[str, pg.Composable]:
    """The SQL of ``measure`` per granularity in ``aggregates`` (a measure whose condition depends on it)."""
    found = aggregates.setdefault(measure, {})
    if not isinstance(found, dict):
        raise TypeError(f"{measure} has one aggregate for all granularities already")
    return found


def periods_from_days(
    ctx: Context,
    ds: Dataset,
    source: pg.Composable,
    params: Sequence[Any],
    *,
    grans: Sequence[str],
    only: Mapping[str, Iterable[date]] | None = None,
) -> Grouped:
    """Every period of ``grans`` × scope summed from day-shaped rows (``source`` SQL).

    ``only``: per granularity, the first days of the periods wanted (the others are not returned).
    Team and company figures of user-scoped datasets are the sums of their users (and of the rows
    without a user, for the company), teams by each user's current team.
    """
    columns = fact_columns(ds)
    sums: dict[str, pg.Composable | dict[str, pg.Composable]] = {}
    for i, c in enumerate(columns):
        total = pg.SQL("sum({})").format(part(i))
        if c.granularity is None:
            sums[c.measure] = total
        elif c.granularity in grans:
            _per_granularity(sums, c.measure)[c.granularity] = total
    buckets, bucket_params = [], []
    for g in grans:
        first = trunc_day(g)
        if only is None:
            buckets.append(pg.SQL("{} AS {}").format(first, period(g)))
        else:
            # Rows of the periods not wanted fall into one NULL bucket per scope, which is not read.
            buckets.append(
                pg.SQL("CASE WHEN {0} = ANY(%s::date[]) THEN {0} END AS {1}").format(first, period(g))
            )
            bucket_params.append(sorted(set(only.get(g, ()))))
    out: Grouped = {}
    for scope in scope_sets(ds):
        scopes = {scope: by(scope)} if scope else {}
        scope_cols = [pg.SQL("scope_id AS {}").format(by(scope))] if scope else []
        join = pg.SQL("")
        if scope == Scope.USER and Scope.TEAM in ds.scopes:
            scope_cols.append(pg.SQL("u.team_id AS {}").format(by(Scope.TEAM)))
            join = pg.SQL("LEFT JOIN accounts_user u ON u.id = NULLIF(src.scope_id, '')::bigint")
            scopes[Scope.TEAM] = by(Scope.TEAM)
        rows = pg.SQL("SELECT {} FROM ({}) AS src {} WHERE scope = {}").format(
            pg.SQL(", ").join([*buckets, *scope_cols, parts(len(columns))]),
            source,
            join,
            pg.Literal(scope or ""),
        )
        out.update(
            grouping_sets_query(
                rows,
                [*bucket_params, *params],
                buckets={g: period(g) for g in grans},
                scopes=scopes,
                aggregates=sums,
                company=scope in (None, Scope.USER),
            )
        )
    return out


def period(granularity: str) -> pg.Identifier:
    """The column of a row's ``granularity`` period (its first day)."""
    return pg.Identifier(f"period_{granularity}")


@dataclass(frozen=True)
class Query:
    """A grouping-sets query: its SQL and parameters, and how to read its result rows."""

    sql: pg.Composable
    params: list[Any]
    read: Callable[[Iterable[Sequence[Any]]], Grouped]

    def run(self) -> Grouped:
        with connection.cursor() as cursor:
            cursor.execute(self.sql, self.params)
            return self.read(cursor.fetchall())


def grouping_sets_query(
    inner_sql: pg.Composable,
    params: Sequence[Any],
    *,
    buckets: Mapping[str, pg.Composable],
    scopes: Mapping[str, pg.Composable],
    aggregates: Mapping[str, pg.Composable | Mapping[str, pg.Composable]],
    where: pg.Composable = NOTHING,
    company: bool = True,
) -> Grouped:
    """Run ``aggregates`` over ``inner_sql`` grouped by every (bucket) and (bucket, scope) set at once
    (see ``grouping_sets``)."""
    return grouping_sets(
        inner_sql, params, buckets=buckets, scopes=scopes, aggregates=aggregates, where=where, company=company
    ).run()


def grouping_sets(
    inner_sql: pg.Composable,
    params: Sequence[Any],
    *,
    buckets: Mapping[str, pg.Composable],
    scopes: Mapping[str, pg.Composable],
    aggregates: Mapping[str, pg.Composable | Mapping[str, pg.Composable]],
    where: pg.Composable = NOTHING,
    company: bool = True,
) -> Query:
    """``aggregates`` over ``inner_sql`` grouped by every (bucket) and (bucket, scope) set at once.

    ``buckets`` maps a granularity to the inner column holding the period start (local, truncated);
    ``scopes`` maps a scope to the column holding its id. An aggregate given per granularity
    (a mapping) is computed once per granularity and read only for that granularity's rows.
    Without ``company`` the (bucket) sets are left out. Rows whose scope id is NULL or "" count for the
    company only.
    """
    columns = [*buckets.values(), *scopes.values()]
    sets: list[pg.Composable] = []
    # GROUPING() mask -> (granularity, scope, position of the scope's column or None for the company).
    masks: dict[int, tuple[str, str, int | None]] = {}
    full = (1 << len(columns)) - 1
    for gi, (g, bucket) in enumerate(buckets.items()):
        bit_g = 1 << (len(columns) - 1 - gi)
        if company or not scopes:
            sets.append(pg.SQL("({})").format(bucket))
            masks[full ^ bit_g] = (g, Scope.COMPANY, None)
        for si, (scope, col) in enumerate(scopes.items()):
            bit_s = 1 << (len(columns) - 1 - len(buckets) - si)
            sets.append(pg.SQL("({}, {})").format(bucket, col))
            masks[full ^ bit_g ^ bit_s] = (g, scope, len(buckets) + si)
    agg_cols: list[pg.Composable] = []
    agg_index: dict[str, int | dict[str, int]] = {}
    for name, sql in aggregates.items():
        if isinstance(sql, pg.Composable):
            agg_index[name] = len(agg_cols)
            agg_cols.append(sql)
        else:
            per_granularity: dict[str, int] = {}
            agg_index[name] = per_granularity
            for g, g_sql in sql.items():
                per_granularity[g] = len(agg_cols)
                agg_cols.append(g_sql)
    grouping = pg.SQL("GROUPING({})").format(pg.SQL(", ").join(columns))
    # Named, so the result can also be kept as a table (see facts.Prefetch).
    select = pg.SQL(", ").join(
        pg.SQL("{} AS {}").format(c, pg.Identifier(f"col_{i}"))
        for i, c in enumerate([grouping, *columns, *agg_cols])
    )
    sql = pg.SQL("SELECT {} FROM ({}) AS t {} GROUP BY GROUPING SETS ({})").format(
        select, inner_sql, where, pg.SQL(", ").join(sets)
    )
    bucket_pos = {g: i + 1 for i, g in enumerate(buckets)}
    first_agg = 1 + len(columns)
    names = list(agg_index)
    # Per granularity, the measures' values of a row, in the order of ``names``.
    values_of = {
        g: _getter([first_agg + (idx if isinstance(idx, int) else idx[g]) for idx in agg_index.values()])
        for g in buckets
    }
    # Per GROUPING() mask: the granularity and scope, where the bucket and the scope id sit, the values.
    shapes = {
        mask: (g, scope, bucket_pos[g], None if pos is None else 1 + pos, values_of[g])
        for mask, (g, scope, pos) in masks.items()
    }

    def read(rows: Iterable[Sequence[Any]]) -> Grouped:
        out: Grouped = {}
        for row in rows:
            g, scope, at_bucket, at_scope, values = shapes[row[0]]
            bucket = row[at_bucket]
            if bucket is None:
                continue
            scope_id = ""
            if at_scope is not None:
                raw = row[at_scope]
                if raw is None or raw == "":
                    continue
                scope_id = str(raw)
            first_day = bucket.date() if isinstance(bucket, datetime) else bucket
            out[(g, first_day, scope, scope_id)] = dict(zip(names, values(row), strict=True))
        return out

    return Query(sql, list(params), read)


def _getter(positions: Sequence[int]) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """The items of a row at ``positions``, as a sequence (also for a single one)."""
    if len(positions) == 1:
        (only,) = positions
        return lambda row: (row[only],)
    return itemgetter(*positions)


def records_query(ctx: Context, ds: Dataset, grans: Sequence[str], spans: Spans) -> Query:
    """Non-additive measures (percentiles, means, distinct counts) straight from the records dated in
    ``spans``, for every period of ``grans`` × scope, in one grouped query."""
    inner_sql, params, where = inner_query(ctx, ds, day=False, grans=grans, spans=spans)
    aggregates: dict[str, pg.Composable | dict[str, pg.Composable]] = {}
    for c in fact_columns(ds):
        if c.granularity is None:
            aggregates[c.measure] = c.sql
        elif c.granularity in grans:
            _per_granularity(aggregates, c.measure)[c.granularity] = c.sql
    return grouping_sets(
        inner_sql,
        params,
        buckets={g: period(g) for g in grans},
        scopes={s: by(s) for s in ds.scopes},
        aggregates=aggregates,
        where=where,
    )


def current_grouped(ctx: Context, ds: Dataset, grans: Sequence[str]) -> Grouped:
    """A dataset read for the current periods only (``current_only``), every granularity at once.

    One pass over the records of the widest current period: each measure is summed per granularity
    with a FILTER on that granularity's current period, grouped by scope only (no period buckets).
    An ``as_of_run`` dataset needs no filter: each measure is summed once and given to every period.
    """
    currents = {g: ctx.current(g) for g in grans}
    periods = {g: p for g, p in currents.items() if ctx.period(g, p.first_day) is not None and ctx.touches(p)}
    if not periods:
        return {}
    first = min(p.first_day for p in periods.values())
    after = max(p.next().first_day for p in periods.values())
    inner_sql, params, where = inner_query(ctx, ds, day=False, grans=(), spans=[(first, after)])
    columns = fact_columns(ds)
    in_period: list[pg.Composable] = []
    in_params: list[Any] = []
    aggregates: list[pg.Composable] = []
    slots: list[tuple[list[str], str]] = []
    if ds.as_of_run:
        # Every record counts in every current period: each measure once, copied to every granularity.
        for c in columns:
            aggregates.append(c.sql)
            slots.append(([g for g in periods if c.granularity in (None, g)], c.measure))
    else:
        for g, p in periods.items():
            # The current period as a boolean column of the inner query (its bounds as parameters).
            lo, hi = (p.first_day, p.next().first_day) if ds.date_is_day else (p.start, p.end)
            in_g = pg.Identifier(f"in_{g}")
            in_period.append(pg.SQL("(at_time >= %s AND at_time < %s) AS {}").format(in_g))
            in_params += [lo, hi]
            for c in columns:
                if c.granularity not in (None, g):
                    continue
                aggregates.append(c.filtered(in_g))
                slots.append(([g], c.measure))
    scopes = list(ds.scopes)
    scope_columns = [by(s) for s in scopes]
    sets = pg.SQL(", ").join([*(pg.SQL("({})").format(c) for c in scope_columns), pg.SQL("()")])
    grouping = (
        pg.SQL("GROUPING({})").format(pg.SQL(", ").join(scope_columns)) if scope_columns else pg.SQL("0")
    )
    sql = pg.SQL("SELECT {} FROM (SELECT {} FROM ({}) AS i) AS t {} GROUP BY GROUPING SETS ({})").format(
        pg.SQL(", ").join([grouping, *scope_columns, *aggregates]),
        pg.SQL(", ").join([pg.SQL("*"), *in_period]),
        inner_sql,
        where,
        sets,
    )
    full = (1 << len(scopes)) - 1
    masks = {full: None, **{full ^ (1 << (len(scopes) - 1 - i)): i for i in range(len(scopes))}}
    out: Grouped = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [*in_params, *params])
        for row in cursor.fetchall():
            position = masks[row[0]]
            scope: str = Scope.COMPANY
            scope_id = ""
            if position is not None:
                raw = row[1 + position]
                if raw is None or raw == "":
                    continue
                scope, scope_id = scopes[position], str(raw)
            values = row[1 + len(scopes) :]
            for (slot_grans, measure), value in zip(slots, values, strict=True):
                for g in slot_grans:
                    out.setdefault((g, periods[g].first_day, scope, scope_id), {})[measure] = value
    return out

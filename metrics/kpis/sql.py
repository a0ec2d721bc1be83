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

Only generated identifiers and the SQL Django compiled go into the text; every value is a parameter.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any

from django.conf import settings
from django.db import connection
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

from metrics.kpis.base import Context
from metrics.kpis.dataset import Dataset
from metrics.models import Scope
from metrics.periods import local_midnight, reporting_tz

# (granularity, first day of the period, scope, scope id) -> measure name -> value
Key = tuple[str, date, str, str]
Grouped = dict[Key, dict[str, Any]]

_AGG_SQL = {
    "count": "count(*)",
    "count_distinct": "count(DISTINCT {v})",
    "sum": "sum({v})",
    "avg": "avg({v})",
    "percentile": "percentile_cont({f}) WITHIN GROUP (ORDER BY {v})",
}
# Half-open ranges of local days, [first, after).
Spans = Sequence[tuple[date, date]]


@dataclass(frozen=True)
class Column:
    """One aggregate column: a measure, or one granularity's variant of a per-granularity measure."""

    measure: str
    granularity: str | None
    sql: str


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

    per_measure = []
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
        v = f"value_{i}" if m.value is not None else ""
        if m.scale and m.prescaled:
            sql = f"sum({v})"
        elif m.scale:
            sql = f"sum(round({v} * {int(m.scale)})::bigint)"
        else:
            sql = _AGG_SQL[m.agg].format(v=v, f=float(m.fraction))
        if by_g:
            for g in ds.granularities:
                where = " AND ".join(c for c in (w, by_g[g]) if c)
                columns.append(Column(name, g, f"{sql} FILTER (WHERE {where})"))
        else:
            columns.append(Column(name, None, f"{sql} FILTER (WHERE {w})" if w else sql))
    return columns


def each_value(n: int, column: str) -> str:
    """``column`` for each of a dataset's ``n`` fact values, comma-separated: ``{i}`` is 0-based
    (``part_{i}``), ``{j}`` 1-based (a fact's ``values`` array)."""
    return ", ".join(column.format(i=i, j=i + 1) for i in range(n))


# Whether ``with_plans_off`` switches plans off: tests/bench/bench_kpis.py --variants no_plans_off measures
# what that buys (21 % of the full rebuild at 1 M deals; README "Measured").
PLAN_SWITCHES = {"on": True}
# The 5-minute run's index reads hit cached pages: at the default cost of a random page PostgreSQL reads
# the open deals through the heap (16 000 pages) rather than from the covering index alone (1 000 pages).
# Measured at 1 M deals: 15 % of that run (--variants no_random_page_cost). The other run-wide settings
# once set (work_mem, jit, parallel costs) each bought under 15 % of either run and are gone.
INCREMENTAL_SETTINGS = {"random_page_cost": "SET LOCAL random_page_cost = 1.1"}


def with_plans_off(plans: Sequence[str], sql: str) -> str:
    """``sql`` run with the planner's ``enable_<plan>`` settings off (this transaction), then on again."""
    if not PLAN_SWITCHES["on"]:
        return sql
    return "; ".join(
        [*(f"SET LOCAL enable_{p} = off" for p in plans), sql, *(f"SET LOCAL enable_{p} = on" for p in plans)]
    )


def trunc_day(grain: str, day: str) -> str:
    """SQL: the first day of the ``grain`` period holding the date ``day`` (a calendar truncation: as a
    timestamp without time zone, twice as fast as the session-zone one a bare date gets)."""
    return f"date_trunc('{grain}', ({day})::timestamp)::date"


class LocalDay(Func):
    """The calendar day of an instant in the reporting time zone."""

    output_field = DateField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(({sql}) AT TIME ZONE %s)::date", [*params, settings.TIME_ZONE]


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
) -> tuple[str, list[Any], str]:
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
    ranges = [(_instant(ds, a), _instant(ds, b)) for a, b in spans]
    if opening_before is not None:
        ranges = [(None, _instant(ds, opening_before)), *ranges]
    annotations = _annotations(ds, bucket=bucket, day=day, grans=grans)
    # A windowed queryset may narrow itself to what the scan needs (see Context.scan).
    ctx.scan = ranges
    try:
        qs: QuerySet = ds.rows(ctx).order_by().annotate(**annotations)
    finally:
        ctx.scan = []
    where, where_params = "", []
    if ds.window:
        parts = []
        for lo, hi in ranges:
            parts.append("(at_time < %s)" if lo is None else "(at_time >= %s AND at_time < %s)")
            where_params += [hi] if lo is None else [lo, hi]
        where = f"WHERE {' OR '.join(parts)}" if parts else "WHERE false"
    else:
        condition = Q(pk__in=[])
        for lo, hi in ranges:
            condition |= Q(at_time__lt=hi) if lo is None else Q(at_time__gte=lo, at_time__lt=hi)
        qs = qs.filter(condition)
    sql, params = qs.values(*annotations).query.sql_with_params()
    return sql, [*params, *where_params], where


def scope_sets(ds: Dataset) -> list[str | None]:
    """The scopes a dataset's day rows are kept for: users (teams and the company are sums of users),
    sources, and the company itself when there is no user scope (None)."""
    sets: list[str | None] = [s for s in ds.scopes if s != Scope.TEAM]
    if Scope.TEAM in ds.scopes and Scope.USER not in ds.scopes:
        raise ValueError(f"{ds.name}: a team scope needs the user scope (teams are sums of users)")
    if Scope.USER not in ds.scopes:
        sets.append(None)
    return sets


Statements = list[tuple[str, list[Any]]]


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
            (f"DROP TABLE IF EXISTS {table}", []),
            (f"CREATE {kind} TABLE {table} AS {sql}", params),
        ]
        if opening_before is not None:
            statements.append(_opening_update(table, opening_before))
        return statements
    inner_sql, params, where = inner_query(ctx, ds, day=True, spans=spans, opening_before=opening_before)
    sets = scope_sets(ds)
    scoped = [s for s in sets if s is not None]
    columns = [f"by_{s}" for s in scoped]
    columns_list = "".join(f", {c}" for c in columns)
    n = len(fact_columns(ds))
    partials = ", ".join(f"({c.sql})::bigint AS part_{i}" for i, c in enumerate(fact_columns(ds)))
    # A plain GROUP BY (PostgreSQL can run it in parallel, grouping sets it cannot) of the records by
    # day and every scope column, then the scope sets from that much smaller table.
    group_by = ", ".join(str(i + 1) for i in range(1 + len(columns)))
    first = (
        f"SELECT on_day::date AS on_day{columns_list}, {partials} "  # noqa: S608
        f"FROM ({inner_sql}) AS t {where} GROUP BY {group_by}"
    )
    values = each_value(n, "part_{i}")
    statements = [(f"DROP TABLE IF EXISTS {table}, {table}_all", [])]
    if len(sets) == 1:
        scope = sets[0] or ""
        scope_id = f"COALESCE({columns[0]}::text, '')" if columns else "''"
        select = f"SELECT on_day, '{scope}'::text AS scope, {scope_id} AS scope_id, {values}"
        return [*statements, (f"CREATE {kind} TABLE {table} AS {select} FROM ({first}) AS g", params)]
    statements.append((f"CREATE {kind} TABLE {table}_all AS {first}", params))
    sums = each_value(n, "sum(part_{i})::bigint AS part_{i}")
    parts = []
    for scope in sets:
        scope_id, group = (
            (f"COALESCE(by_{scope}::text, '')", f"on_day, by_{scope}") if scope else ("''", "on_day")
        )
        parts.append(
            f"SELECT on_day, '{scope or ''}'::text AS scope, {scope_id} AS scope_id, {sums} "  # noqa: S608
            f"FROM {table}_all GROUP BY {group}"
        )
    statements.append((f"CREATE {kind} TABLE {table} AS {' UNION ALL '.join(parts)}", []))
    statements.append((f"DROP TABLE {table}_all", []))
    return statements


EARLIEST = date(1970, 1, 1)


def _opening_update(table: str, opening_before: date) -> tuple[str, list[Any]]:
    """Everything before the range is the opening balance, on the day before it."""
    sql = f"UPDATE {table} SET on_day = %s WHERE on_day < %s"  # noqa: S608
    return sql, [opening_before - timedelta(days=1), opening_before]


def _create_python_day_table(
    ctx: Context, ds: Dataset, table: str, cursor: Any, *, spans: Spans, opening_before: date | None
) -> None:
    """The day table of a dataset whose day rows Python computes (``day_rows``)."""
    if opening_before is not None:
        spans = [(EARLIEST, opening_before), *spans]
    n = len(fact_columns(ds))
    # Computed before the COPY starts: computing them reads from the same connection.
    rows = list(ds.day_rows(ctx, spans))  # type: ignore[misc]
    partials = each_value(n, "part_{i} bigint")
    cursor.execute(f"DROP TABLE IF EXISTS {table}")
    cursor.execute(f"CREATE TEMP TABLE {table} (on_day date, scope text, scope_id text, {partials})")
    with cursor.cursor.copy(f"COPY {table} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    if opening_before is not None:
        cursor.execute(*_opening_update(table, opening_before))


def periods_from_days(
    ctx: Context,
    ds: Dataset,
    source: str,
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
    sums: dict[str, str | dict[str, str]] = {}
    for i, c in enumerate(columns):
        if c.granularity is None:
            sums[c.measure] = f"sum(part_{i})"
        elif c.granularity in grans:
            sums.setdefault(c.measure, {})[c.granularity] = f"sum(part_{i})"  # type: ignore[index]
    buckets, bucket_params = [], []
    for g in grans:
        first = trunc_day(g, "on_day")
        if only is None:
            buckets.append(f"{first} AS period_{g}")
        else:
            # Rows of the periods not wanted fall into one NULL bucket per scope, which is not read.
            buckets.append(f"CASE WHEN {first} = ANY(%s::date[]) THEN {first} END AS period_{g}")
            bucket_params.append(sorted(set(only.get(g, ()))))
    partials = each_value(len(columns), "part_{i}")
    out: Grouped = {}
    for scope in scope_sets(ds):
        scopes = {scope: f"by_{scope}"} if scope else {}
        scope_cols, join = (f", scope_id AS by_{scope}" if scope else ""), ""
        if scope == Scope.USER and Scope.TEAM in ds.scopes:
            scope_cols += ", u.team_id AS by_team"
            join = "LEFT JOIN accounts_user u ON u.id = NULLIF(src.scope_id, '')::bigint"
            scopes[Scope.TEAM] = "by_team"
        rows = (
            f"SELECT {', '.join(buckets)}{scope_cols}, {partials} "  # noqa: S608
            f"FROM ({source}) AS src {join} "
            f"WHERE scope = '{scope or ''}'"
        )
        out.update(
            grouping_sets_query(
                rows,
                [*bucket_params, *params],
                buckets={g: f"period_{g}" for g in grans},
                scopes=scopes,
                aggregates=sums,
                company=scope in (None, Scope.USER),
            )
        )
    return out


@dataclass(frozen=True)
class Query:
    """A grouping-sets query: its SQL and parameters, and how to read its result rows."""

    sql: str
    params: list[Any]
    read: Callable[[Iterable[Sequence[Any]]], Grouped]

    def run(self) -> Grouped:
        with connection.cursor() as cursor:
            cursor.execute(self.sql, self.params)
            return self.read(cursor.fetchall())


def grouping_sets_query(
    inner_sql: str,
    params: Sequence[Any],
    *,
    buckets: Mapping[str, str],
    scopes: Mapping[str, str],
    aggregates: Mapping[str, str | Mapping[str, str]],
    where: str = "",
    company: bool = True,
) -> Grouped:
    """Run ``aggregates`` over ``inner_sql`` grouped by every (bucket) and (bucket, scope) set at once
    (see ``grouping_sets``)."""
    return grouping_sets(
        inner_sql, params, buckets=buckets, scopes=scopes, aggregates=aggregates, where=where, company=company
    ).run()


def grouping_sets(
    inner_sql: str,
    params: Sequence[Any],
    *,
    buckets: Mapping[str, str],
    scopes: Mapping[str, str],
    aggregates: Mapping[str, str | Mapping[str, str]],
    where: str = "",
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
                agg_index[name][g] = len(agg_cols)  # type: ignore[index]
                agg_cols.append(g_sql)
    grouping = f"GROUPING({', '.join(columns)})"
    # Named, so the result can also be kept as a table (see facts.Prefetch).
    select = ", ".join(f"{c} AS col_{i}" for i, c in enumerate([grouping, *columns, *agg_cols]))
    sql = f"SELECT {select} FROM ({inner_sql}) AS t {where} GROUP BY GROUPING SETS ({', '.join(sets)})"  # noqa: S608
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
    aggregates: dict[str, str | dict[str, str]] = {}
    for c in fact_columns(ds):
        if c.granularity is None:
            aggregates[c.measure] = c.sql
        elif c.granularity in grans:
            aggregates.setdefault(c.measure, {})[c.granularity] = c.sql  # type: ignore[index]
    return grouping_sets(
        inner_sql,
        params,
        buckets={g: f"period_{g}" for g in grans},
        scopes={s: f"by_{s}" for s in ds.scopes},
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
    in_period, in_params, aggregates, slots = [], [], [], []
    if ds.as_of_run:
        # Every record counts in every current period: each measure once, copied to every granularity.
        for c in columns:
            aggregates.append(c.sql)
            slots.append(([g for g in periods if c.granularity in (None, g)], c.measure))
    else:
        for g, p in periods.items():
            # The current period as a boolean column of the inner query (its bounds as parameters).
            lo, hi = (p.first_day, p.next().first_day) if ds.date_is_day else (p.start, p.end)
            in_period.append(f"(at_time >= %s AND at_time < %s) AS in_{g}")
            in_params += [lo, hi]
            for c in columns:
                if c.granularity not in (None, g):
                    continue
                sql = c.sql.replace(" FILTER (WHERE ", f" FILTER (WHERE in_{g} AND ", 1)
                aggregates.append(sql if "FILTER" in sql else f"{sql} FILTER (WHERE in_{g})")
                slots.append(([g], c.measure))
    scopes = list(ds.scopes)
    scope_columns = [f"by_{s}" for s in scopes]
    sets = ", ".join([*(f"({c})" for c in scope_columns), "()"])
    grouping = f"GROUPING({', '.join(scope_columns)})" if scope_columns else "0"
    sql = (
        f"SELECT {grouping}, {', '.join([*scope_columns, *aggregates])} "  # noqa: S608
        f"FROM (SELECT {', '.join(['*', *in_period])} FROM ({inner_sql}) AS i) AS t {where} "
        f"GROUP BY GROUPING SETS ({sets})"
    )
    full = (1 << len(scopes)) - 1
    masks = {full: None, **{full ^ (1 << (len(scopes) - 1 - i)): i for i in range(len(scopes))}}
    out: Grouped = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [*in_params, *params])
        for row in cursor.fetchall():
            position = masks[row[0]]
            scope, scope_id = Scope.COMPANY, ""
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

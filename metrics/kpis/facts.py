"""KPI facts: each additive dataset's totals per day, ISO week and month, per user or source.

A full rebuild scans each dataset's records once into a temporary day table, stores its facts (every
week and month of the range it scanned, and the days of the last ``KPI_DAY_FACTS_MONTHS`` months) and
sums the periods from the day table. An incremental
run finds the days whose records changed since the dataset's watermark (:func:`dirty_days`), scans
only those days again, rewrites their facts, re-adds the weeks and months that contain them from the
day facts, and reads every period from the week and month facts: a few thousand rows per dataset
instead of the records. Only a change to a day before the stored day facts (:func:`days_from`)
rescans its whole week and month from the records. Facts hold integers: counts, and sums of money in cents.

Correctness does not rest on the incremental run alone: the nightly rebuild recomputes every fact
from the records, which also takes in what the incremental run does not see (an edit of a record's
amount or owner reaches earlier days' facts then; see ``Dataset``).
"""

import hashlib
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import DateField, F, QuerySet
from django.db.models.functions import Trunc
from psycopg import sql as pg

from accounts.models import Seat, User
from metrics.kpis.base import Context, Dirty
from metrics.kpis.dataset import Dataset
from metrics.kpis.sql import (
    Grouped,
    Query,
    Statements,
    create_day_table,
    day_table_statements,
    each_value,
    fact_columns,
    inner_query,
    part,
    parts,
    periods_from_days,
    records_query,
    scope_sets,
    stored,
    stored_parts,
    sum_parts,
    trunc_day,
    with_plans_off,
)
from metrics.models import KpiFact, KpiFactState, Scope
from metrics.periods import Period, floor_date, local_date, reporting_tz, shift_date

TABLE = KpiFact._meta.db_table
FACTS = pg.Identifier(TABLE)
GRAIN = pg.Identifier("grain")
# Changes committed up to this long after they were stamped are still seen by the next run (a
# transaction that stamped updated_at and committed while the previous run was reading).
WATERMARK_MARGIN = timedelta(minutes=5)
DAY, WEEK, MONTH = "day", "week", "month"


def horizon(now: datetime, months: int = 1) -> date:
    """The Monday on or before the first day of the month ``months`` back: a rebuild keeps day facts from
    it on (``settings.KPI_DAY_FACTS_MONTHS``); facts built before their first day was recorded kept them
    from the previous month's (``months=1``)."""
    first = shift_date(local_date(now).replace(day=1), "month", -months)
    return floor_date(first, "week")


def days_from(ctx: Context, ds: Dataset) -> date:
    """The first day of the dataset's complete day facts (recorded by its last full build).

    A week or month starting on or after it is re-added from its day facts when one of its days
    changes; an older one is rescanned from the records, whole.
    """
    return ctx.days_from.get(ds.name) or horizon(ctx.now)


def _next(day: date, grain: str) -> date:
    return day + timedelta(days=1) if grain == DAY else shift_date(day, grain, 1)


def _merge(spans: Iterable[tuple[date, date]]) -> list[tuple[date, date]]:
    merged: list[tuple[date, date]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _values_sql(n: int) -> pg.Composable:
    """A day row's values as a stored fact's ``values`` array (no NULLs)."""
    return pg.SQL("ARRAY[{}]::bigint[]").format(
        each_value(n, lambda i: pg.SQL("COALESCE({}, 0)").format(part(i)))
    )


# Building and storing
# ---------------------------------------------------------------------------------------------------------


def grouped(ctx: Context, ds: Dataset, grans: Sequence[str]) -> Grouped:
    """Every requested period of ``grans`` × scope of an additive dataset.

    Full contexts build the facts from the records (and store them); incremental ones refresh what
    changed and read the stored facts.
    """
    ctx.tracked[ds.name] = ds
    if ctx.incremental:
        if ds.name not in ctx.dirty:
            raise LookupError(
                f"dataset {ds.name!r} was not prepared: list it in its family module's DATASETS"
            )
        return read(ctx, ds, grans)
    return build(ctx, ds, grans)


LONG_PERIODS = ("quarter", "year")


def prepare(ctx: Context, datasets: Iterable[Dataset]) -> None:
    """The first step of an incremental run: for every dataset, find the days whose records changed
    since its watermark and rewrite their facts; then mark the periods those days count for as touched,
    per dataset (``Context.touched_by``) and in all.

    Statistics (medians, percentiles) of quarters and years need every record of the period, a second
    or more at a million deals: the every-few-minutes run leaves them out, an hourly run
    (``long_statistics``) computes just them, with a watermark of its own.
    Raises FactsMissing when a dataset has no facts of its current definition.
    """
    columns = (
        "dataset",
        "signature",
        "long_refreshed_at" if ctx.long_statistics else "refreshed_at",
        "days_from",
    )
    states = {name: state for name, *state in KpiFactState.objects.values_list(*columns)}
    ctx.days_from = {name: state[2] for name, state in states.items() if state[2] is not None}
    datasets = list(datasets)
    ctx.datasets = {ds.name: ds for ds in datasets}
    for ds in datasets:
        if ds.always:
            continue
        ctx.tracked[ds.name] = ds
        if not ds.additive:
            ctx.statistics.add(ds.name)
        elif ctx.long_statistics:
            ctx.dirty[ds.name] = Dirty(frozenset(), ds.compare, ds.opening_balance)
            continue
        since = watermark(ctx, ds, states.get(ds.name))
        days, users = dirty_days(ctx, ds, since) if ds.refresh else (set(), {})
        ctx.dirty[ds.name] = Dirty(frozenset(days | users.keys()), ds.compare, ds.opening_balance)
        if ds.uses_facts and (days or users):
            ctx.timed(ds.name, "changed_days", partial(rewrite, ctx, ds, days, users))
    every = [p for periods in ctx.periods.values() for p in periods]
    ctx.touched_by = {
        name: {p for p in every if ctx.everything or dirty.touches(p)} for name, dirty in ctx.dirty.items()
    }
    ctx.touched = {
        g: {p for p in periods if any(p in own for own in ctx.touched_by.values()) or ctx.everything}
        for g, periods in ctx.periods.items()
    }
    # A running week or month is compared with the same days of the period before (KPIS.md §10.1), from
    # a stock's level at that period's start: stocks compute that period too.
    running = [ctx.current(g) for g in (WEEK, MONTH) if g in ctx.periods]
    before = {p.previous() for p in running if ctx.touches(p)}
    for ds in ctx.datasets.values():
        if ds.always and ds.current_only:
            # The current state, computed in every run, counts for the current periods only.
            ctx.touched_by[ds.name] = {p for p in every if p == ctx.current(p.granularity) and ctx.touches(p)}
        elif ds.opening_balance and ds.name in ctx.touched_by:
            ctx.widened[ds.name] = {p for p in every if p in before}
    if not ctx.long_statistics:
        for name in ctx.statistics:
            ctx.skipped[name] = {p for g in LONG_PERIODS for p in ctx.touched.get(g, ())}


def _covering(ctx: Context, ds: Dataset, grans: Sequence[str]) -> tuple[date, date]:
    """Whole weeks and months around the requested periods (and those compared with)."""
    lo, hi = ctx.bounds(grans, ds.compare)
    first, last = local_date(lo), local_date(hi - timedelta(microseconds=1))
    start = min(floor_date(first, WEEK), floor_date(first, MONTH))
    after = max(_next(floor_date(last, WEEK), WEEK), _next(floor_date(last, MONTH), MONTH))
    return start, after


def _scan_range(ctx: Context, ds: Dataset, grans: Sequence[str]) -> tuple[date, date, date | None]:
    """The days a full build scans (whole weeks and months) and, for a stock, the first of them: every
    record before it counts as the opening balance."""
    start, after = _covering(ctx, ds, grans)
    return start, after, start if ds.opening_balance else None


def build(ctx: Context, ds: Dataset, grans: Sequence[str]) -> Grouped:
    """Scan the records of the requested range once, store their facts, sum the periods.

    The day table is added up once into weeks and months (a table a fifth of its size); those feed
    both the stored facts and the periods, which are read as an incremental run reads the facts.
    """
    start, after, opening = _scan_range(ctx, ds, grans)
    days, periods = f"kpi_day_{ds.name}", f"kpi_wm_{ds.name}"
    prefetched = ctx.prefetch.take(ds) if ctx.prefetch is not None else None
    if prefetched is not None:
        days = prefetched[0]
    else:
        create_day_table(ctx, ds, days, spans=[(start, after)], opening_before=opening)
    sums = sum_parts(len(fact_columns(ds)))
    grouped_by = pg.SQL(" UNION ALL ").join(
        pg.SQL("SELECT {}::text AS grain, {} AS on_day, scope, scope_id, {} FROM {} GROUP BY 2, 3, 4").format(
            pg.Literal(grain), trunc_day(grain), sums, pg.Identifier(days)
        )
        for grain in (WEEK, MONTH)
    )
    dropped = [pg.Identifier(periods)] if prefetched else [pg.Identifier(days), pg.Identifier(periods)]
    try:
        with connection.cursor() as cursor:
            cursor.execute(pg.SQL("CREATE TEMP TABLE {} AS {}").format(pg.Identifier(periods), grouped_by))
        if ctx.stores(ds.name):
            first_day = max(start, horizon(ctx.now, settings.KPI_DAY_FACTS_MONTHS))
            _store(ds, days, periods, start, after, first_day)
            ctx.days_from[ds.name] = min(first_day, ctx.days_from.get(ds.name, first_day))
        return read(ctx, ds, grans, source=periods)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(pg.SQL("DROP TABLE {}").format(pg.SQL(", ").join(dropped)))


def _store(ds: Dataset, days: str, periods: str, start: date, after: date, first_day: date) -> None:
    """Replace the dataset's facts with those of the day table ``days`` and its weeks and months
    (``periods``): days in [first_day, after) (earlier day facts of the range go), weeks and months lying
    wholly in [start, after).

    Every day's facts of 3 years made the rebuild at 1 M deals 28 % slower (60.9 → 77.9 s): hence
    ``KPI_DAY_FACTS_MONTHS``.

    Only what differs is written: a nightly rebuild finds almost every fact as it left it, and
    rewriting them all (hundreds of thousands of rows and their index entries) cost seconds.
    """
    n = len(fact_columns(ds))
    params: dict[str, str | date] = {"name": ds.name, "start": start, "after": after, "first_day": first_day}
    stored_facts = pg.SQL(
        "FROM {} f WHERE f.dataset = %(name)s AND ("
        "(f.grain = 'day' AND f.day >= %(start)s AND f.day < %(after)s) "
        "OR (f.grain <> 'day' AND {}))"
    ).format(FACTS, _whole(pg.SQL("f.day"), pg.SQL("f.grain")))
    same = pg.SQL("n.grain = f.grain AND n.day = f.day AND n.scope = f.scope AND n.scope_id = f.scope_id")
    new = pg.SQL(
        "SELECT 'day'::text AS grain, on_day AS day, scope, scope_id, {values} AS values "
        "FROM {days} WHERE on_day >= %(first_day)s AND on_day < %(after)s "
        "UNION ALL SELECT grain, on_day, scope, scope_id, {values} FROM {periods} WHERE {whole}"
    ).format(
        values=_values_sql(n),
        days=pg.Identifier(days),
        periods=pg.Identifier(periods),
        whole=_whole(pg.Identifier("on_day")),
    )
    # Stored facts that are gone or differ are deleted, then the new ones not stored as they are
    # inserted: by hash anti-joins (a merge join would sort both sides on their text keys, 3× slower).
    write = pg.SQL(
        "DELETE {stored} AND NOT EXISTS (SELECT 1 FROM kpi_fact_new n WHERE {same} AND n.values = f.values); "
        "INSERT INTO {facts} (dataset, grain, day, scope, scope_id, values) "
        "SELECT %(name)s, n.grain, n.day, n.scope, n.scope_id, n.values FROM kpi_fact_new n "
        "WHERE NOT EXISTS (SELECT 1 {stored} AND {same})"
    ).format(stored=stored_facts, same=same, facts=FACTS)
    with connection.cursor() as cursor:
        cursor.execute(
            pg.SQL("CREATE TEMP TABLE kpi_fact_new AS {}; {}; DROP TABLE kpi_fact_new").format(
                new, with_plans_off(["mergejoin"], write)
            ),
            params,
        )


def _whole(column: pg.Composable, grain: pg.Composable = GRAIN) -> pg.Composable:
    """SQL: the week or month (``grain``) starting on ``column`` lies wholly in [start, after)."""
    return pg.SQL("{0} >= %(start)s AND ({0} + ('1 ' || {1})::interval)::date <= %(after)s").format(
        column, grain
    )


# Incremental refresh
# ---------------------------------------------------------------------------------------------------------


def _day_range(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def key_day(ds: Dataset) -> Any:
    """The local day of a dataset row's date, as an ORM expression."""
    if ds.date_is_day:
        return F(ds.date) if isinstance(ds.date, str) else ds.date
    return Trunc(ds.date, "day", output_field=DateField(), tzinfo=reporting_tz())


def days_of(qs: QuerySet, ds: Dataset) -> set[date]:
    """The distinct local days of ``ds``'s date over the rows of ``qs`` (a ``ds.rows`` queryset)."""
    days = qs.order_by().annotate(key_day=key_day(ds)).values_list("key_day", flat=True).distinct()
    return {d for d in days if d}


def changed_paths(ctx: Context, ds: Dataset) -> tuple[str, ...]:
    if ds.changed is not None:
        return ds.changed
    model = ds.rows(ctx).model
    return ("updated_at",) if any(f.name == "updated_at" for f in model._meta.concrete_fields) else ()


def dirty_days(ctx: Context, ds: Dataset, since: datetime) -> tuple[set[date], dict[date, set[int]]]:
    """The days whose rows may have changed since ``since``: every day from then to now, the days of
    rows stamped as changed since then, and the days the dataset's ``touches`` name.

    For a dataset kept per user (``Dataset.by_user``), the days only changed rows make dirty come apart,
    each with the users whose facts those rows count for: (days rescanned whole, {day: users}).
    """
    days = set(_day_range(local_date(since), local_date(ctx.now)))
    for touch in ds.touches:
        days |= set(touch(ctx, since))
    paths = changed_paths(ctx, ds)
    users = changed_users(ctx, ds, since) if _per_user(ctx, ds) and paths == ("updated_at",) else None
    if users is None:
        for path in paths:
            days |= days_of(ds.rows(ctx).filter(**{f"{path}__gte": since}), ds)
        return days, {}
    days |= {d for d, ids in users.items() if ids is None}
    return days, {d: ids for d, ids in users.items() if ids is not None and d not in days}


# More changed rows than this in one run (a bulk edit): their days are rescanned whole.
MAX_USER_RESCAN_ROWS = 5_000


def _per_user(ctx: Context, ds: Dataset) -> bool:
    """Whether the dataset's facts are kept per user only, that user being its ``by_user`` field."""
    return (
        ds.by_user is not None
        and scope_sets(ds) == [Scope.USER]
        and ds.scopes[Scope.USER] == ds.by_user
        and hasattr(ds.rows(ctx).model, "history")
    )


def changed_users(ctx: Context, ds: Dataset, since: datetime) -> dict[date, set[int] | None] | None:
    """The days of rows stamped as changed since ``since``, each with the users their facts count for:
    the row's user now and every user the model's history gives it (a reassigned deal leaves its former
    owner's facts). A day with a row of no user maps to None (rescanned whole); None: too many rows."""
    rows = (
        ds.rows(ctx)
        .filter(updated_at__gte=since)
        .order_by()
        .annotate(key_day=key_day(ds))
        .values_list("key_day", "pk", ds.by_user)
    )[: MAX_USER_RESCAN_ROWS + 1]
    found = list(rows)
    if len(found) > MAX_USER_RESCAN_ROWS:
        return None
    out: dict[date, set[int] | None] = {}
    day_of: dict[int, date] = {}
    for day, pk, user in found:
        if day is None:
            continue
        day_of[pk] = day
        _add_user(out, day, user)
    if day_of:
        history = ds.rows(ctx).model.history
        for pk, user in history.filter(id__in=list(day_of)).values_list("id", ds.by_user).distinct():
            _add_user(out, day_of[pk], user)
    return out


def _add_user(out: dict[date, set[int] | None], day: date, user: int | None) -> None:
    if user is None:
        out[day] = None
    elif day not in out:
        out[day] = {user}
    elif (users := out[day]) is not None:
        users.add(user)


def watermark(ctx: Context, ds: Dataset, state: Sequence[Any] | None) -> datetime:
    """Changes stamped from this instant on may be missing from the dataset's facts (``state``: its
    stored signature and refresh time).

    Raises FactsMissing when the dataset has no facts, or facts of another definition.
    """
    if state is None or state[0] != signature(ctx, ds) or state[1] is None:
        raise FactsMissing(ds.name)
    return state[1] - WATERMARK_MARGIN


def rewrite(
    ctx: Context, ds: Dataset, days: Iterable[date], users_by_day: Mapping[date, set[int]] | None = None
) -> None:
    """Recompute the facts of ``days`` from the records and re-add their weeks and months; those of the
    days of ``users_by_day`` only for their users (a dataset kept per user, ``Dataset.by_user``).

    Two statements after the scan: one delete, one insert of the new day facts and of the weeks and
    months around them (from the day facts where the week or month starts on or after the first day of
    the dataset's day facts, else from the records, scanned for the whole week or month).
    """
    hz = days_from(ctx, ds)
    # A day is rescanned for some users only where its week and month are re-added from day facts.
    narrow = {
        d: ids
        for d, ids in (users_by_day or {}).items()
        if min(floor_date(d, WEEK), floor_date(d, MONTH)) >= hz
    }
    days = {*days, *((users_by_day or {}).keys() - narrow.keys())}
    whole = sorted({d for d in days if d >= hz})
    recent = sorted({*whole, *narrow})
    spans: list[tuple[date, date]] = [(d, _next(d, DAY)) for d in whole]
    from_days: dict[str, set[date]] = {WEEK: set(), MONTH: set()}
    from_records: dict[str, set[date]] = {WEEK: set(), MONTH: set()}
    for d in {*days, *narrow}:
        for grain in (WEEK, MONTH):
            first = floor_date(d, grain)
            # A week or month that starts before the day facts has none to add up.
            if first >= hz:
                from_days[grain].add(first)
            else:
                from_records[grain].add(first)
                spans.append((first, _next(first, grain)))
    users = sorted({u for ids in narrow.values() for u in ids})
    _day_table(ctx, ds, f"kpi_day_{ds.name}", _merge(spans), sorted(narrow), users)
    table = pg.Identifier(f"kpi_day_{ds.name}")
    n = len(fact_columns(ds))
    columns = parts(n)
    unpacked = each_value(n, stored)
    params: dict[str, Any] = {
        "name": ds.name,
        "recent": recent,
        "whole": whole,
        "narrow": sorted(narrow),
        "users": [str(u) for u in users],
    }
    # The day facts this rewrite replaces: every user's on the days rescanned whole, the users' on the
    # others.
    replaced = pg.SQL(
        "(day = ANY(%(whole)s) OR (day = ANY(%(narrow)s) AND scope = 'user' AND scope_id = ANY(%(users)s)))"
    )
    new_days = pg.SQL("SELECT on_day, scope, scope_id, {} FROM {} WHERE on_day = ANY(%(recent)s)").format(
        columns, table
    )
    selects = [
        pg.SQL("SELECT 'day' AS grain, on_day AS day, scope, scope_id, {} FROM ({}) AS d").format(
            columns, new_days
        )
    ]
    for grain in (WEEK, MONTH):
        for source, firsts in (("days", from_days[grain]), ("records", from_records[grain])):
            if not firsts:
                continue
            key = f"{grain}_{source}"
            params[key] = sorted(firsts)
            rows = pg.SQL("SELECT on_day, scope, scope_id, {} FROM {}").format(columns, table)
            if source == "days":
                # The day rows of a week or month re-added from days: the new ones of the rewritten
                # days, and the stored day facts of its other days (read by the weeks' or months' own
                # ranges: a month two years ago and this one must not read every day in between).
                ranges = _merge((first, _next(first, grain)) for first in firsts)
                for i, (lo, hi) in enumerate(ranges):
                    params[f"{key}_lo_{i}"], params[f"{key}_hi_{i}"] = lo, hi
                within = pg.SQL(" OR ").join(
                    pg.SQL("(day >= {} AND day < {})").format(
                        pg.Placeholder(f"{key}_lo_{i}"), pg.Placeholder(f"{key}_hi_{i}")
                    )
                    for i in range(len(ranges))
                )
                rows = pg.SQL(
                    "{} UNION ALL SELECT day AS on_day, scope, scope_id, {} FROM {} "
                    "WHERE dataset = %(name)s AND grain = 'day' AND ({}) AND NOT {}"
                ).format(new_days, unpacked, FACTS, within, replaced)
            selects.append(
                pg.SQL(
                    "SELECT {grain}, {first}, scope, scope_id, {sums} FROM ({rows}) AS r "
                    "WHERE {first} = ANY({firsts}) GROUP BY 2, 3, 4"
                ).format(
                    grain=pg.Literal(grain),
                    first=trunc_day(grain),
                    sums=each_value(n, lambda i: pg.SQL("sum({})").format(part(i))),
                    rows=rows,
                    firsts=pg.Placeholder(key),
                )
            )
    weeks, months = (
        sorted(from_days[WEEK] | from_records[WEEK]),
        sorted(from_days[MONTH] | from_records[MONTH]),
    )
    with connection.cursor() as cursor:
        cursor.execute(
            pg.SQL(
                "DELETE FROM {} WHERE dataset = %(name)s AND ((grain = 'day' AND {}) "
                "OR (grain = 'week' AND day = ANY(%(weeks)s)) OR (grain = 'month' AND day = ANY(%(months)s)))"
            ).format(FACTS, replaced),
            {**params, "weeks": weeks, "months": months},
        )
        cursor.execute(
            pg.SQL(
                "INSERT INTO {} (dataset, grain, day, scope, scope_id, values) "
                "SELECT %(name)s, grain, day, scope, scope_id, {} FROM ({}) AS f"
            ).format(FACTS, _values_sql(n), pg.SQL(" UNION ALL ").join(selects)),
            params,
        )
        cursor.execute(pg.SQL("DROP TABLE {}").format(table))


def _day_table(
    ctx: Context,
    ds: Dataset,
    table: str,
    spans: list[tuple[date, date]],
    narrow: list[date],
    users: list[int],
) -> None:
    """The day table of a rewrite: ``spans`` scanned whole, the ``narrow`` days for ``users`` only."""
    if not narrow:
        create_day_table(ctx, ds, table, spans=spans, opening_before=None)
        return
    some = f"{table}_users"
    ctx.scan_users = users
    try:
        create_day_table(ctx, ds, some, spans=_merge((d, _next(d, DAY)) for d in narrow), opening_before=None)
    finally:
        ctx.scan_users = None
    with connection.cursor() as cursor:
        if spans:
            create_day_table(ctx, ds, table, spans=spans, opening_before=None)
            cursor.execute(
                pg.SQL("INSERT INTO {0} SELECT * FROM {1}; DROP TABLE {1}").format(
                    pg.Identifier(table), pg.Identifier(some)
                )
            )
        else:
            cursor.execute(
                pg.SQL("DROP TABLE IF EXISTS {0}; ALTER TABLE {1} RENAME TO {0}").format(
                    pg.Identifier(table), pg.Identifier(some)
                )
            )


def read(ctx: Context, ds: Dataset, grans: Sequence[str], *, source: str = TABLE) -> Grouped:
    """Sum the periods a run needs from week and month facts: weeks from week facts, the rest from
    month facts. A stock reads every fact before them, added up into its opening balance.

    ``source``: the stored facts, or a build's table of the same shape (``grain, on_day, scope,
    scope_id, part_0 …``).
    """
    out: Grouped = {}
    n = len(fact_columns(ds))
    rows: pg.Composable
    if source == TABLE:
        rows = pg.SQL(
            "SELECT day AS on_day, scope, scope_id, {} FROM {} WHERE dataset = %s AND grain = %s"
        ).format(stored_parts(n), FACTS)
        key: list[Any] = [ds.name]
    else:
        rows = pg.SQL("SELECT * FROM {} WHERE grain = %s").format(pg.Identifier(source))
        key = []
    for grain, wanted in ((WEEK, [g for g in grans if g == WEEK]), (MONTH, [g for g in grans if g != WEEK])):
        needed = [p for g in wanted for p in ctx.needed(g, ds.compare, ds.name)]
        if ds.current_only:
            needed = [p for p in needed if p == ctx.current(p.granularity)]
        if not needed:
            continue
        if ds.opening_balance:
            filtered, params = _with_opening(ctx, ds, grain, needed, rows, [*key, grain], source=source)
        else:
            filtered = pg.SQL(
                "SELECT on_day, scope, scope_id, {} FROM ({}) AS f WHERE on_day = ANY(%s)"
            ).format(parts(n), rows)
            params = [*key, grain, sorted({d for p in needed for d in _firsts(p, grain)})]
        out.update(
            periods_from_days(ctx, ds, filtered, params, grans=wanted, only=_only(ctx, ds, needed, wanted))
        )
    return out


def _with_opening(
    ctx: Context,
    ds: Dataset,
    grain: str,
    needed: Sequence[Period],
    rows: pg.Composable,
    params: list,
    *,
    source: str,
) -> tuple[pg.Composable, list]:
    """SQL of a stock's facts of ``grain`` from the first needed period to the last, and one row per
    scope dated the day before the first: the sum of every fact before it (its opening balance)."""
    n = len(fact_columns(ds))
    values, sums = parts(n), sum_parts(n)
    first = min(p.first_day for p in needed)
    end = max(p.next().first_day for p in needed)
    cut = floor_date(first, MONTH)
    if source == TABLE and grain == WEEK and cut >= days_from(ctx, ds):
        # Before the first week: month facts, then the days of the month up to it (a few dozen rows per
        # scope instead of every week since the first record).
        before = pg.SQL(
            "SELECT scope, scope_id, {} FROM {} WHERE dataset = %s AND ("
            "(grain = 'month' AND day < %s) OR (grain = 'day' AND day >= %s AND day < %s))"
        ).format(stored_parts(n), FACTS)
        before_params = [ds.name, cut, cut, first]
    else:
        before = pg.SQL("SELECT scope, scope_id, {} FROM ({}) AS f WHERE on_day < %s").format(values, rows)
        before_params = [*params, first]
    sql = pg.SQL(
        "SELECT on_day, scope, scope_id, {values} FROM ({rows}) AS f WHERE on_day >= %s AND on_day < %s "
        "UNION ALL SELECT %s::date, scope, scope_id, {sums} FROM ({before}) AS b GROUP BY scope, scope_id"
    ).format(values=values, rows=rows, sums=sums, before=before)
    return sql, [*params, first, end, first - timedelta(days=1), *before_params]


def _only(
    ctx: Context, ds: Dataset, needed: Sequence[Period], grans: Sequence[str]
) -> dict[str, list[date]] | None:
    """The periods to sum: an incremental run needs a few of the weeks or months it reads. A stock's
    deltas are accumulated period after period, so it gets them all."""
    if ctx.touched is None or ds.opening_balance:
        return None
    return {g: [p.first_day for p in needed if p.granularity == g] for g in grans}


def _firsts(period: Period, grain: str) -> Iterator[date]:
    """The first days of the facts of ``grain`` that make up ``period``."""
    day, end = period.first_day, period.next().first_day
    while day < end:
        yield day
        day = _next(day, grain)


class FactsMissing(LookupError):
    """A dataset has no facts yet (or they were built by another definition): rebuild them in full."""


# State: which definition built the facts, and how far they are refreshed
# ---------------------------------------------------------------------------------------------------------


_SIGNATURES: dict[int, tuple[Dataset, str]] = {}


def signature(ctx: Context, ds: Dataset) -> str:
    """A hash of everything that shapes a dataset's facts: its SQL, scopes and measure columns."""
    cached = _SIGNATURES.get(id(ds))
    if cached is not None and cached[0] is ds:
        return cached[1]
    if len(_SIGNATURES) > 500:  # datasets built per run (the funnel) must not pile up
        _SIGNATURES.clear()
    _SIGNATURES[id(ds)] = (ds, _signature(ctx, ds))
    return _SIGNATURES[id(ds)][1]


def _signature(ctx: Context, ds: Dataset) -> str:
    spans = [(date(2000, 1, 1), date(2000, 1, 2))]
    if ds.day_sql is not None:
        composed, params = ds.day_sql(ctx, spans)
        sql, where = f"{composed.as_string()} {params!r}", ""
    elif ds.day_rows is not None:
        sql, where = f"{ds.day_rows.__module__}.{ds.day_rows.__qualname__}", ""
    else:
        inner, _params, condition = inner_query(ctx, ds, day=True, spans=spans)
        sql, where = inner.as_string(), condition.as_string()
    shape = [
        ds.name,
        sql,
        where,
        repr(sorted(ds.scopes.items())),
        *(f"{c.measure} {c.sql.as_string()}" for c in fact_columns(ds)),
    ]
    return hashlib.sha256("\n".join(shape).encode()).hexdigest()


def measures(ds: Dataset) -> list[str]:
    """What each of a dataset's fact values holds, in the order stored (``KpiFact.values``): the measure's
    name, and for a measure counted per granularity, ``measure@granularity``."""
    return [c.measure if c.granularity is None else f"{c.measure}@{c.granularity}" for c in fact_columns(ds)]


def inputs_signature() -> str:
    """A hash of the small tables every period's figures depend on besides the records: who is in which
    team and holds a seat (team figures, licences), spend, CRM costs and company settings (unit
    economics), pipeline stages (weighted pipeline, funnel) and surveys (satisfaction)."""
    from crm.models import Campaign, CompanySettings, CrmCostItem, PipelineStage, SpendEntry
    from surveys.models import Survey

    tables = [
        User.objects.values_list("pk", "team_id", "is_service_account"),
        Seat.objects.values_list("pk", "user_id", "started_at", "ended_at"),
        SpendEntry.objects.values_list("pk", "month", "category", "channel", "amount"),
        CrmCostItem.objects.values_list(),
        CompanySettings.objects.values_list(),
        PipelineStage.objects.values_list("pk", "pipeline_id", "order", "probability", "kind"),
        Survey.objects.values_list("pk", "kind", "nps_type", "positive_min", "is_active"),
        # Campaign costs spread over their runs (metrics.kpis.campaigns).
        Campaign.objects.values_list("pk", "start", "end", "cost"),
    ]
    return hashlib.sha256(repr([list(t.order_by("pk")) for t in tables]).encode()).hexdigest()


def inputs_changed(ctx: Context) -> bool:
    """Whether those tables changed since snapshots were last written from the facts (by a run like
    this one: the hourly run of the statistics of quarters and years keeps a signature of its own)."""
    field = "long_inputs" if ctx.long_statistics else "inputs"
    return KpiFactState.objects.exclude(**{field: inputs_signature()}).exists()


def mark(ctx: Context, datasets: Iterable[Dataset], *, at: datetime, rebuilt: bool) -> None:
    """Record that the facts are complete up to ``at`` (and, after a full build, by which definition);
    after an hourly run of the statistics of quarters and years, that those are."""
    inputs = inputs_signature()
    for ds in datasets:
        if rebuilt:
            KpiFactState.objects.update_or_create(
                dataset=ds.name,
                defaults={
                    "signature": signature(ctx, ds),
                    "measures": measures(ds),
                    "built_at": at,
                    "days_from": ctx.days_from.get(ds.name),
                    "refreshed_at": at,
                    "long_refreshed_at": at,
                    "inputs": inputs,
                    "long_inputs": inputs,
                },
            )
        elif ctx.long_statistics:
            stamp = {"long_refreshed_at": at} if ds.name in ctx.statistics else {}
            KpiFactState.objects.filter(dataset=ds.name).update(long_inputs=inputs, **stamp)
        else:
            KpiFactState.objects.filter(dataset=ds.name).update(refreshed_at=at, inputs=inputs)


# Totals over arbitrary ranges
# ---------------------------------------------------------------------------------------------------------


def _company_values(n: int) -> pg.Composable:
    """The sums of the stored facts' ``n`` values over a group of facts."""
    return each_value(n, lambda i: pg.SQL("COALESCE(sum({}), 0)").format(stored(i)))


def _named(ds: Dataset, values: Sequence[Any], columns: Sequence[Any] | None = None) -> dict[str, Decimal]:
    """Fact values by measure name (per-granularity measures left out), money back in its unit;
    ``columns``: the dataset's ``fact_columns`` where the caller has them (building them costs)."""
    out = {}
    for column, value in zip(columns or fact_columns(ds), values, strict=True):
        if column.granularity is None:
            scale = ds.measures[column.measure].scale
            out[column.measure] = Decimal(value) / scale if scale else Decimal(value)
    return out


def _total_scope(ds: Dataset) -> str:
    """The facts' scope whose rows add up to the company: users, or the company's own rows."""
    return "user" if Scope.USER in ds.scopes else ""


def month_totals(ds: Dataset, first: date, after: date) -> dict[date, dict[str, Decimal]]:
    """The company's totals of each month in [first, after), from the month facts."""
    n = len(fact_columns(ds))
    with connection.cursor() as cursor:
        cursor.execute(
            pg.SQL(
                "SELECT day, {} FROM {} WHERE dataset = %s AND grain = 'month' AND scope = %s "
                "AND day >= %s AND day < %s GROUP BY day"
            ).format(_company_values(n), FACTS),
            [ds.name, _total_scope(ds), first, after],
        )
        return {row[0]: _named(ds, row[1:]) for row in cursor.fetchall()}


# Per dataset, its measures summed over some days, per (scope, scope id) as snapshots name them.
DayTotals = Mapping[str, Mapping[tuple[str, str], Mapping[str, Decimal]]]


def teams_of_users() -> dict[str, str]:
    """Each user's current team, by user id (facts are stored per user; a team's are its members')."""
    return {str(pk): str(team) for pk, team in User.objects.values_list("pk", "team_id") if team}


def day_totals(
    datasets: Sequence[Dataset], first: date, after: date, team_of: Mapping[str, str]
) -> DayTotals:
    """Per dataset, its measures summed over its day facts of [first, after), per scope as snapshots name
    them: the company, each user and (through the user's current team, ``team_of``) each team, each
    source. One query."""
    by_name = {ds.name: ds for ds in datasets}
    if not by_name:
        return {}
    columns = {name: fact_columns(ds) for name, ds in by_name.items()}
    width = max(len(c) for c in columns.values())
    with connection.cursor() as cursor:
        cursor.execute(
            pg.SQL(
                "SELECT dataset, scope, scope_id, {} FROM {} WHERE dataset = ANY(%s) AND grain = 'day' "
                "AND day >= %s AND day < %s GROUP BY dataset, scope, scope_id"
            ).format(_company_values(width), FACTS),
            [list(by_name), first, after],
        )
        stored = cursor.fetchall()
    found: dict[str, dict[tuple[str, str], list[int]]] = {name: {} for name in by_name}
    for name, scope, scope_id, *row in stored:
        ds = by_name[name]
        values = [int(v or 0) for v in row[: len(columns[name])]]
        keys = []
        if scope == _total_scope(ds):
            keys.append((Scope.COMPANY, ""))
        if scope:
            keys.append((scope, scope_id))
        if scope == Scope.USER and Scope.TEAM in ds.scopes and scope_id in team_of:
            keys.append((Scope.TEAM, team_of[scope_id]))
        for key in keys:
            into = found[name].setdefault(key, [0] * len(values))
            for i, value in enumerate(values):
                into[i] += value
    return {
        name: {key: _named(by_name[name], row, columns[name]) for key, row in totals.items()}
        for name, totals in found.items()
    }


def whole_months(first: date, after: date) -> list[date]:
    """The first days of the months lying wholly in [first, after)."""
    month = floor_date(first, MONTH)
    month = month if month == first else _next(month, MONTH)
    months = []
    while _next(month, MONTH) <= after:
        months.append(month)
        month = _next(month, MONTH)
    return months


def month_totals_by_user(ds: Dataset, months: Sequence[date]) -> dict[str, dict[str, Decimal]]:
    """Per user ("" for none), the totals of ``months`` from the month facts of a user-scoped dataset."""
    n = len(fact_columns(ds))
    with connection.cursor() as cursor:
        cursor.execute(
            pg.SQL(
                "SELECT scope_id, {} FROM {} WHERE dataset = %s AND grain = 'month' AND scope = 'user' "
                "AND day = ANY(%s) GROUP BY scope_id"
            ).format(_company_values(n), FACTS),
            [ds.name, list(months)],
        )
        return {row[0]: _named(ds, row[1:]) for row in cursor.fetchall()}


# Scanning ahead on a second connection (full builds)
# ---------------------------------------------------------------------------------------------------------


class Prefetch:
    """Scans the records of a full build's datasets on a second database connection while the first one
    works through the KPIs (adding up periods, writing facts, building rows in Python): each dataset's
    day rows (or, for statistics, its grouped rows) land in an unlogged table that the build then reads
    instead of scanning. Two cores, both busy.

    The second connection starts with the second dataset the KPIs read: the first connection scans the
    first one itself rather than wait, at the start, for a scan the second has only just begun (and
    any dataset whose scan has not started when it is needed, see ``take``).

    The tables are named per run and dropped by the run's own transaction once read; a crashed run's
    leftovers are dropped when the next one starts. Only committed records are read, as by any full run.
    """

    PREFIX = "kpi_prefetch_"

    def __init__(self, ctx: Context, datasets: Iterable[Dataset], *, drop_leftovers: bool = True) -> None:
        """``drop_leftovers``: drop what crashed runs left first; not in a part of a rebuild fanned out
        across workers (the other parts' tables are in use), whose last step drops them instead."""
        self.token = secrets.token_hex(4)
        self.jobs: dict[str, tuple[Future, str, Query | None]] = {}
        self.taken: list[str] = []
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpi-prefetch")
        if drop_leftovers:
            self.executor.submit(_drop_leftovers, f"{self.PREFIX}{self.token}_")
        for ds in list(datasets)[1:]:
            grans = ctx.requested(ds.granularities)
            if not grans or ds.always or ds.day_rows is not None:
                continue
            table = f"{self.PREFIX}{self.token}_{ds.name}"
            query = None
            if ds.uses_facts:
                start, after, opening = _scan_range(ctx, ds, grans)
                statements = day_table_statements(
                    ctx, ds, table, spans=[(start, after)], opening_before=opening, kind="UNLOGGED"
                )
            else:
                query = _records_query(ctx, ds, grans)
                statements = [
                    (
                        pg.SQL("CREATE UNLOGGED TABLE {} AS {}").format(pg.Identifier(table), query.sql),
                        query.params,
                    )
                ]
            self.jobs[ds.name] = (self.executor.submit(_run_statements, statements), table, query)

    def take(self, ds: Dataset) -> tuple[str, Query | None] | None:
        """The table holding ``ds``'s scan, once done; None if the dataset was not scanned ahead (or its
        scan had not started yet: the caller scans it itself)."""
        job = self.jobs.pop(ds.name, None)
        if job is None:
            return None
        future, table, query = job
        if future.cancel():
            return None
        future.result()  # the scan's error, if any, is this run's
        self.taken.append(table)
        return table, query

    def stop(self) -> None:
        """Stop scanning ahead: scans not started are dropped, the running one is waited for."""
        self.executor.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Drop the tables this run read, once stopped (any other is the next run's to drop)."""
        if self.taken:
            with connection.cursor() as cursor:
                cursor.execute(
                    pg.SQL("DROP TABLE IF EXISTS {}").format(
                        pg.SQL(", ").join(map(pg.Identifier, self.taken))
                    )
                )


def _drop_leftovers(own_prefix: str) -> None:
    """On this thread's own connection: ``drop_scan_tables`` but the caller's own."""
    conn = connections[DEFAULT_DB_ALIAS]
    try:
        with conn.cursor() as cursor:
            drop_scan_tables(cursor, keep=own_prefix)
    finally:
        conn.close()


def drop_scan_tables(cursor: Any, *, keep: str | None = None) -> None:
    """Drop the scan tables crashed runs left behind (called where no other run can be scanning: they are
    not in use); ``keep``: the prefix of the caller's own."""
    cursor.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE %s",
        [f"{Prefetch.PREFIX}%"],
    )
    for (table,) in cursor.fetchall():
        if keep is None or not table.startswith(keep):
            cursor.execute(pg.SQL("DROP TABLE IF EXISTS {}").format(pg.Identifier(table)))


def _run_statements(statements: Statements) -> None:
    """Run ``statements`` on this thread's own connection (autocommit), then close it."""
    conn = connections[DEFAULT_DB_ALIAS]
    try:
        with conn.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)
    finally:
        conn.close()


def _records_query(ctx: Context, ds: Dataset, grans: Sequence[str]) -> Query:
    """The grouped query of a full build's statistics dataset: every requested period of ``grans``."""
    lo, hi = ctx.bounds(grans, ds.compare)
    return records_query(ctx, ds, grans, [(local_date(lo), local_date(hi))])


def run_records_query(ctx: Context, ds: Dataset, grans: Sequence[str]) -> Grouped:
    """A full build's statistics dataset: its grouped rows from its table scanned ahead, if any, else
    from its query."""
    prefetched = ctx.prefetch.take(ds) if ctx.prefetch is not None else None
    if prefetched is None:
        return _records_query(ctx, ds, grans).run()
    table, query = prefetched
    with connection.cursor() as cursor:
        cursor.execute(pg.SQL("SELECT * FROM {}").format(pg.Identifier(table)))
        return query.read(cursor.fetchall())

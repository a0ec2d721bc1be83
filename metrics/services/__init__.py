"""Every write of the metrics app: KPI snapshot recomputes, RFM refreshes and targets."""

import json
import logging
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial
from itertools import batched
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, connection, transaction
from django.db.models import Min
from django.utils import timezone
from psycopg import sql
from redis.exceptions import RedisError

from accounts.models import User
from crm.models import Customer, Deal, SpendEntry
from metrics.kpis import facts, family_datasets, registry
from metrics.kpis.base import Context, Kpi, Row, Run
from metrics.kpis.builders import ComparedFromFacts, ComparedFromRecords, Offset
from metrics.kpis.dataset import Dataset
from metrics.kpis.details import Detail
from metrics.kpis.sql import INCREMENTAL_SETTINGS, Grouped, records_query, with_plans_off
from metrics.models import CustomerRfm, KpiTarget, Scope, SnapshotRun
from metrics.periods import GRANULARITIES, Period, local_date, local_midnight, periods_between, recent_periods

logger = logging.getLogger(__name__)

# pg_try_advisory_xact_lock keys: one recompute (and one RFM refresh) at a time, released at commit.
RECOMPUTE_LOCK = zlib.crc32(b"metrics.snapshots_recompute")
RFM_LOCK = zlib.crc32(b"metrics.rfm_refresh")
CACHE_GENERATION_KEY = "metrics:snapshot-generation"
RECENT_PERIODS_BACK = 3
SNAPSHOT_COLUMNS = (
    "kpi",
    "granularity",
    "period_start",
    "period_end",
    "scope",
    "scope_id",
    "value",
    "numerator",
    "denominator",
    "sample_size",
    "extra",
    "is_provisional",
    "computed_at",
    "definition_version",
)
UPDATED_COLUMNS = SNAPSHOT_COLUMNS[6:]
KEY_COLUMNS = ("kpi", "granularity", "scope", "scope_id", "period_start")
# Above this many recomputed (KPI, period) pairs the stored rows are read in one pass, not period by period.
WHOLE_TABLE = 2000

Progress = Callable[[str], None]


# Built with psycopg.sql from the column names above only; every value travels through COPY or parameters.
def _columns(names: Iterable[str], table: str | None = None) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(*([table] if table else []), name) for name in names)


def _pairs(names: Iterable[str], template: str, joiner: str) -> sql.Composed:
    """``template`` ({e} and {t}: a column of the stored and of the staged row) for each of ``names``."""
    return sql.SQL(joiner).join(
        sql.SQL(template).format(e=sql.Identifier("e", name), t=sql.Identifier("t", name)) for name in names
    )


# The stored rows of the periods this run recomputed (``kpi_cover``): through the (kpi, granularity,
# period) index, a range scan per period instead of a probe per staged row; in one pass over the table
# when most periods are recomputed (``WHOLE_TABLE``).
_EXISTING = sql.SQL("""
    SELECT s.* FROM kpi_cover c JOIN metrics_kpisnapshot s
    ON s.kpi = c.kpi AND s.granularity = c.granularity AND s.period_start = c.period_start
""")
# One pass over the stored rows: what the run changes. Staged rows that are new or differ (with the id of
# the row they replace) and stored rows of the recomputed periods that the run did not produce (``kpi``
# empty: a scope that no longer has data). Unchanged rows are left alone (no new row versions).
DIFF_SQL = sql.SQL("""
    CREATE TEMP TABLE kpi_diff AS
    SELECT t.*, e.id AS existing_id FROM kpi_stage t FULL JOIN ({existing}) AS e ON {same_key}
    WHERE e.id IS NULL OR t.kpi IS NULL OR {changed}
""").format(
    existing=_EXISTING,
    same_key=_pairs(KEY_COLUMNS, "{e} = {t}", " AND "),
    changed=_pairs([c for c in UPDATED_COLUMNS if c != "computed_at"], "{e} IS DISTINCT FROM {t}", " OR "),
)
UPSERT_SQL = sql.SQL("""
    MERGE INTO metrics_kpisnapshot AS s
    USING (SELECT * FROM kpi_diff WHERE kpi IS NOT NULL) AS t ON s.id = t.existing_id
    WHEN MATCHED THEN
        UPDATE SET {updates}
    WHEN NOT MATCHED THEN
        INSERT ({columns}) VALUES ({values})
""").format(
    updates=sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier("t", c)) for c in UPDATED_COLUMNS
    ),
    columns=_columns(SNAPSHOT_COLUMNS),
    values=_columns(SNAPSHOT_COLUMNS, "t"),
)
DELETE_STALE_SQL = (
    "DELETE FROM metrics_kpisnapshot WHERE id IN (SELECT existing_id FROM kpi_diff WHERE kpi IS NULL)"
)


class RecomputeError(ValueError):
    """The request itself is wrong (unknown KPI or granularity, empty range)."""


def history_range(*, now: datetime | None = None) -> tuple[datetime, datetime]:
    """From the earliest customer, deal or spend entry to now: the span a full rebuild covers."""
    now = now or timezone.now()
    firsts = [
        Customer.objects.aggregate(v=Min("created_at"))["v"],
        Deal.objects.aggregate(v=Min("created_at"))["v"],
    ]
    spend = SpendEntry.objects.aggregate(v=Min("month"))["v"]
    if spend:
        firsts.append(local_midnight(spend))
    starts = [f for f in firsts if f is not None]
    return (min(starts) if starts else now), now


def snapshots_recompute(
    *,
    start: datetime | date,
    end: datetime | date,
    granularities: Sequence[str] | None = None,
    kpis: Sequence[str] | None = None,
    kind: str = SnapshotRun.Kind.RANGE,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> SnapshotRun:
    """Recompute every period of ``granularities`` (all by default) overlapping ``[start, end)``.

    All selected KPIs and scopes are computed from the records (the facts of the range are rewritten on
    the way) and written with one upsert in one transaction; stale rows of the recomputed periods are
    removed. A run that finds another one in progress is recorded as skipped.
    """
    grans = _granularities(granularities)
    if end <= start:
        raise RecomputeError("the range is empty: end must be after start")
    periods = {g: periods_between(g, start, end) for g in grans}
    ctx = Context(Run(periods=periods, now=now or timezone.now()))
    return _recompute(ctx, kpis=kpis, kind=kind, progress=progress)


def snapshots_recompute_recent(
    *, back: int = RECENT_PERIODS_BACK, kpis: Sequence[str] | None = None, now: datetime | None = None
) -> SnapshotRun:
    """Bring the current period and the ``back`` previous ones of every granularity up to date.

    Incremental (KPIS.md G6 with facts): the facts of the days whose records changed since the last run
    are rewritten, and the periods those days count for are recomputed from the facts. Without facts
    of the current definitions (first run, a changed KPI definition) it rebuilds everything instead.
    """
    now = now or timezone.now()
    periods = {g: recent_periods(g, now, back) for g in GRANULARITIES}
    ctx = Context(Run(periods=periods, now=now, incremental=True))
    try:
        return _recompute(ctx, kpis=kpis, kind=SnapshotRun.Kind.RECENT)
    except facts.FactsMissing as missing:
        logger.info("KPI facts of %s are missing or outdated: rebuilding everything", missing)
        return snapshots_rebuild_all(now=now)


def snapshots_recompute_long_statistics(
    *, back: int = RECENT_PERIODS_BACK, now: datetime | None = None
) -> SnapshotRun:
    """Bring the medians and percentiles of the current and ``back`` previous quarters and years up to date.

    They need every record of a quarter or a year (a second or more at a million deals), so the
    every-few-minutes run leaves them out and this runs hourly, with a watermark of its own.
    """
    now = now or timezone.now()
    periods = {g: recent_periods(g, now, back) for g in facts.LONG_PERIODS}
    ctx = Context(Run(periods=periods, now=now, incremental=True, long_statistics=True))
    try:
        return _recompute(ctx, kpis=None, kind=SnapshotRun.Kind.LONG)
    except facts.FactsMissing as missing:
        logger.info("KPI facts of %s are missing or outdated: rebuilding everything", missing)
        return snapshots_rebuild_all(now=now)


def snapshots_rebuild_all(*, now: datetime | None = None, progress: Progress | None = None) -> SnapshotRun:
    """Recompute every KPI for every period of the data's whole history, at every granularity, and
    rebuild every fact from the records (the nightly reconciliation), in this process."""
    ctx = Context(rebuild_run(now=now))
    return _recompute(ctx, kpis=None, kind=SnapshotRun.Kind.FULL, progress=progress)


def rebuild_run(*, now: datetime | None = None, start: datetime | None = None) -> Run:
    """What a full rebuild answers: every period of every granularity from ``start`` (the data's first
    record) to ``now``."""
    if start is None:
        start, end = history_range(now=now)
        now = now or end
    now = now or timezone.now()
    # At least the periods the every-few-minutes run keeps up to date, so either run leaves the same rows.
    start = min(start, *(recent_periods(g, now, RECENT_PERIODS_BACK)[0].start for g in GRANULARITIES))
    return Run(periods={g: periods_between(g, start, now) for g in GRANULARITIES}, now=now)


def _granularities(granularities: Sequence[str] | None) -> list[str]:
    grans = list(granularities or GRANULARITIES)
    unknown = set(grans) - set(GRANULARITIES)
    if unknown:
        raise RecomputeError(f"unknown granularity: {', '.join(sorted(unknown))}")
    return grans


# The scheduled runs, which leave out the KPIs computed by a task of their own (``Kpi.own_task``).
SCHEDULED_KINDS = (SnapshotRun.Kind.FULL, SnapshotRun.Kind.RECENT, SnapshotRun.Kind.LONG)


def _select_kpis(codes: Sequence[str] | None, kind: str = SnapshotRun.Kind.RANGE) -> list[Kpi]:
    known = registry()
    if not codes:
        return [k for k in known.values() if not (k.own_task and kind in SCHEDULED_KINDS)]
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise RecomputeError(f"unknown KPI: {', '.join(unknown)}")
    return [known[c] for c in dict.fromkeys(codes)]


def _recompute(
    ctx: Context, *, kpis: Sequence[str] | None, kind: str, progress: Progress | None = None
) -> SnapshotRun:
    selected = _select_kpis(kpis, kind)
    starts = [p.start for ps in ctx.periods.values() for p in ps]
    ends = [p.end for ps in ctx.periods.values() for p in ps]
    started = timezone.now()
    run = SnapshotRun.objects.create(
        kind=kind,
        granularities=",".join(ctx.periods),
        range_start=min(starts) if starts else None,
        range_end=max(ends) if ends else None,
        kpis=list(kpis or []),
        started_at=started,
    )
    clock = time.perf_counter()
    try:
        with transaction.atomic():
            if not _try_lock(RECOMPUTE_LOCK):
                _finish(run, SnapshotRun.Status.SKIPPED, clock)
                return run
            if ctx.incremental:
                with connection.cursor() as cursor:
                    for setting in INCREMENTAL_SETTINGS.values():
                        cursor.execute(setting)
                # Teams, seats, spend or settings changed: every recent period is recomputed.
                ctx.everything = facts.inputs_changed(ctx)
                facts.prepare(ctx, family_datasets(ctx))
            elif settings.KPI_PREFETCH_SCANS and kpis is None:  # scanning ahead pays for every KPI only
                ctx.prefetch = facts.Prefetch(ctx, family_datasets(ctx))
            try:
                run.rows = _write(ctx, selected, computed_at=timezone.now(), progress=progress)
            finally:
                if ctx.prefetch is not None:
                    ctx.prefetch.stop()
            if ctx.prefetch is not None:
                ctx.prefetch.close()
            if kind == SnapshotRun.Kind.FULL or ctx.incremental:
                facts.mark(ctx, ctx.tracked.values(), at=started, rebuilt=kind == SnapshotRun.Kind.FULL)
    except facts.FactsMissing:
        run.delete()
        raise
    except Exception:
        run.error = traceback.format_exc()
        _finish(run, SnapshotRun.Status.FAILED, clock, ctx)
        raise
    _finish(run, SnapshotRun.Status.OK, clock, ctx)
    after_run(run, ctx)
    return run


def after_run(run: SnapshotRun, ctx: Context) -> None:
    """Once a run's snapshots are committed: cached fragments are stale; the alerts (KPIS.md §10.8) are
    decided from the new snapshots, in a transaction of their own."""
    bump_generation()
    from metrics.alerts.services import alerts_after_run

    try:
        alerts_after_run(run=run, ctx=ctx)
    except OperationalError:  # transient; the snapshots stand and the next run evaluates them again
        logger.exception("alerts could not be evaluated after snapshot run %s", run.pk)


def _try_lock(key: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cursor.fetchone()[0])


def _finish(run: SnapshotRun, status: str, clock: float, ctx: Context | None = None) -> None:
    if ctx is not None:
        run.datasets = ctx.timings
    finish_run(run, status, seconds=time.perf_counter() - clock)


def finish_run(run: SnapshotRun, status: str, *, seconds: float) -> None:
    """Record how ``run`` ended (its rows, error and timings as set on it)."""
    run.status = status
    run.finished_at = timezone.now()
    run.duration_seconds = round(seconds, 3)
    run.save(update_fields=["status", "finished_at", "duration_seconds", "rows", "error", "datasets"])


def bump_generation() -> None:
    """Tell cached dashboard fragments that the snapshots or targets changed; a cache outage must not
    fail a run or a save."""
    try:
        cache.set(CACHE_GENERATION_KEY, time.time_ns(), timeout=None)
    except (RedisError, OSError) as exc:
        logger.warning("could not bump the KPI cache generation: %s", exc)


def _write(ctx: Context, kpis: Iterable[Kpi], *, computed_at: datetime, progress: Progress | None) -> int:
    """Stage every KPI's rows with COPY, then upsert them in one statement and drop stale rows."""
    staged, covered = stage_rows(ctx, kpis, computed_at=computed_at, progress=progress)
    with connection.cursor() as cursor:
        apply_staged(cursor, covered)
    return staged


STAGE_TABLES_SQL = """
    CREATE TEMP TABLE kpi_stage (
        kpi varchar(60), granularity varchar(8), period_start timestamptz, period_end timestamptz,
        scope varchar(8), scope_id varchar(40), value numeric(24, 6), numerator numeric(24, 6),
        denominator numeric(24, 6), sample_size bigint, extra jsonb, is_provisional boolean,
        computed_at timestamptz, definition_version smallint
    );
    CREATE TEMP TABLE kpi_cover (kpi varchar(60), granularity varchar(8), period_start timestamptz);
"""


def stage_rows(
    ctx: Context, kpis: Iterable[Kpi], *, computed_at: datetime, progress: Progress | None
) -> tuple[int, int]:
    """Compute ``kpis`` into the temporary tables ``kpi_stage`` (their rows) and ``kpi_cover`` (the
    periods they answered), releasing each dataset once no KPI still to compute reads it. Returns the
    numbers of rows and of periods staged."""
    kpis = list(kpis)
    _recall_reads()
    if ctx.touched is not None:  # incremental: the datasets read together are widened before any KPI
        ctx.widen_ahead(LAST_READS[k.code] for k in kpis if k.code in LAST_READS)
    declared: dict[str, set[str]] = {}
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS kpi_stage, kpi_cover, kpi_diff")
        cursor.execute(STAGE_TABLES_SQL)
        staged = covered = 0
        for i, kpi in enumerate(kpis):
            rows, cover = kpi_rows(ctx, kpi)
            with cursor.cursor.copy(f"COPY kpi_stage ({', '.join(SNAPSHOT_COLUMNS)}) FROM STDIN") as copy:
                for lines in batched(_copy_lines(kpi, rows, computed_at.isoformat()), 5000):
                    copy.write("".join(lines))
            staged += len(rows)
            with cursor.cursor.copy("COPY kpi_cover (kpi, granularity, period_start) FROM STDIN") as copy:
                for g, period in cover:
                    copy.write_row((kpi.code, g, period.start))
            covered += len(cover)
            if progress:
                progress(kpi.code)
            ctx.release(keep=_still_read(ctx, kpis[i + 1 :], declared))
    _remember_reads()
    return staged, covered


def _still_read(ctx: Context, later: Sequence[Kpi], declared: dict[str, set[str]]) -> set[str]:
    """The datasets the KPIs still to compute read: what each of them read last time (``LAST_READS``)
    where every one of its family's is known, else every dataset its family declares. A dataset is
    released once none of them reads it, so a rebuild holds a family's datasets only while needed (the
    funnel's stages were held through the rest of the sales KPIs); one released too early is computed
    again, which costs time, not correctness."""
    keep: set[str] = set()
    for family in {k.family for k in later}:
        members = [k for k in later if k.family == family]
        if all(k.code in LAST_READS for k in members):
            keep.update(*(LAST_READS[k.code] for k in members))
        else:
            if family not in declared:
                declared[family] = {ds.name for ds in family_datasets(ctx, [family])}
            keep |= declared[family]
    return keep


# Where the datasets each KPI read are kept between processes: a worker's first rebuild of the night
# releases datasets as early as the runs before it learned.
READS_CACHE_KEY = "metrics:kpi-reads"


def _recall_reads() -> None:
    """Take in what other processes learned about the datasets each KPI reads (a cache outage: nothing)."""
    try:
        known = cache.get(READS_CACHE_KEY) or {}
    except (RedisError, OSError):
        return
    for code, names in known.items():
        LAST_READS.setdefault(code, frozenset(names))


def _remember_reads() -> None:
    try:
        cache.set(READS_CACHE_KEY, {code: sorted(names) for code, names in LAST_READS.items()}, timeout=None)
    except (RedisError, OSError) as exc:
        logger.warning("could not store what each KPI reads: %s", exc)


def apply_staged(cursor: Any, covered: int) -> None:
    """Write the staged rows (``kpi_stage``, ``kpi_cover``) into the snapshots: new and changed rows
    upserted, rows of the covered periods that the run did not produce deleted; then drop the tables."""
    # Row counts and rough distributions are all the upsert's plan needs: a small sample will do.
    cursor.execute("SET LOCAL default_statistics_target = 10")
    cursor.execute("ANALYZE kpi_stage, kpi_cover")
    # A merge join would sort both sides on their text keys: hash the staged rows instead. Each
    # recomputed period is looked up once, so memoising the lookups only costs memory; where most
    # periods are recomputed (a rebuild), one pass over the stored rows beats an index scan per period.
    plans = ["mergejoin", "memoize", *(["nestloop"] if covered > WHOLE_TABLE else [])]
    cursor.execute(with_plans_off(plans, DIFF_SQL))
    cursor.execute(UPSERT_SQL)
    cursor.execute(DELETE_STALE_SQL)
    cursor.execute("DROP TABLE kpi_stage, kpi_cover, kpi_diff")


# KPI code -> the datasets it read when this process last computed it. An incremental run widens the
# datasets read together up front (``Context.widen_ahead``), so each is computed once rather than again
# when a KPI finds it short; a KPI that reads otherwise is still checked (``kpi_rows``).
LAST_READS: dict[str, frozenset[str]] = {}


def kpi_rows(ctx: Context, kpi: Kpi) -> tuple[list[tuple[Row, Period]], list[tuple[str, Period]]]:
    """One KPI's rows for the periods and scopes it answers, and every period it answered.

    An incremental run answers only the periods that the changes since the last run count for: those
    the datasets the KPI read touch. Each dataset computes the periods its own changes touch; where a
    KPI reads it with a dataset touching more, it is computed again with those, and so is the KPI.
    """
    wanted = {g: {p.first_day: p for p in ctx.periods[g]} for g in ctx.requested(kpi.granularities)}
    if kpi.current_only:
        wanted = {g: {d: p for d, p in ps.items() if p == ctx.current(g)} for g, ps in wanted.items()}
    while True:
        ctx.start_kpi()
        computed = list(kpi.compute(ctx, kpi))
        answered = {p for ps in wanted.values() for p in ps.values() if answers(ctx, p)}
        if ctx.touched is None or not ctx.widen(answered):
            break
    LAST_READS[kpi.code] = frozenset(ctx.reads)
    scopes = set(kpi.scopes)
    out: list[tuple[Row, Period]] = []
    seen: set[tuple] = set()
    for row in computed:
        period = wanted.get(row.granularity, {}).get(row.first_day)
        if period not in answered or row.scope not in scopes:
            continue
        row_key = row[:4]  # granularity, first day, scope, scope id
        if row_key in seen:
            raise ValueError(f"{kpi.code} produced {row_key} twice")
        seen.add(row_key)
        out.append((row, period))
    cover = [(g, p) for g, ps in wanted.items() for p in ps.values() if p in answered]
    return _with_like_for_like(ctx, kpi, out), cover


def answers(ctx: Context, period: Period) -> bool:
    """Whether the KPI just computed is recomputed for ``period`` (``Context.answers``), given every
    dataset it read."""
    return ctx.answers(period) and ctx.answered_by_reads(period)


# Running periods compared like for like (KPIS.md §10.1): weeks and months, whose day facts are kept.
LIKE_FOR_LIKE = ("week", "month")


def _with_like_for_like(ctx: Context, kpi: Kpi, rows: list[tuple[Row, Period]]) -> list[tuple[Row, Period]]:
    """``rows``, where those of a running week or month now carry the KPI over the same elapsed days of the
    period before (``Detail.compared``), so pages compare like with like and still read only snapshots:
    through the builder's ``at_offset`` from the day facts of those days (sums and counts, stocks at the
    same offset, churn from the customers active at the period's start, …), or for medians and
    percentiles from the records of those days (one grouped query per dataset and granularity)."""
    builder = kpi.compute
    from_facts = builder if isinstance(builder, ComparedFromFacts) else None
    from_records = builder if isinstance(builder, ComparedFromRecords) else None
    statistics = from_records.statistics_dataset if from_records is not None else None
    if statistics is None and from_facts is None:
        return rows
    today = local_date(ctx.now)
    # Only the running week's and month's rows change: find them by their first day (a rebuild writes
    # over a million rows, and a comparison of instants per row would cost seconds).
    running = {g: ctx.current(g).first_day for g in LIKE_FOR_LIKE}
    for i, (row, period) in enumerate(rows):
        if running.get(row.granularity) != row.first_day:
            continue
        before = period.previous()
        days = (today - period.first_day).days + 1
        span = (before.first_day, min(before.first_day + timedelta(days=days), before.next().first_day))
        found = None
        if from_facts is not None:
            totals = _day_totals(ctx, from_facts.day_datasets, span)
            found = from_facts.at_offset(ctx, kpi, Offset(before, span[1], row.scope, row.scope_id, totals))
        if found is None and from_records is not None and statistics is not None:
            g = row.granularity
            grouped = ctx.memo(
                ("to date", statistics.name, g, span), partial(_records_grouped, ctx, statistics, g, span)
            )
            found = from_records.to_date(kpi, grouped.get((g, before.first_day, row.scope, row.scope_id), {}))
        if found is None:
            continue
        value, numerator, denominator, n = found
        compared = {
            "value": _float(value),
            "numerator": _float(numerator),
            "denominator": _float(denominator),
            "n": n,
            "from": span[0].isoformat(),
            "until": span[1].isoformat(),
            "days": days,
        }
        extra = row.extra if isinstance(row.extra, Detail) else kpi.detail.from_json(row.extra)
        rows[i] = (row._replace(extra=replace(extra, compared=compared)), period)
    return rows


def _records_grouped(ctx: Context, ds: Dataset, granularity: str, span: tuple[date, date]) -> Grouped:
    """The dataset's measures from its records of the days of ``span``, for ``granularity``."""
    return records_query(ctx, ds, [granularity], [span]).run()


def _day_totals(ctx: Context, datasets: Iterable[Dataset], span: tuple[date, date]) -> facts.DayTotals:
    """The datasets' measures summed over the day facts of ``span``, per scope. An incremental run has
    rewritten every dataset's facts before computing: one query reads them all. A full build rewrites
    a dataset's facts when a KPI first reads it: each is read after that, once per span."""
    team_of = ctx.memo("teams of users", facts.teams_of_users)
    if ctx.incremental:
        every = ctx.memo(("to date", span), lambda: facts.day_totals(_day_datasets(), *span, team_of))
        return {ds.name: every.get(ds.name, {}) for ds in datasets}
    return {
        ds.name: ctx.memo(("to date", ds.name, span), partial(_dataset_day_totals, ds, span, team_of))
        for ds in datasets
    }


def _dataset_day_totals(
    ds: Dataset, span: tuple[date, date], team_of: Mapping[str, str]
) -> Mapping[tuple[str, str], Mapping[str, Decimal]]:
    """One dataset's measures summed over its day facts of ``span``, per scope."""
    return facts.day_totals([ds], *span, team_of)[ds.name]


def _day_datasets() -> list[Dataset]:
    """Every dataset whose day facts a like-for-like comparison reads."""
    found = {}
    for kpi in registry().values():
        for ds in getattr(kpi.compute, "day_datasets", ()):
            found[ds.name] = ds
    return list(found.values())


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _copy_lines(kpi: Kpi, rows: Iterable[tuple[Row, Period]], computed_at: str) -> Iterator[str]:
    """``kpi``'s rows as lines of PostgreSQL's COPY text format, built directly: a million rows a full
    rebuild writes cost seconds less than one ``write_row`` per row. What every row of a period shares is
    built once per period. Codes, scopes and ids hold no tabs, newlines or backslashes; the JSON details
    get their backslashes doubled."""
    heads: dict[int, str] = {}  # by id(period): the periods outlive this generator
    tail = f"\t{computed_at}\t{kpi.definition_version}\n"
    for row, period in rows:
        head = heads.get(id(period))
        if head is None:
            bounds = f"{period.start.isoformat()}\t{period.end.isoformat()}"
            head = heads[id(period)] = f"{kpi.code}\t{row.granularity}\t{bounds}\t"
        _g, _day, scope, scope_id, value, numerator, denominator, sample_size, extra, provisional = row
        # numeric(24, 6) columns round the values on the way in.
        yield (
            f"{head}{scope}\t{scope_id}\t{_NULL if value is None else value}"
            f"\t{_NULL if numerator is None else numerator}"
            f"\t{_NULL if denominator is None else denominator}"
            f"\t{_NULL if sample_size is None else sample_size}"
            f"\t{_copy_json(extra) if extra else '{}'}"
            f"\t{'t' if provisional else 'f'}{tail}"
        )


_NULL = "\\N"


def _copy_json(value: Detail | dict) -> str:
    """A row's details as JSON for COPY (a KPI's detail class, or a plain dict from an older builder)."""
    if isinstance(value, Detail):
        value = value.to_json()
    return json.dumps(value).replace("\\", "\\\\")


# RFM
# ---------------------------------------------------------------------------------------------------------

RFM_WINDOW_MONTHS = 12
# KPIS.md §8, evaluated top to bottom: the first match wins.
RFM_SEGMENT_SQL = """
    CASE
        WHEN r >= 4 AND f >= 4 THEN 'champions'
        WHEN r = 3 AND f >= 4 THEN 'loyal'
        WHEN r >= 4 AND f <= 3 THEN 'potential'
        WHEN r <= 2 AND f >= 3 THEN 'at_risk'
        WHEN r = 1 AND f = 1 THEN 'lost'
        WHEN r <= 2 AND f <= 2 THEN 'hibernating'
        ELSE 'attention'
    END
"""


RFM_SQL = sql.SQL("""
    WITH buys AS (
        SELECT d.customer_id, max(d.closed_at) AS last_at, count(*) AS freq,
               sum(COALESCE(d.amount, 0)) AS monetary
        FROM crm_deal d JOIN crm_customer c ON c.id = d.customer_id
        WHERE d.status = 'won' AND d.closed_at >= %(start)s AND d.closed_at < %(instant)s AND {live}
        GROUP BY d.customer_id
    ), scored AS (
        SELECT *, NTILE(5) OVER (ORDER BY last_at, customer_id) AS r,
                  NTILE(5) OVER (ORDER BY freq, customer_id) AS f,
                  NTILE(5) OVER (ORDER BY monetary, customer_id) AS m
        FROM buys
    )
    INSERT INTO metrics_customerrfm
        (customer_id, as_of, last_purchase_at, recency_days, frequency, monetary, r, f, m, segment)
    SELECT customer_id, %(as_of)s, last_at, floor(EXTRACT(EPOCH FROM %(instant)s - last_at) / 86400)::int,
           freq, monetary, r, f, m, {segment}
    FROM scored
    UNION ALL
    SELECT c.id, %(as_of)s, NULL, NULL, 0, 0, NULL, NULL, NULL, 'no_recent'
    FROM crm_customer c
    WHERE {live} AND c.became_customer_at < %(instant)s
      AND NOT EXISTS (SELECT 1 FROM buys b WHERE b.customer_id = c.id)
    ON CONFLICT (customer_id, as_of) DO UPDATE SET
        last_purchase_at = EXCLUDED.last_purchase_at, recency_days = EXCLUDED.recency_days,
        frequency = EXCLUDED.frequency, monetary = EXCLUDED.monetary, r = EXCLUDED.r,
        f = EXCLUDED.f, m = EXCLUDED.m, segment = EXCLUDED.segment
""").format(live=sql.SQL("c.merged_into_id IS NULL AND NOT c.is_internal"), segment=sql.SQL(RFM_SEGMENT_SQL))


def rfm_refresh(*, as_of: date | None = None) -> SnapshotRun:
    """Score every customer's recency, frequency and monetary value as of the start of ``as_of``.

    Quintiles (NTILE(5), 5 = best, ties broken by customer id) over customers with a won deal in the 12
    months before ``as_of``; customers who bought before but not in the window get "no recent purchase".
    The previous snapshot and the first-of-month snapshots are kept, so movement can be shown; the first
    of last month is scored too when it is missing, so there is always something to compare with.
    """
    as_of = as_of or local_date(timezone.now())
    instant = local_midnight(as_of)
    window_start = local_midnight(_months_before(as_of, RFM_WINDOW_MONTHS))
    run = SnapshotRun.objects.create(
        kind=SnapshotRun.Kind.RFM, range_start=window_start, range_end=instant, started_at=timezone.now()
    )
    clock = time.perf_counter()
    try:
        with transaction.atomic():
            if not _try_lock(RFM_LOCK):
                _finish(run, SnapshotRun.Status.SKIPPED, clock)
                return run
            with connection.cursor() as cursor:
                cursor.execute(
                    RFM_SQL,
                    {"start": window_start, "instant": instant, "as_of": as_of},
                )
                run.rows = cursor.rowcount
                # Movement is shown against the first of last month: scored from history when missing
                # (a new installation, or a month without a nightly run on its first day).
                compare = _months_before(as_of.replace(day=1), 1)
                if not CustomerRfm.objects.filter(as_of=compare).exists():
                    cursor.execute(
                        RFM_SQL,
                        {
                            "start": local_midnight(_months_before(compare, RFM_WINDOW_MONTHS)),
                            "instant": local_midnight(compare),
                            "as_of": compare,
                        },
                    )
                    run.rows += cursor.rowcount
            previous = (
                CustomerRfm.objects.filter(as_of__lt=as_of)
                .order_by("-as_of")
                .values_list("as_of", flat=True)
                .first()
            )
            stale = CustomerRfm.objects.filter(as_of__lt=as_of).exclude(as_of__day=1)
            if previous is not None:
                stale = stale.exclude(as_of=previous)
            stale.delete()
            # Tens of thousands of new rows: fresh statistics, or the segments page's join plans for one.
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(CustomerRfm._meta.db_table)))
    except Exception:
        run.error = traceback.format_exc()
        _finish(run, SnapshotRun.Status.FAILED, clock)
        raise
    _finish(run, SnapshotRun.Status.OK, clock)
    return run


def _months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    for candidate in (day.day, 30, 29, 28):
        try:
            return date(year, month, candidate)
        except ValueError:
            continue
    raise AssertionError("unreachable")


# Targets
# ---------------------------------------------------------------------------------------------------------


def kpi_target_set(
    *,
    kpi: str,
    granularity: str,
    period_start: datetime,
    value: Decimal,
    scope: str = Scope.COMPANY,
    scope_id: str = "",
    actor: User | None = None,
) -> KpiTarget:
    """Set (or replace) the target of one KPI for one period and scope."""
    if kpi not in registry():
        raise RecomputeError(f"unknown KPI: {kpi}")
    target, _created = KpiTarget.objects.update_or_create(
        kpi=kpi,
        granularity=granularity,
        period_start=period_start,
        scope=scope,
        scope_id=scope_id,
        defaults={"value": value, "updated_by": actor},
    )
    target.full_clean()
    return target

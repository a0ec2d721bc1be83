"""The full rebuild fanned out across Celery workers: one part per group of families, then one last step.

``metrics.tasks.rebuild_all_kpi_snapshots`` (with ``KPI_REBUILD_FANOUT``) starts a run
(:func:`rebuild_start`) and sends a chord: a task per part of ``REBUILD_PARTS`` (:func:`rebuild_part`), any
worker of the ``kpis`` queue taking each, then :func:`rebuild_finish`.

- A part computes its families' KPIs for every period of the run, as the rebuild in one process does,
  and commits their rows into two unlogged tables of its own (``kpi_part_<run>_<part>_rows`` and
  ``_cover``): a part that dies leaves none, and its redelivered task writes them again.
- Each dataset's facts are stored by one part, the first that reads it. Another part reading it (the
  closed deals feed five families) builds its periods from the records without storing them, and its
  like-for-like comparisons of the running week and month read the facts as the last run left them, at
  most one 5-minute run old; that run recomputes those periods from the new facts anyway.
- The last step writes every part's rows into the snapshots in one transaction (the same upsert as the
  rebuild in one process: unchanged rows untouched, rows no part produced deleted), records the facts'
  new definitions and drops the parts' tables. The snapshots change all at once or not at all.
- The parts hold the recompute lock shared (they run together; the every-5-minutes run is skipped
  while they do, as during a rebuild in one process); the last step holds it alone.
"""

import logging
import time
import traceback
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from importlib import import_module
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from metrics.kpis import FAMILY_MODULES, facts, family_datasets
from metrics.kpis.base import Context, Kpi
from metrics.models import SnapshotRun
from metrics.services import (
    RECOMPUTE_LOCK,
    STAGE_TABLES_SQL,
    after_run,
    apply_staged,
    finish_run,
    history_range,
    rebuild_run,
    stage_rows,
)

logger = logging.getLogger(__name__)

# The families of each part. Measured at 1 M deals (README, "How it scales out"): sales with velocity took
# as long as all the others but forecasting, retention and economics, which read the closed deals again.
# Two parts for two worker processes; a part is the unit of work, so more workers need more parts.
REBUILD_PARTS: tuple[tuple[str, ...], ...] = (
    ("sales", "velocity", "satisfaction", "data_quality", "campaigns"),
    ("forecasting", "retention", "economics", "service", "adoption", "revenue_retention", "health"),
)
PART_PREFIX = "kpi_part_"


def rebuild_start(*, now: datetime | None = None) -> tuple[SnapshotRun, str, str]:
    """Record a full rebuild run about to fan out, and the span its parts answer (ISO instants)."""
    start, end = history_range(now=now)
    now = now or end
    run = rebuild_run(now=now, start=start)
    starts = [p.start for ps in run.periods.values() for p in ps]
    ends = [p.end for ps in run.periods.values() for p in ps]
    record = SnapshotRun.objects.create(
        kind=SnapshotRun.Kind.FULL,
        granularities=",".join(run.periods),
        range_start=min(starts),
        range_end=max(ends),
        started_at=timezone.now(),
    )
    return record, start.isoformat(), now.isoformat()


def rebuild_part(*, run_id: int, part: int, start: datetime, now: datetime) -> dict:
    """Compute part ``part`` of run ``run_id`` into its tables; returns the datasets whose facts it stored
    and its timings, for the last step."""
    families = REBUILD_PARTS[part]
    started_at = SnapshotRun.objects.values_list("started_at", flat=True).get(pk=run_id)
    ctx = Context(rebuild_run(now=now, start=start))
    ctx.stores_facts = frozenset(_owned(ctx, part))
    kpis = _part_kpis(families)
    clock = time.perf_counter()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [RECOMPUTE_LOCK])
        if settings.KPI_PREFETCH_SCANS:
            ctx.prefetch = facts.Prefetch(ctx, family_datasets(ctx, families), drop_leftovers=False)
        try:
            staged, covered = stage_rows(ctx, kpis, computed_at=started_at, progress=None)
        finally:
            if ctx.prefetch is not None:
                ctx.prefetch.stop()
        if ctx.prefetch is not None:
            ctx.prefetch.close()
        rows, cover = _tables(run_id, part)
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL(
                    "DROP TABLE IF EXISTS {rows}, {cover}; "
                    "CREATE UNLOGGED TABLE {rows} AS SELECT * FROM kpi_stage; "
                    "CREATE UNLOGGED TABLE {cover} AS SELECT * FROM kpi_cover; "
                    "DROP TABLE kpi_stage, kpi_cover"
                ).format(rows=rows, cover=cover)
            )
    stored = sorted(name for name in ctx.tracked if ctx.stores(name))
    seconds = round(time.perf_counter() - clock, 3)
    logger.info(
        "rebuild %s part %s (%s): %s rows in %.1f s", run_id, part, ",".join(families), staged, seconds
    )
    return {
        "part": part,
        "rows": staged,
        "covered": covered,
        "stored": stored,
        # The first day of each stored dataset's day facts (as an ISO date: the result travels as JSON).
        "days_from": {name: ctx.days_from[name].isoformat() for name in stored if name in ctx.days_from},
        "seconds": seconds,
        # A dataset's scan under its name in the part storing its facts, under "name (part n)" in others.
        "timings": {
            name if ctx.stores(name) else f"{name} (part {part})": t for name, t in ctx.timings.items()
        },
    }


def rebuild_finish(*, run_id: int, start: datetime, now: datetime, parts: Sequence[dict]) -> SnapshotRun:
    """The last step: every part's rows into the snapshots in one transaction, the facts marked as built
    by their current definitions, the parts' tables dropped; then the alerts, as after any run."""
    run = SnapshotRun.objects.get(pk=run_id)
    if run.status != SnapshotRun.Status.RUNNING:  # a redelivered last step: done already, or failed
        return run
    ctx = Context(rebuild_run(now=now, start=start))
    try:
        done = {p["part"] for p in parts}
        if done != set(range(len(REBUILD_PARTS))):
            raise RuntimeError(f"rebuild {run_id}: parts {sorted(done)} of {len(REBUILD_PARTS)} came back")
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RECOMPUTE_LOCK])
                tables = [_tables(run_id, p) for p in range(len(REBUILD_PARTS))]
                cursor.execute(STAGE_TABLES_SQL)
                for rows, cover in tables:
                    cursor.execute(
                        sql.SQL(
                            "INSERT INTO kpi_stage SELECT * FROM {}; INSERT INTO kpi_cover SELECT * FROM {}"
                        ).format(rows, cover)
                    )
                cursor.execute("SELECT count(*) FROM kpi_cover")
                apply_staged(cursor, cursor.fetchone()[0])
                _drop_part_tables(cursor, run_id)
                facts.drop_scan_tables(cursor)
            stored = {name for p in parts for name in p["stored"]}
            datasets = [ds for ds in family_datasets(ctx) if ds.name in stored]
            for p in parts:
                ctx.days_from.update(
                    {name: date.fromisoformat(d) for name, d in p.get("days_from", {}).items()}
                )
            facts.mark(ctx, datasets, at=run.started_at, rebuilt=True)
            run.rows = sum(p["rows"] for p in parts)
            run.datasets = {f"part {p['part']}": {"seconds": p["seconds"], "rows": p["rows"]} for p in parts}
            for p in parts:
                run.datasets.update(p["timings"])
            _finish(run, SnapshotRun.Status.OK)
    except Exception:
        rebuild_fail(run_id=run_id, error=traceback.format_exc())
        raise
    after_run(run, ctx)
    return run


def rebuild_fail(*, run_id: int, error: str = "") -> None:
    """A part or the last step failed: the run is recorded as failed and its parts' tables dropped; the
    snapshots are as before."""
    with transaction.atomic():
        run = SnapshotRun.objects.select_for_update().get(pk=run_id)
        if run.status != SnapshotRun.Status.RUNNING:
            return
        run.error = error or "a part of the rebuild failed (see the worker's log)"
        _finish(run, SnapshotRun.Status.FAILED)
        with connection.cursor() as cursor:
            for rows, cover in (_tables(run_id, p) for p in range(len(REBUILD_PARTS))):
                cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(rows, cover))


def _finish(run: SnapshotRun, status: str) -> None:
    finish_run(run, status, seconds=(timezone.now() - run.started_at).total_seconds())


def _tables(run_id: int, part: int) -> tuple[sql.Identifier, sql.Identifier]:
    name = f"{PART_PREFIX}{int(run_id)}_{int(part)}"
    return sql.Identifier(f"{name}_rows"), sql.Identifier(f"{name}_cover")


def _drop_part_tables(cursor: Any, run_id: int) -> None:
    """Drop the part tables of run ``run_id`` and those crashed runs left (of runs no longer running)."""
    cursor.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE %s",
        [f"{PART_PREFIX}%"],
    )
    by_run = {name: int(name.removeprefix(PART_PREFIX).split("_")[0]) for (name,) in cursor.fetchall()}
    running = set(
        SnapshotRun.objects.filter(pk__in=set(by_run.values()), status=SnapshotRun.Status.RUNNING)
        .exclude(pk=run_id)
        .values_list("pk", flat=True)
    )
    for name, owner in by_run.items():
        if owner not in running:
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def _part_kpis(families: Iterable[str]) -> list[Kpi]:
    """The KPIs the family modules ``families`` declare, less those computed by a task of their own."""
    return [k for name in families for k in import_module(f"metrics.kpis.{name}").KPIS if not k.own_task]


def _owned(ctx: Context, part: int) -> set[str]:
    """The datasets whose facts part ``part`` stores: those no earlier part reads."""
    earlier = {ds.name for families in REBUILD_PARTS[:part] for ds in family_datasets(ctx, families)}
    return {ds.name for ds in family_datasets(ctx, REBUILD_PARTS[part])} - earlier


def check_parts() -> None:
    """Every family in exactly one part (checked by the tests)."""
    listed = [f for families in REBUILD_PARTS for f in families]
    if sorted(listed) != sorted(FAMILY_MODULES):
        raise ValueError("REBUILD_PARTS must list every family of FAMILY_MODULES exactly once")

"""Celery tasks of the metrics app: thin wrappers that parse JSON-safe arguments and call one service.

Every task is idempotent (the services upsert keyed rows) and guarded by a PostgreSQL advisory lock,
so an overlapping or redelivered run is recorded as skipped. Only transient database errors retry.
"""

from datetime import date, datetime

from celery import chord, shared_task
from django.conf import settings
from django.db import OperationalError
from django.utils.dateparse import parse_date, parse_datetime

from metrics.periods import local_midnight

RETRY = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "max_retries": 3,
}


def _instant(value: str) -> datetime:
    """An ISO date (local midnight in the reporting time zone) or an aware ISO datetime."""
    moment = parse_datetime(value)
    if moment is not None and moment.tzinfo is not None:
        return moment
    day: date | None = parse_date(value)
    if day is None:
        raise ValueError(f"not an ISO date or aware datetime: {value!r}")
    return local_midnight(day)


@shared_task(
    name="metrics.tasks.recompute_kpi_snapshots",
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
    ignore_result=True,
    **RETRY,
)
def recompute_kpi_snapshots(
    granularity: str | None, start_iso: str, end_iso: str, kpis: list[str] | None = None
) -> int:
    """Recompute the snapshots of one granularity (None: all) for the periods overlapping [start, end)."""
    from metrics.services import snapshots_recompute

    run = snapshots_recompute(
        start=_instant(start_iso),
        end=_instant(end_iso),
        granularities=[granularity] if granularity else None,
        kpis=kpis,
    )
    return run.pk


@shared_task(
    name="metrics.tasks.recompute_recent_kpi_snapshots",
    soft_time_limit=4 * 60,
    time_limit=5 * 60,
    expires=5 * 60,
    ignore_result=True,
    **RETRY,
)
def recompute_recent_kpi_snapshots() -> int:
    """Bring the current and the three previous periods of every granularity up to date (incremental)."""
    from metrics.services import snapshots_recompute_recent

    return snapshots_recompute_recent().pk


@shared_task(
    name="metrics.tasks.recompute_long_period_statistics",
    soft_time_limit=10 * 60,
    time_limit=12 * 60,
    expires=55 * 60,
    ignore_result=True,
    **RETRY,
)
def recompute_long_period_statistics() -> int:
    """Bring the medians and percentiles of the recent quarters and years up to date (incremental)."""
    from metrics.services import snapshots_recompute_long_statistics

    return snapshots_recompute_long_statistics().pk


@shared_task(
    name="metrics.tasks.rebuild_all_kpi_snapshots",
    soft_time_limit=settings.KPI_REBUILD_TIME_LIMIT,
    time_limit=settings.KPI_REBUILD_HARD_TIME_LIMIT,
    expires=6 * 3600,
    ignore_result=True,
    **RETRY,
)
def rebuild_all_kpi_snapshots() -> int:
    """Recompute every KPI over the whole history (the nightly reconciliation): in this process, or with
    ``KPI_REBUILD_FANOUT`` in parts across the workers of the ``kpis`` queue, as a chord whose last step
    writes the snapshots in one transaction (``metrics.services.fanout``). Returns the run's id."""
    if settings.KPI_REBUILD_FANOUT:
        from metrics.services.fanout import REBUILD_PARTS, rebuild_start

        run, start, now = rebuild_start()
        parts = [rebuild_kpi_snapshots_part.s(run.pk, part, start, now) for part in range(len(REBUILD_PARTS))]
        last = finish_kpi_snapshots_rebuild.s(run.pk, start, now).on_error(
            fail_kpi_snapshots_rebuild.si(run.pk)
        )
        chord(parts)(last)
        return run.pk
    from metrics.services import snapshots_rebuild_all

    return snapshots_rebuild_all().pk


@shared_task(
    name="metrics.tasks.rebuild_kpi_snapshots_part",
    soft_time_limit=settings.KPI_REBUILD_TIME_LIMIT,
    time_limit=settings.KPI_REBUILD_HARD_TIME_LIMIT,
    **RETRY,
)
def rebuild_kpi_snapshots_part(run_id: int, part: int, start_iso: str, now_iso: str) -> dict:
    """One part of a fanned-out rebuild: its families' rows into tables of its own (its result, which
    datasets' facts it stored, goes to the last step)."""
    from metrics.services.fanout import rebuild_part

    return rebuild_part(run_id=run_id, part=part, start=_instant(start_iso), now=_instant(now_iso))


@shared_task(
    name="metrics.tasks.finish_kpi_snapshots_rebuild",
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
    ignore_result=True,
    **RETRY,
)
def finish_kpi_snapshots_rebuild(parts: list[dict], run_id: int, start_iso: str, now_iso: str) -> int:
    """The last step of a fanned-out rebuild: every part's rows into the snapshots in one transaction."""
    from metrics.services.fanout import rebuild_finish

    return rebuild_finish(run_id=run_id, start=_instant(start_iso), now=_instant(now_iso), parts=parts).pk


@shared_task(name="metrics.tasks.fail_kpi_snapshots_rebuild", ignore_result=True, **RETRY)
def fail_kpi_snapshots_rebuild(run_id: int) -> None:
    """A part of a fanned-out rebuild failed for good: the run is recorded as failed, its tables dropped."""
    from metrics.services.fanout import rebuild_fail

    rebuild_fail(run_id=run_id)


@shared_task(
    name="metrics.tasks.refresh_rfm_segments",
    soft_time_limit=10 * 60,
    time_limit=12 * 60,
    expires=6 * 3600,
    ignore_result=True,
    **RETRY,
)
def refresh_rfm_segments(as_of_iso: str | None = None) -> int:
    """Score every customer's RFM as of today (or ``as_of_iso``), keeping earlier snapshots for movement."""
    from metrics.services import rfm_refresh

    return rfm_refresh(as_of=parse_date(as_of_iso) if as_of_iso else None).pk


@shared_task(
    name="metrics.tasks.send_weekly_reports",
    soft_time_limit=10 * 60,
    time_limit=12 * 60,
    expires=6 * 3600,
    ignore_result=True,
    **RETRY,
)
def send_weekly_reports() -> int:
    """E-mail last week's headline KPIs to the managers (once per manager and week)."""
    from metrics.services.weekly_report import weekly_report_send

    return weekly_report_send()


@shared_task(
    name="metrics.tasks.freeze_forecasts",
    soft_time_limit=10 * 60,
    time_limit=12 * 60,
    expires=14 * 60,
    ignore_result=True,
    **RETRY,
)
def freeze_forecasts() -> int:
    """Freeze the forecast of the current week, month and quarter if not yet frozen (idempotent; a run
    after the period's start freezes it late and says so). Returns the company rows written."""
    from metrics.forecasts.services import forecasts_freeze

    return len(forecasts_freeze())


@shared_task(
    name="metrics.tasks.compute_forecast_calibration",
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
    expires=6 * 3600,
    ignore_result=True,
    **RETRY,
)
def compute_forecast_calibration() -> int:
    """The stage calibration and Brier scores over the last four quarters' closed deals, for the page."""
    from metrics.forecasts.services import forecast_calibration_compute

    return forecast_calibration_compute().pk


@shared_task(
    name="metrics.tasks.refresh_customer_health",
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
    expires=6 * 3600,
    ignore_result=True,
    **RETRY,
)
def refresh_customer_health() -> int | None:
    """Score every active customer's health as of today and backtest the score (KPIS.md §10.10)."""
    from metrics.health.services import health_refresh

    run = health_refresh()
    return run.pk if run else None


@shared_task(
    name="metrics.tasks.recompute_time_in_stage",
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
    expires=55 * 60,
    ignore_result=True,
    **RETRY,
)
def recompute_time_in_stage(full: bool = False) -> int:
    """Time in stage from the stage history (KPIS.md §10.7): the recent weeks and months, or (``full``)
    every period of the whole history."""
    from metrics.services.velocity import time_in_stage_recompute

    return time_in_stage_recompute(full=full).pk


@shared_task(
    name="metrics.tasks.recompute_cohort_snapshots",
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
    expires=6 * 3600,
    ignore_result=True,
    **RETRY,
)
def recompute_cohort_snapshots() -> int:
    """Recompute the cohorts, NRR, GRR and the revenue waterfall over the whole history (their own task)."""
    from metrics.cohorts.services import cohort_snapshots_recompute

    return cohort_snapshots_recompute().pk

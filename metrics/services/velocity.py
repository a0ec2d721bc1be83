"""Writes of the time-in-stage snapshots (KPIS.md §10.7), which a task of their own computes: a scan of the
whole stage history is too heavy for the 5-minute run and the nightly rebuild (``Kpi.own_task``)."""

from datetime import datetime

from django.utils import timezone

from metrics.kpis.velocity import TIME_IN_STAGE
from metrics.models import SnapshotRun
from metrics.periods import GRANULARITIES, recent_periods
from metrics.services import RECENT_PERIODS_BACK, history_range, snapshots_recompute

# The hourly refresh: the running and recent weeks and months (a few months of stage changes). Quarters
# and years read a year or more of history: the nightly run brings them up to date.
RECENT_GRANULARITIES = ("week", "month")


def time_in_stage_recompute(*, full: bool = False, now: datetime | None = None) -> SnapshotRun:
    """Recompute the time-in-stage snapshots: ``full``, every period of every granularity over the whole
    history (nightly); otherwise the current and three previous weeks and months (hourly). Idempotent (the
    snapshots are upserted); skipped while another KPI run holds the lock."""
    now = now or timezone.now()
    grans = list(GRANULARITIES if full else RECENT_GRANULARITIES)
    start = min(recent_periods(g, now, RECENT_PERIODS_BACK)[0].start for g in grans)
    if full:
        start = min(start, history_range(now=now)[0])
    return snapshots_recompute(start=start, end=now, granularities=grans, kpis=[TIME_IN_STAGE.code], now=now)

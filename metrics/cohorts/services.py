"""The cohorts and revenue retention KPIs (KPIS.md §10.9), recomputed by a task of their own: whole-history
per-customer scans that the every-few-minutes run and the nightly rebuild leave out (``Kpi.own_task``)."""

from datetime import datetime, timedelta

from django.utils import timezone

from metrics.kpis.revenue_retention import KPIS
from metrics.models import SnapshotRun
from metrics.periods import GRANULARITIES
from metrics.services import history_range, snapshots_recompute


def cohort_snapshots_recompute(*, now: datetime | None = None) -> SnapshotRun:
    """Recompute the cohorts, NRR, GRR and the revenue waterfall for every period of the history (one range
    run of just those KPIs: one upsert, stale rows of the periods it covers removed, the same lock as every
    KPI run, so it is skipped while another runs)."""
    now = now or timezone.now()
    start, _end = history_range(now=now)
    granularities = [g for g in GRANULARITIES if any(g in kpi.granularities for kpi in KPIS)]
    return snapshots_recompute(
        start=min(start, now - timedelta(days=1)),
        end=now,
        granularities=granularities,
        kpis=[kpi.code for kpi in KPIS],
        now=now,
    )

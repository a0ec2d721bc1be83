"""What triggers an alert (KPIS.md §10.8), decided from snapshot values only.

**Pace** (KPIS.md §10.3, as the dashboard's cards read it: ``dashboard.Card.pace``). A KPI with a target in
a period that is still running is *off pace* when, with at least 20 % of the period elapsed, the value to
date projected to the period's end (counts and amounts; a ratio or a level as it stands) misses the target
in the KPI's better direction: below it for "higher is better", above it for "lower is better". The alert
is raised the first time a run finds it so — whether the KPI was on track before or never was — and
resolved when it is back on track or the period has ended. Not before 20 % has elapsed, not on a value
below the KPI's minimum sample (KPIS.md §10.2: a muted number is never a verdict).

**Anomaly** (KPIS.md §10.2). The XmR control chart of the last twelve complete periods of a KPI and scope,
the latest complete one included: centre = the mean of the twelve values, limits = centre ± 2.66 × the mean
of their eleven moving ranges (|xᵢ − xᵢ₋₁|). The latest complete period is an anomaly when its value lies
strictly outside the limits, its sample is not below the KPI's minimum (for a count, which is its own
sample, the chart's centre: the events of a usual period) and its value is final (not a provisional
cohort). All twelve periods need a value: a chart over fewer is not the spec's chart. Watched:
weeks and months (twelve quarters span three years, twelve years a decade: a business's growth, not a
signal), and the KPIs of events in a period or a cohort — not levels (pipeline, backlog, active customers):
a level carries over from one period to the next, so its moving ranges are small beside any trend and
every new high would be an "anomaly".
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from metrics import contribution, dashboard
from metrics.kpis.base import Basis, Kpi, Significance
from metrics.models import KpiSnapshot, KpiTarget
from metrics.periods import Period, period_of
from metrics.selectors import SnapshotValues

from .models import Alert

# An alert's unique key: KPI, granularity, scope, scope id and period start.
Key = tuple[str, str, str, str, datetime]
# Limits at centre ± 2.66 × the mean moving range (2.66 = 3 / d₂, d₂ = 1.128 for ranges of two).
XMR_FACTOR = Decimal("2.66")
CHART_PERIODS = 12
ANOMALY_GRANULARITIES = ("week", "month")
# Values are stored with six decimals (``KPI_VALUE``): compared and kept at that precision.
PLACES = Decimal("0.000001")


@dataclass(frozen=True)
class Finding:
    """One alert as an evaluation finds it: a KPI of one scope and period, off pace or out of its limits."""

    kind: str
    kpi: Kpi
    period: Period
    scope: str
    scope_id: str
    value: Decimal | None
    sample_size: int | None = None
    target: Decimal | None = None
    projected: Decimal | None = None
    percent_of_target: int | None = None
    centre: Decimal | None = None
    lower_limit: Decimal | None = None
    upper_limit: Decimal | None = None

    @property
    def key(self) -> Key:
        """The alert's unique key."""
        return (self.kpi.code, self.period.granularity, self.scope, self.scope_id, self.period.start)

    def numbers(self) -> dict[str, Any]:
        """The values an alert stores, at the precision it stores them."""
        return {
            "value": rounded(self.value),
            "sample_size": self.sample_size,
            "target": rounded(self.target),
            "projected": rounded(self.projected),
            "percent_of_target": None
            if self.percent_of_target is None
            else max(-PERCENT_BOUND, min(PERCENT_BOUND, self.percent_of_target)),
            "centre": rounded(self.centre),
            "lower_limit": rounded(self.lower_limit),
            "upper_limit": rounded(self.upper_limit),
        }


# The largest magnitude a stored value may have (18 digits before the point, ``KPI_VALUE``).
LARGEST = Decimal(10) ** 18
# A share of the target beyond this is shown as it is but stored clamped (an integer column).
PERCENT_BOUND = 999_999


def rounded(value: Decimal | None) -> Decimal | None:
    """``value`` at the stored precision; None when it does not fit (a projection of absurd data)."""
    if value is None or not abs(value) < LARGEST:
        return None
    return Decimal(value).quantize(PLACES)


# Pace
# ---------------------------------------------------------------------------------------------------------


def pace_finding(
    *, kpi: Kpi, snapshot: SnapshotValues | None, target: KpiTarget, scope: str, now: datetime
) -> Finding | None:
    """The pace alert of ``kpi`` against ``target`` (its period must be running at ``now``), or None when
    it is on track, too early to tell, without a value or below the minimum sample."""
    period = period_of(target.period_start, target.granularity)
    card = dashboard.Card(kpi=kpi, snapshot=snapshot, previous=None, target=target, period=period, now=now)
    pace = card.pace
    if card.low_sample or not pace or pace["early"] or pace["on_track"]:
        return None
    return Finding(
        kind=Alert.Kind.PACE,
        kpi=kpi,
        period=period,
        scope=scope,
        scope_id=target.scope_id,
        value=card.value,
        sample_size=card.sample_size,
        target=target.value,
        projected=pace["projected"],
        percent_of_target=pace["percent"],
    )


# Anomaly
# ---------------------------------------------------------------------------------------------------------


def watched(kpi: Kpi, granularity: str) -> bool:
    """Whether ``kpi``'s control chart of ``granularity`` is watched for anomalies (see the module's text)."""
    return (
        granularity in ANOMALY_GRANULARITIES
        and granularity in kpi.granularities
        and kpi.basis in (Basis.PERIOD, Basis.COHORT)
    )


def chart_periods(now: datetime, granularity: str) -> list[Period]:
    """The control chart's periods: the last twelve complete ones at ``now``, the latest first."""
    latest = period_of(now, granularity).previous()
    return [latest.previous(steps) for steps in range(CHART_PERIODS)]


@dataclass(frozen=True)
class Chart:
    """One KPI's and scope's control chart as the database computed it (``selectors.control_charts``)."""

    kpi: str
    granularity: str
    scope: str
    scope_id: str
    latest: Decimal
    sample_size: int | None
    provisional: bool
    centre: Decimal
    mean_moving_range: Decimal

    @property
    def limits(self) -> tuple[Decimal, Decimal]:
        spread = XMR_FACTOR * self.mean_moving_range
        return self.centre - spread, self.centre + spread


def anomaly_finding(*, kpi: Kpi, chart: Chart, period: Period, now: datetime) -> Finding | None:
    """The anomaly alert of a chart whose latest value lies outside its limits, or None when that value is
    provisional or below the KPI's minimum sample."""
    lower, upper = chart.limits
    if chart.provisional or lower <= chart.latest <= upper:
        return None
    latest = SnapshotValues(chart.latest, None, None, chart.sample_size, {}, False, now, 0)
    if dashboard.Card(kpi=kpi, snapshot=latest, previous=None, target=None).low_sample:
        return None
    # A count is its own sample: a chart of a few events a period (a week of 4 new customers against the
    # usual 1) says little, whereas a drop from the usual 30 to 5 does.
    if chart.sample_size is None and kpi.significance == Significance.COUNT and chart.centre < kpi.min_sample:
        return None
    return Finding(
        kind=Alert.Kind.ANOMALY,
        kpi=kpi,
        period=period,
        scope=chart.scope,
        scope_id=chart.scope_id,
        value=chart.latest,
        sample_size=chart.sample_size,
        centre=chart.centre,
        lower_limit=lower,
        upper_limit=upper,
    )


# Why (KPIS.md §10.4)
# ---------------------------------------------------------------------------------------------------------


def contributor(
    kpi: Kpi,
    segment_scope: str,
    now: dict[str, SnapshotValues],
    before: dict[str, SnapshotValues],
    *,
    like_for_like: bool,
) -> dict[str, Any]:
    """The data of the alert's contribution sentence: the team or person (``segment_scope``) that moved the
    KPI most its way from the period before (the same elapsed days while a period runs), as the dashboard
    picks it (``dashboard.explain``, ``contribution.biggest``); empty when none stands out."""
    now_rows: dict[str, SnapshotValues | KpiSnapshot] = dict(now)
    before_rows: dict[str, SnapshotValues | KpiSnapshot] = dict(before)
    found = dashboard.explain(kpi, now_rows, before_rows, like_for_like=like_for_like)
    # In the order of their ids: of two segments that moved it equally, every run names the same one.
    found = sorted(found or [], key=lambda c: c.key)
    top = contribution.biggest(found, minimum=kpi.min_sample) if found else None
    if top is None:
        return {}
    return {"scope": segment_scope, "key": top.key, "change": str(rounded(top.ranked_by)), "n": top.n}

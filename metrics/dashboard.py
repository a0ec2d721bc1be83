"""The dashboard's view model, built from snapshot rows only (a fixed handful of queries at any data size).

``dashboard_context`` reads every KPI's series for one scope in one query, the targets in another, and
turns them into cards (value, change, target, sparkline) and chart series. Nothing here touches the CRM
tables, so the page costs the same with a thousand deals or a million.
"""

import hashlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.safestring import SafeString
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from redis.exceptions import RedisError

from accounts.models import Team, User
from metrics.kpis import registry
from metrics.kpis.base import Better, Family, Kpi, Unit
from metrics.models import Granularity, KpiSnapshot, KpiTarget, Scope, SnapshotRun
from metrics.periods import Period, period_of
from metrics.services import CACHE_GENERATION_KEY

RANGES = (6, 12, 24, 36)
DEFAULT_RANGE = {"week": 12, "month": 12, "quarter": 8, "year": 3}
# Data older than this is called stale on the dashboard (the beat schedule refreshes every few minutes).
STALE_AFTER_MINUTES = 30
# Rendered snapshot fragments are dropped by the next recompute or target change, or after this anyway.
FRAGMENT_CACHE_SECONDS = 600


@dataclass
class Filters:
    """What the dashboard shows: granularity, the last period and how many periods, and whose numbers."""

    granularity: str
    period: Period
    count: int
    scope: str = Scope.COMPANY
    scope_id: str = ""
    team: Team | None = None
    rep: User | None = None

    @property
    def label(self) -> str:
        from metrics.charts import period_label

        return f"{period_label(self.period)} · {Granularity(self.granularity).label}"

    @property
    def periods(self) -> list[Period]:
        return [self.period.previous(steps) for steps in range(self.count - 1, -1, -1)]

    @property
    def since(self) -> datetime:
        # One period more than shown: the first shown period's change needs its predecessor.
        return self.period.previous(self.count).start


@dataclass
class Card:
    kpi: Kpi
    snapshot: "Snap | KpiSnapshot | None"
    previous: "Snap | KpiSnapshot | None"
    target: KpiTarget | None
    series: list[tuple[date, Decimal | None]] = field(default_factory=list)

    @property
    def value(self) -> Decimal | None:
        return self.snapshot.value if self.snapshot else None

    @property
    def display(self) -> str:
        return format_value(self.kpi, self.value)

    @property
    def change(self) -> dict[str, Any] | None:
        """Change against the previous period: text, direction and whether that direction is good."""
        if self.value is None or self.previous is None or self.previous.value is None:
            return None
        now, before = self.value, self.previous.value
        if self.kpi.unit in (Unit.PERCENT,) or self.kpi.code.startswith("nps"):
            delta = now - before
            text = f"{delta:+.1f} " + (_("pp") if self.kpi.unit == Unit.PERCENT else _("points"))
        elif before == 0:
            return None
        else:
            delta = (now - before) / abs(before) * 100
            text = f"{delta:+.0f} %"
        if delta == 0 or self.kpi.better == Better.NEUTRAL:
            good = None
        else:
            good = (delta > 0) == (self.kpi.better == Better.UP)
        return {"text": text, "up": delta > 0, "flat": delta == 0, "good": good}

    @property
    def target_display(self) -> str:
        return format_value(self.kpi, self.target.value if self.target else None)

    @property
    def target_progress(self) -> int | None:
        """How far the value is toward the target, 0–100 (for "lower is better", reaching it counts 100)."""
        if self.target is None or self.value is None or not self.target.value:
            return None
        if self.kpi.better == Better.DOWN:
            ratio = self.target.value / self.value if self.value else Decimal(1)
        else:
            ratio = self.value / self.target.value
        return max(0, min(100, int(ratio * 100)))

    @property
    def sample_size(self) -> int | None:
        return self.snapshot.sample_size if self.snapshot else None

    @property
    def shows_sample(self) -> bool:
        return self.kpi.family == Family.SATISFACTION or self.kpi.unit in (Unit.DAYS, Unit.HOURS)

    @property
    def low_sample(self) -> bool:
        return bool(self.snapshot and (self.snapshot.extra or {}).get("low_sample"))

    @property
    def sparkline(self) -> str:
        return sparkline_points([v for _d, v in self.series])


def format_value(kpi: Kpi, value: Decimal | None) -> str:
    """A KPI value as a manager reads it: "—" for no data, units and sensible precision otherwise."""
    if value is None:
        return "—"
    if kpi.unit == Unit.CURRENCY:
        return f"{number_format(value, 0, force_grouping=True)} {settings.CRM_CURRENCY}"
    if kpi.unit == Unit.PERCENT:
        return f"{number_format(value, 1)} %"
    if kpi.unit == Unit.DAYS:
        return _("%(n)s d") % {"n": number_format(value, 1)}
    if kpi.unit == Unit.HOURS:
        return _("%(n)s h") % {"n": number_format(value, 1)}
    if kpi.unit == Unit.RATIO:
        return f"{number_format(value, 2)}×"
    if kpi.unit == Unit.COUNT:
        return number_format(value, 0, force_grouping=True)
    return number_format(value, 1, force_grouping=True)


def sparkline_points(values: list[Decimal | None], width: int = 120, height: int = 28) -> str:
    """SVG polyline points of a tiny trend line; gaps (no data) are skipped, a flat series sits mid-height."""
    known = [(i, float(v)) for i, v in enumerate(values) if v is not None]
    if len(known) < 2:
        return ""
    low, high = min(v for _i, v in known), max(v for _i, v in known)
    span = (high - low) or 1.0
    step = width / max(len(values) - 1, 1)
    points = []
    for i, v in known:
        y = height / 2 if high == low else height - 2 - (v - low) / span * (height - 4)
        points.append(f"{i * step:.1f},{y:.1f}")
    return " ".join(points)


def resolve_filters(
    *,
    user: User,
    granularity: str | None,
    period: str | None,
    count: int | None,
    team: Team | None,
    rep: User | None,
) -> Filters:
    """Turn (already validated) filter values into Filters; a rep always gets their own scope."""
    granularity = granularity or "month"
    now_period = period_of(timezone.now(), granularity)
    chosen = now_period
    if period:
        try:
            chosen = period_of(date.fromisoformat(period), granularity)
        except ValueError:
            chosen = now_period
    chosen = min(chosen, now_period)
    filters = Filters(granularity=granularity, period=chosen, count=count or DEFAULT_RANGE[granularity])
    if not user.is_manager:
        filters.scope, filters.scope_id, filters.rep = Scope.USER, str(user.pk), user
    elif rep is not None:
        filters.scope, filters.scope_id, filters.rep = Scope.USER, str(rep.pk), rep
    elif team is not None:
        filters.scope, filters.scope_id, filters.team = Scope.TEAM, str(team.pk), team
    return filters


def visible_kpis(filters: Filters) -> list[Kpi]:
    """The KPIs that exist for the filters' scope and granularity, in registry order."""
    return [
        kpi
        for kpi in registry().values()
        if filters.scope in kpi.scopes and filters.granularity in kpi.granularities
    ]


class Snap(NamedTuple):
    """The columns of a snapshot row the pages read (cheaper than model instances: hundreds per page)."""

    value: Decimal | None
    numerator: Decimal | None
    denominator: Decimal | None
    sample_size: int | None
    extra: dict
    is_provisional: bool
    computed_at: datetime
    definition_version: int


def load_series(filters: Filters, kpis: list[Kpi]) -> dict[str, dict[date, Snap]]:
    """Every snapshot of ``kpis`` for the filters' scope and periods: one query."""
    rows = KpiSnapshot.objects.filter(
        kpi__in=[k.code for k in kpis],
        granularity=filters.granularity,
        scope=filters.scope,
        scope_id=filters.scope_id,
        period_start__gte=filters.since,
        period_start__lt=filters.period.end,
    ).values_list("kpi", "period_start", *Snap._fields)
    day_of = {p.start: p.first_day for p in [filters.period.previous(n) for n in range(filters.count + 1)]}
    series: dict[str, dict[date, Snap]] = {}
    for kpi, start, *columns in rows:
        day = day_of.get(start) or period_of(start, filters.granularity).first_day
        series.setdefault(kpi, {})[day] = Snap(*columns)
    return series


def load_targets(filters: Filters, kpis: list[Kpi]) -> dict[str, dict[date, KpiTarget]]:
    """The targets of ``kpis`` for the filters' scope and periods: one query."""
    rows = KpiTarget.objects.filter(
        kpi__in=[k.code for k in kpis],
        granularity=filters.granularity,
        scope=filters.scope,
        scope_id=filters.scope_id,
        period_start__gte=filters.since,
        period_start__lt=filters.period.end,
    )
    targets: dict[str, dict[date, KpiTarget]] = {}
    for row in rows:
        targets.setdefault(row.kpi, {})[period_of(row.period_start, filters.granularity).first_day] = row
    return targets


def build_cards(filters: Filters) -> tuple[list[tuple[str, list[Card]]], dict[str, dict[date, Snap]]]:
    """Cards grouped by family, and the raw series the charts are drawn from."""
    kpis = visible_kpis(filters)
    series, targets = load_series(filters, kpis), load_targets(filters, kpis)
    shown = [p.first_day for p in filters.periods]
    current, previous = filters.period.first_day, filters.period.previous().first_day
    by_family: dict[str, list[Card]] = {}
    for kpi in kpis:
        rows = series.get(kpi.code, {})
        by_family.setdefault(kpi.family, []).append(
            Card(
                kpi=kpi,
                snapshot=rows.get(current),
                previous=rows.get(previous),
                target=targets.get(kpi.code, {}).get(current),
                series=[(day, rows[day].value if day in rows else None) for day in shown],
            )
        )
    families = [(label, by_family[value]) for value, label in Family.choices if value in by_family]
    return families, series


def freshness() -> dict[str, Any]:
    """ "Data as of" and health: the last successful run, whether it is stale, and a failure after it."""
    last_ok = SnapshotRun.objects.filter(status=SnapshotRun.Status.OK).order_by("-finished_at", "-id").first()
    latest = (
        SnapshotRun.objects.exclude(status=SnapshotRun.Status.SKIPPED).order_by("-started_at", "-id").first()
    )
    as_of = last_ok.finished_at if last_ok else None
    stale = as_of is None or (timezone.now() - as_of).total_seconds() > STALE_AFTER_MINUTES * 60
    failed = latest if latest and latest.status == SnapshotRun.Status.FAILED else None
    # Redis carries the task queue (while it is down no scheduled recompute runs, so nothing is fresh) and
    # the generation of the cached fragments: one read answers both (short socket timeouts: it fails fast).
    try:
        generation, queue_down = cache.get(CACHE_GENERATION_KEY), False
    except (RedisError, OSError):
        generation, queue_down = None, True
    return {
        "as_of": as_of,
        "stale": stale or queue_down,
        "failed": failed,
        "queue_down": queue_down,
        "generation": generation,
    }


def cached_fragment(request: Any, name: str, freshness: dict[str, Any], render: Callable[[], str]) -> str:
    """HTML derived from snapshots and targets only, rendered once per recompute for this user, language
    and query (RELIABILITY.md §5: cache the dashboard fragment per manager and period).

    The key holds the last run's finish time and the generation that every recompute and target change
    bumps (both from ``freshness()``), so a change shows at once; without Redis or before the first run
    the fragment is rendered.
    """
    as_of, generation = freshness["as_of"], freshness["generation"]
    if generation is None or as_of is None:
        return render()
    query = hashlib.sha256(request.get_full_path().encode()).hexdigest()[:32]
    parts = (name, as_of.timestamp(), generation, request.user.pk, get_language(), query)
    key = "metrics:fragment:" + ":".join(map(str, parts))
    try:
        html = cache.get(key)
    except (RedisError, OSError):
        html = None
    if html is None:
        html = render()
        # Redis may have gone away since freshness(): the page is whole without the cache.
        with suppress(RedisError, OSError):
            cache.set(key, str(html), FRAGMENT_CACHE_SECONDS)
    return SafeString(html)


def recompute_progress(run: SnapshotRun | None) -> int:
    """An estimate, 0–95 %, of how far a running recompute is: elapsed time against the last run's duration.

    The recompute writes everything in one transaction, so there are no partial rows to count; the estimate
    only drives the progress bar until the run finishes and the page refreshes.
    """
    if run is None:
        return 0
    last = (
        SnapshotRun.objects.filter(
            kind=run.kind, status=SnapshotRun.Status.OK, duration_seconds__isnull=False
        )
        .order_by("-started_at")
        .values_list("duration_seconds", flat=True)
        .first()
    )
    elapsed = (timezone.now() - run.started_at).total_seconds()
    return min(95, int(elapsed / max(last or 5.0, 0.5) * 100))

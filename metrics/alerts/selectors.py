"""Every read of the alerts: what a user may see, and the snapshot rows an evaluation decides from.

A manager sees every alert; anyone else only those about their own numbers (the user scope, or for a
support agent the agent scope, with their id). Lists carry the names of whom an alert is about and of its
biggest contributor as annotations, so a page of alerts is one query whatever it shows.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    IntegerField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
    Window,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Concat, NullIf, Trim
from psycopg import sql as pg

from accounts.models import Team, User
from metrics.kpis.base import Kpi
from metrics.models import KpiSnapshot, KpiTarget, Scope
from metrics.periods import GRANULARITIES, period_of
from metrics.selectors import PERSONAL_SCOPES, SnapshotValues

from .models import ALERT_SCOPES, Alert, AlertNotice
from .rules import CHART_PERIODS, XMR_FACTOR, Chart, Key, chart_periods

# What the list's state filter offers.
STATES = ("active", "resolved", "dismissed", "all")
# Whose numbers the list's "who" filter narrows to (a manager's list).
WHOSE = {"company": (Scope.COMPANY,), "teams": (Scope.TEAM,), "people": PERSONAL_SCOPES}


def alert_list(*, user: User) -> QuerySet[Alert]:
    """The alerts ``user`` may see: all of them for a manager, anyone else's own numbers only."""
    qs = Alert.objects.all()
    if not user.is_manager:
        qs = qs.filter(scope__in=PERSONAL_SCOPES, scope_id=str(user.pk))
    return qs


def alert_filter(
    *,
    alerts: QuerySet[Alert],
    kind: str = "",
    kpi: str = "",
    state: str = "active",
    granularity: str = "",
    who: str = "",
) -> QuerySet[Alert]:
    """``alerts`` narrowed by the list's (validated) filters."""
    qs = alerts
    if who in WHOSE:
        qs = qs.filter(scope__in=WHOSE[who])
    if kind:
        qs = qs.filter(kind=kind)
    if kpi:
        qs = qs.filter(kpi=kpi)
    if granularity:
        qs = qs.filter(granularity=granularity)
    if state == "active":
        qs = qs.filter(resolved_at__isnull=True, dismissed_at__isnull=True)
    elif state == "resolved":
        qs = qs.filter(resolved_at__isnull=False, dismissed_at__isnull=True)
    elif state == "dismissed":
        qs = qs.filter(dismissed_at__isnull=False)
    return qs


def _person_name(prefix: str = "") -> Coalesce:
    """SQL: a user's name as ``str(user)`` reads it (the full name, else the username)."""
    full = Trim(Concat(F(f"{prefix}first_name"), Value(" "), F(f"{prefix}last_name")))
    return Coalesce(NullIf(full, Value("")), F(f"{prefix}username"), output_field=CharField())


def _name_of(scope: str, key: str) -> Case:
    """SQL: the name of the team or person that the columns ``scope`` and ``key`` (an id as text, as
    snapshots spell it) name; "" for the company."""
    teams = Team.objects.annotate(key=Cast("pk", CharField())).filter(key=OuterRef(key)).values("name")
    people = (
        User.objects.annotate(key=Cast("pk", CharField()))
        .filter(key=OuterRef(key))
        .annotate(shown=_person_name())
        .values("shown")
    )
    return Case(
        When(**{scope: Scope.TEAM}, then=Subquery(teams[:1])),
        When(**{f"{scope}__in": PERSONAL_SCOPES}, then=Subquery(people[:1])),
        default=Value(""),
        output_field=CharField(),
    )


def alerts_shown(*, alerts: QuerySet[Alert]) -> QuerySet[Alert]:
    """``alerts`` with the names a page shows (``who_name``, ``why_name``): the pace alerts of the running
    periods first (what can still be acted on), the company's before the teams' before the people's, the
    newest first within each."""
    rank = Case(
        When(scope=Scope.COMPANY, then=Value(0)),
        When(scope=Scope.TEAM, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    return (
        alerts.annotate(why_scope=KT("why__scope"), why_key=KT("why__key"))
        .annotate(
            who_name=_name_of("scope", "scope_id"),
            why_name=_name_of("why_scope", "why_key"),
            rank=rank,
        )
        .select_related("dismissed_by")
        .order_by(
            Case(When(kind=Alert.Kind.PACE, then=Value(0)), default=Value(1)), "rank", "-raised_at", "-id"
        )
    )


def alerts_active(*, user: User, limit: int) -> tuple[int, list[Alert]]:
    """How many active alerts ``user`` may see, and the first ``limit`` of them (one query)."""
    qs = alerts_shown(alerts=alert_filter(alerts=alert_list(user=user), state="active"))
    rows: list[Alert] = list(qs.annotate(total=Window(Count("id")))[:limit])
    return (getattr(rows[0], "total", 0) if rows else 0), rows


def alerted_people() -> list[int]:
    """The ids of the people with an active alert about their own numbers (one query)."""
    ids = (
        alert_filter(alerts=Alert.objects.filter(scope__in=PERSONAL_SCOPES), state="active")
        .values_list("scope_id", flat=True)
        .distinct()
    )
    return [int(pk) for pk in ids if pk.isdigit()]


def alert_notice_summary(*, alert_ids: Iterable[int]) -> dict[int, dict[str, tuple[datetime, int]]]:
    """Per alert and channel: when it was first told and to how many people (one query)."""
    rows = (
        AlertNotice.objects.filter(alert_id__in=list(alert_ids))
        .order_by()
        .values("alert_id", "channel")
        .annotate(first=Min("told_at"), people=Count("user_id", distinct=True))
    )
    found: dict[int, dict[str, tuple[datetime, int]]] = defaultdict(dict)
    for row in rows:
        found[row["alert_id"]][row["channel"]] = (row["first"], row["people"])
    return dict(found)


# What an evaluation reads
# ---------------------------------------------------------------------------------------------------------


def targets_running(*, now: datetime) -> list[KpiTarget]:
    """The targets set for the period of each granularity that is running at ``now`` (one query)."""
    running = Q()
    for granularity in GRANULARITIES:
        running |= Q(granularity=granularity, period_start=period_of(now, granularity).start)
    return list(KpiTarget.objects.filter(running).exclude(value=0))


def snapshot_values(*, keys: Sequence[Key]) -> dict[Key, SnapshotValues]:
    """The snapshots of ``keys`` (KPI, granularity, scope, scope id, period start): one query."""
    if not keys:
        return {}
    kpis, grans, scopes, ids, starts = (sorted({k[i] for k in keys}) for i in range(5))
    rows = KpiSnapshot.objects.filter(
        kpi__in=kpis, granularity__in=grans, scope__in=scopes, scope_id__in=ids, period_start__in=starts
    ).values_list("kpi", "granularity", "scope", "scope_id", "period_start", *SnapshotValues._fields)
    wanted = set(keys)
    found = {}
    for kpi, granularity, scope, scope_id, start, *columns in rows:
        key = (kpi, granularity, scope, scope_id, start)
        if key in wanted:
            found[key] = SnapshotValues(*columns)
    return found


def _chart_sql() -> pg.Composed:
    """One granularity's control charts (``rules.Chart``) whose latest value lies outside the limits."""
    points = range(CHART_PERIODS)
    values = pg.SQL(", ").join(
        pg.SQL("max(value) FILTER (WHERE period_start = {}) AS {}").format(
            pg.Placeholder(f"p{i}"), pg.Identifier(f"v{i}")
        )
        for i in points
    )
    centre = pg.SQL(" + ").join(pg.Identifier(f"v{i}") for i in points)
    ranges = pg.SQL(" + ").join(
        pg.SQL("abs({} - {})").format(pg.Identifier(f"v{i}"), pg.Identifier(f"v{i + 1}")) for i in points[:-1]
    )
    return pg.SQL("""
        SELECT kpi, scope, scope_id, v0, n, provisional, centre, mean_moving_range FROM (
            SELECT kpi, scope, scope_id, v0, n, provisional,
                   ({centre}) / {count} AS centre, ({ranges}) / {moving} AS mean_moving_range
            FROM (
                SELECT kpi, scope, scope_id, {values},
                       max(sample_size) FILTER (WHERE period_start = %(p0)s) AS n,
                       bool_or(is_provisional) FILTER (WHERE period_start = %(p0)s) AS provisional
                FROM metrics_kpisnapshot
                WHERE granularity = %(granularity)s AND period_start = ANY(%(starts)s)
                  AND scope = ANY(%(scopes)s) AND kpi = ANY(%(kpis)s) AND value IS NOT NULL
                GROUP BY kpi, scope, scope_id
            ) AS points
        ) AS charts
        WHERE abs(v0 - centre) > %(factor)s * mean_moving_range
    """).format(
        values=values,
        centre=centre,
        ranges=ranges,
        count=pg.Literal(CHART_PERIODS),
        moving=pg.Literal(CHART_PERIODS - 1),
    )


def control_charts(*, now: datetime, granularity: str, kpis: Sequence[Kpi]) -> list[Chart]:
    """The control charts of ``kpis`` (company, team, person and support-agent scopes) over the twelve
    complete periods of ``granularity`` before ``now`` whose latest value lies outside their limits.

    One grouped query over the snapshots of those periods (the (granularity, period start) index); a
    chart missing any of the twelve values is left out (its centre is NULL). Aggregated by hashing: the
    statistics of a table just rewritten by a rebuild may be stale, and a sort of every row on its text
    keys would cost several times more.
    """
    if not kpis:
        return []
    periods = chart_periods(now, granularity)
    params: dict[str, Any] = {
        **{f"p{i}": p.start for i, p in enumerate(periods)},
        "granularity": granularity,
        "starts": [p.start for p in periods],
        "scopes": list(ALERT_SCOPES),
        "kpis": [kpi.code for kpi in kpis],
        "factor": XMR_FACTOR,
    }
    with connection.cursor() as cursor:
        local = connection.in_atomic_block  # SET LOCAL holds for a transaction only
        if local:
            cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(_chart_sql(), params)
        rows = cursor.fetchall()
        if local:
            cursor.execute("SET LOCAL enable_sort = on")
    return [
        Chart(kpi, granularity, scope, scope_id, latest, n, bool(provisional), centre, mean_moving_range)
        for kpi, scope, scope_id, latest, n, provisional, centre, mean_moving_range in rows
    ]


def segment_values(
    *, kpis: Iterable[str], granularities: Iterable[str], period_starts: Iterable[datetime]
) -> dict[tuple[str, str, datetime, str], dict[str, SnapshotValues]]:
    """The teams' and people's snapshots of ``kpis`` for a few periods, by (KPI, granularity, period start,
    scope) and scope id: what the contribution sentences are found in (one query)."""
    rows = KpiSnapshot.objects.filter(
        kpi__in=list(kpis),
        granularity__in=list(granularities),
        period_start__in=list(period_starts),
        scope__in=[Scope.TEAM, Scope.USER],
    ).values_list("kpi", "granularity", "period_start", "scope", "scope_id", *SnapshotValues._fields)
    found: dict[tuple[str, str, datetime, str], dict[str, SnapshotValues]] = defaultdict(dict)
    for kpi, granularity, start, scope, scope_id, *columns in rows:
        found[(kpi, granularity, start, scope)][scope_id] = SnapshotValues(*columns)
    return dict(found)


def alerts_at(*, keys: Sequence[Key]) -> dict[Key, Alert]:
    """The stored alerts of ``keys``, by key (one query)."""
    if not keys:
        return {}
    kpis, grans, scopes, ids, starts = (sorted({k[i] for k in keys}) for i in range(5))
    rows = Alert.objects.filter(
        kpi__in=kpis, granularity__in=grans, scope__in=scopes, scope_id__in=ids, period_start__in=starts
    )
    wanted = set(keys)
    return {key: alert for alert in rows if (key := _key(alert)) in wanted}


def _key(alert: Alert) -> Key:
    return (alert.kpi, alert.granularity, alert.scope, alert.scope_id, alert.period_start)


def alert_recipients(*, people: Iterable[str]) -> tuple[list[int], set[str]]:
    """Who is told of alerts in the app: every active manager (and administrator), and of ``people`` (user
    ids as text) those who are active: (the managers' ids, the active people's ids as text). One query."""
    ids = [int(pk) for pk in people if pk.isdigit()]
    rows = User.objects.filter(is_active=True, is_service_account=False).filter(
        Q(role__in=[User.Role.MANAGER, User.Role.ADMIN]) | Q(is_superuser=True) | Q(pk__in=ids)
    )
    managers, active = [], set()
    for user in rows.only("pk", "role", "is_superuser"):
        if user.is_manager:
            managers.append(user.pk)
        active.add(str(user.pk))
    return managers, active


def agents(*, ids: Iterable[str]) -> set[str]:
    """Of ``ids`` (user ids as text), those of support agents (one query)."""
    numbers = [int(pk) for pk in ids if pk.isdigit()]
    if not numbers:
        return set()
    found = User.objects.filter(pk__in=numbers, role=User.Role.AGENT, is_superuser=False)
    return {str(pk) for pk in found.values_list("pk", flat=True)}

"""Every write of the alerts: the evaluation after each snapshot run, dismissing, and who was told.

``alerts_evaluate`` reads snapshot and target rows only, with a fixed number of queries whatever the data
size, and stores one alert per KPI, scope and period: an upsert on that key (under an advisory lock, so
two evaluations never interleave), which updates an alert found again and never duplicates it.
"""

import logging
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from crm.models import WebhookSubscription
from crm.webhooks.services import webhook_emit_each
from metrics.kpis import registry
from metrics.kpis.base import Context
from metrics.kpis.facts import teams_of_users
from metrics.models import OWNER_SCOPES, KpiTarget, Scope, SnapshotRun
from metrics.periods import Period, period_of
from metrics.selectors import PERSONAL_SCOPES

from . import pages, rules
from . import selectors as alert_selectors
from .models import Alert, AlertNotice

logger = logging.getLogger(__name__)

ALERTS_LOCK = zlib.crc32(b"metrics.alerts_evaluate")
KEY_FIELDS = ["kpi", "granularity", "scope", "scope_id", "period_start"]
NUMBER_FIELDS = [
    "value",
    "sample_size",
    "target",
    "projected",
    "percent_of_target",
    "centre",
    "lower_limit",
    "upper_limit",
]
# What an evaluation may change on a stored alert (never its key, creation or dismissal).
UPDATED_FIELDS = ["kind", *NUMBER_FIELDS, "why", "raised_at", "updated_at", "resolved_at"]


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation did: alerts raised (new, active again or of another kind), updated, resolved."""

    raised: int
    updated: int
    resolved: int
    anomalies: tuple[str, ...]


def alerts_evaluate(
    *, now: datetime | None = None, anomalies: Iterable[str] = rules.ANOMALY_GRANULARITIES
) -> Evaluation:
    """Evaluate the pace of every KPI with a target in a running period and, for the granularities in
    ``anomalies``, every watched control chart (``rules``), as of ``now``; store what fires and resolve
    the stored alerts that no longer do. Whoever may see a newly raised alert is told in the app."""
    now = now or timezone.now()
    grans = tuple(g for g in rules.ANOMALY_GRANULARITIES if g in set(anomalies))
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ALERTS_LOCK])
        findings = [*_pace_findings(now), *_anomaly_findings(now, grans)]
        existing = alert_selectors.alerts_at(keys=[f.key for f in findings])
        # Only what is new or changed is written (with its contribution sentence): a run that finds the
        # same alerts as the last one writes nothing.
        changed = [f for f in findings if _differs(existing.get(f.key), f)]
        raised, updated = _store(changed, existing, _contributors(changed), now)
        firing = [alert.pk for alert in (*raised, *existing.values())]
        stale = Alert.objects.filter(resolved_at__isnull=True).filter(
            Q(kind=Alert.Kind.PACE) | Q(kind=Alert.Kind.ANOMALY, granularity__in=grans)
        )
        resolved = stale.exclude(pk__in=firing).update(resolved_at=now)
        told = [a for a in raised if a.dismissed_at is None]
        _tell_in_app(told, now)
        _tell_webhooks(told)
    return Evaluation(len(raised), updated, resolved, grans)


def _pace_findings(now: datetime) -> list[rules.Finding]:
    """The KPIs off pace to a target of a running period (two queries; three with support agents)."""
    known = registry()
    targets = [
        t
        for t in alert_selectors.targets_running(now=now)
        if t.kpi in known and t.scope in OWNER_SCOPES and t.scope in known[t.kpi].scopes
    ]
    # A support agent's CSAT and CES are those of the tickets they were assigned (the agent scope), as
    # their dashboard reads them (``dashboard.Filters.scope_of``).
    people = {t.scope_id for t in targets if t.scope == Scope.USER and Scope.AGENT in known[t.kpi].scopes}
    agents = alert_selectors.agents(ids=people)

    def read_scope(target: KpiTarget) -> str:
        agent = target.scope_id in agents and Scope.AGENT in known[target.kpi].scopes
        return Scope.AGENT if target.scope == Scope.USER and agent else target.scope

    keys = {t.pk: (t.kpi, t.granularity, read_scope(t), t.scope_id, t.period_start) for t in targets}
    values = alert_selectors.snapshot_values(keys=list(keys.values()))
    found = []
    for target in targets:
        key = keys[target.pk]
        finding = rules.pace_finding(
            kpi=known[target.kpi], snapshot=values.get(key), target=target, scope=key[2], now=now
        )
        if finding is not None:
            found.append(finding)
    return found


def _anomaly_findings(now: datetime, granularities: Sequence[str]) -> list[rules.Finding]:
    """The watched KPIs whose latest complete period is out of its limits (a query per granularity)."""
    known = registry()
    found = []
    for granularity in granularities:
        kpis = [kpi for kpi in known.values() if rules.watched(kpi, granularity)]
        latest = rules.chart_periods(now, granularity)[0]
        for chart in alert_selectors.control_charts(now=now, granularity=granularity, kpis=kpis):
            finding = rules.anomaly_finding(kpi=known[chart.kpi], chart=chart, period=latest, now=now)
            if finding is not None:
                found.append(finding)
    return found


def _contributors(findings: Sequence[rules.Finding]) -> dict[rules.Key, dict[str, Any]]:
    """The contribution sentence's data of each company alert (by team) and team alert (by its members):
    two queries at most, whatever the number of alerts."""
    wanted = [f for f in findings if _segment_scope(f) is not None]
    if not wanted:
        return {}
    segments = alert_selectors.segment_values(
        kpis={f.kpi.code for f in wanted},
        granularities={f.period.granularity for f in wanted},
        period_starts={p.start for f in wanted for p in (f.period, f.period.previous())},
    )
    team_of = teams_of_users() if any(f.scope == Scope.TEAM for f in wanted) else {}
    found = {}
    for finding in wanted:
        scope = _segment_scope(finding)
        assert scope is not None

        def rows(period: Period, finding: rules.Finding = finding, scope: str = scope) -> dict:
            shown = segments.get((finding.kpi.code, period.granularity, period.start, scope), {})
            if finding.scope == Scope.TEAM:
                shown = {k: v for k, v in shown.items() if team_of.get(k) == finding.scope_id}
            return shown

        # A running period (pace) is compared with the same elapsed days of the one before (KPIS.md §10.1).
        found[finding.key] = rules.contributor(
            finding.kpi,
            scope,
            rows(finding.period),
            rows(finding.period.previous()),
            like_for_like=finding.kind == Alert.Kind.PACE,
        )
    return found


def _segment_scope(finding: rules.Finding) -> str | None:
    """Whose numbers explain an alert: the teams a company's, the people a team's; a person's none."""
    segments: dict[str, str] = {Scope.COMPANY: Scope.TEAM, Scope.TEAM: Scope.USER}
    scope = segments.get(finding.scope)
    return scope if scope in finding.kpi.scopes else None


def _differs(alert: Alert | None, finding: rules.Finding) -> bool:
    """Whether ``finding`` is new, active again, of another kind or has other numbers than its stored alert.
    The projection of a pace alert moves with every minute: it is written when the share of the target
    (a whole percentage) or the value moves."""
    if alert is None or alert.resolved_at is not None or alert.kind != finding.kind:
        return True
    numbers = finding.numbers()
    return any(getattr(alert, k) != v for k, v in numbers.items() if k != "projected")


def _store(
    findings: Sequence[rules.Finding],
    existing: Mapping[rules.Key, Alert],
    whys: Mapping[rules.Key, dict[str, Any]],
    now: datetime,
) -> tuple[list[Alert], int]:
    """Upsert the new or changed alerts of ``findings``: (those raised now, how many others changed)."""
    new: list[Alert] = []
    raised: list[Alert] = []
    changed: list[Alert] = []
    for finding in findings:
        numbers, why = finding.numbers(), whys.get(finding.key, {})
        alert = existing.get(finding.key)
        if alert is None:
            new.append(
                Alert(
                    kpi=finding.kpi.code,
                    granularity=finding.period.granularity,
                    period_start=finding.period.start,
                    period_end=finding.period.end,
                    scope=finding.scope,
                    scope_id=finding.scope_id,
                    kind=finding.kind,
                    why=why,
                    created_at=now,
                    raised_at=now,
                    updated_at=now,
                    **numbers,
                )
            )
            continue
        again = alert.resolved_at is not None or alert.kind != finding.kind
        if again:
            alert.kind, alert.raised_at, alert.resolved_at = finding.kind, now, None
            raised.append(alert)
        for name, value in numbers.items():
            setattr(alert, name, value)
        alert.why, alert.updated_at = why, now
        changed.append(alert)
    # Under the lock no other evaluation inserts meanwhile; the conflict clause keeps the key unique anyway.
    Alert.objects.bulk_create(
        new, update_conflicts=True, unique_fields=KEY_FIELDS, update_fields=UPDATED_FIELDS
    )
    Alert.objects.bulk_update(changed, UPDATED_FIELDS)
    return [*new, *raised], len(changed) - len(raised)


def _tell_in_app(alerts: Sequence[Alert], now: datetime) -> None:
    """Record that every manager, and the person an alert is about, was told of ``alerts`` in the app."""
    if not alerts:
        return
    people = {a.scope_id for a in alerts if a.scope in PERSONAL_SCOPES}
    managers, active = alert_selectors.alert_recipients(people=people)
    notices = []
    for alert in alerts:
        told = set(managers)
        if alert.scope in PERSONAL_SCOPES and alert.scope_id in active:
            told.add(int(alert.scope_id))
        notices += [
            AlertNotice(
                alert=alert,
                user_id=pk,
                channel=AlertNotice.Channel.APP,
                kind=alert.kind,
                value=alert.value,
                told_at=now,
            )
            for pk in sorted(told)
        ]
    AlertNotice.objects.bulk_create(notices, ignore_conflicts=True)


def _tell_webhooks(alerts: Sequence[Alert]) -> None:
    """Put a ``kpi.alert`` event for each of ``alerts`` in the webhooks' outbox, in the evaluation's
    transaction: one query when nobody subscribes (the payloads are built only for a subscriber)."""
    if not alerts:
        return
    ids = [alert.pk for alert in alerts]
    webhook_emit_each(
        event=WebhookSubscription.Event.KPI_ALERT, data=lambda: pages.webhook_payloads(alert_ids=ids)
    )


def alerts_after_run(*, run: SnapshotRun, ctx: Context) -> Evaluation:
    """Evaluate the alerts after a successful snapshot run (``metrics.services._recompute``).

    The pace of running periods is evaluated after every run (a read of the targets and their snapshots).
    The control charts only when they may have changed: after a full rebuild or a recompute of a range that
    reaches into their twelve periods, after an incremental run that recomputed every period (teams or
    settings changed), and after the first run of a new week or month (the latest complete period moved
    on). An edit back-dated into a complete period reaches them with the nightly rebuild.
    """
    now = ctx.now
    if not ctx.incremental:
        grans = [g for g in rules.ANOMALY_GRANULARITIES if _reaches_chart(ctx.periods.get(g, ()), now, g)]
    elif ctx.everything:
        grans = list(rules.ANOMALY_GRANULARITIES)
    else:
        before = (
            SnapshotRun.objects.filter(status=SnapshotRun.Status.OK, started_at__lt=run.started_at)
            .exclude(pk=run.pk)
            .order_by("-started_at")
            .values_list("started_at", flat=True)
            .first()
        )
        grans = [
            g
            for g in rules.ANOMALY_GRANULARITIES
            if before is None or period_of(before, g) != period_of(run.started_at, g)
        ]
    return alerts_evaluate(now=now, anomalies=grans)


def _reaches_chart(periods: Iterable[Period], now: datetime, granularity: str) -> bool:
    chart = rules.chart_periods(now, granularity)
    return any(chart[-1].start <= p.start <= chart[0].start for p in periods)


def alert_dismiss(*, alert: Alert, actor: User) -> Alert:
    """Dismiss ``alert`` for its KPI, scope and period, for everyone; a second dismissal changes nothing.
    Only someone who may see the alert may dismiss it."""
    if not alert_selectors.alert_list(user=actor).filter(pk=alert.pk).exists():
        raise PermissionDenied
    Alert.objects.filter(pk=alert.pk, dismissed_at__isnull=True).update(
        dismissed_at=timezone.now(), dismissed_by=actor
    )
    alert.refresh_from_db()
    return alert


def alert_notices_record(
    *, alerts: Iterable[Alert], user: User, channel: str, at: datetime | None = None
) -> int:
    """Record that ``user`` was told of ``alerts`` through ``channel`` (once per alert and kind)."""
    at = at or timezone.now()
    notices = [
        AlertNotice(alert=a, user=user, channel=channel, kind=a.kind, value=a.value, told_at=at)
        for a in alerts
    ]
    return len(AlertNotice.objects.bulk_create(notices, ignore_conflicts=True))

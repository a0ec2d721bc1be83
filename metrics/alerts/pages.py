"""How an alert reads on the list, on the dashboard's panel and in the weekly report: whom and which period
it is about, its numbers in a sentence, the contribution sentence (KPIS.md §10.4) and the link to the
records behind the number (the KPI's page with its drill-down, for that period and scope)."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse
from django.utils.translation import gettext as _

from accounts.models import User
from accounts.web import CappedPaginator
from metrics import dashboard
from metrics.charts import axis_label
from metrics.kpis import registry
from metrics.kpis.base import Better, Kpi
from metrics.models import Scope
from metrics.periods import period_of

from . import selectors
from .models import Alert

PAGE_SIZE = 25
# Alerts the dashboard's panel names (the list has them all).
PANEL_SIZE = 3


@dataclass
class AlertRow:
    """One alert as a page shows it."""

    alert: Alert
    kpi: Kpi
    who: str
    period: str
    numbers: str
    # good, bad or "" (neither): the colour of the numbers.
    tone: str
    why: str | None
    url: str
    # Per channel: when it was first told and to how many people (managers' list only).
    told: dict[str, tuple[datetime, int]] = field(default_factory=dict)


def alert_row(alert: Alert, *, base_url: str = "") -> AlertRow | None:
    """``alert`` (read through ``selectors.alerts_shown``) as a page shows it; None for a KPI that is no
    longer defined. ``base_url`` makes the link absolute (an e-mail)."""
    kpi = registry().get(alert.kpi)
    if kpi is None:
        return None
    return AlertRow(
        alert=alert,
        kpi=kpi,
        who=_who(alert),
        period=axis_label(period_of(alert.period_start, alert.granularity)),
        numbers=_numbers(kpi, alert),
        tone=_tone(kpi, alert),
        why=_why(kpi, alert),
        url=base_url + records_url(alert),
    )


def _who(alert: Alert) -> str:
    name = getattr(alert, "who_name", "") or alert.scope_id
    if alert.scope == Scope.COMPANY:
        return _("Whole company")
    if alert.scope == Scope.TEAM:
        return _("Team %(team)s") % {"team": name}
    return name


def _numbers(kpi: Kpi, alert: Alert) -> str:
    """E.g. "At this pace: 7,800 EUR, 78 % of the target of 10,000 EUR", or "12.0 %, below the control
    limits 30.5 % – 55.1 % (centre 42.8 %)"."""

    def shown(value: Decimal | None) -> str:
        return dashboard.format_value(kpi, value)

    if alert.kind == Alert.Kind.PACE:
        return _("At this pace: %(projected)s, %(percent)s %% of the target of %(target)s") % {
            "projected": shown(alert.projected),
            "percent": alert.percent_of_target,
            "target": shown(alert.target),
        }
    values = {
        "value": shown(alert.value),
        "lower": shown(alert.lower_limit),
        "upper": shown(alert.upper_limit),
        "centre": shown(alert.centre),
    }
    if _above(alert):
        return _("%(value)s, above the control limits %(lower)s – %(upper)s (centre %(centre)s)") % values
    return _("%(value)s, below the control limits %(lower)s – %(upper)s (centre %(centre)s)") % values


def _above(alert: Alert) -> bool:
    return alert.value is not None and alert.upper_limit is not None and alert.value > alert.upper_limit


def _tone(kpi: Kpi, alert: Alert) -> str:
    """Off pace is bad; an anomaly is good or bad by the KPI's better direction (neither for neutral)."""
    if alert.kind == Alert.Kind.PACE:
        return "bad"
    if kpi.better == Better.NEUTRAL:
        return ""
    return "good" if _above(alert) == (kpi.better == Better.UP) else "bad"


def _why(kpi: Kpi, alert: Alert) -> str | None:
    """The contribution sentence from what the evaluation stored (``Alert.why``)."""
    why: dict[str, Any] = alert.why or {}
    if not why.get("key") or why.get("change") is None:
        return None
    name = getattr(alert, "why_name", "") or why["key"]
    if why.get("scope") == Scope.TEAM:
        name = _("Team %(team)s") % {"team": name}
    return dashboard.contributor_sentence(kpi, name, Decimal(why["change"]), why.get("n"))


def records_url(alert: Alert) -> str:
    """The KPI's page (its drill-down to the records) for the alert's period and scope."""
    query: dict[str, str] = {
        "granularity": alert.granularity,
        "period": period_of(alert.period_start, alert.granularity).first_day.isoformat(),
    }
    if alert.scope == Scope.TEAM:
        query["team"] = alert.scope_id
    elif alert.scope != Scope.COMPANY:
        query["rep"] = alert.scope_id
    return f"{reverse('metrics:kpi_detail', args=[alert.kpi])}?{urlencode(query)}#drilldown"


def rows_of(alerts: list[Alert], *, base_url: str = "") -> list[AlertRow]:
    return [row for alert in alerts if (row := alert_row(alert, base_url=base_url)) is not None]


def webhook_payloads(*, alert_ids: Iterable[int]) -> list[dict[str, Any]]:
    """The ``data`` of the ``kpi.alert`` webhook of each alert in ``alert_ids`` (one query): which KPI,
    whose numbers (the scope), which period, the kind of trigger with its numbers, the contribution
    sentence (KPIS.md §10.4) and the absolute link to the records behind the number."""
    base = settings.CRM_BASE_URL.rstrip("/")
    rows = rows_of(
        list(selectors.alerts_shown(alerts=Alert.objects.filter(pk__in=list(alert_ids)))), base_url=base
    )
    return [_webhook_payload(row) for row in rows]


def _webhook_payload(row: AlertRow) -> dict[str, Any]:
    alert = row.alert

    def number(value: Decimal | None) -> str | None:
        return None if value is None else format(value.normalize(), "f")

    return {
        "id": alert.pk,
        "kpi": {"code": alert.kpi, "name": str(row.kpi.label)},
        "scope": {"type": alert.scope, "id": alert.scope_id, "name": row.who},
        "period": {
            "granularity": alert.granularity,
            "start": alert.period_start.isoformat(),
            "end": alert.period_end.isoformat(),
            "label": row.period,
        },
        "kind": alert.kind,
        "summary": row.numbers,
        "value": number(alert.value),
        "sample_size": alert.sample_size,
        "target": number(alert.target),
        "projected": number(alert.projected),
        "percent_of_target": alert.percent_of_target,
        "centre": number(alert.centre),
        "lower_limit": number(alert.lower_limit),
        "upper_limit": number(alert.upper_limit),
        "contribution": row.why,
        "url": row.url,
        "raised_at": alert.raised_at.isoformat(),
    }


def alert_list_context(*, user: User, filters: dict[str, Any], page: str | None) -> dict[str, Any]:
    """One page of the alerts ``user`` may see, narrowed by the (valid) ``filters``; a manager also sees
    who was told of each, and when."""
    qs = selectors.alerts_shown(
        alerts=selectors.alert_filter(alerts=selectors.alert_list(user=user), **filters)
    )
    found = CappedPaginator(qs, PAGE_SIZE).get_page(page)
    rows = rows_of(list(found.object_list))
    if user.is_manager and rows:
        told = selectors.alert_notice_summary(alert_ids=[row.alert.pk for row in rows])
        for row in rows:
            row.told = told.get(row.alert.pk, {})
    return {"page": found, "rows": rows}


def alert_panel(*, user: User) -> dict[str, Any]:
    """The dashboard's panel: how many active alerts ``user`` may see, and the first few (one query)."""
    total, alerts = selectors.alerts_active(user=user, limit=PANEL_SIZE)
    return {"total": total, "rows": rows_of(alerts)}


def weekly_alerts(*, user: User, limit: int = 20) -> dict[str, Any]:
    """The active alerts of a weekly report to ``user``: the first ``limit``, with absolute links."""
    total, alerts = selectors.alerts_active(user=user, limit=limit)
    base = settings.CRM_BASE_URL.rstrip("/")
    return {
        "total": total,
        "rows": rows_of(alerts, base_url=base),
        "alerts": alerts,
        "list_url": base + reverse("metrics:alert_list"),
    }

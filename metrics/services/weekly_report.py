"""The weekly KPI report e-mail to managers: headline KPIs of last week with change and target, and the
active alerts (KPIS.md §10.8); a rep or an agent with active alerts about their own numbers gets those."""

from datetime import datetime

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation

from accounts.models import User
from metrics import dashboard
from metrics.alerts.models import AlertNotice
from metrics.alerts.pages import weekly_alerts
from metrics.alerts.selectors import alerted_people
from metrics.alerts.services import alert_notices_record
from metrics.kpis import in_section
from metrics.kpis.base import Section
from metrics.models import ReportDelivery, Scope
from metrics.periods import period_of


def weekly_report_cards(*, now: datetime | None = None) -> tuple[dashboard.Filters, list[dashboard.Card]]:
    """Last complete week's headline KPIs for the whole company, with change and target (snapshots only)."""
    week = period_of(now or timezone.now(), "week").previous()
    filters = dashboard.Filters(granularity="week", period=week, count=2, scope=Scope.COMPANY)
    kpis = in_section(Section.WEEKLY_REPORT)
    series, targets = dashboard.load_series(filters, kpis), dashboard.load_targets(filters, kpis)
    cards = [
        dashboard.Card(
            kpi=kpi,
            snapshot=series.get(kpi.code, {}).get(week.first_day),
            previous=series.get(kpi.code, {}).get(week.previous().first_day),
            target=targets.get(kpi.code, {}).get(week.first_day),
        )
        for kpi in kpis
    ]
    return filters, cards


def weekly_report_send(*, now: datetime | None = None) -> int:
    """E-mail last week's report to every active manager and admin with an address, and to every rep or
    agent with active alerts about their own numbers (those alerts only), once per week each.

    Each recipient gets it in their own language; a delivery row is written before sending, so a retried
    task never sends a second copy (a failed send rolls its row back and is retried next time). The alerts
    a report carried are recorded as told to its recipient by e-mail.
    """
    filters, _cards = weekly_report_cards(now=now)
    recipients = User.objects.filter(
        Q(role__in=[User.Role.MANAGER, User.Role.ADMIN]) | Q(pk__in=alerted_people()),
        is_active=True,
        is_service_account=False,
    ).exclude(email="")
    sent = 0
    for user in recipients:
        try:
            with transaction.atomic():
                ReportDelivery.objects.create(user=user, week_start=filters.period.first_day)
                if not _send(user, now=now):
                    transaction.set_rollback(True)  # a rep's alerts all resolved meanwhile: nothing to say
                    continue
        except IntegrityError:
            continue
        sent += 1
    return sent


def _send(user: User, *, now: datetime | None) -> bool:
    """Send ``user`` their report; False (nothing sent) for someone who is not a manager and has no alert."""
    with translation.override(user.language):
        filters, cards = weekly_report_cards(now=now)
        # The alerts the recipient may see: all for a manager, a rep's or an agent's own numbers otherwise.
        alerts = weekly_alerts(user=user)
        if not user.is_manager and not alerts["rows"]:
            return False
        context = {
            "user": user,
            "filters": filters,
            # The company's headline numbers are for managers; a rep or an agent gets their alerts only.
            "cards": cards if user.is_manager else [],
            "alerts": alerts,
            "company_name": settings.CRM_COMPANY_NAME,
            "dashboard_url": settings.CRM_BASE_URL.rstrip("/")
            + reverse("metrics:dashboard")
            + "?granularity=week",
        }
        subject = render_to_string("metrics/email/weekly_report_subject.txt", context).strip()
        message = EmailMultiAlternatives(
            subject=subject,
            body=render_to_string("metrics/email/weekly_report.txt", context),
            to=[user.email],
        )
        message.attach_alternative(render_to_string("metrics/email/weekly_report.html", context), "text/html")
        message.send()
    alert_notices_record(alerts=alerts["alerts"], user=user, channel=AlertNotice.Channel.EMAIL)
    return True

"""The weekly KPI report e-mail: headline KPIs of last week, in each manager's language, once per week."""

from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone

from metrics.models import KpiSnapshot, KpiTarget, ReportDelivery, Scope
from metrics.periods import period_of
from metrics.tasks import send_weekly_reports
from tests.factories import make_manager, make_user

pytestmark = pytest.mark.django_db


def _snap(kpi, period, value, **counts):
    KpiSnapshot.objects.create(
        kpi=kpi,
        granularity="week",
        period_start=period.start,
        period_end=period.end,
        scope=Scope.COMPANY,
        value=Decimal(value),
        computed_at=timezone.now(),
        definition_version=1,
        **counts,
    )


def test_weekly_report_goes_to_managers_once_with_change_and_target():
    last_week = period_of(timezone.now(), "week").previous()
    # 40 of 200 closed deals against 60 of 200: a significant rise (p = 0.02), so it is coloured.
    _snap("win_rate", last_week.previous(), "20", numerator=40, denominator=200, sample_size=200)
    _snap("win_rate", last_week, "30", numerator=60, denominator=200, sample_size=200)
    KpiTarget.objects.create(
        kpi="win_rate", granularity="week", period_start=last_week.start, value=Decimal(35)
    )
    make_manager(email="boss@example.com", first_name="Ada")
    make_manager(email="")  # no address: skipped
    make_user(email="rep@example.com")  # reps get no report
    assert send_weekly_reports() == 1
    assert send_weekly_reports() == 0  # a rerun (or a retried task) sends nothing twice
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["boss@example.com"]
    assert "Hello Ada" in message.body
    assert "Win rate: 30.0 % (+10.0 pp) — target 35.0 %" in message.body
    assert "/metrics/" in message.body
    html = message.alternatives[0][0]
    assert "#1f8a4c" in html  # up is good for the win rate: green
    assert ReportDelivery.objects.count() == 1


def test_weekly_report_speaks_the_managers_language():
    make_manager(email="li@example.com", language="zh-hans")
    send_weekly_reports()
    assert "打开仪表板" in mail.outbox[0].body

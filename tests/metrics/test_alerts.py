"""Alerts (KPIS.md §10.8): the XmR anomaly and the pace to a target worked out by hand on snapshot rows, the
minimum-n guards, one alert per KPI, scope and period under re-evaluation (also two at once), dismissing,
who may see and dismiss what, the weekly report, hostile filters and the query bounds.

The reporting zone is Pacific/Kiritimati (UTC+14): a local Monday starts at 10:00 on Sunday in UTC, so a
week or month read in UTC would be the wrong one.
"""

import itertools
import json
import re
import threading
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from metrics.alerts import services
from metrics.alerts.models import Alert, AlertNotice
from metrics.alerts.services import alert_dismiss, alerts_after_run, alerts_evaluate
from metrics.kpis.base import Context, Run
from metrics.models import KpiSnapshot, KpiTarget, Scope, SnapshotRun
from metrics.periods import Period, period_of
from metrics.tasks import send_weekly_reports
from tests.factories import make_agent, make_alert, make_manager, make_team, make_user

pytestmark = pytest.mark.django_db
ZONE = "Pacific/Kiritimati"
HTMX = {"HX-Request": "true"}
# The twelve weeks of the hand-worked chart, oldest first, before the latest: 10, 12, 10, … 10 (eleven
# values: sum 120, ten moving ranges of 2).
BEFORE = [10, 12] * 5 + [10]


@pytest.fixture(autouse=True)
def _far_zone(_reporting_zone, settings):
    settings.TIME_ZONE = ZONE


def local(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=ZoneInfo(ZONE))


# Wednesday 4 March 2026, noon in Kiritimati: the latest complete week is 23 February – 1 March.
NOW = local(2026, 3, 4, 12)


def latest_week() -> Period:
    return Period("week", date(2026, 2, 23))


def snap(kpi: str, period: Period, value, *, scope: str = Scope.COMPANY, scope_id: str = "", **extra):
    return KpiSnapshot.objects.update_or_create(
        kpi=kpi,
        granularity=period.granularity,
        period_start=period.start,
        scope=scope,
        scope_id=scope_id,
        defaults={
            "period_end": period.end,
            "value": None if value is None else Decimal(str(value)),
            "computed_at": NOW,
            "definition_version": 1,
            **extra,
        },
    )[0]


def chart(
    kpi: str, latest_value, *, scope: str = Scope.COMPANY, scope_id: str = "", before=BEFORE, **extra
) -> None:
    """Twelve weekly snapshots ending with the latest complete week at ``NOW``: ``before`` then the latest."""
    latest = latest_week()
    for steps, value in zip(range(11, 0, -1), before, strict=True):
        snap(kpi, latest.previous(steps), value, scope=scope, scope_id=scope_id, **extra)
    snap(kpi, latest, latest_value, scope=scope, scope_id=scope_id, **extra)


# Anomalies: the XmR chart by hand
# ---------------------------------------------------------------------------------------------------------


def test_the_chart_of_twelve_weeks_flags_a_latest_week_outside_its_limits():
    """Eleven weeks 10, 12, 10, … and a latest week of 144: centre (120 + 144) / 12 = 22, mean moving range
    (10 × 2 + 134) / 11 = 14, limits 22 ± 2.66 × 14 = −15.24 and 59.24; 144 lies above."""
    chart("revenue_won", 144)
    found = alerts_evaluate(now=NOW, anomalies=["week"])
    assert (found.raised, found.resolved, found.anomalies) == (1, 0, ("week",))
    alert = Alert.objects.get()
    assert (alert.kpi, alert.kind, alert.scope, alert.scope_id) == ("revenue_won", "anomaly", "company", "")
    assert alert.period_start == local(2026, 2, 23) == datetime(2026, 2, 22, 10, tzinfo=ZoneInfo("UTC"))
    assert alert.period_end == local(2026, 3, 2)
    assert (alert.value, alert.centre) == (Decimal("144"), Decimal("22"))
    assert (alert.lower_limit, alert.upper_limit) == (Decimal("-15.24"), Decimal("59.24"))
    assert alert.target is None and alert.projected is None


def test_a_latest_week_inside_its_limits_is_no_anomaly():
    """Eleven weeks 10, 12, … and a latest 12: centre 132 / 12 = 11, mean moving range 22 / 11 = 2, limits
    11 ± 5.32 = 5.68 and 16.32: 12 is ordinary."""
    chart("revenue_won", 12)
    assert alerts_evaluate(now=NOW, anomalies=["week"]).raised == 0
    assert not Alert.objects.exists()


def test_a_chart_needs_all_twelve_weeks_and_a_final_value():
    chart("revenue_won", 144)
    KpiSnapshot.objects.filter(period_start=latest_week().previous(11).start).delete()
    assert alerts_evaluate(now=NOW, anomalies=["week"]).raised == 0  # eleven weeks are not the chart
    chart("revenue_won", 144, is_provisional=True)
    assert alerts_evaluate(now=NOW, anomalies=["week"]).raised == 0  # a cohort still open may still change


def test_the_latest_complete_week_is_the_reporting_zones():
    """Monday 2 March, 01:00 in Kiritimati is still Sunday in UTC: the week that has just ended there (23
    February – 1 March) is the latest complete one, not the week before it."""
    chart("revenue_won", 144)
    alerts_evaluate(now=local(2026, 3, 2, 1), anomalies=["week"])
    assert Alert.objects.get().period_start == latest_week().start
    # Sunday 1 March, 23:00 there: that week still runs, so the latest complete one is the week before.
    Alert.objects.all().delete()
    alerts_evaluate(now=local(2026, 3, 1, 23), anomalies=["week"])
    assert not Alert.objects.exists()  # its chart (ending the week before) lacks a twelfth week


def test_too_few_answers_or_events_never_raise_an_anomaly():
    """Win rate (minimum sample 10 closed deals): the same chart with 9 closed deals in the latest week is
    muted; with 10 it is an anomaly."""
    chart("win_rate", 144, sample_size=9)
    assert alerts_evaluate(now=NOW, anomalies=["week"]).raised == 0
    KpiSnapshot.objects.filter(kpi="win_rate").update(sample_size=10)
    assert alerts_evaluate(now=NOW, anomalies=["week"]).raised == 1


def test_a_count_of_a_few_events_a_week_raises_no_anomaly():
    """Deals won (a count, minimum 10 events): 1, 2, 1, … and a latest 14 — centre (16 + 14) / 12 = 2.5,
    mean moving range (10 + 13) / 11 = 2.09, upper limit 8.06: outside, but a usual week has fewer than 10
    events. The chart of 10, 12, 10, … and 144 (centre 22) is an anomaly."""
    chart("deals_won", 14, before=[1, 2] * 5 + [1])
    assert alerts_evaluate(now=NOW, anomalies=["week"]).raised == 0
    chart("deals_won", 144)
    assert alerts_evaluate(now=NOW, anomalies=["week"]).raised == 1


def test_levels_and_months_are_watched_as_the_rules_say():
    """A level (the pipeline) trends from period to period: its chart is not watched. Months are evaluated
    only when asked for."""
    chart("pipeline_value", 144)
    chart("revenue_won", 144)
    alerts_evaluate(now=NOW, anomalies=["month"])
    assert not Alert.objects.exists()
    alerts_evaluate(now=NOW, anomalies=["week", "quarter"])  # quarters are never watched
    assert list(Alert.objects.values_list("kpi", flat=True)) == ["revenue_won"]


def test_a_person_and_a_support_agent_get_anomalies_of_their_own_numbers():
    rep, agent = make_user(), make_agent()
    chart("revenue_won", 144, scope=Scope.USER, scope_id=str(rep.pk))
    chart("csat", 144, scope=Scope.AGENT, scope_id=str(agent.pk), sample_size=40)
    chart("csat", 144, scope=Scope.SOURCE, scope_id="web", sample_size=40)  # a breakdown: no alert
    alerts_evaluate(now=NOW, anomalies=["week"])
    found = set(Alert.objects.values_list("kpi", "scope", "scope_id"))
    assert found == {("revenue_won", "user", str(rep.pk)), ("csat", "agent", str(agent.pk))}


# Pace to a target by hand
# ---------------------------------------------------------------------------------------------------------


def march() -> Period:
    return Period("month", date(2026, 3, 1))


def target(kpi: str, period: Period, value, *, scope: str = Scope.COMPANY, scope_id: str = "") -> KpiTarget:
    return KpiTarget.objects.create(
        kpi=kpi, granularity=period.granularity, period_start=period.start, scope=scope, scope_id=scope_id,
        value=Decimal(str(value)),
    )  # fmt: skip


def test_a_count_off_its_pace_projects_the_month_to_date():
    """11 March, 00:00 in Kiritimati: 10 of March's 31 days have gone. 3,100 won so far projects to
    3,100 × 31 / 10 = 9,610 by the month's end, 96 % of a 10,000 target: off pace."""
    target("revenue_won", march(), 10000)
    snap("revenue_won", march(), 3100)
    now = local(2026, 3, 11)
    assert alerts_evaluate(now=now, anomalies=[]).raised == 1
    alert = Alert.objects.get()
    assert (alert.kind, alert.period_start, alert.value) == ("pace", march().start, Decimal("3100"))
    assert (alert.target, alert.projected, alert.percent_of_target) == (Decimal("10000"), Decimal("9610"), 96)


def test_pace_alerts_come_and_go_with_the_projection_and_stay_one_row():
    """3,300 so far projects to 10,230 (102 %): on track, no alert. Down to 3,000 (93 %): off pace, raised.
    Back to 3,300: resolved. Down again: the same alert, active again."""
    target("revenue_won", march(), 10000)
    snap("revenue_won", march(), 3300)
    now = local(2026, 3, 11)
    assert alerts_evaluate(now=now, anomalies=[]).raised == 0
    snap("revenue_won", march(), 3000)
    assert alerts_evaluate(now=now, anomalies=[]).raised == 1
    first = Alert.objects.get()
    assert alerts_evaluate(now=now, anomalies=[]) == alerts_evaluate(now=now, anomalies=[])  # nothing new
    snap("revenue_won", march(), 3300)
    later = now + timedelta(hours=1)
    assert alerts_evaluate(now=later, anomalies=[]).resolved == 1
    assert Alert.objects.get().resolved_at == later
    snap("revenue_won", march(), 2050)
    assert alerts_evaluate(now=later, anomalies=[]).raised == 1
    again = Alert.objects.get()
    assert again.pk == first.pk and again.resolved_at is None and again.raised_at == later
    assert again.percent_of_target == 63  # 2,050 × 31 / 10 = 6,355 of 10,000
    assert Alert.objects.count() == 1


def test_no_pace_before_a_fifth_of_the_period_nor_once_it_has_ended():
    target("revenue_won", march(), 10000)
    snap("revenue_won", march(), 1)
    assert alerts_evaluate(now=local(2026, 3, 6), anomalies=[]).raised == 0  # 5 of 31 days: 16 %
    assert alerts_evaluate(now=local(2026, 3, 7, 12), anomalies=[]).raised == 1  # 6.5 days: 21 %
    # April: March has ended, its pace alert no longer holds.
    assert alerts_evaluate(now=local(2026, 4, 2), anomalies=[]).resolved == 1


def test_lower_is_better_reads_the_ratio_as_it_stands_and_minds_the_sample():
    """Sales cycle (lower is better) of 40 days against a 30-day target: 30 / 40 = 75 % of target, off pace
    — with 12 closed deals; with 5 (below the minimum of 10) it is muted."""
    target("sales_cycle_median", march(), 30)
    snap("sales_cycle_median", march(), 40, sample_size=5)
    now = local(2026, 3, 20)
    assert alerts_evaluate(now=now, anomalies=[]).raised == 0
    snap("sales_cycle_median", march(), 40, sample_size=12)
    alerts_evaluate(now=now, anomalies=[])
    alert = Alert.objects.get()
    assert (alert.projected, alert.percent_of_target) == (Decimal("40"), 75)


def test_a_support_agents_target_reads_their_tickets_csat():
    """A CSAT target for an agent (user scope) is read from the CSAT of the tickets they were assigned."""
    agent = make_agent()
    target("csat", march(), 90, scope=Scope.USER, scope_id=str(agent.pk))
    snap("csat", march(), 70, scope=Scope.AGENT, scope_id=str(agent.pk), sample_size=40)
    alerts_evaluate(now=local(2026, 3, 20), anomalies=[])
    alert = Alert.objects.get()
    assert (alert.scope, alert.scope_id, alert.percent_of_target) == ("agent", str(agent.pk), 77)


# Why: the contribution sentence
# ---------------------------------------------------------------------------------------------------------


def test_a_company_alert_names_the_team_that_moved_it_most(client):
    """The latest week's 144 against the week before's 10: North went from 8 to 100 (+92), South from 2 to
    44 (+42). North moved it most."""
    north, south = make_team(name="North"), make_team(name="South")
    chart("revenue_won", 144)
    before = latest_week().previous()
    for team, then, now in ((north, 8, 100), (south, 2, 44)):
        snap("revenue_won", before, then, scope=Scope.TEAM, scope_id=str(team.pk))
        snap("revenue_won", latest_week(), now, scope=Scope.TEAM, scope_id=str(team.pk))
    alerts_evaluate(now=NOW, anomalies=["week"])
    assert Alert.objects.get().why == {
        "scope": "team",
        "key": str(north.pk),
        "change": "92.000000",
        "n": None,
    }
    client.force_login(make_manager())
    body = client.get(reverse("metrics:alert_list")).content.decode()
    assert "Mostly Team North: +92 EUR" in body
    assert "144 EUR, above the control limits -15 EUR – 59 EUR (centre 22 EUR)" in body


def test_a_team_alert_names_one_of_its_members():
    team, other = make_team(name="North"), make_team()
    ada, bob, stranger = make_user(team=team, first_name="Ada"), make_user(team=team), make_user(team=other)
    chart("revenue_won", 144, scope=Scope.TEAM, scope_id=str(team.pk))
    before = latest_week().previous()
    for person, then, now in ((ada, 5, 90), (bob, 5, 20), (stranger, 0, 500)):
        snap("revenue_won", before, then, scope=Scope.USER, scope_id=str(person.pk))
        snap("revenue_won", latest_week(), now, scope=Scope.USER, scope_id=str(person.pk))
    alerts_evaluate(now=NOW, anomalies=["week"])
    assert Alert.objects.get().why["key"] == str(ada.pk)  # not the other team's stranger


# The kpi.alert webhook
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def receiver(settings):
    from tests.crm.test_webhooks import Receiver

    settings.CRM_WEBHOOKS_ALLOW_PRIVATE = True
    settings.CRM_BASE_URL = "https://crm.example.com/"
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_a_raised_alert_is_sent_to_the_kpi_alert_webhook_once(receiver, django_capture_on_commit_callbacks):
    """The hand-worked company anomaly above (144 against limits −15.24 – 59.24, North +92) reaches a
    subscribed receiver, signed, with what it is about, why and where to look; found again, it is not
    sent again, and a subscriber to other events gets nothing."""
    from crm.models import WebhookDelivery, WebhookSubscription
    from crm.webhooks import signing
    from crm.webhooks.services import subscription_create, webhook_deliver

    manager = make_manager()
    _subscription, secret = subscription_create(
        actor=manager, name="Chat", url=receiver.url, events=[WebhookSubscription.Event.KPI_ALERT]
    )
    subscription_create(actor=manager, name="Shop", url=receiver.url, events=["deal.won"])
    north, south = make_team(name="North"), make_team(name="South")
    chart("revenue_won", 144)
    before = latest_week().previous()
    for team, then, now in ((north, 8, 100), (south, 2, 44)):
        snap("revenue_won", before, then, scope=Scope.TEAM, scope_id=str(team.pk))
        snap("revenue_won", latest_week(), now, scope=Scope.TEAM, scope_id=str(team.pk))
    with django_capture_on_commit_callbacks() as callbacks:
        alerts_evaluate(now=NOW, anomalies=["week"])
    alert = Alert.objects.get()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.event, delivery.subscription.name, len(callbacks)) == ("kpi.alert", "Chat", 1)
    webhook_deliver(delivery_id=delivery.pk)
    headers, body = receiver.requests[0]
    assert signing.verify(secret, headers, body)
    payload = json.loads(body)
    assert payload["type"] == "kpi.alert"
    data = payload["data"]
    assert data["id"] == alert.pk
    assert data["kpi"]["code"] == "revenue_won" and data["kpi"]["name"]
    assert data["scope"] == {"type": "company", "id": "", "name": "Whole company"}
    assert data["period"]["granularity"] == "week"
    assert datetime.fromisoformat(data["period"]["start"]) == local(2026, 2, 23)
    assert datetime.fromisoformat(data["period"]["end"]) == local(2026, 3, 2)
    assert data["kind"] == "anomaly"
    assert (data["value"], data["centre"], data["lower_limit"], data["upper_limit"]) == (
        "144",
        "22",
        "-15.24",
        "59.24",
    )
    assert data["summary"] == "144 EUR, above the control limits -15 EUR – 59 EUR (centre 22 EUR)"
    assert data["contribution"] == "Mostly Team North: +92 EUR"
    assert data["url"] == (
        "https://crm.example.com/metrics/kpi/revenue_won/?granularity=week&period=2026-02-23#drilldown"
    )
    snap("revenue_won", latest_week(), 155)  # found again with other numbers: updated, not raised
    alerts_evaluate(now=NOW + timedelta(minutes=5), anomalies=["week"])
    assert WebhookDelivery.objects.count() == 1


def test_a_pace_alert_is_sent_with_its_target_and_nothing_when_nobody_listens(receiver):
    from crm.models import WebhookDelivery
    from crm.webhooks.services import subscription_create

    rep = make_user(first_name="Ada", last_name="Lovelace")
    week = latest_week()
    target("revenue_won", week, 10000, scope=Scope.USER, scope_id=str(rep.pk))
    snap("revenue_won", week, 1000, scope=Scope.USER, scope_id=str(rep.pk))
    alerts_evaluate(now=week.start + timedelta(days=3), anomalies=[])
    assert Alert.objects.get().kind == "pace"
    assert not WebhookDelivery.objects.exists()  # raised while nobody subscribed
    Alert.objects.all().delete()
    subscription_create(actor=make_manager(), name="Chat", url=receiver.url, events=["kpi.alert"])
    alerts_evaluate(now=week.start + timedelta(days=3), anomalies=[])
    data = WebhookDelivery.objects.get().payload["data"]
    assert data["kind"] == "pace" and data["kpi"]["code"] == "revenue_won"
    assert data["scope"] == {"type": "user", "id": str(rep.pk), "name": "Ada Lovelace"}
    assert data["target"] == "10000" and data["percent_of_target"] is not None
    assert data["summary"].startswith("At this pace:") and data["contribution"] is None
    assert f"rep={rep.pk}" in data["url"]


# One alert per KPI, scope and period
# ---------------------------------------------------------------------------------------------------------


def test_re_evaluation_updates_the_alert_and_never_duplicates_it():
    chart("revenue_won", 144)
    alerts_evaluate(now=NOW, anomalies=["week"])
    first = Alert.objects.get()
    alerts_evaluate(now=NOW, anomalies=["week"])
    assert Alert.objects.get().updated_at == first.updated_at  # unchanged numbers: no write
    snap("revenue_won", latest_week(), 155)  # a back-dated deal: the latest week grows
    later = NOW + timedelta(minutes=5)
    found = alerts_evaluate(now=later, anomalies=["week"])
    assert (found.raised, found.updated) == (0, 1)
    alert = Alert.objects.get()
    assert (alert.pk, alert.value, alert.updated_at, alert.raised_at) == (
        first.pk,
        155,
        later,
        first.raised_at,
    )
    # The week after: a new latest week, inside its limits; last week's alert no longer holds.
    next_week = NOW + timedelta(days=7)
    snap("revenue_won", latest_week().next(), 12)
    assert alerts_evaluate(now=next_week, anomalies=["week"]).resolved == 1


def test_a_periods_pace_alert_becomes_its_anomaly_once_it_has_ended():
    """One alert per KPI, scope and period: the running week's pace alert is the same row as that week's
    anomaly once it has ended (told again: a new kind)."""
    make_manager()
    week = latest_week()
    target("revenue_won", week, 10000)
    chart("revenue_won", 144)
    alerts_evaluate(now=week.start + timedelta(days=3), anomalies=[])
    pace = Alert.objects.get()
    assert pace.kind == "pace"
    alerts_evaluate(now=NOW, anomalies=["week"])
    alert = Alert.objects.get()
    assert (alert.pk, alert.kind, alert.resolved_at, alert.target) == (pace.pk, "anomaly", None, None)
    assert sorted(AlertNotice.objects.values_list("kind", flat=True)) == ["anomaly", "pace"]


@pytest.mark.django_db(transaction=True)
def test_two_evaluations_at_once_store_one_alert():
    chart("revenue_won", 144)
    make_manager()
    start, errors = threading.Barrier(2), []

    def evaluate() -> None:
        try:
            start.wait()
            alerts_evaluate(now=NOW, anomalies=["week"])
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Alert.objects.count() == 1
    assert AlertNotice.objects.count() == 1  # the manager, told once


def test_an_insert_racing_another_evaluations_is_an_upsert():
    """Were two evaluations to read before either wrote (the advisory lock prevents it), the second's
    insert meets the first's row on the unique key and updates it: no second row, no error."""
    chart("revenue_won", 144)
    alerts_evaluate(now=NOW, anomalies=["week"])
    first = Alert.objects.get()
    finding = services._anomaly_findings(NOW, ["week"])[0]
    later = NOW + timedelta(minutes=1)
    services._store([finding], {}, {}, later)  # it had found no stored alert
    alert = Alert.objects.get()
    assert (alert.pk, alert.updated_at, alert.value) == (first.pk, later, Decimal("144"))


def test_the_unique_key_refuses_a_second_alert():
    from django.db import IntegrityError, transaction

    alert = make_alert()
    with pytest.raises(IntegrityError), transaction.atomic():
        make_alert(period_start=alert.period_start)


def test_who_was_told_in_the_app():
    manager, rep, left = make_manager(), make_user(), make_user()
    User.objects.filter(pk=left.pk).update(is_active=False)
    chart("revenue_won", 144, scope=Scope.USER, scope_id=str(rep.pk))
    chart("deals_won", 144, scope=Scope.USER, scope_id=str(left.pk))
    alerts_evaluate(now=NOW, anomalies=["week"])
    told = set(AlertNotice.objects.values_list("alert__kpi", "user", "channel", "kind", "value", "told_at"))
    assert told == {
        ("revenue_won", manager.pk, "app", "anomaly", Decimal("144"), NOW),
        ("revenue_won", rep.pk, "app", "anomaly", Decimal("144"), NOW),
        ("deals_won", manager.pk, "app", "anomaly", Decimal("144"), NOW),  # someone who left is not told
    }
    alerts_evaluate(now=NOW + timedelta(hours=1), anomalies=["week"])
    assert AlertNotice.objects.count() == 3  # told once


# When the evaluation runs
# ---------------------------------------------------------------------------------------------------------


def _run(kind: str, started: datetime) -> SnapshotRun:
    return SnapshotRun.objects.create(kind=kind, status="ok", started_at=started, finished_at=started)


def test_charts_are_evaluated_after_a_rebuild_and_the_first_run_of_a_new_week_only():
    chart("revenue_won", 144)
    week = latest_week()
    incremental = Context(Run(periods={"week": [week.next()]}, now=NOW, incremental=True))
    _run("recent", NOW - timedelta(minutes=5))
    same_week = _run("recent", NOW)
    assert alerts_after_run(run=same_week, ctx=incremental).anomalies == ()
    assert not Alert.objects.exists()
    new_week = _run("recent", week.next().start + timedelta(minutes=1))
    SnapshotRun.objects.filter(pk=same_week.pk).update(started_at=week.end - timedelta(minutes=4))
    found = alerts_after_run(run=new_week, ctx=incremental)
    assert found.anomalies == ("week",) and found.raised == 1
    rebuild = Context(Run(periods={"week": [week.previous(20), week], "month": [march()]}, now=NOW))
    assert alerts_after_run(run=_run("full", NOW), ctx=rebuild).anomalies == ("week",)
    old_range = Context(Run(periods={"week": [week.previous(30)]}, now=NOW))
    assert alerts_after_run(run=_run("range", NOW), ctx=old_range).anomalies == ()


def test_the_evaluation_reads_a_fixed_number_of_queries():
    managers = [make_manager() for _ in range(2)]
    chart("revenue_won", 144)
    target("revenue_won", latest_week().next(), 1000)
    with CaptureQueriesContext(connection) as few:
        alerts_evaluate(now=NOW, anomalies=["week"])
    Alert.objects.all().delete()
    AlertNotice.objects.all().delete()
    teams = [make_team() for _ in range(5)]
    people = [make_user(team=teams[i % 5]) for i in range(12)]
    for code in ("revenue_won", "deals_won", "win_rate", "tickets_created"):
        chart(code, 144, sample_size=50)
        for person in people:
            chart(code, 144, scope=Scope.USER, scope_id=str(person.pk), sample_size=50)
        for team in teams:
            chart(code, 144, scope=Scope.TEAM, scope_id=str(team.pk), sample_size=50)
            target(code, latest_week().next(), 10**6, scope=Scope.TEAM, scope_id=str(team.pk))
            snap(code, latest_week().next(), 1, scope=Scope.TEAM, scope_id=str(team.pk), sample_size=50)
    with CaptureQueriesContext(connection) as many:
        found = alerts_evaluate(now=NOW, anomalies=["week"])
    assert found.raised == 4 * (1 + 12 + 5) + 4 * 5  # every chart, and every team's pace
    assert len(many.captured_queries) <= len(few.captured_queries) + 1  # + the teams of the people
    assert AlertNotice.objects.filter(user=managers[0]).count() == found.raised


# The pages
# ---------------------------------------------------------------------------------------------------------


def _alerts_of(body: str) -> list[str]:
    return re.findall(r'id="alert-(\d+)"', body)


def test_managers_see_every_alert_and_reps_and_agents_their_own(client):
    rep, other, agent = make_user(first_name="Ada"), make_user(), make_agent()
    company, mine = make_alert(), make_alert(rep)
    theirs, agents = make_alert(other), make_alert(kpi="csat", scope=Scope.AGENT, scope_id=str(agent.pk))
    client.force_login(make_manager())
    assert set(_alerts_of(client.get(reverse("metrics:alert_list")).content.decode())) == {
        str(a.pk) for a in (company, mine, theirs, agents)
    }
    client.force_login(rep)
    response = client.get(reverse("metrics:alert_list"))
    assert _alerts_of(response.content.decode()) == [str(mine.pk)]
    assert "Ada" in response.content.decode()
    fragment = client.get(reverse("metrics:alert_list"), headers=HTMX).content.decode()
    assert "<html" not in fragment and _alerts_of(fragment) == [str(mine.pk)]
    client.force_login(agent)
    assert _alerts_of(client.get(reverse("metrics:alert_list")).content.decode()) == [str(agents.pk)]


def test_a_manager_narrows_the_list_to_whom_it_is_about_and_reads_the_pace_first(client):
    rep, team = make_user(), make_team()
    company, person = make_alert(), make_alert(rep)
    teams = make_alert(kpi="revenue_won", scope=Scope.TEAM, scope_id=str(team.pk))
    pace = make_alert(rep, kpi="deals_won", kind="pace")
    client.force_login(make_manager())
    url = reverse("metrics:alert_list")
    assert _alerts_of(client.get(url).content.decode()) == [str(a.pk) for a in (pace, company, teams, person)]
    assert _alerts_of(client.get(url, {"who": "company"}).content.decode()) == [str(company.pk)]
    assert _alerts_of(client.get(url, {"who": "teams"}).content.decode()) == [str(teams.pk)]
    people = client.get(url, {"who": "people", "kind": "anomaly"}).content.decode()
    assert _alerts_of(people) == [str(person.pk)]
    # A rep has no such filter: their own numbers only, whatever the query says.
    client.force_login(rep)
    body = client.get(url, {"who": "company"}).content.decode()
    assert 'name="who"' not in body and _alerts_of(body) == [str(pace.pk), str(person.pk)]


def test_an_alert_links_to_the_records_of_its_period_and_scope(client):
    rep, team = make_user(), make_team()
    client.force_login(make_manager())
    make_alert(rep, kpi="win_rate")
    make_alert(kpi="revenue_won", scope=Scope.TEAM, scope_id=str(team.pk))
    body = client.get(reverse("metrics:alert_list")).content.decode()
    month = period_of(timezone.now(), "month").previous().first_day.isoformat()
    assert f"/metrics/kpi/win_rate/?granularity=month&amp;period={month}&amp;rep={rep.pk}#drilldown" in body
    assert (
        f"/metrics/kpi/revenue_won/?granularity=month&amp;period={month}&amp;team={team.pk}#drilldown" in body
    )
    # The link shows the person's records for that month (the drill-down reads the filters).
    response = client.get(f"/metrics/kpi/win_rate/?granularity=month&period={month}&rep={rep.pk}")
    assert response.status_code == 200 and response.context["filters"].rep == rep


def test_a_rep_dismisses_their_own_alert_and_it_stays_dismissed(client):
    rep = make_user()
    chart("revenue_won", 144, scope=Scope.USER, scope_id=str(rep.pk))
    alerts_evaluate(now=NOW, anomalies=["week"])
    alert = Alert.objects.get()
    client.force_login(rep)
    response = client.post(reverse("metrics:alert_dismiss", args=[alert.pk]), headers=HTMX)
    assert response.status_code == 200 and "<html" not in response.content.decode()
    assert "alertDismissed" in response["HX-Trigger"]
    assert "Dismissed by" in response.content.decode() and "Dismiss</button>" not in response.content.decode()
    alert.refresh_from_db()
    assert alert.dismissed_by == rep and alert.dismissed_at is not None
    when = alert.dismissed_at
    # A second dismissal, and re-evaluation with new numbers, leave it dismissed (one row, same moment).
    assert client.post(reverse("metrics:alert_dismiss", args=[alert.pk])).status_code == 302
    snap("revenue_won", latest_week(), 200, scope=Scope.USER, scope_id=str(rep.pk))
    alerts_evaluate(now=NOW + timedelta(hours=1), anomalies=["week"])
    alert = Alert.objects.get()
    assert (alert.dismissed_at, alert.value) == (when, Decimal("200"))
    body = client.get(reverse("metrics:alert_list")).content.decode()
    assert _alerts_of(body) == []
    assert _alerts_of(client.get(reverse("metrics:alert_list"), {"state": "dismissed"}).content.decode()) == [
        str(alert.pk)
    ]


def test_another_persons_alert_is_404_to_see_or_dismiss(client):
    rep, other = make_user(), make_user()
    theirs, company = make_alert(other), make_alert()
    client.force_login(rep)
    for alert in (theirs, company):
        url = reverse("metrics:alert_dismiss", args=[alert.pk])
        assert client.post(url).status_code == 404
        assert client.post(url, headers=HTMX).status_code == 404
        assert client.get(url).status_code == 405
    assert not Alert.objects.filter(dismissed_at__isnull=False).exists()
    with pytest.raises(PermissionDenied):  # the service checks too
        alert_dismiss(alert=theirs, actor=rep)


def test_a_manager_dismisses_from_the_dashboard_and_goes_back(client):
    alert = make_alert()
    client.force_login(make_manager())
    response = client.post(reverse("metrics:alert_dismiss", args=[alert.pk]), {"next": "/metrics/?period=x"})
    assert response.status_code == 302 and response["Location"] == "/metrics/?period=x"
    response = client.post(
        reverse("metrics:alert_dismiss", args=[alert.pk]), {"next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("metrics:alert_list")


@pytest.mark.parametrize(
    "query",
    [
        {"kind": "bogus", "state": "\x00", "kpi": "<script>", "granularity": "9999-12-31"},
        {"kind": "x" * 10000, "page": "-1"},
        {"state": "dismissed", "kpi": "win_rate", "kind": "anomaly", "granularity": "month", "page": "99999"},
    ],
)
def test_bad_filters_get_a_field_error_never_a_500(client, query):
    make_alert()
    client.force_login(make_manager())
    for headers in ({}, HTMX):
        response = client.get(reverse("metrics:alert_list"), query, headers=headers)
        assert response.status_code == 200


def test_every_hostile_value_in_every_filter_and_the_dismissal_is_answered(client):
    """The sweep's hostile values (NUL, lone surrogates, 10 000 characters, years 0 and 9999, huge numbers,
    …) in each filter and in the dismissal's form, as a manager and a rep, plain and htmx: never a 500."""
    from tests.sweep_kit import HOSTILE, encode_pairs

    rep = make_user()
    alert = make_alert(rep)
    filters = ("state", "kind", "kpi", "granularity", "who", "page")
    for user in (make_manager(), rep):
        client.force_login(user)
        for (name, value), headers in itertools.product(
            [(n, v) for n in filters for v in HOSTILE.values()],
            ({}, HTMX),
        ):
            query = encode_pairs([(name, value), ("state", "all")])
            response = client.get(f"{reverse('metrics:alert_list')}?{query}", headers=headers)
            assert response.status_code == 200, (name, value)
        for value in HOSTILE.values():
            body = encode_pairs([("next", value)])
            url = reverse("metrics:alert_dismiss", args=[alert.pk])
            response = client.post(url, body, content_type="application/x-www-form-urlencoded")
            assert response.status_code == 302, value
            assert response["Location"].startswith("/metrics/")


def test_a_bad_filter_says_which_field_and_the_others_still_apply(client):
    rep = make_user()
    pace = make_alert(rep, kind="pace")
    make_alert(rep, kpi="revenue_won")
    client.force_login(make_manager())
    query = {"kind": "pace", "kpi": "no_such_kpi"}
    body = client.get(reverse("metrics:alert_list"), query).content.decode()
    field = body[body.index('<label for="id_kpi">') - 60 : body.index('id="id_kpi-error"') + 120]
    assert 'class="field field-invalid"' in field
    assert "no_such_kpi is not one of the available choices" in field
    assert _alerts_of(body) == [str(pace.pk)]
    # htmx swaps the list only: the list says which field was refused.
    fragment = client.get(reverse("metrics:alert_list"), query, headers=HTMX).content.decode()
    assert "KPI: Select a valid choice." in fragment and _alerts_of(fragment) == [str(pace.pk)]


def test_the_list_costs_the_same_for_three_alerts_or_thirty(client, django_assert_max_num_queries):
    client.force_login(make_manager())
    teams = [make_team() for _ in range(3)]
    for team in teams:
        make_alert(scope=Scope.TEAM, scope_id=str(team.pk), why={"scope": "user", "key": "1", "change": "2"})
    client.get(reverse("metrics:alert_list"))
    with django_assert_max_num_queries(8) as few:
        client.get(reverse("metrics:alert_list"))
    for i in range(27):
        person = make_user()
        alert = make_alert(person, kpi=["win_rate", "revenue_won", "csat"][i % 3], why={"scope": "team",
                           "key": str(teams[i % 3].pk), "change": "1.5", "n": 12})  # fmt: skip
        AlertNotice.objects.create(alert=alert, user=person, channel="app", kind="anomaly", told_at=NOW)
    with django_assert_max_num_queries(len(few.captured_queries)):
        body = client.get(reverse("metrics:alert_list")).content.decode()
    assert len(_alerts_of(body)) == 25  # a page


def test_the_dashboard_shows_the_active_alerts_at_the_same_cost_for_any_number(client):
    rep = make_user()
    client.force_login(rep)
    client.get(reverse("metrics:dashboard"))
    with CaptureQueriesContext(connection) as none:
        assert "No active alerts" in client.get(reverse("metrics:dashboard")).content.decode()
    mine = make_alert(rep)
    make_alert()
    with CaptureQueriesContext(connection) as some:
        body = client.get(reverse("metrics:dashboard")).content.decode()
    assert len(some.captured_queries) == len(none.captured_queries)
    panel = body[body.index('id="alerts-panel"') :]
    panel = panel[: panel.index("</section>")]
    assert _alerts_of(panel) == [str(mine.pk)] and "12.0 %, below the control limits" in panel
    client.force_login(make_manager())
    body = client.get(reverse("metrics:dashboard")).content.decode()
    assert 'Alerts <span class="badge badge-warning">2</span>' in body


# The weekly report
# ---------------------------------------------------------------------------------------------------------


def test_the_weekly_report_carries_the_alerts_each_recipient_may_see():
    boss = make_manager(email="boss@example.com")
    rep = make_user(email="rep@example.com", first_name="Ada")
    make_user(email="quiet@example.com")  # no alert of their own: no report
    company, mine, gone = make_alert(), make_alert(rep, kpi="revenue_won"), make_alert(kpi="csat")
    Alert.objects.filter(pk=gone.pk).update(dismissed_at=timezone.now())
    assert send_weekly_reports() == 2
    assert send_weekly_reports() == 0
    by_address = {message.to[0]: message for message in mail.outbox}
    assert set(by_address) == {"boss@example.com", "rep@example.com"}
    managers = by_address["boss@example.com"].body
    assert "2 active alerts" in managers and "Win rate — Whole company" in managers
    assert "Revenue won — Ada" in managers and "CSAT" not in managers.split("active alerts")[1]
    reps = by_address["rep@example.com"].body
    assert "1 active alert about your numbers" in reps and "Revenue won — Ada" in reps
    assert "Win rate" not in reps and "headline numbers" not in reps  # the company's numbers are for managers
    assert "#drilldown" in reps and "&amp;" not in reps
    told = set(AlertNotice.objects.filter(channel="email").values_list("alert", "user"))
    assert told == {(company.pk, boss.pk), (mine.pk, boss.pk), (mine.pk, rep.pk)}

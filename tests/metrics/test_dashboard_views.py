"""The dashboard and KPI detail pages: snapshot reads only, bounded queries, rep scope, targets, recompute."""

import re
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from accounts.models import Team
from crm.models import Customer
from metrics.models import KpiSnapshot, KpiTarget, Scope, SnapshotRun
from metrics.periods import period_of
from metrics.services import bump_generation
from tests.factories import make_customer, make_manager, make_team, make_user

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


def current(granularity: str = "month"):
    return period_of(timezone.now(), granularity)


def snap(kpi: str, period, value, *, scope: str = Scope.COMPANY, scope_id: str = "", **extra) -> KpiSnapshot:
    return KpiSnapshot.objects.create(
        kpi=kpi,
        granularity=period.granularity,
        period_start=period.start,
        period_end=period.end,
        scope=scope,
        scope_id=scope_id,
        value=None if value is None else Decimal(str(value)),
        computed_at=timezone.now(),
        definition_version=1,
        **extra,
    )


@pytest.fixture
def manager(client):
    user = make_manager(username="boss")
    client.force_login(user)
    return user


def test_empty_dashboard_looks_intentional(client, manager):
    body = client.get(reverse("metrics:dashboard")).content.decode()
    assert "No KPI numbers have been computed yet." in body
    assert "Win rate" in body and "—" in body
    assert "No data for this period" in body


def test_cards_show_value_change_target_and_sparkline(client, manager):
    # Last month: ended, so its progress is the value itself (a running month shows the pace).
    now = current().previous()
    before = now.previous()
    snap("win_rate", before, "20", numerator=20, denominator=100, sample_size=100)
    snap("win_rate", now, "45", numerator=45, denominator=100, sample_size=100)
    snap("churn_rate", before, "2", numerator=2, denominator=100, sample_size=100)
    snap("churn_rate", now, "12", numerator=12, denominator=100, sample_size=100)
    snap("sales_cycle_median", before, "30")
    snap("sales_cycle_median", now, "36")
    KpiTarget.objects.create(kpi="win_rate", granularity="month", period_start=now.start, value=Decimal("90"))
    body = client.get(reverse("metrics:dashboard"), {"period": now.first_day.isoformat()}).content.decode()
    assert "45.0 %" in body
    assert 'class="kpi-change good"' in body and "+25.0 pp" in body  # win rate up, significantly: good
    assert 'class="kpi-change bad"' in body and "+10.0 pp" in body  # churn up, significantly: bad
    # A median has no test: its change is shown, neutral.
    assert '<span class="kpi-change" title="Change against the previous period">▲ +20 %</span>' in body
    assert '<progress class="target-progress" value="50"' in body
    assert "<polyline points=" in body


def test_a_change_within_normal_variation_is_not_coloured(client, manager):
    """KPIS.md §10.2: 30 % of 40 against 25 % of 40 closed deals is noise (p = 0.62)."""
    now, before = current(), current().previous()
    snap("win_rate", before, "25", numerator=10, denominator=40, sample_size=40)
    snap("win_rate", now, "30", numerator=12, denominator=40, sample_size=40)
    body = client.get(reverse("metrics:dashboard")).content.decode()
    assert "+5.0 pp" in body and "within normal variation" in body
    assert 'class="kpi-change good"' not in body
    detail = client.get(reverse("metrics:kpi_detail", args=["win_rate"])).content.decode()
    assert "within normal variation" in detail and 'class="kpi-change good"' not in detail


def test_a_tiny_sample_is_muted_without_arrow_or_colour(client, manager):
    """NPS 100 from one answer is never a big green number."""
    now, before = current(), current().previous()
    snap("nps_relationship", before, "-20", sample_size=200, extra={"n": 200, "se": 6.0})
    snap("nps_relationship", now, "100", sample_size=1, extra={"n": 1, "se": 0.0})
    body = client.get(reverse("metrics:dashboard")).content.decode()
    cards = body[body.index('class="kpi-family"') :]
    card = cards[cards.index("NPS (relationship)") :][:1500]
    assert 'class="kpi-value kpi-low-n"' in card and "low n" in card
    assert "+120 points" in card and "▲" not in card and 'class="kpi-change good"' not in card


def test_filters_swap_the_body_with_htmx_and_bad_values_fall_back(client, manager):
    response = client.get(
        reverse("metrics:dashboard"), {"granularity": "quarter", "count": "6"}, headers=HTMX
    )
    assert response.status_code == 200
    assert b"<html" not in response.content and b'id="dashboard-body"' in response.content
    assert "HX-Request" in response["Vary"]
    response = client.get(
        reverse("metrics:dashboard"), {"granularity": "decade", "count": "x", "period": "2026-02-30"}
    )
    assert response.status_code == 200


def test_team_and_rep_filters_read_their_scope(client, manager):
    team = make_team(name="North")
    rep = make_user(team=team)
    snap("revenue_won", current(), "111", scope=Scope.TEAM, scope_id=str(team.pk))
    snap("revenue_won", current(), "222", scope=Scope.USER, scope_id=str(rep.pk))
    assert "111 EUR" in client.get(reverse("metrics:dashboard"), {"team": team.pk}).content.decode()
    assert "222 EUR" in client.get(reverse("metrics:dashboard"), {"rep": rep.pk}).content.decode()


def test_a_rep_sees_only_their_own_numbers(client):
    rep, mate = make_user(), make_user()
    snap("revenue_won", current(), "1000", scope=Scope.USER, scope_id=str(rep.pk))
    snap("revenue_won", current(), "9999", scope=Scope.USER, scope_id=str(mate.pk))
    snap("revenue_won", current(), "55555")
    client.force_login(rep)
    for params in ({}, {"rep": mate.pk}, {"team": "1"}):
        body = client.get(reverse("metrics:dashboard"), params).content.decode()
        assert "1,000 EUR" in body
        assert "9,999" not in body and "55,555" not in body
        assert "Win rate and sales cycle by rep" not in body
    # Company-only KPIs (no per-person number) are not offered to a rep.
    assert "CRM ROI" not in body
    assert client.get(reverse("metrics:kpi_detail", args=["crm_roi"])).status_code == 404


def test_dashboard_queries_do_not_grow_with_periods_or_reps(client, manager, django_assert_max_num_queries):
    def fill(reps: int, periods: int) -> None:
        for i in range(periods):
            period = current().previous(i)
            for code in ("revenue_won", "win_rate", "deals_won", "sales_cycle_median"):
                snap(code, period, i + 1)
            for r in range(reps):
                snap("win_rate", period, r, scope=Scope.USER, scope_id=str(make_user().pk if i == 0 else r))
                snap("win_rate", period, r, scope=Scope.TEAM, scope_id=str(r), numerator=r, denominator=10)

    fill(reps=2, periods=3)
    client.get(reverse("metrics:dashboard"))
    # The session and user, the run, targets, snapshots, the teams' snapshots and their names, …
    with django_assert_max_num_queries(13) as small:
        client.get(reverse("metrics:dashboard"), {"count": "36"})
    KpiSnapshot.objects.all().delete()
    fill(reps=20, periods=36)
    with django_assert_max_num_queries(len(small.captured_queries)):
        client.get(reverse("metrics:dashboard"), {"count": "36"})


def test_charts_are_json_for_the_static_script_not_inline_code(client, manager):
    snap("revenue_won", current(), "500")
    body = client.get(reverse("metrics:dashboard")).content.decode()
    assert '<script id="chart-revenue" type="application/json">' in body
    assert 'data-plotly="chart-revenue"' in body
    assert "Plotly.newPlot" not in body
    assert "vendor/plotly-strict" in body


def test_kpi_detail_shows_definition_numbers_breakdown_and_drilldown(client, manager):
    rep = make_user(first_name="Rita")
    customer = make_customer(rep, name="Drilled Customer AG")
    Customer.objects.filter(pk=customer.pk).update(became_customer_at=timezone.now())
    period = current()
    snap("new_customers", period, "1", numerator=Decimal(1))
    snap("new_customers", period, "1", scope=Scope.USER, scope_id=str(rep.pk))
    response = client.get(reverse("metrics:kpi_detail", args=["new_customers"]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "Definition" in body and "By person" in body and "Rita" in body
    assert "Drilled Customer AG" in body


def test_response_rate_page_breaks_down_by_survey_kind_and_trigger_for_managers_only(client, manager):
    period = current()
    snap("survey_response_rate", period, "40", numerator=Decimal(4), denominator=Decimal(10))
    snap("survey_response_rate", period, "75", scope=Scope.SURVEY, scope_id="nps")
    snap("survey_response_rate", period, "16.666667", scope=Scope.SURVEY, scope_id="csat")
    snap("survey_response_rate", period, "75", scope=Scope.TRIGGER, scope_id="periodic")
    body = client.get(reverse("metrics:kpi_detail", args=["survey_response_rate"])).content.decode()
    assert "By survey kind" in body and "By trigger" in body and "Daily trickle" in body
    assert body.index("By survey kind") < body.index("By trigger")
    client.force_login(make_user())
    body = client.get(reverse("metrics:kpi_detail", args=["survey_response_rate"])).content.decode()
    assert "By survey kind" not in body and "Daily trickle" not in body


def test_kpi_detail_drilldown_is_scoped_for_a_rep(client):
    rep, mate = make_user(), make_user()
    mine = make_customer(rep, name="Mine GmbH")
    theirs = make_customer(mate, name="Theirs GmbH")
    Customer.objects.filter(pk__in=[mine.pk, theirs.pk]).update(became_customer_at=timezone.now())
    client.force_login(rep)
    body = client.get(reverse("metrics:kpi_detail", args=["new_customers"])).content.decode()
    assert "Mine GmbH" in body and "Theirs GmbH" not in body
    fragment = client.get(
        reverse("metrics:kpi_detail", args=["new_customers"]), {"part": "denominator"}, headers=HTMX
    )
    assert b"<html" not in fragment.content and b"Theirs GmbH" not in fragment.content


def test_unknown_kpi_is_404(client, manager):
    assert client.get(reverse("metrics:kpi_detail", args=["no_such_kpi"])).status_code == 404


def test_manager_sets_a_target_and_sees_it(client, manager):
    response = client.post(
        reverse("metrics:target_set", args=["win_rate"]),
        {
            "value": "42.5",
            "granularity": "month",
            "period": timezone.localdate().isoformat(),
            "scope": "company",
        },
    )
    assert response.status_code == 302
    target = KpiTarget.objects.get(kpi="win_rate")
    assert target.value == Decimal("42.5") and target.period_start == current().start
    assert "42.5 %" in client.get(reverse("metrics:kpi_detail", args=["win_rate"])).content.decode()


def test_the_target_form_comes_when_asked_for_the_period_shown(client, manager):
    url = reverse("metrics:target_set", args=["win_rate"])
    page = client.get(reverse("metrics:kpi_detail", args=["win_rate"]), {"granularity": "quarter"}).content
    assert b"Save target" not in page and f'hx-get="{url}?granularity=quarter"'.encode() in page
    fragment = client.get(url, {"granularity": "quarter"}, headers=HTMX).content.decode()
    assert "<html" not in fragment and 'id="target-card"' in fragment and "Save target" in fragment
    assert '<option value="quarter" selected>' in fragment
    assert 'name="return_query" value="granularity=quarter"' in fragment
    # Without JavaScript the link opens the form as a page of its own.
    assert "<html" in client.get(url).content.decode()


@pytest.mark.parametrize(
    "data",
    [
        {"value": "abc"},
        {"value": "1e40"},
        {"scope": "team"},
        {"period": "1800-01-01"},
        {"granularity": "day"},
    ],
)
def test_bad_target_input_is_a_message_not_a_500(client, manager, data):
    payload = {"value": "10", "granularity": "month", "period": "2026-05-01", "scope": "company", **data}
    response = client.post(reverse("metrics:target_set", args=["win_rate"]), payload, follow=True)
    assert response.status_code == 200
    assert not KpiTarget.objects.exists()
    assert "message-error" in response.content.decode()


def test_reps_cannot_set_targets_or_recompute(client):
    client.force_login(make_user())
    assert client.post(reverse("metrics:target_set", args=["win_rate"]), {"value": "1"}).status_code == 404
    assert client.get(reverse("metrics:target_set", args=["win_rate"])).status_code == 404
    assert client.post(reverse("metrics:recompute")).status_code == 404
    assert client.get(reverse("metrics:recompute_status")).status_code == 404


def test_freshness_says_stale_and_failed(client, manager):
    SnapshotRun.objects.create(
        kind="recent",
        status="ok",
        started_at=timezone.now() - timedelta(hours=3),
        finished_at=timezone.now() - timedelta(hours=3),
    )
    SnapshotRun.objects.create(kind="recent", status="failed", started_at=timezone.now(), error="boom")
    body = client.get(reverse("metrics:dashboard")).content.decode()
    assert "Data as of" in body and "The last recompute failed" in body


def test_recompute_status_polls_until_the_run_finishes(client, manager):
    since = timezone.now()
    run = SnapshotRun.objects.create(kind="recent", status="running", started_at=since + timedelta(seconds=1))
    response = client.get(reverse("metrics:recompute_status"), {"since": since.isoformat()})
    assert b"<progress" in response.content and b'hx-trigger="every 1s"' in response.content
    SnapshotRun.objects.filter(pk=run.pk).update(status="ok", finished_at=timezone.now())
    response = client.get(reverse("metrics:recompute_status"), {"since": since.isoformat()})
    assert response["HX-Refresh"] == "true"


def test_data_quality_page_links_failures_to_their_records(client, manager):
    rep = make_user()
    broken = make_customer(rep, name="No Contact Ltd", email="", phone="")
    body = client.get(reverse("metrics:data_quality")).content.decode()
    assert "Records to fix" in body
    assert broken.get_absolute_url() in body
    # An unknown rule is the first rule with something to fix; a rule without failures says so.
    fragment = client.get(reverse("metrics:data_quality"), {"rule": "nonexistent"}, headers=HTMX)
    assert fragment.status_code == 200 and b"<html" not in fragment.content
    assert broken.get_absolute_url().encode() in fragment.content
    fragment = client.get(reverse("metrics:data_quality"), {"rule": "deal_term_order"}, headers=HTMX)
    assert b"Nothing to fix here." in fragment.content


def test_data_quality_counts_once_per_run_and_lists_live(client, manager, django_assert_max_num_queries):
    rep = make_user()
    broken = make_customer(rep, name="No Contact Ltd", email="", phone="")
    now = timezone.now()
    SnapshotRun.objects.create(kind="recent", status="ok", started_at=now, finished_at=now)
    bump_generation()
    url = reverse("metrics:data_quality") + "?rule=customer_contact"
    with django_assert_max_num_queries(40) as first:
        body = client.get(url).content.decode()
    assert broken.get_absolute_url() in body and "Counted" in body
    Customer.objects.filter(pk=broken.pk).update(email="fixed@example.com")
    with django_assert_max_num_queries(len(first.captured_queries) - 3):  # no scan per model
        body = client.get(url).content.decode()
    rules = body[body.index("<tbody>") : body.index("</tbody>")]
    assert '<td class="num">1</td>' in rules  # the count of the last run
    assert broken.get_absolute_url() not in body  # the list is live: the fixed record has left it


def test_data_quality_rules_name_what_they_check_and_show_small_shares(client, manager):
    rep = make_user()
    make_customer(rep, name="No Contact Ltd", email="", phone="")
    template = make_customer(rep, name="Complete 0", email="c0@example.com")
    columns = [f.attname for f in Customer._meta.concrete_fields if not f.primary_key]
    fields = {name: getattr(template, name) for name in columns}
    Customer.objects.bulk_create(
        Customer(**{**fields, "name": f"Complete {i}", "email": f"c{i}@example.com"}) for i in range(1, 1200)
    )
    body = client.get(reverse("metrics:data_quality")).content.decode()
    rules = body[body.index("<tbody>") : body.index("</tbody>")]
    assert "· Customer</span>" in rules and "· </span>" not in rules  # the model, not a dangling dot
    assert "&lt; 0.1 %" in rules  # 1 customer in 1 201 fails the contact rule: not "0 %"


def test_manager_pages_are_404_for_reps_and_render_for_managers(client, manager):
    for name in ("metrics:adoption", "metrics:segments", "metrics:go_live", "metrics:data_quality"):
        assert client.get(reverse(name)).status_code == 200, name
    client.force_login(make_user())
    for name in ("metrics:adoption", "metrics:segments", "metrics:go_live", "metrics:data_quality"):
        assert client.get(reverse(name)).status_code == 404, name


def test_cards_are_rendered_once_per_recompute_and_target_change(
    client, manager, django_assert_max_num_queries
):
    def finished_run() -> None:
        now = timezone.now()
        SnapshotRun.objects.create(kind="recent", status="ok", started_at=now, finished_at=now)
        bump_generation()

    snap("win_rate", current(), "25")
    finished_run()
    with django_assert_max_num_queries(20) as rendered:
        assert "25.0 %" in client.get(reverse("metrics:dashboard")).content.decode()
    KpiSnapshot.objects.filter(kpi="win_rate").update(value=Decimal("30"))
    with django_assert_max_num_queries(len(rendered.captured_queries) - 3):
        body = client.get(reverse("metrics:dashboard")).content.decode()
    assert "25.0 %" in body  # the cards of the last recompute, from the cache
    # Another person's page is rendered for them, never taken from someone else's cache.
    client.force_login(make_manager())
    assert "30.0 %" in client.get(reverse("metrics:dashboard")).content.decode()
    client.force_login(manager)
    KpiTarget.objects.create(
        kpi="win_rate", granularity="month", period_start=current().start, value=Decimal("60")
    )
    body = client.get(reverse("metrics:dashboard")).content.decode()
    assert "30.0 %" in body and "Target 60.0 %" in body  # a new target shows at once
    KpiSnapshot.objects.filter(kpi="win_rate").update(value=Decimal("45"))
    finished_run()
    assert "45.0 %" in client.get(reverse("metrics:dashboard")).content.decode()


def test_nps_is_a_whole_number_on_cards_pages_exports_and_the_weekly_report(client, manager):
    """KPIS.md §1: NPS is an integer from −100 to +100; it is stored unrounded."""
    from metrics.services.weekly_report import weekly_report_cards

    now, before = current(), current().previous()
    snap("nps_relationship", before, "21.6", sample_size=40)
    snap("nps_relationship", now, "33.3333", sample_size=40)
    body = client.get(reverse("metrics:dashboard")).content.decode()
    assert ">33<" in body.replace(" ", "") or "33</" in body
    assert "33.3" not in body and "+12 points" in body
    page = client.get(reverse("metrics:kpi_detail", args=["nps_relationship"])).content.decode()
    assert "33.3" not in page
    export = client.get(reverse("metrics:kpi_export", args=["nps_relationship"]), {"format": "csv"})
    lines = (
        b"".join(export.streaming_content).decode().splitlines()
        if export.streaming
        else export.text.splitlines()
    )
    assert any(line.split(",")[3] == "33" for line in lines[1:])
    week, week_before = current("week"), current("week").previous()
    snap("nps_relationship", week_before, "-0.4", sample_size=40)
    _filters, cards = weekly_report_cards(now=week.start + (week.end - week.start) / 2)
    card = next(c for c in cards if c.kpi.code == "nps_relationship")
    assert card.display == "0"


def test_trend_draws_periods_below_the_minimum_sample_hollow():
    from metrics import charts
    from metrics.kpis import get_kpi
    from metrics.selectors import SnapshotValues

    def values(value, n):
        return SnapshotValues(Decimal(value), None, None, n, {}, False, timezone.now(), 1)

    kpi, periods = get_kpi("nps_relationship"), [current().previous(), current()]
    series = {periods[0].first_day: values("20", 200), periods[1].first_day: values("100", 1)}
    spec = charts.kpi_trend_chart(kpi=kpi, periods=periods, series=series, targets={}, unit_label="")
    assert spec["data"][0]["marker"]["symbol"] == ["circle", "circle-open"]
    won = get_kpi("deals_won")
    series = {periods[0].first_day: values("3", 3), periods[1].first_day: values("12", 12)}
    spec = charts.kpi_trend_chart(kpi=won, periods=periods, series=series, targets={}, unit_label="")
    assert spec["data"][0]["marker"]["color"][0] == "rgba(0,0,0,0)"


def test_pace_to_target_projects_counts_and_reads_ratios_as_they_stand():
    """KPIS.md §10.3: halfway through the month, 30 deals won projects to 60: 75 % of a target of 80."""
    from metrics import dashboard
    from metrics.kpis import get_kpi
    from metrics.periods import Period
    from metrics.selectors import SnapshotValues

    def card(code, value, target, now, period):
        values = SnapshotValues(Decimal(value), None, None, None, {}, False, now, 1)
        goal = KpiTarget(kpi=code, granularity="month", period_start=period.start, value=Decimal(target))
        return dashboard.Card(
            kpi=get_kpi(code), snapshot=values, previous=None, target=goal, period=period, now=now
        )

    april = Period("month", date(2026, 4, 1))
    halfway = april.start + (april.end - april.start) / 2
    won = card("deals_won", "30", "80", halfway, april)
    assert won.pace["projected"] == Decimal(60) and won.pace["percent"] == 75
    assert won.pace["on_track"] is False and won.target_progress == 75
    # A ratio to date is its own projection: 40 % against a target of 50 % is 80 %.
    assert card("win_rate", "40", "50", halfway, april).pace["percent"] == 80
    # Lower is better: a 3-day cycle against a target of 4 days is on track.
    assert card("sales_cycle_median", "3", "4", halfway, april).pace["on_track"] is True
    # Too early to say before a fifth of the period; after its end the value is final (no pace).
    assert card("deals_won", "2", "80", april.start + timedelta(days=3), april).pace == {"early": True}
    assert card("deals_won", "2", "80", april.start + timedelta(days=3), april).target_progress is None
    done = card("deals_won", "60", "80", april.end + timedelta(days=1), april)
    assert done.pace is None and done.target_progress == 75


def test_dashboard_card_shows_the_pace(client, manager):
    now = current()
    snap("deals_won", now, "1")
    KpiTarget.objects.create(
        kpi="deals_won", granularity="month", period_start=now.start, value=Decimal("1000")
    )
    body = client.get(reverse("metrics:dashboard")).content.decode()
    elapsed = (timezone.now() - now.start) / (now.end - now.start)
    assert ("too early for a pace" in body) if elapsed < 0.2 else ("at this pace:" in body)


def win_rate_by_team():
    """Last month's win rate and the month before, per team: North won 10 of 20 then 12 of 20, South 5
    of 20 then 3 of 10 (the company 37.5 % then 50 %)."""
    north, south = make_team(name="North"), make_team(name="South")
    now, before = current().previous(), current().previous().previous()
    plan = ((before, {north: (10, 20), south: (5, 20)}), (now, {north: (12, 20), south: (3, 10)}))
    for period, counts in plan:
        won = sum(c[0] for c in counts.values())
        closed = sum(c[1] for c in counts.values())
        total = {"numerator": won, "denominator": closed, "sample_size": closed}
        snap("win_rate", period, str(100 * won / closed), **total)
        for team, (x, n) in counts.items():
            snap("win_rate", period, str(100 * x / n), scope=Scope.TEAM, scope_id=str(team.pk), numerator=x,
                 denominator=n, sample_size=n)  # fmt: skip
    return north, now


def test_kpi_page_explains_the_change_by_team_for_managers(client, manager):
    _north, now = win_rate_by_team()
    url = reverse("metrics:kpi_detail", args=["win_rate"])
    body = client.get(url, {"period": now.first_day.isoformat()}).content.decode()
    section = body[body.index("Why it changed") :]
    # North: rate +5.0 pp, mix +10.0 pp; South: rate +2.5, mix −5.0 (as in test_contribution.py).
    assert "North" in section and "+15.0 pp" in section and "+5.0 pp" in section and "+10.0 pp" in section
    assert "South" in section and "+2.5 pp" in section and "-5.0 pp" in section


def test_cards_and_scorecard_name_the_team_that_moved_the_number(client, manager):
    north, now = win_rate_by_team()
    query = {"period": now.first_day.isoformat()}
    body = client.get(reverse("metrics:dashboard"), query).content.decode()
    # Win rate 37.5 % → 50 %: North's own rate rose 5.0 pp (South's 2.5 pp), ranked by rate effect.
    card = body[body.index('class="kpi-label">Win rate<') :]
    assert "Mostly North: +5.0 pp (n = 20)" in card[: card.index("</a>")]
    scorecard = body[body.index("scorecard-title") : body.index("</table>")]
    assert "Mostly North: +5.0 pp (n = 20)" in scorecard
    # Below the minimum sample a team is not named (it stays in the KPI page's table).
    KpiSnapshot.objects.filter(kpi="win_rate", scope=Scope.TEAM, scope_id=str(north.pk)).update(sample_size=2)
    KpiSnapshot.objects.filter(kpi="win_rate", scope=Scope.TEAM, scope_id=str(north.pk)).update(denominator=2)
    bump_generation()
    assert "Mostly North" not in client.get(reverse("metrics:dashboard"), query).content.decode()
    # A rep's dashboard names no one.
    rep = make_user(team=north)
    client.force_login(rep)
    assert "Mostly" not in client.get(reverse("metrics:dashboard"), query).content.decode()


def test_the_sentence_of_a_running_month_compares_the_same_days(client, manager):
    north, south = make_team(name="North"), make_team(name="South")
    now = current()
    span = {
        "from": now.previous().first_day.isoformat(),
        "until": now.previous().first_day.isoformat(),
        "days": 1,
    }

    def compared(value):
        return {"compared": {"value": value, "numerator": None, "denominator": None, "n": None, **span}}

    # So far this month North sold 500 (100 on the same days last month), South 50 (300).
    snap("revenue_won", now, "550", extra=compared(400))
    snap("revenue_won", now, "500", scope=Scope.TEAM, scope_id=str(north.pk), extra=compared(100))
    snap("revenue_won", now, "50", scope=Scope.TEAM, scope_id=str(south.pk), extra=compared(300))
    # The whole of last month, which a running month is not compared with.
    snap("revenue_won", now.previous(), "1000")
    snap("revenue_won", now.previous(), "1000", scope=Scope.TEAM, scope_id=str(north.pk))
    body = client.get(reverse("metrics:dashboard")).content.decode()
    card = body[body.index('class="kpi-label">Revenue won<') :]
    assert "Mostly North: +400 EUR" in card[: card.index("</a>")]


def test_a_running_months_pipeline_is_explained_by_the_teams_levels_on_the_same_day(client, manager):
    """A stock adds up over the teams too: its change is split by the teams' levels now and at the same
    offset of the month before."""
    north, south = make_team(name="North"), make_team(name="South")
    now = current()
    first = now.previous().first_day.isoformat()

    def compared(value):
        return {"compared": {"value": value, "numerator": None, "denominator": None, "n": 5, "from": first,
                             "until": first, "days": 1}}  # fmt: skip

    snap("pipeline_value", now, "9000", extra=compared(7000))
    snap("pipeline_value", now, "2000", scope=Scope.TEAM, scope_id=str(north.pk), extra=compared(4000))
    snap("pipeline_value", now, "7000", scope=Scope.TEAM, scope_id=str(south.pk), extra=compared(3000))
    body = client.get(reverse("metrics:dashboard")).content.decode()
    card = body[body.index('class="kpi-label">Pipeline value<') :]
    card = card[: card.index("</a>")]
    assert "Mostly South: +4,000 EUR" in card or "Mostly South: +4000 EUR" in card
    assert "+29 %" in card  # 9 000 against 7 000 on the same day of the month before


def test_the_download_of_a_running_month_says_what_it_is_compared_with(client, manager):
    now = current()
    first = now.previous().first_day
    compared = {"value": 300.0, "from": first.isoformat(), "until": (first + timedelta(days=3)).isoformat()}
    snap("revenue_won", now, "400", extra={"compared": {**compared, "days": 3}})
    snap("revenue_won", now.previous(), "900")
    export = client.get(reverse("metrics:kpi_export", args=["revenue_won"]), {"format": "csv"})
    lines = b"".join(export.streaming_content).decode().splitlines()
    assert lines[0].endswith("To date: compared with,Value then")
    assert lines[-1].endswith(f"{first.isoformat()} – {(first + timedelta(days=2)).isoformat()},300.0")
    assert lines[-2].endswith(",,")  # the month before has ended: compared with nothing


def test_kpi_page_explains_a_change_by_customer_segment(client, manager):
    now = current().previous()
    for period, amounts in (
        (now.previous(), {"smb": 500, "enterprise": 4000}),
        (now, {"smb": 700, "enterprise": 1000}),
    ):
        snap("revenue_won", period, str(sum(amounts.values())))
        for segment, amount in amounts.items():
            snap("revenue_won", period, str(amount), scope=Scope.SEGMENT, scope_id=segment)
    url = reverse("metrics:kpi_detail", args=["revenue_won"])
    body = client.get(url, {"period": now.first_day.isoformat()}).content.decode()
    assert "&lt;" not in body  # the breakdowns are HTML, not escaped text (before the first recompute too)
    section = body[body.index("By customer segment") :]
    assert "Enterprise" in section and "Small business" in section
    why = section[section.index("Why it changed") :]
    assert "−3,000 EUR" in why and "+200 EUR" in why
    # Not for a rep: segments hold other people's customers.
    client.force_login(make_user())
    assert (
        "By customer segment" not in client.get(url, {"period": now.first_day.isoformat()}).content.decode()
    )


def test_kpi_page_queries_do_not_grow_with_teams_and_people(client, manager, django_assert_max_num_queries):
    now = current().previous()
    query = {"period": now.first_day.isoformat()}

    def add_teams(count):
        for _ in range(count):
            team = make_team(name=f"Team {Team.objects.count() + 1}")
            rep = make_user(team=team)
            for period in (now, now.previous()):
                snap(
                    "win_rate",
                    period,
                    "40",
                    scope=Scope.TEAM,
                    scope_id=str(team.pk),
                    numerator=4,
                    denominator=10,
                )
                snap(
                    "win_rate",
                    period,
                    "40",
                    scope=Scope.USER,
                    scope_id=str(rep.pk),
                    numerator=4,
                    denominator=10,
                )

    snap("win_rate", now, "40", numerator=8, denominator=20)
    add_teams(2)
    url = reverse("metrics:kpi_detail", args=["win_rate"])
    with django_assert_max_num_queries(40) as few:
        assert "Why it changed" in client.get(url, query).content.decode()
    add_teams(10)
    bump_generation()  # the breakdowns are rendered again, not taken from the cache
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert "Team 12" in client.get(url, query).content.decode()


def test_go_live_page_marks_significance_per_row_and_shows_the_season_a_year_earlier(client, manager):
    from crm.models import CompanySettings
    from metrics.periods import Period

    company = CompanySettings.load()
    company.go_live_date = date(2026, 1, 1)
    company.save()
    go_live = Period("month", date(2026, 1, 1))
    # Win rate: 10 of 50 a month before, 20 of 50 after: 60 of 300 against 120 of 300, significant.
    # Churn: 5 of 100 a month before, 6 of 100 after: 30 of 600 against 36 of 600, noise.
    for steps, won, churned in ((range(1, 7), 10, 5), (range(-5, 1), 20, 6)):
        for step in steps:
            month = go_live.previous(step)
            snap("win_rate", month, str(2 * won), numerator=won, denominator=50, sample_size=50)
            snap("churn_rate", month, str(churned), numerator=churned, denominator=100, sample_size=100)
    for step in range(7, 13):  # January to June 2025
        snap("win_rate", go_live.previous(step), "24", numerator=12, denominator=50, sample_size=50)
    body = client.get(reverse("metrics:go_live")).content.decode()
    win_rate = body[body.index(">Win rate<") :][:900]
    assert "+20.0 pp" in win_rate and 'class="kpi-change good"' in win_rate and "(significant)" in win_rate
    assert "24.0 %" in win_rate  # the same months a year earlier
    churn = body[body.index(">Customer churn rate<") :][:900]
    assert "+1.0 pp" in churn and "within normal variation" in churn and 'class="kpi-change bad"' not in churn


def test_months_taken_together_test_their_total_counts():
    from metrics import dashboard
    from metrics.kpis import get_kpi

    def card(after, before):
        return dashboard.Card(
            kpi=get_kpi("deals_won"), snapshot=None, previous=None, target=None, exposure=(6, 6),
            counts=(Decimal(after), Decimal(before)),
        )  # fmt: skip

    assert card(66, 60).p_value > 0.5
    assert card(120, 60).p_value < 0.001


def test_an_agents_dashboard_leads_with_service_and_leaves_out_empty_families(client):
    from tests.factories import make_agent

    agent = make_agent()
    client.force_login(agent)
    now = current()
    snap("frt_median", now, "2.5", scope=Scope.USER, scope_id=str(agent.pk), sample_size=12)
    # The agent's CSAT is that of the tickets they were assigned, not of customers they would own.
    snap("csat", now, "90", scope=Scope.AGENT, scope_id=str(agent.pk), numerator=27, denominator=30)
    snap("csat", now, "11", scope=Scope.USER, scope_id=str(agent.pk), numerator=1, denominator=9)
    body = client.get(reverse("metrics:dashboard")).content.decode()
    families = re.findall(r'<h2 id="family-\d+">([^<]+)</h2>', body)
    assert families == ["Service", "Satisfaction"]  # no wall of empty sales and retention cards
    assert "90.0 %" in body and "11.0 %" not in body
    page = client.get(reverse("metrics:kpi_detail", args=["csat"])).content.decode()
    assert "90.0 %" in page and "By support agent" in page


def test_a_reps_dashboard_leads_with_their_pipeline_and_tasks(client, django_assert_max_num_queries):
    from crm.models import Activity
    from tests.factories import make_deal

    rep, mate = make_user(), make_user()
    mine, theirs = make_customer(rep), make_customer(mate)
    make_deal(mine, amount=Decimal(1200))
    make_deal(mine, amount=Decimal(300))
    make_deal(theirs, amount=Decimal(99999))
    now = timezone.now()
    for due in (now - timedelta(days=2), now + timedelta(minutes=1), now + timedelta(days=3)):
        Activity.objects.create(
            kind=Activity.Kind.TASK, customer=mine, user=rep, subject="Call", due_at=due, created_at=now
        )
    client.force_login(rep)
    client.get(reverse("metrics:dashboard"))
    with django_assert_max_num_queries(9):
        body = client.get(reverse("metrics:dashboard")).content.decode()
    strip = body[body.index('class="card my-day"') :]
    strip = re.sub(r"\s+", " ", strip[: strip.index("</section>")])
    assert "<strong>2</strong> open deals · 1,500 EUR" in strip
    assert "99,999" not in strip
    # Due by tonight: the overdue one and the one due in a minute (unless that is already tomorrow).
    tomorrow = timezone.localdate(now + timedelta(minutes=1)) != timezone.localdate(now)
    due = "<strong>1</strong> task due by tonight" if tomorrow else "<strong>2</strong> tasks due by tonight"
    assert due in strip and "1 overdue" in strip
    # Managers and agents see no such strip.
    client.force_login(make_manager())
    assert "my-day" not in client.get(reverse("metrics:dashboard")).content.decode()


def test_a_managers_dashboard_keeps_every_family(client, manager):
    body = client.get(reverse("metrics:dashboard")).content.decode()
    families = re.findall(r'<h2 id="family-\d+">([^<]+)</h2>', body)
    assert families[:2] == ["Sales", "Retention"] and "Service" in families


def test_the_scorecard_opens_the_managers_dashboard_with_a_verdict_per_question(client, manager):
    now = current().previous()  # a complete month
    before = now.previous()
    snap("win_rate", before, "20", numerator=20, denominator=100, sample_size=100)
    snap("win_rate", now, "45", numerator=45, denominator=100, sample_size=100)
    snap("churn_rate", before, "5", numerator=5, denominator=100, sample_size=100)
    snap("churn_rate", now, "6", numerator=6, denominator=100, sample_size=100)
    snap("nps_relationship", now, "100", sample_size=1, extra={"n": 1, "se": 0.0})
    body = client.get(reverse("metrics:dashboard"), {"period": now.first_day.isoformat()}).content.decode()
    card = body[body.index("Scorecard") : body.index('class="kpi-family"')]
    rows = dict(
        re.findall(r'<th scope="row">([^<]+)</th>\s*<td><span class="badge verdict verdict-(\w+)"', card)
    )
    assert rows["Are sales growing?"] == "better"  # a significant rise of the win rate
    assert rows["Do customers stay?"] == "steady"  # +1 pp of churn is within normal variation
    assert rows["Are customers satisfied?"] == "no_data"  # NPS 100 from one answer
    assert list(rows)[:3] == ["Are customers satisfied?", "Are sales growing?", "Do customers stay?"]
    client.force_login(make_user())
    assert "Scorecard" not in client.get(reverse("metrics:dashboard")).content.decode()


def test_a_running_period_says_it_is_to_date_and_links_to_the_last_complete_one(client, manager):
    body = client.get(reverse("metrics:dashboard")).content.decode()
    month = current()
    days = (month.next().first_day - month.first_day).days
    elapsed = (timezone.localdate() - month.first_day).days + 1
    assert f"month to date, {elapsed} of {days} days" in body
    link = f'href="?period={month.previous().first_day.isoformat()}"'
    assert link in body and "Show the last complete period" in body
    complete = client.get(reverse("metrics:dashboard"), {"period": month.previous().first_day.isoformat()})
    assert "to date" not in complete.content.decode()


def test_a_running_month_is_compared_with_the_same_days_of_the_month_before(client, manager):
    """KPIS.md §10.1: 12 deals won so far against 10 in the same days of last month is +20 %, not the
    −70 % against all 40 of last month."""
    now = current()
    first = now.previous().first_day
    compared = {
        "value": 10.0,
        "n": None,
        "from": first.isoformat(),
        "until": (first + timedelta(days=6)).isoformat(),
    }
    snap("deals_won", now.previous(), "40")
    snap("deals_won", now, "12", extra={"compared": {**compared, "days": 6}})
    body = client.get(reverse("metrics:dashboard")).content.decode()
    card = body[body.index('class="kpi-family"') :]
    card = card[card.index("Deals won") :][:1500]
    assert "+20 %" in card and "−70 %" not in card and "-70 %" not in card
    assert f"vs {date_format(first, 'MONTH_DAY_FORMAT')} – " in card
    # Last month, complete, is compared with the whole month before it.
    done = client.get(reverse("metrics:dashboard"), {"period": first.isoformat()}).content.decode()
    assert "vs " + date_format(first, "MONTH_DAY_FORMAT") not in done


@pytest.mark.parametrize("granularity", ["month", "year"])
def test_adoption_page_counts_from_the_usage_facts_not_the_raw_events(
    client, manager, granularity, django_assert_max_num_queries
):
    from metrics.services import snapshots_recompute
    from tests.factories import make_login, make_usage_event

    rita, otto = (
        make_user(first_name="Rita", last_name="Rep"),
        make_user(first_name="Otto", last_name="Other"),
    )
    period = period_of(timezone.now(), granularity).previous()  # wholly past
    day = period.start + timedelta(hours=10)
    make_usage_event(rita, day, verb="create")
    make_usage_event(rita, day + timedelta(hours=1))
    make_usage_event(rita, day + timedelta(days=1))
    make_usage_event(rita, day, via="import", verb="create")  # an import is not the person's action
    make_login(rita, day)
    snapshots_recompute(
        start=period.start, end=period.end, granularities=[granularity], kpis=["adoption_rate"]
    )
    make_usage_event(otto, day)  # after the run: in the next one, not on the page yet

    with django_assert_max_num_queries(14):
        response = client.get(
            reverse("metrics:adoption"),
            {"granularity": granularity, "period": period.first_day.isoformat(), "sort": "-actions"},
        )
    rows = {r["name"]: r for r in response.context["rows"]}
    assert (rows["Rita Rep"]["actions"], rows["Rita Rep"]["created"], rows["Rita Rep"]["logins"]) == (3, 1, 1)
    assert rows["Rita Rep"]["active_days"] == 2
    assert rows["Otto Other"]["actions"] == 0
    assert response.context["rows"][0]["name"] == "Rita Rep"  # sorted by actions, most first


def test_segments_page_compares_channels_like_for_like_and_offers_the_last_complete_period(client, manager):
    now = current()
    span = {"from": now.previous().first_day.isoformat(), "until": now.previous().first_day.isoformat()}
    compared = {"compared": {"value": 40.0, "numerator": 40, "denominator": 100, "n": 100, "days": 1, **span}}
    snap("win_rate", now, "60", scope=Scope.SOURCE, scope_id="website", numerator=60, denominator=100,
         sample_size=100, extra=compared)  # fmt: skip
    snap("win_rate", now.previous(), "10", scope=Scope.SOURCE, scope_id="website", numerator=10,
         denominator=100, sample_size=100)  # fmt: skip
    body = client.get(reverse("metrics:segments")).content.decode()
    channels = body[body.index('id="channels"') :]
    assert "to date" in channels and "Show the last complete period" in channels
    # +20 points against the same days of last month (40 %), not +50 against the whole month (10 %).
    assert "60.0 %" in channels and "+20.0 pp" in channels and "+50.0" not in channels
    assert 'name="granularity"' in body and 'name="period"' in body  # the period filter
    # The last complete month: its own value, no "to date".
    body = client.get(reverse("metrics:segments"), {"period": now.previous().first_day.isoformat()})
    channels = body.content.decode()[body.content.decode().index('id="channels"') :]
    assert "10.0 %" in channels and "to date" not in channels


def test_segments_page_shows_the_moves_since_the_first_of_last_month(client, manager):
    from metrics.models import CustomerRfm

    today = timezone.localdate()
    month_start = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    yesterday = today - timedelta(days=1)
    customers = [make_customer(make_user(), name=f"Kunde {i}") for i in range(3)]
    for customer, before, after in zip(
        customers, ["champions", "champions", "loyal"], ["lost", "lost", "loyal"], strict=True
    ):
        CustomerRfm.objects.create(customer=customer, as_of=month_start, segment=before)
        CustomerRfm.objects.create(customer=customer, as_of=yesterday, segment=after)
        CustomerRfm.objects.create(customer=customer, as_of=today, segment=after)
    body = client.get(reverse("metrics:segments")).content.decode()
    moves = body[body.index("Biggest moves") :]
    assert 'Champions → <strong>Lost</strong> <span class="muted">2</span>' in moves.replace("\n", "")
    # Compared with the month start, not with last night (which would show no move at all).
    assert date_format(month_start, "SHORT_DATE_FORMAT") in body

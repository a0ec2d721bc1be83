"""The customer health pages and KPIs: who sees which scores, the settings only a manager changes (and how
bad input is refused), the KPIs read from the stored scores with their drill-down, and the query bounds."""

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from crm.models import Activity, Customer
from metrics.health.models import HealthSettings
from metrics.health.services import health_refresh, health_settings_update
from metrics.kpis.health import AT_RISK_SHARE, BACKTEST_AUC, SCORE_MEAN
from metrics.models import Scope
from metrics.periods import period_of
from tests.factories import (
    make_agent,
    make_answer,
    make_customer,
    make_manager,
    make_survey,
    make_ticket,
    make_user,
)
from tests.metrics.kit import compute

pytestmark = pytest.mark.django_db

ZONE = ZoneInfo("Pacific/Kiritimati")
NOW = datetime(2026, 3, 1, 15, tzinfo=ZONE)
MARCH = date(2026, 3, 1)


@pytest.fixture(autouse=True)
def kiritimati(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"


def _active(owner, name: str) -> Customer:
    return make_customer(owner, name=name, status="active", at=datetime(2025, 1, 10, 9, tzinfo=ZONE))


def _called(customer: Customer) -> Customer:
    """Called 10 and 40 days before 1 March: 20 + 10 + 15 + 10 + 15 + 5 + 10 = 85, healthy (no answer, no
    complaint, no renewal due, no revenue either year)."""
    for days in (10, 40):
        at = datetime(2026, 3, 1, 11, tzinfo=ZONE) - timedelta(days=days)
        Activity.objects.create(
            kind="call", subject="Hi", user=customer.owner, customer=customer, created_at=at, done_at=at
        )
    return customer


@pytest.fixture
def world():
    """Two reps, an agent, a manager. Rep 1: one healthy customer (85) and two never called (55, at risk);
    rep 2: one never called (at risk). The agent works a ticket of rep 1's healthy customer. Scored as of
    1 March 2026."""
    rep1, rep2 = make_user(username="rep_one"), make_user(username="rep_two")
    agent, manager = make_agent(username="agent_one"), make_manager(username="boss")
    healthy = _called(_active(rep1, "Healthy One GmbH"))
    quiet = [_active(rep1, "Quiet One GmbH"), _active(rep1, "Quiet Two GmbH")]
    other = _active(rep2, "Secret Holdings AG")
    make_ticket(healthy, assignee=agent, subject="Question")
    make_ticket(other, assignee=make_agent(username="agent_two"), subject="Secret ticket")
    health_refresh(now=NOW)
    return {"rep1": rep1, "rep2": rep2, "agent": agent, "manager": manager, "healthy": healthy,
            "quiet": quiet, "other": other}  # fmt: skip


def _get(client, user, url, **headers):
    client.force_login(user)
    return client.get(url, headers=headers)


# Who sees what
# ---------------------------------------------------------------------------------------------------------


def test_manager_sees_every_score_with_its_components(client, world):
    body = _get(client, world["manager"], reverse("metrics:health")).content.decode()
    for name in ("Healthy One GmbH", "Quiet One GmbH", "Quiet Two GmbH", "Secret Holdings AG"):
        assert name in body
    # Components and what the points came from: the quiet ones lost all 20 points of recent contact.
    assert "Recent contact <strong>0</strong>/20" in body and "no contact or purchase yet" in body
    assert "Weights and bands" in body


def test_rep_sees_only_their_own_customers_scores(client, world):
    response = _get(client, world["rep1"], reverse("metrics:health"))
    body = response.content.decode()
    assert "Healthy One GmbH" in body and "Quiet One GmbH" in body
    assert "Secret Holdings" not in body and "Weights and bands" not in body
    # Their bands are counted over their own customers: 1 healthy, 2 at risk.
    assert list(response.context["bands"]) == [
        ("healthy", "Healthy", 1, "badge-success"),
        ("at_risk", "At risk", 2, "badge-warning"),
        ("critical", "Critical", 0, "badge-danger"),
    ]


def test_agent_sees_the_scores_of_the_customers_their_tickets_show(client, world):
    body = _get(client, world["agent"], reverse("metrics:health")).content.decode()
    assert "Healthy One GmbH" in body
    assert "Secret Holdings" not in body and "Quiet One GmbH" not in body


@pytest.mark.parametrize(
    ("role", "forbidden", "allowed"), [("rep2", "healthy", "other"), ("agent", "other", "healthy")]
)
def test_a_customers_score_is_404_for_whoever_may_not_see_the_customer(
    client, world, role, forbidden, allowed
):
    url = reverse("metrics:customer_health", args=[world[forbidden].pk])
    assert _get(client, world[role], url).status_code == 404
    assert _get(client, world[role], url, **{"HX-Request": "true"}).status_code == 404
    assert (
        _get(client, world[role], reverse("metrics:customer_health", args=[world[allowed].pk])).status_code
        == 200
    )


def test_a_customers_score_shows_its_components_as_a_fragment_and_a_page(client, world):
    url = reverse("metrics:customer_health", args=[world["healthy"].pk])
    fragment = _get(client, world["rep1"], url, **{"HX-Request": "true"}).content.decode()
    assert "<html" not in fragment and 'id="customer-health"' in fragment
    assert "85" in fragment and "Healthy" in fragment and "Owner&#x27;s attention" in fragment
    page = _get(client, world["rep1"], url).content.decode()
    assert "<html" in page and "Healthy One GmbH" in page
    # Not scored (a lead): said so.
    lead = make_customer(world["rep1"], name="Lead GmbH", status="lead")
    body = _get(client, world["rep1"], reverse("metrics:customer_health", args=[lead.pk])).content.decode()
    assert "Not scored" in body


def test_the_facts_name_local_days(client, world):
    """An NPS answer at 09:00 on 5 January in Kiritimati is 19:00 on 4 January in UTC: the page says 5 Jan."""
    customer = world["quiet"][0]
    make_answer(make_survey("nps"), customer, 3, datetime(2026, 1, 5, 9, tzinfo=ZONE))
    health_refresh(now=NOW)
    url = reverse("metrics:customer_health", args=[customer.pk])
    assert "NPS 3 on 2026-01-05" in _get(client, world["rep1"], url).content.decode()


def test_the_customer_page_loads_the_score_after_itself(client, world):
    body = _get(client, world["rep1"], reverse("crm:customer_detail", args=[world["healthy"].pk])).content
    assert reverse("metrics:customer_health", args=[world["healthy"].pk]).encode() in body


def test_the_list_filters_by_band_and_sorts_by_score(client, world):
    url = reverse("metrics:health")
    at_risk = _get(client, world["manager"], url + "?band=at_risk").context["rows"]
    assert {row[0].customer.name for row in at_risk} == {
        "Quiet One GmbH",
        "Quiet Two GmbH",
        "Secret Holdings AG",
    }
    lowest_first = [row[0].score for row in _get(client, world["manager"], url).context["rows"]]
    assert lowest_first == sorted(lowest_first)
    highest_first = [
        row[0].score for row in _get(client, world["manager"], url + "?sort=-score").context["rows"]
    ]
    assert highest_first[0] == Decimal("85.0")
    fragment = _get(
        client, world["manager"], url + "?band=healthy", **{"HX-Request": "true"}
    ).content.decode()
    assert "<html" not in fragment and "Healthy One GmbH" in fragment and "Quiet One" not in fragment


@pytest.mark.parametrize(
    "query",
    ["band=nonsense", "band=%00", "sort=-pk", "sort=customer__owner__password", "page=-1", "page=abc",
     "page=99999999999999999999", "band=" + "x" * 10_000, "sort=%ED%A0%80"],
)  # fmt: skip
def test_bad_parameters_fall_back_to_the_defaults(client, world, query):
    response = _get(client, world["manager"], reverse("metrics:health") + "?" + query)
    assert response.status_code == 200
    assert response.context["sort"] in ("score", "-score", "name")


def test_the_pages_read_stored_rows_with_a_bounded_number_of_queries(
    client, world, django_assert_max_num_queries
):
    for user in (world["manager"], world["rep1"], world["agent"]):
        client.force_login(user)
        with django_assert_max_num_queries(8):
            assert client.get(reverse("metrics:health")).status_code == 200
        with django_assert_max_num_queries(7):
            client.get(reverse("metrics:customer_health", args=[world["healthy"].pk]))
    # More customers scored: still the same number.
    for i in range(30):
        _active(world["rep1"], f"More {i} GmbH")
    health_refresh(now=NOW)
    client.force_login(world["manager"])
    with django_assert_max_num_queries(8):
        assert client.get(reverse("metrics:health") + "?page=2").status_code == 200


def test_empty_state_before_the_first_scoring(client):
    body = _get(client, make_manager(), reverse("metrics:health")).content.decode()
    assert "No scores yet" in body and "The backtest runs with the nightly scoring" in body


# Settings: only managers change them, and bad input is refused field by field
# ---------------------------------------------------------------------------------------------------------

WEIGHTS = {"recency_weight": 30, "satisfaction_weight": 20, "complaints_weight": 10, "sla_weight": 10,
           "renewal_weight": 10, "revenue_weight": 10, "owner_weight": 10}  # fmt: skip


@pytest.mark.parametrize("role", ["rep1", "agent"])
def test_only_managers_may_change_the_weights(client, world, role):
    url = reverse("metrics:health_settings")
    assert _get(client, world[role], url).status_code == 404
    response = client.post(url, {**WEIGHTS, "critical_below": 10, "at_risk_below": 20})
    assert response.status_code == 404
    assert HealthSettings.load().recency_weight == 20


def test_a_manager_changes_the_weights_and_everyone_is_scored_again(
    client, world, django_capture_on_commit_callbacks
):
    client.force_login(world["manager"])
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            reverse("metrics:health_settings"), {**WEIGHTS, "critical_below": 45, "at_risk_below": 70}
        )
    assert response.status_code == 302 and response["Location"] == reverse("metrics:health")
    saved = HealthSettings.load()
    assert (saved.recency_weight, saved.critical_below, saved.at_risk_below) == (30, 45, 70)
    assert saved.updated_by == world["manager"] and len(callbacks) == 1
    # Until the re-scoring ran, the list says its points are the old ones.
    assert (
        "The weights or bands changed after the newest scoring"
        in client.get(reverse("metrics:health")).content.decode()
    )


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({**WEIGHTS, "owner_weight": 15}, None, "The weights must add up to 100 points; they add up to 105."),
        (
            {**WEIGHTS, "critical_below": 70, "at_risk_below": 70},
            "critical_below",
            "Critical must start below",
        ),
        ({**WEIGHTS, "recency_weight": -5}, "recency_weight", "greater than or equal to 0"),
        ({**WEIGHTS, "recency_weight": 101}, "recency_weight", "less than or equal to 100"),
        ({**WEIGHTS, "recency_weight": "\x00"}, "recency_weight", "Enter a whole number"),
        ({**WEIGHTS, "recency_weight": "9" * 10_000}, "recency_weight", ""),
        ({**WEIGHTS, "recency_weight": "1e309"}, "recency_weight", "Enter a whole number"),
        ({**WEIGHTS, "at_risk_below": ""}, "at_risk_below", "This field is required"),
    ],
)
def test_bad_settings_are_refused_with_a_field_error(client, world, data, field, message):
    data.setdefault("critical_below", 50)
    data.setdefault("at_risk_below", 75)
    client.force_login(world["manager"])
    before = HealthSettings.load()
    response = client.post(reverse("metrics:health_settings"), data)
    assert response.status_code == 200
    form = response.context["form"]
    errors = form.errors.get(field or "__all__")
    assert errors and message in " ".join(errors)
    assert (
        'class="field-error"' in response.content.decode()
        or 'class="form-errors"' in response.content.decode()
    )
    after = HealthSettings.load()
    assert [getattr(after, f) for f in (*WEIGHTS, "critical_below", "at_risk_below")] == [
        getattr(before, f) for f in (*WEIGHTS, "critical_below", "at_risk_below")
    ]


def test_the_settings_service_refuses_non_managers_unknown_settings_and_bad_sums(world):
    with pytest.raises(PermissionError):
        health_settings_update(actor=world["rep1"], recency_weight=20)
    with pytest.raises(TypeError):
        health_settings_update(actor=world["manager"], is_superuser=True)
    with pytest.raises(ValidationError):
        health_settings_update(actor=world["manager"], recency_weight=99)  # the weights add up to 179
    assert not HealthSettings.objects.exists()  # nothing saved: the defaults still apply


# KPIs from the stored scores
# ---------------------------------------------------------------------------------------------------------


def test_the_share_at_risk_per_company_and_owner_with_the_bands_in_its_details(world):
    rows = compute(AT_RISK_SHARE.code, first_day=MARCH, now=NOW)
    company = rows[(Scope.COMPANY, "")]
    # 3 of 4 scored customers at risk (55): 75 %.
    assert (company.value, company.numerator, company.denominator, company.sample_size) == (
        Decimal(75), Decimal(3), Decimal(4), 4,
    )  # fmt: skip
    assert (company.extra.healthy, company.extra.at_risk, company.extra.critical) == (1, 3, 0)
    rep1 = rows[(Scope.USER, str(world["rep1"].pk))]
    assert (rep1.numerator, rep1.denominator) == (Decimal(2), Decimal(3))
    assert rows[(Scope.USER, str(world["rep2"].pk))].value == Decimal(100)
    mean = compute(SCORE_MEAN.code, first_day=MARCH, now=NOW)[(Scope.COMPANY, "")]
    assert mean.value == Decimal("62.5")  # (85 + 55 + 55 + 55) / 4


def test_the_share_drills_down_to_the_customers_of_each_band(world):
    drill = AT_RISK_SHARE.drilldown
    period = period_of(timezone.now(), "month")  # the scores describe now: the current period's records
    names = {
        part: {c.name for c in drill.records(world["manager"], period, Scope.COMPANY, "", part)}
        for part in drill.parts
    }
    assert (
        names["numerator"] == names["at_risk"] == {"Quiet One GmbH", "Quiet Two GmbH", "Secret Holdings AG"}
    )
    assert names["healthy"] == {"Healthy One GmbH"} and names["critical"] == set()
    assert len(names["denominator"]) == 4
    # A rep's drill-down holds their own customers only, whatever scope is asked for.
    mine = drill.records(world["rep1"], period, Scope.COMPANY, "", "numerator")
    assert {c.name for c in mine} == {"Quiet One GmbH", "Quiet Two GmbH"}


def test_the_backtest_kpis_carry_the_newest_run(world):
    rows = compute(BACKTEST_AUC.code, first_day=MARCH, now=NOW)
    company = rows[(Scope.COMPANY, "")]
    assert company.value is None  # nobody churned: no AUC
    # Each customer at the 11 month starts (February to December 2025) it was active at.
    assert company.extra.verdict == "too_few" and company.sample_size == 4 * 11
    assert set(rows) == {(Scope.COMPANY, "")}


def test_the_kpi_page_of_the_share_lists_the_at_risk_customers(client, world):
    client.force_login(world["manager"])
    url = reverse("metrics:kpi_detail", args=[AT_RISK_SHARE.code]) + "?granularity=month&part=at_risk"
    body = client.get(url).content.decode()
    assert "Quiet One GmbH" in body and "Healthy One GmbH" not in body
    assert f'href="{reverse("metrics:health")}"' in body  # the KPI page leads to the scores and the backtest

"""The customer health score (KPIS.md §10.10), worked by hand on Kiritimati time (UTC+14, a local day starts
at 10:00 UTC the day before): each component's points, scores as of a past day from the history alone, the
bands, the stored scores and the backtest on data where the score is known to work and where it is known not
to, with the health page's verdict for each."""

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from crm import services
from crm.data import merge
from crm.models import Activity, Customer
from metrics.health.models import Band, CustomerHealth, CustomerHealthRun, HealthSettings
from metrics.health.scoring import scores_on
from metrics.health.services import health_refresh
from metrics.tasks import refresh_customer_health
from tests.factories import (
    make_answer,
    make_closed_deal,
    make_customer,
    make_deal,
    make_manager,
    make_survey,
    make_ticket,
    make_user,
)

pytestmark = pytest.mark.django_db

ZONE = ZoneInfo("Pacific/Kiritimati")
D = date(2026, 3, 1)  # the day scored: its start is 2026-02-28 10:00 UTC
Verdict = CustomerHealthRun.Verdict


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=ZONE)


@pytest.fixture(autouse=True)
def kiritimati(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"


@pytest.fixture
def rep():
    return make_user(username="health_rep")


def _active(owner, name: str, since: datetime | None = None, **fields) -> Customer:
    """An active customer since ``since`` (10 January 2025 by default)."""
    since = since or local(2025, 1, 10, 9)
    return make_customer(owner, name=name, status=Customer.Status.ACTIVE, at=since, **fields)


def _touch(customer: Customer, at: datetime) -> Activity:
    """A call the owner logged (and so did) at ``at``."""
    return services.activity_log(
        actor=customer.owner, customer=customer, kind=Activity.Kind.CALL, subject="Call", at=at
    )


def _call(customer: Customer, at: datetime, user) -> Activity:
    """A call ``user`` did at ``at`` (whoever owns the customer now)."""
    return Activity.objects.create(
        kind=Activity.Kind.CALL, subject="Call", user=user, customer=customer, created_at=at, done_at=at
    )


def _points(score: dict) -> dict[str, Decimal]:
    names = ("recency", "satisfaction", "complaints", "sla", "renewal", "revenue", "owner")
    return {name: score[f"{name}_points"] for name in names}


# Each component by hand
# ---------------------------------------------------------------------------------------------------------


def test_each_component_by_hand(rep):
    """Customer A, as of the start of 1 March 2026 (defaults: 20/20/15/10/15/10/10, critical < 50, at
    risk < 75):

    - last contact a call on 10 Feb (19 days before): recent contact 20 of 20;
    - NPS 9 on 1 Dec (a promoter, within 12 months): satisfaction 20 of 20;
    - one complaint on 20 Feb, never answered: complaints 7.5 of 15 (one), and its first response was due
      8 h later (normal priority) and missed: SLA 5 of 10 (one ticket late);
    - its subscription's term ends on 10 March, 9 days ahead, with no renewal deal: renewal 0 of 15;
    - won 1 000 in the last 12 months (the subscription, 10 March 2025) against 2 000 the 12 months before
      (1 June 2024): half or more, revenue 5 of 10;
    - the owner's one activity in the last 90 days (the call): owner 5 of 10.

    62.5: at risk. Customer B has no records at all: no contact (0), no answer (half: 10), no complaint (15),
    no breach (10), no renewal due (15), no revenue either year (half: 5), no owner activity (0) = 55.
    """
    a, b = _active(rep, "Alpha GmbH"), _active(rep, "Beta GmbH")
    _touch(a, local(2026, 2, 10, 11))
    make_answer(make_survey("nps"), a, 9, local(2025, 12, 1, 10))
    make_ticket(a, at=local(2026, 2, 20, 9), category="complaint", priority="normal", subject="Down again")
    make_closed_deal(a, created=local(2025, 3, 1, 9), closed=local(2025, 3, 10, 9), amount=Decimal("1000"),
                     term_start=date(2025, 3, 10), term_end=date(2026, 3, 10))  # fmt: skip
    make_closed_deal(a, created=local(2024, 5, 20), closed=local(2024, 6, 1, 12), amount=Decimal("2000"))

    scores = scores_on(D)

    got = scores[a.pk]
    assert _points(got) == {
        "recency": Decimal("20.0"),
        "satisfaction": Decimal("20.0"),
        "complaints": Decimal("7.5"),
        "sla": Decimal("5.0"),
        "renewal": Decimal("0.0"),
        "revenue": Decimal("5.0"),
        "owner": Decimal("5.0"),
    }
    assert got["score"] == Decimal("62.5") and got["band"] == Band.AT_RISK
    assert got["last_touch_at"] == local(2026, 2, 10, 11)
    assert (got["survey_kind"], got["survey_score"]) == ("nps", 9)
    assert (got["complaints"], got["sla_breaches"], got["owner_activities"]) == (1, 1, 1)
    assert got["renewal_due_on"] == date(2026, 3, 10)
    assert (got["revenue_12m"], got["revenue_prior_12m"]) == (Decimal("1000"), Decimal("2000"))
    assert scores[b.pk]["score"] == Decimal("55.0") and scores[b.pk]["band"] == Band.AT_RISK
    assert _points(scores[b.pk])["satisfaction"] == Decimal("10.0")


def test_windows_end_just_before_the_day_and_start_at_local_midnight(rep):
    """A call exactly at the day's start does not count; the 30-day window starts at 00:00 on 30 January
    local time (29 Jan 10:00 UTC): a call one second before it is half the points (within 90 days)."""
    customer = _active(rep, "Gamma GmbH")
    _touch(customer, local(2026, 1, 29, 23, 59, 59))
    _touch(customer, local(2026, 3, 1, 0, 0, 0))
    got = scores_on(D)[customer.pk]
    assert got["last_touch_at"] == local(2026, 1, 29, 23, 59, 59)
    assert got["recency_points"] == Decimal("10.0")
    # The owner's two calls: one before the day (counted), one at its start (not).
    assert got["owner_activities"] == 1


@pytest.mark.parametrize(
    ("score", "kind", "points"),
    [(6, "nps", "0.0"), (7, "nps", "10.0"), (8, "nps", "10.0"), (10, "nps", "20.0"), (2, "csat", "0.0"),
     (3, "csat", "10.0"), (4, "csat", "20.0")],
)  # fmt: skip
def test_satisfaction_from_the_latest_answer(rep, score, kind, points):
    customer = _active(rep, "Delta GmbH")
    older, latest = make_survey(kind), make_survey(kind)
    # An older answer at the other end of the scale: only the latest counts.
    make_answer(older, customer, older.scale_max if score < 4 else older.scale_min, local(2025, 11, 1, 10))
    make_answer(latest, customer, score, local(2026, 1, 5, 10))
    assert scores_on(D)[customer.pk]["satisfaction_points"] == Decimal(points)


def test_an_answer_older_than_a_year_counts_as_none(rep):
    customer = _active(rep, "Epsilon GmbH")
    make_answer(make_survey("nps"), customer, 0, local(2025, 2, 28, 23, 59))  # before 1 Mar 2025 00:00
    got = scores_on(D)[customer.pk]
    assert got["survey_score"] is None and got["satisfaction_points"] == Decimal("10.0")


def test_complaints_and_breaches_count_steps(rep):
    """Two complaints in the last 90 days (from 1 Dec 2025, local midnight): none of the 15 points; one
    on 30 Nov at 23:59 is before the window, but its first response, due 8 hours later, was missed inside
    it: three late tickets, none of the 10. A ticket answered and solved in time is not late."""
    customer = _active(rep, "Zeta GmbH")
    for at in (local(2026, 1, 10, 9), local(2026, 2, 1, 9), local(2025, 11, 30, 23, 59)):
        make_ticket(customer, at=at, category="complaint", priority="normal")
    on_time = make_ticket(customer, at=local(2026, 2, 2, 9), priority="normal")
    services.ticket_reply(ticket=on_time, actor=rep, body="Hi", at=local(2026, 2, 2, 10))
    services.ticket_set_status(ticket=on_time, status="solved", actor=rep, at=local(2026, 2, 2, 12))
    got = scores_on(D)[customer.pk]
    assert (got["complaints"], got["sla_breaches"]) == (2, 3)
    assert (got["complaints_points"], got["sla_points"]) == (Decimal("0.0"), Decimal("0.0"))


def test_an_open_renewal_deal_takes_the_renewal_risk_away_and_a_lost_one_does_not(rep):
    renewing, lost = _active(rep, "Eta GmbH"), _active(rep, "Theta GmbH")
    for customer in (renewing, lost):
        make_closed_deal(customer, created=local(2025, 3, 1), closed=local(2025, 3, 5), amount=Decimal("100"),
                         term_start=date(2025, 3, 20), term_end=date(2026, 3, 20))  # fmt: skip
    subscription = {c.pk: c.deals.get() for c in (renewing, lost)}
    make_deal(renewing, at=local(2026, 2, 1), kind="renewal", renewal_of=subscription[renewing.pk])
    make_closed_deal(lost, won=False, created=local(2026, 1, 20), closed=local(2026, 2, 20), kind="renewal",
                     renewal_of=subscription[lost.pk])  # fmt: skip
    scores = scores_on(D)
    assert scores[renewing.pk]["renewal_points"] == Decimal("15.0")
    assert scores[lost.pk]["renewal_points"] == Decimal("0.0")
    assert scores[lost.pk]["renewal_due_on"] == date(2026, 3, 20)


def test_the_owner_as_of_the_day_comes_from_the_customers_change_history(rep):
    """The account moved from ``rep`` to ``successor`` on 15 Feb (its change history says so): as of 1 March
    the successor's call counts; as of 14 Feb the old owner's."""
    successor = make_user(username="health_successor")
    customer = _active(rep, "Iota GmbH")
    customer.owner = successor
    customer.save()
    first, second = customer.history.order_by("history_date", "history_id")
    type(first).objects.filter(pk=first.pk).update(history_date=local(2024, 1, 1))
    type(second).objects.filter(pk=second.pk).update(history_date=local(2026, 2, 15))
    _call(customer, local(2026, 2, 10, 11), rep)
    _call(customer, local(2026, 2, 20, 11), successor)
    assert scores_on(D)[customer.pk]["owner_activities"] == 1  # the successor's
    assert scores_on(date(2026, 2, 14))[customer.pk]["owner_activities"] == 1  # the old owner's, on 10 Feb
    _call(customer, local(2026, 2, 21, 11), successor)
    assert scores_on(D)[customer.pk]["owner_activities"] == 2
    assert scores_on(date(2026, 2, 14))[customer.pk]["owner_activities"] == 1


def test_only_customers_active_at_the_start_of_the_day_are_scored(rep):
    """Active since before the day: scored; active from exactly its start, or churned before it: not; a
    churn at exactly the start of the day is after it (still scored); leads, merged duplicates and internal
    customers never."""
    scored = _active(rep, "Kappa GmbH")
    late = _active(rep, "Lambda GmbH", since=local(2026, 3, 1))
    gone = _active(rep, "My GmbH")
    services.customer_set_status(customer=gone, status="churned", actor=rep, at=local(2026, 2, 27))
    leaving = _active(rep, "Ny GmbH")
    services.customer_set_status(customer=leaving, status="churned", actor=rep, at=local(2026, 3, 1))
    lead = make_customer(rep, name="Xi GmbH", status=Customer.Status.LEAD, at=local(2025, 1, 1))
    internal = _active(rep, "Omikron intern", is_internal=True)
    survivor, duplicate = _active(rep, "Pi GmbH"), _active(rep, "Pi Dublette")
    merge.customer_merge(survivor=survivor, merged=duplicate, actor=make_manager())
    found = set(scores_on(D))
    assert {scored.pk, leaving.pk, survivor.pk} <= found
    assert not {late.pk, gone.pk, lead.pk, internal.pk, duplicate.pk} & found


# As of a past day: from history, not today's fields
# ---------------------------------------------------------------------------------------------------------


def test_a_score_as_of_a_past_day_ignores_everything_after_it(rep):
    customer = _active(rep, "Rho GmbH")
    _touch(customer, local(2026, 1, 20, 11))
    make_answer(make_survey("nps"), customer, 10, local(2026, 1, 5, 10))
    make_closed_deal(customer, created=local(2025, 3, 1), closed=local(2025, 3, 5), amount=Decimal("500"),
                     term_start=date(2025, 3, 25), term_end=date(2026, 3, 25))  # fmt: skip
    before = scores_on(D)[customer.pk]

    # After the day: a detractor's answer, complaints, a won deal, a renewal deal, calls, and the churn.
    make_answer(make_survey("csat"), customer, 1, local(2026, 3, 2, 10))
    make_ticket(customer, at=local(2026, 3, 1, 0, 0, 1), category="complaint")
    make_closed_deal(customer, created=local(2026, 3, 2), closed=local(2026, 3, 3), amount=Decimal("9000"))
    make_deal(
        customer, at=local(2026, 3, 4), kind="renewal", renewal_of=customer.deals.order_by("pk").first()
    )
    _touch(customer, local(2026, 3, 5))
    services.customer_set_status(customer=customer, status="churned", actor=rep, at=local(2026, 4, 1))

    assert scores_on(D)[customer.pk] == before
    # Last call 40 days before: half of 20; NPS 10: 20; no complaint or breach: 15 + 10; the term ends on 25
    # March without a renewal deal: 0; 500 won in the last 12 months, none before: 10; one owner call: 5.
    assert before["score"] == Decimal("70.0") and before["band"] == Band.AT_RISK
    # Later days do see them: on 4 March the complaint, the detractor and the renewal deal count.
    later = scores_on(date(2026, 3, 6))[customer.pk]
    assert (later["complaints"], later["survey_score"], later["renewal_points"]) == (1, 1, Decimal("15.0"))
    assert customer.pk not in scores_on(date(2026, 4, 2))


def test_bands_follow_the_thresholds_in_the_settings(rep):
    a, b = _active(rep, "Sigma GmbH"), _active(rep, "Tau GmbH")
    _touch(a, local(2026, 2, 10, 11))  # 20 + 10 + 15 + 10 + 15 + 5 + 5 = 80: healthy
    assert {c: s["band"] for c, s in scores_on(D).items()} == {a.pk: Band.HEALTHY, b.pk: Band.AT_RISK}
    settings = HealthSettings.load()
    settings.at_risk_below, settings.critical_below = 81, 56
    settings.save()
    assert {c: s["band"] for c, s in scores_on(D).items()} == {a.pk: Band.AT_RISK, b.pk: Band.CRITICAL}
    settings.recency_weight, settings.owner_weight = 0, 30  # b: 0 + 10 + 15 + 10 + 15 + 5 + 0 = 55 still
    settings.save()
    assert scores_on(D)[a.pk]["score"] == Decimal("70.0")  # 0 + 10 + 15 + 10 + 15 + 5 + 15 (half of 30)


# Stored scores and the daily task
# ---------------------------------------------------------------------------------------------------------


def test_the_daily_task_stores_todays_scores_and_one_run_per_day(rep, settings):
    a, b = _active(rep, "Ypsilon GmbH"), _active(rep, "Phi GmbH")
    _touch(a, local(2026, 2, 10, 11))
    run = health_refresh(now=local(2026, 3, 1, 15))
    assert run.as_of == D and run.scored == 2
    assert run.bands == {"healthy": 1, "at_risk": 1, "critical": 0}
    assert run.settings["weights"]["recency"] == 20 and run.settings["at_risk_below"] == 75
    stored = {h.customer_id: (h.as_of, h.score, h.band) for h in CustomerHealth.objects.all()}
    assert stored == {a.pk: (D, Decimal("80.0"), "healthy"), b.pk: (D, Decimal("55.0"), "at_risk")}
    # Again the same day: the same rows, the one run replaced; the next day replaces the scores.
    again = health_refresh(now=local(2026, 3, 1, 20))
    assert again.pk == run.pk and CustomerHealth.objects.count() == 2
    health_refresh(now=local(2026, 3, 2, 1))
    assert set(CustomerHealth.objects.values_list("as_of", flat=True)) == {date(2026, 3, 2)}
    assert CustomerHealthRun.objects.count() == 2


def test_the_celery_task_scores_twice_idempotently(rep):
    _active(rep, "Chi GmbH")
    first = refresh_customer_health()
    second = refresh_customer_health()
    assert first == second and CustomerHealth.objects.count() == 1


# The backtest on data where the score is known to work, and where it is known not to
# ---------------------------------------------------------------------------------------------------------

NOW = local(2026, 6, 15, 12)  # month starts 1 Apr 2025 … 1 Mar 2026 (1 Apr + 90 days is not over yet)


def _monthly_calls(customer: Customer, until: date) -> None:
    """A done call on the 10th of every month from January 2024 up to (not including) ``until``."""
    calls, month = [], date(2024, 1, 10)
    while month < until:
        at = local(month.year, month.month, 10, 11)
        calls.append(Activity(kind="call", subject="Check-in", user=customer.owner, customer=customer,
                              created_at=at, done_at=at))  # fmt: skip
        month = date(month.year + month.month // 12, month.month % 12 + 1, 10)
    Activity.objects.bulk_create(calls)


def _churn(customer: Customer, at: datetime) -> None:
    services.customer_set_status(customer=customer, status="churned", actor=customer.owner, at=at)


def _page(client, user) -> str:
    client.force_login(user)
    response = client.get(reverse("metrics:health"))
    assert response.status_code == 200
    return response.content.decode()


def test_backtest_where_the_score_works(rep, client):
    """12 customers stay, called every month: 85 at every month start (healthy). 12 leave between 10 and
    21 January 2026: their calls stop after 10 September, a complaint on 20 November waits past its SLA.
    Each is in the 90 days before its churn at three month starts: 1 Nov (last call 52 days ago: half;
    two owner calls: 75, healthy), 1 Dec (82 days: half; one owner call: half; the complaint and its breach:
    57.5, at risk), 1 Jan (nothing for 113 days, complaint and breach: 42.5, critical).

    Observations: stayers 12 × 12, leavers 12 × 10 (not after their churn) = 264; churned 36 (base rate
    13.6 %). Flagged 24, all churned: precision 1, recall 24 / 36, lift 264 / 36 = 7.33. Every churned
    observation scored below every stayed one (85): AUC 1, beyond 0.5 + 0.10.
    """
    stayers = [_active(rep, f"Stayer {i}", since=local(2024, 1, 1, 9)) for i in range(12)]
    leavers = [_active(rep, f"Leaver {i}", since=local(2024, 1, 1, 9)) for i in range(12)]
    for customer in stayers:
        _monthly_calls(customer, date(2026, 6, 15))
    for i, customer in enumerate(leavers):
        _monthly_calls(customer, date(2025, 9, 11))
        make_ticket(customer, at=local(2025, 11, 20, 10), category="complaint", priority="normal")
        _churn(customer, local(2026, 1, 10 + i, 10))

    run = health_refresh(now=NOW)

    assert (run.observations, run.churned) == (264, 36)
    bands = {b["band"]: (b["observations"], b["churned"]) for b in run.backtest["bands"]}
    assert bands == {"healthy": (240, 12), "at_risk": (12, 12), "critical": (12, 12)}
    assert run.precision == 1.0 and run.recall == pytest.approx(24 / 36)
    assert run.lift == pytest.approx(264 / 36) and run.auc == 1.0
    assert run.auc_margin == pytest.approx(1.96 * (265 / (12 * 36 * 228)) ** 0.5)
    assert run.verdict == Verdict.BEATS
    months = run.backtest["months"]
    assert [m["day"] for m in months][:2] == ["2025-04-01", "2025-05-01"] and len(months) == 12
    assert months[8] == {"day": "2025-12-01", "observations": 24, "flagged": 12, "churned": 12,
                         "churned_flagged": 12}  # fmt: skip
    body = _page(client, make_manager())
    assert "The score beats the base rate" in body and "7.33×" in body
    assert "does not beat" not in body


def test_backtest_where_the_score_does_not_work(rep, client):
    """The signals point the wrong way: the 12 who leave are called every month until they go (85,
    healthy), the 12 who stay are never called (55, at risk). Flagged: the stayers' 144 observations, none
    churned: lift 0. The 36 churned observations (85) score above the stayers' 144 (55) and tie with the
    leavers' own 84 before their last 90 days: AUC = 36 × 84 × ½ / (36 × 228) = 42 / 228."""
    stayers = [_active(rep, f"Quiet {i}", since=local(2024, 1, 1, 9)) for i in range(12)]
    leavers = [_active(rep, f"Busy {i}", since=local(2024, 1, 1, 9)) for i in range(12)]
    for i, customer in enumerate(leavers):
        _monthly_calls(customer, date(2026, 1, 10))
        _churn(customer, local(2026, 1, 10 + i, 10))

    run = health_refresh(now=NOW)

    assert (run.observations, run.churned, run.lift) == (264, 36, 0.0)
    assert run.auc == pytest.approx(42 / 228)
    assert run.verdict == Verdict.FAILS
    body = _page(client, make_manager())
    assert "The score does not beat the base rate" in body and "Do not rely on it" in body
    assert len(stayers) == 12


def test_backtest_with_few_churns_says_not_enough_data(rep, client):
    customers = [_active(rep, f"Few {i}", since=local(2024, 1, 1, 9)) for i in range(5)]
    for i, customer in enumerate(customers[:3]):
        _churn(customer, local(2026, 1, 10 + i, 10))  # 3 customers × 3 month starts = 9 churned < 10
    run = health_refresh(now=NOW)
    assert run.churned == 9 and run.verdict == Verdict.TOO_FEW
    assert "Not enough data to test the score" in _page(client, make_manager())


def test_backtest_leaves_out_merged_duplicates_churn(rep):
    """KPIS.md §10.13: merging a churned duplicate into an active customer leaves past churn as if the
    duplicate had never existed."""
    keep = _active(rep, "Omega GmbH", since=local(2024, 1, 1, 9))
    duplicate = _active(rep, "Omega Dublette", since=local(2024, 1, 1, 9))
    _churn(duplicate, local(2026, 1, 10, 10))
    merge.customer_merge(survivor=keep, merged=duplicate, actor=make_manager())
    run = health_refresh(now=NOW)
    assert run.churned == 0 and run.observations == 12  # the survivor at each month start

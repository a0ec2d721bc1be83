"""Satisfaction KPIs (KPIS.md §2) against hand-worked values. Times are Europe/Berlin wall-clock times."""

import math
import secrets
from datetime import date, datetime, timedelta

import pytest

from crm.models import Customer
from metrics.kpis import satisfaction
from metrics.models import Scope
from surveys.models import Survey, SurveyInvitation, SurveyResponse
from tests.factories import make_customer, make_survey, make_team, make_ticket, make_user
from tests.metrics.kit import compute, d, detail, local, row, value

pytestmark = pytest.mark.django_db

FEBRUARY, MARCH_FIRST, APRIL, JUNE = date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1), date(2026, 6, 1)


@pytest.fixture(autouse=True)
def _reporting_zone(settings):
    settings.TIME_ZONE = "Europe/Berlin"


def answers(
    survey, customer: Customer, scores: list[int], at: datetime, *, owner=None, status="partial", agent=None
) -> None:
    """One sent invitation and one answer per score, all at ``at`` (bulk: the KPIs only read the rows);
    with ``agent``, each about a ticket of its own, solved by ``agent`` (False: unassigned)."""
    tickets = [None] * len(scores)
    if agent is not None:
        tickets = [make_ticket(customer, assignee=agent or None, at=at - timedelta(days=2)) for _ in scores]
    invitations = SurveyInvitation.objects.bulk_create(
        SurveyInvitation(
            survey=survey,
            customer=customer,
            ticket=ticket,
            trigger=Survey.Trigger.TICKET_SOLVED if ticket else survey.trigger,
            status=status,
            token_hash=secrets.token_hex(32),
            created_at=at - timedelta(hours=1),
            scheduled_for=at - timedelta(hours=1),
            sent_at=at - timedelta(hours=1),
            expires_at=at + timedelta(days=13),
            started_at=at,
        )
        for ticket in tickets
    )
    SurveyResponse.objects.bulk_create(
        SurveyResponse(
            invitation=invitation,
            survey=survey,
            customer=customer,
            owner=owner if owner is not None else customer.owner,
            agent=invitation.ticket.assignee if invitation.ticket else None,
            score=score,
            scale_min=survey.scale_min,
            scale_max=survey.scale_max,
            score_submitted_at=at,
            updated_at=at,
        )
        for invitation, score in zip(invitations, scores, strict=True)
    )


def scores(**counts: int) -> list[int]:
    """e.g. scores(s10=3, s6=2) -> [10, 10, 10, 6, 6]."""
    return [int(name[1:]) for name, n in counts.items() for _ in range(n)]


@pytest.fixture
def customer():
    return make_customer(make_user(team=make_team()), at=local(2025, 1, 1))


@pytest.fixture
def nps():
    return make_survey("nps")


# NPS
# ---------------------------------------------------------------------------------------------------------


def test_the_worked_example_of_kpis_md(nps, customer):
    # n = 200: 100 promoters, 60 passives, 40 detractors → NPS 30 ± 11 (MoE 10.8…).
    answers(nps, customer, scores(s10=50, s9=50, s8=30, s7=30, s6=20, s0=20), local(2026, 3, 10))
    r = row("nps_relationship")
    assert r.value == d("30")
    assert (r.numerator, r.denominator, r.sample_size) == (60, 200, 200)
    extra = r.extra
    assert (extra.promoters, extra.passives, extra.detractors) == (100, 60, 40)
    assert (extra.promoters_pct, extra.passives_pct, extra.detractors_pct) == (50.0, 30.0, 20.0)
    assert extra.se == pytest.approx(5.5227, abs=1e-4)  # 100·√(0.61/200)
    assert extra.moe95 == pytest.approx(10.8245, abs=1e-4)
    assert round(extra.moe95) == 11
    assert extra.low_sample is False
    assert extra.nps_type == "relationship"


def test_nps_with_no_answers_is_null_not_zero(nps, customer):
    r = row("nps_relationship", first_day=APRIL)
    assert r.value is None and r.sample_size == 0 and r.denominator == 0
    assert r.extra.moe95 is None and r.extra.low_sample is True
    assert satisfaction.nps_stats(0, 0, 0) is None


def test_nps_counts_answers_by_submission_time_with_exact_boundaries(nps, customer):
    answers(nps, customer, [10], local(2026, 3, 1))  # 00:00 on 1 March: March
    answers(nps, customer, [0], local(2026, 2, 28, 23, 59, 59))  # one second earlier: February
    assert value("nps_relationship") == d("100")
    assert value("nps_relationship", first_day=FEBRUARY) == d("-100")


def test_significance_of_the_change_from_the_previous_period(nps, customer):
    # February: 30 P, 40 passives, 30 D → NPS 0, SE² = 100²·0.6/100 = 60.
    answers(nps, customer, scores(s9=30, s7=40, s3=30), local(2026, 2, 10))
    # March: the worked example, NPS 30, SE² = 30.5 → z = 30 / √90.5 = 3.1535… > 1.96.
    answers(nps, customer, scores(s10=100, s8=60, s6=40), local(2026, 3, 10))
    extra = row("nps_relationship").extra
    assert extra.previous == 0 and extra.previous_n == 100
    assert extra.z == pytest.approx(30 / math.sqrt(90.5), abs=1e-4)
    assert extra.significant is True


def test_a_small_change_on_small_samples_is_not_significant(nps, customer):
    # February: 5 P, 5 D of 10 → 0, SE² = 100²·1.0/10 = 1000; March: 6 P, 4 D → 20, SE² = 100²·0.96/10 = 960.
    answers(nps, customer, scores(s10=5, s0=5), local(2026, 2, 10))
    answers(nps, customer, scores(s10=6, s0=4), local(2026, 3, 10))
    extra = row("nps_relationship").extra
    assert extra.z == pytest.approx(20 / math.sqrt(1960), abs=1e-4)  # 0.4518
    assert extra.significant is False
    assert extra.low_sample is True
    # No previous answers: no test at all.
    assert row("nps_relationship", first_day=FEBRUARY).extra.significant is None


def test_a_running_month_is_compared_with_the_answers_of_the_same_days_of_the_month_before(nps, customer):
    """KPIS.md §10.1: on 10 April, NPS, CSAT and response rates to date are compared with 1–10 March."""
    answers(nps, customer, scores(s10=3, s0=1), local(2026, 3, 3))  # 3 P, 1 D → +50
    answers(nps, customer, scores(s0=5), local(2026, 3, 20))  # after the 10th: left out
    csat = make_survey("csat")
    answers(csat, customer, [5, 5, 4, 2], local(2026, 3, 5))  # 3 of 4 satisfied
    answers(csat, customer, [1, 1], local(2026, 3, 28))
    answers(nps, customer, [10], local(2026, 4, 2))

    def compared(code: str) -> dict:
        rows = compute(code, first_day=APRIL, now=local(2026, 4, 10, 12), also=(MARCH_FIRST,))
        return rows[(Scope.COMPANY, "")].extra.compared

    nps_then = compared("nps_relationship")
    assert (nps_then["value"], nps_then["n"], nps_then["until"]) == (50.0, 4, "2026-03-11")
    assert (compared("csat")["numerator"], compared("csat")["denominator"]) == (3.0, 4.0)
    assert compared("csat_mean")["value"] == 4.0
    # Every invitation sent on those days was started (the helper's answers are partial): 8 of 8.
    assert (compared("survey_response_rate_rr2")["numerator"], compared("survey_response_rate_rr2")["n"]) == (
        8,
        8,
    )


def test_relationship_and_transactional_nps_are_never_pooled(nps, customer):
    transactional = make_survey("nps", nps_type="transactional")
    answers(nps, customer, [10, 10], local(2026, 3, 5))
    answers(transactional, customer, [0], local(2026, 3, 5))
    assert value("nps_relationship") == d("100")
    assert value("nps_transactional") == d("-100")
    assert row("nps_transactional").extra.nps_type == "transactional"


def test_per_owner_at_answer_time_and_per_team(nps, customer):
    owner, team = customer.owner, customer.owner.team
    answers(nps, customer, [10, 0, 0], local(2026, 3, 5))
    # The customer moves to another rep afterwards: the answers stay with the owner at the time.
    new_owner = make_user()
    Customer.objects.filter(pk=customer.pk).update(owner=new_owner)
    answers(nps, Customer.objects.get(pk=customer.pk), [9], local(2026, 3, 20))
    assert value("nps_relationship", Scope.USER, owner.pk) == d("-33.333333")
    assert value("nps_relationship", Scope.TEAM, team.pk) == d("-33.333333")
    assert value("nps_relationship", Scope.USER, new_owner.pk) == d("100")
    assert value("nps_relationship") == d("0")
    # An owner without answers in the period has no row rather than a row of nothing.
    assert row("nps_relationship", Scope.USER, owner.pk, first_day=APRIL) is None


def test_internal_and_merged_customers_are_left_out(nps, customer):
    internal = make_customer(customer.owner, is_internal=True)
    merged = make_customer(customer.owner)
    Customer.objects.filter(pk=merged.pk).update(merged_into=customer)
    answers(nps, customer, [10], local(2026, 3, 5))
    answers(nps, internal, [0, 0], local(2026, 3, 5))
    answers(nps, Customer.objects.get(pk=merged.pk), [0], local(2026, 3, 5))
    assert value("nps_relationship") == d("100")
    assert row("nps_relationship").sample_size == 1


def test_other_granularities(nps, customer):
    answers(nps, customer, [10], local(2026, 3, 23, 9))  # Monday of ISO week 13
    answers(nps, customer, [0], local(2026, 3, 22, 23))  # the Sunday before
    assert value("nps_relationship", granularity="week", first_day=date(2026, 3, 23)) == d("100")
    assert value("nps_relationship", granularity="quarter", first_day=date(2026, 1, 1)) == d("0")
    assert value("nps_relationship", granularity="year", first_day=date(2026, 1, 1)) == d("0")


# CSAT and CES
# ---------------------------------------------------------------------------------------------------------


def test_csat_top_two_box_with_wilson_interval_and_mean(customer):
    csat = make_survey("csat")
    answers(csat, customer, [5, 5, 4, 4, 3, 2, 1, 5, 4, 3], local(2026, 3, 5))
    r = row("csat")
    assert r.value == d("60") and (r.numerator, r.denominator, r.sample_size) == (6, 10, 10)
    # Wilson, p̂ = 0.6, n = 10, z = 1.96: (0.79208 ∓ 0.359296) / 1.38416.
    assert r.extra.wilson_low == pytest.approx(31.2669, abs=1e-3)
    assert r.extra.wilson_high == pytest.approx(83.1823, abs=1e-3)
    assert r.extra.mean == pytest.approx(3.6)
    assert value("csat_mean") == d("3.6")
    assert row("csat_mean").extra.scale_max == 5
    assert value("csat", first_day=APRIL) is None and value("csat_mean", first_day=APRIL) is None
    assert satisfaction.wilson_interval(0, 0) is None


def test_csat_and_ces_per_support_agent_are_those_of_the_tickets_they_were_assigned(customer, no_auto_assign):
    from metrics.kpis import get_kpi
    from metrics.periods import Period
    from tests.factories import make_agent

    csat, ces = make_survey("csat"), make_survey("ces")
    ana, bo = make_agent(), make_agent()
    answers(csat, customer, [5, 5, 4, 2], local(2026, 3, 5), agent=ana)
    answers(csat, customer, [1, 3], local(2026, 3, 6), agent=bo)
    answers(csat, customer, [5], local(2026, 3, 7), agent=False)  # an unassigned ticket
    answers(csat, customer, [5], local(2026, 3, 8))  # not about a ticket
    answers(ces, customer, [7, 6, 2], local(2026, 3, 5), agent=ana)
    assert value("csat", Scope.AGENT, ana.pk) == d("75")  # 3 of 4
    assert value("csat", Scope.AGENT, bo.pk) == d("0")
    assert value("csat_mean", Scope.AGENT, bo.pk) == d("2")
    assert value("ces_mean", Scope.AGENT, ana.pk) == d("5")
    # The account owner's and the company's numbers count every answer, as before.
    assert value("csat") == value("csat", Scope.USER, customer.owner_id) == d("62.5")  # 5 of 8
    # An agent's drill-down lists the answers about their tickets, exactly the snapshot's n.
    march = Period("month", MARCH_FIRST)
    drill = get_kpi("csat").drilldown.records
    assert sorted(r.score for r in drill(ana, march, Scope.AGENT, str(ana.pk), "denominator")) == [2, 4, 5, 5]
    assert drill(bo, march, Scope.AGENT, str(ana.pk), "denominator").count() == 0


def test_csat_wilson_at_the_edges_stays_inside_0_to_100(customer):
    csat = make_survey("csat")
    answers(csat, customer, [5, 5, 5], local(2026, 3, 5))
    r = row("csat")
    assert r.value == d("100")
    assert 0 < r.extra.wilson_low < 100 and r.extra.wilson_high == pytest.approx(100)


def test_ces_mean_with_its_scale_margin_of_error_and_share_easy(customer):
    ces = make_survey("ces")
    answers(ces, customer, [7, 6, 5, 5, 4, 3, 2], local(2026, 3, 5))
    r = row("ces_mean")
    # mean 32/7; s² = (164 − 32²/7) / 6 = 2.952381; MoE = 1.96·s/√7.
    assert value("ces_mean") == d("4.571429")
    assert r.sample_size == 7
    assert (r.extra.scale_min, r.extra.scale_max) == (1, 7)
    assert r.extra.sd == pytest.approx(1.718249, abs=1e-4)
    assert r.extra.moe95 == pytest.approx(1.272897, abs=1e-4)
    assert r.extra.easy_pct == pytest.approx(57.1429, abs=1e-3)
    assert value("ces_mean", first_day=APRIL) is None


def test_a_single_ces_answer_has_a_mean_but_no_interval(customer):
    answers(make_survey("ces"), customer, [6], local(2026, 3, 5))
    r = row("ces_mean")
    assert r.value == d("6") and r.extra.sd is None and r.extra.moe95 is None


# Response rates
# ---------------------------------------------------------------------------------------------------------


def invitation(survey, customer, sent: datetime, *, status: str, started: bool = False, opened: bool = False):
    return SurveyInvitation.objects.create(
        survey=survey,
        customer=customer,
        trigger=survey.trigger,
        status=status,
        token_hash=secrets.token_hex(32),
        created_at=sent,
        scheduled_for=sent,
        sent_at=sent,
        expires_at=sent + timedelta(days=14),
        opened_at=sent + timedelta(hours=1) if opened or started else None,
        started_at=sent + timedelta(hours=2) if started else None,
    )


def test_response_rates_rr1_and_rr2(customer):
    survey = make_survey("csat")
    sent = local(2026, 3, 10)
    for _ in range(4):
        invitation(survey, customer, sent, status="completed", started=True)
    for _ in range(2):
        invitation(survey, customer, sent, status="partial", started=True)
    for _ in range(3):
        invitation(survey, customer, sent, status="expired", opened=True)
    invitation(survey, customer, sent, status="expired")
    # Answered in April, sent in March: counts for March (by send time).
    invitation(survey, customer, local(2026, 3, 31, 23), status="completed", started=True)
    # Never sent: not in the denominator.
    SurveyInvitation.objects.create(
        survey=survey,
        customer=customer,
        trigger="manual",
        status="suppressed",
        suppression_reason="cooldown",
        created_at=sent,
        scheduled_for=sent,
    )
    rr1, rr2 = row("survey_response_rate"), row("survey_response_rate_rr2")
    assert (value("survey_response_rate"), rr1.numerator, rr1.denominator) == (d("45.454545"), 5, 11)
    assert (value("survey_response_rate_rr2"), rr2.numerator, rr2.denominator) == (d("63.636364"), 7, 11)
    assert detail(rr1.extra) == {
        "delivered": 11,
        "opened": 10,
        "started": 7,
        "completed": 5,
        "partial": 2,
        "drop_off_pct": pytest.approx(28.5714, abs=1e-3),
    }
    assert rr1.provisional is False
    assert value("survey_response_rate", Scope.USER, customer.owner.pk) == d("45.454545")
    assert value("survey_response_rate", first_day=APRIL) is None


def test_response_rates_per_survey_kind_and_per_trigger_beside_the_pooled_rate(customer):
    """KPIS.md §10.12: NPS invitations are not pooled with CSAT ones when the rate is read per kind."""
    # The company's daily-trickle NPS survey (there is one per kind), and a manual CSAT campaign.
    nps = Survey.objects.filter(kind="nps", trigger="periodic").first() or make_survey(
        "nps", trigger="periodic"
    )
    csat = make_survey("csat")
    sent = local(2026, 3, 10)
    for status in ("completed", "completed", "completed", "expired"):
        invitation(nps, customer, sent, status=status, started=status == "completed")
    for status in ("completed", "partial", "expired", "expired", "expired", "expired"):
        invitation(csat, customer, sent, status=status, started=status != "expired")
    kind, trigger = Scope.SURVEY, Scope.TRIGGER
    rr1 = "survey_response_rate"
    assert (row(rr1).numerator, row(rr1).denominator) == (4, 10)
    nps_row, csat_row = row(rr1, kind, "nps"), row(rr1, kind, "csat")
    assert (value(rr1, kind, "nps"), nps_row.numerator, nps_row.denominator) == (d("75"), 3, 4)
    assert (value(rr1, kind, "csat"), csat_row.numerator, csat_row.denominator) == (d("16.666667"), 1, 6)
    assert value(rr1, kind, "ces") is None
    assert value("survey_response_rate_rr2", kind, "csat") == d("33.333333")
    assert value(rr1, trigger, "periodic") == d("75")
    assert value(rr1, trigger, "manual") == d("16.666667")
    # The drill-down of a kind lists that kind's invitations only.
    from metrics.kpis import get_kpi
    from metrics.periods import period_of

    manager = make_user(role="manager")
    drill = get_kpi(rr1).drilldown
    march = period_of(local(2026, 3, 1), "month")
    assert drill.records(manager, march, kind, "nps", "denominator").count() == 4
    assert drill.records(manager, march, trigger, "manual", "numerator").count() == 1


def test_response_rate_is_provisional_while_links_can_still_be_answered(customer):
    survey = make_survey("csat")
    invitation(survey, customer, local(2026, 6, 2), status="sent")
    r = row("survey_response_rate", first_day=JUNE)
    assert r.value == d("0") and r.provisional is True


def test_pure_statistics_match_kpis_md():
    stats = satisfaction.nps_stats(200, 100, 40)
    assert stats["nps"] == pytest.approx(30)
    assert stats["moe95"] == pytest.approx(10.8245, abs=1e-4)
    # Worst case p = d = 0.5: MoE = 196/√n → ±19.6 at n = 100, ±9.8 at n = 400.
    assert satisfaction.nps_stats(100, 50, 50)["moe95"] == pytest.approx(19.6)
    assert satisfaction.nps_stats(400, 200, 200)["moe95"] == pytest.approx(9.8)
    assert satisfaction.nps_change_z(stats, satisfaction.nps_stats(10, 10, 0)) is not None
    assert satisfaction.nps_change_z(satisfaction.nps_stats(5, 5, 0), satisfaction.nps_stats(5, 0, 5)) is None


def test_all_satisfaction_kpis_are_registered_with_every_scope():
    from metrics.kpis import registry

    codes = {
        "nps_relationship",
        "nps_transactional",
        "csat",
        "csat_mean",
        "ces_mean",
        "survey_response_rate",
        "survey_response_rate_rr2",
    }
    kpis = registry()
    assert codes <= set(kpis)
    for code in codes:
        per_survey = {Scope.SURVEY, Scope.TRIGGER} if code.startswith("survey_response_rate") else set()
        per_agent = {Scope.AGENT} if code in ("csat", "csat_mean", "ces_mean") else set()
        assert set(kpis[code].scopes) == {Scope.COMPANY, Scope.TEAM, Scope.USER} | per_survey | per_agent
        assert set(kpis[code].granularities) == {"week", "month", "quarter", "year"}


def test_one_recompute_covers_every_scope_with_a_fixed_number_of_queries(nps, customer):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    answers(nps, customer, [10, 0], local(2026, 3, 5))
    with CaptureQueriesContext(connection) as few:
        rows = compute("nps_relationship", also=(FEBRUARY, APRIL))
    owner = customer.owner
    assert set(rows) == {(Scope.COMPANY, ""), (Scope.USER, str(owner.pk)), (Scope.TEAM, str(owner.team_id))}
    for _ in range(5):
        answers(nps, make_customer(make_user(team=make_team())), [9, 7, 3], local(2026, 2, 5))
    with CaptureQueriesContext(connection) as many:
        rows = compute("nps_relationship", also=(FEBRUARY, APRIL))
    assert len(many) == len(few) <= 9  # per owner and per agent: the day rows grouped once, then per scope


def test_drill_downs_list_only_the_answers_the_user_may_see(nps, customer):
    from metrics.kpis import get_kpi
    from metrics.periods import Period
    from tests.factories import make_manager

    other = make_customer(make_user(), at=local(2025, 1, 1))
    answers(nps, customer, [10, 5, 8], local(2026, 3, 5))
    answers(nps, other, [0], local(2026, 3, 6))
    drill = get_kpi("nps_relationship").drilldown.records
    march = Period("month", MARCH_FIRST)
    rep = customer.owner
    assert sorted(r.score for r in drill(rep, march, Scope.COMPANY, "", "denominator")) == [5, 8, 10]
    # The numerator P − D: every answer, promoters counting +1 and detractors −1.
    numerator = get_kpi("nps_relationship").drilldown.parts["numerator"]
    answers_ = numerator.records(rep, march, Scope.COMPANY, "")
    assert sorted(r.score for r in answers_) == [5, 8, 10]
    assert numerator.total(answers_, march, Scope.COMPANY, "") == 0
    manager = make_manager()
    assert drill(manager, march, Scope.COMPANY, "", "denominator").count() == 4
    assert drill(manager, march, Scope.USER, str(other.owner_id), "denominator").count() == 1
    rr = get_kpi("survey_response_rate").drilldown.records
    assert rr(rep, march, Scope.COMPANY, "", "denominator").count() == 0  # invitations: managers only
    assert rr(manager, march, Scope.COMPANY, "", "denominator").count() == 4

"""Service KPIs against hand-worked values (KPIS.md §6). Times are Europe/Berlin wall-clock times."""

from datetime import date
from decimal import Decimal

import pytest
from django.utils import timezone

from crm import services
from crm.models import Ticket
from metrics.kpis import registry
from metrics.kpis.drilldown import NUMERATOR
from metrics.models import Scope
from metrics.periods import period_of
from tests.factories import make_agent, make_customer, make_ticket, make_user
from tests.metrics.kit import compute, d, detail, local, row, value

pytestmark = pytest.mark.django_db

APRIL = date(2026, 4, 1)


def reply(ticket: Ticket, agent, at) -> None:
    services.ticket_reply(ticket=ticket, actor=agent, body="On it.", at=at)


def set_status(ticket: Ticket, status: str, at) -> Ticket:
    return services.ticket_set_status(ticket=ticket, status=status, actor=None, at=at)


@pytest.fixture
def tickets(no_auto_assign):
    """Normal-priority tickets (SLA: first reply in 8 h, resolution in 72 h) worked by one agent."""
    agent = make_agent()
    customer = make_customer(at=local(2025, 1, 1))

    def ticket(at, **fields) -> Ticket:
        return make_ticket(customer, at=at, assignee=agent, **fields)

    t1 = ticket(local(2026, 3, 2, 9))
    reply(t1, agent, local(2026, 3, 2, 11))  # 2 h
    set_status(t1, "solved", local(2026, 3, 3, 9))  # 24 h
    t2 = ticket(local(2026, 3, 9, 9))
    reply(t2, agent, local(2026, 3, 9, 19))  # 10 h: first-reply SLA breached
    set_status(t2, "solved", local(2026, 3, 11, 9))  # first resolution 48 h
    set_status(t2, "open", local(2026, 3, 11, 12))
    set_status(t2, "solved", local(2026, 3, 12, 9))  # full resolution 72 h
    ticket(local(2026, 3, 16, 9))  # t3: never answered, both targets breach in March
    t4 = ticket(local(2026, 3, 23, 9))
    reply(t4, agent, local(2026, 3, 23, 13))  # 4 h; never solved: resolution breaches on the 26th
    spam = ticket(local(2026, 3, 4, 9))
    reply(spam, agent, local(2026, 3, 4, 9, 30))
    Ticket.objects.filter(pk=spam.pk).update(is_spam=True)
    # Created at 23:30 on 31 March (March), first answered at 00:30 on 1 April (April's response time).
    t5 = ticket(local(2026, 3, 31, 23, 30))
    reply(t5, agent, local(2026, 4, 1, 0, 30))
    return {"agent": agent, "customer": customer, "t1": t1}


def test_tickets_created_and_solved(tickets):
    # Created in March: t1–t5 (spam excluded); solved in March: t1 and t2 (its latest solve).
    assert value("tickets_created") == d("5")
    assert detail(row("tickets_created").extra) == {"unreplied": 1}
    assert value("tickets_solved") == d("2")
    assert value("tickets_created", Scope.USER, tickets["agent"].pk) == d("5")
    assert value("tickets_created", first_day=APRIL) == d("0")


def test_first_response_time_median_and_p90(tickets):
    # First replies in March: 2 h, 10 h, 4 h (t3 unanswered; spam excluded) → median 4 h;
    # p90 of [2, 4, 10] = 4 + 0.8 × (10 − 4) = 8.8 h.
    assert value("frt_median") == d("4")
    assert value("frt_p90") == d("8.8")
    assert row("frt_median").sample_size == 3
    # t5's one-hour first response belongs to April, the month of the reply.
    assert value("frt_median", first_day=APRIL) == d("1")
    assert row("frt_median", first_day=date(2026, 5, 1)).value is None


def test_resolution_time_full_and_first(tickets):
    # Solved in March: t1 after 24 h and t2 after 72 h (reopened; first resolution 48 h) →
    # median 48 h, p90 = 24 + 0.9 × 48 = 67.2 h; first-resolution median (24 + 48) / 2 = 36 h.
    assert value("resolution_median") == d("48")
    assert value("resolution_p90") == d("67.2")
    assert detail(row("resolution_median").extra) == {"first_resolution_median": 36.0}
    assert row("resolution_median", first_day=APRIL).value is None


def test_sla_attainment(tickets):
    now = local(2026, 3, 31, 23, 45)
    # First reply: t1 and t4 met; t2 breached at 17:00; t3 breached at 17:00 on the 16th; t5 (due 07:30
    # on 1 April) is still running and left out. Resolution: t1 and t2 met within 72 h; t3 and t4
    # breached on the 19th and 26th; t5 running → met 4 of 8 = 50 %.
    r = row("sla_attainment", now=now)
    assert (r.extra.first_response, r.extra.resolution) == ((2, 4), (2, 4))
    assert r.value == Decimal(50)
    assert row("sla_attainment", first_day=date(2026, 2, 1), now=now).value is None


def test_a_running_months_sla_attainment_is_compared_with_the_same_days_of_the_month_before(tickets):
    """On 10 April at noon, April is compared with 1–10 March: first replies t1 met, t2 breached (due at
    17:00 on 9 March); resolution t1 met (t2's first solve on the 11th is after those days) → 2 of 3."""
    rows = compute("sla_attainment", first_day=APRIL, now=local(2026, 4, 10, 12), also=(date(2026, 3, 1),))
    compared = rows[(Scope.COMPANY, "")].extra.compared
    assert (compared["numerator"], compared["denominator"], compared["until"]) == (2.0, 3.0, "2026-03-11")
    assert rows[(Scope.USER, str(tickets["agent"].pk))].extra.compared["denominator"] == 3.0


def test_backlog_at_period_end_from_history(no_auto_assign):
    customer = make_customer(at=local(2025, 1, 1))
    b1 = make_ticket(customer, at=local(2026, 2, 20))
    set_status(b1, "solved", local(2026, 3, 10))
    set_status(b1, "open", local(2026, 3, 20))  # reopened: unsolved again at the end of March
    b2 = make_ticket(customer, at=local(2026, 3, 5))
    set_status(b2, "solved", local(2026, 3, 6))
    make_ticket(customer, at=local(2026, 3, 31, 23))
    b4 = make_ticket(customer, at=local(2026, 2, 1))
    set_status(b4, "solved", local(2026, 2, 2))
    b5 = make_ticket(customer, at=local(2026, 4, 3))
    set_status(b5, "closed", local(2026, 4, 4))
    # End of February: b1 → 1. End of March: b1 and the ticket of 31 March 23:00 → 2; created − solved in
    # March = 2 − 1 (b1's solve was undone by its reopening, so only b2 counts as solved).
    assert value("backlog", first_day=date(2026, 2, 1)) == d("1")
    r = row("backlog")
    assert r.value == 2
    assert detail(r.extra) == {"net_change": 1}
    assert value("backlog", first_day=APRIL) == d("2")


def test_the_backlogs_records_are_the_tickets_unsolved_at_the_periods_end(no_auto_assign):
    """Only tickets changed after the end are looked up in the history; the others still have the status
    they had then."""
    manager = make_user(role="manager")
    customer = make_customer(at=local(2025, 1, 1))
    solved_since = make_ticket(customer, at=local(2026, 2, 10))
    set_status(solved_since, "solved", local(2026, 3, 4))
    still_open = make_ticket(customer, at=local(2026, 2, 11))
    reopened_since = make_ticket(customer, at=local(2026, 2, 12))
    set_status(reopened_since, "solved", local(2026, 2, 13))
    set_status(reopened_since, "open", local(2026, 3, 5))
    solved_then = make_ticket(customer, at=local(2026, 2, 14))
    set_status(solved_then, "solved", local(2026, 2, 15))
    created_after = make_ticket(customer, at=local(2026, 3, 1))
    closed_since = make_ticket(customer, at=local(2026, 2, 16))
    set_status(closed_since, "closed", local(2026, 3, 6))
    drill = registry()["backlog"].drilldown
    february = period_of(date(2026, 2, 1), "month")
    records = drill.parts[NUMERATOR].records(manager, february, Scope.COMPANY, "")
    assert set(records.values_list("pk", flat=True)) == {solved_since.pk, still_open.pk, closed_since.pk}
    assert value("backlog", first_day=date(2026, 2, 1)) == d("3")
    # The running month: the tickets unsolved now.
    running = period_of(timezone.localdate(), "month")
    records = drill.parts[NUMERATOR].records(manager, running, Scope.COMPANY, "")
    assert set(records.values_list("pk", flat=True)) == {still_open.pk, reopened_since.pk, created_after.pk}


def test_a_running_month_compares_its_backlog_with_the_same_day_of_the_month_before(no_auto_assign):
    """KPIS.md §10.1, stocks: on 8 April the backlog is compared with the backlog at the start of 9 March."""
    customer = make_customer(at=local(2025, 1, 1))
    b1 = make_ticket(customer, at=local(2026, 2, 20))
    set_status(b1, "solved", local(2026, 3, 10))  # still unsolved on 9 March
    b2 = make_ticket(customer, at=local(2026, 3, 5))
    set_status(b2, "solved", local(2026, 3, 6))
    make_ticket(customer, at=local(2026, 3, 20))  # after the 8th: not in the comparison
    make_ticket(customer, at=local(2026, 4, 2))
    now = local(2026, 4, 8, 12)
    rows = compute("backlog", first_day=APRIL, now=now, also=(date(2026, 3, 1),))
    company = rows[(Scope.COMPANY, "")]
    assert company.value == 2  # the ticket of 20 March and the one of 2 April
    assert (company.extra.compared["value"], company.extra.compared["until"]) == (1.0, "2026-03-09")


def test_complaint_rate_per_active_customer(no_auto_assign):
    rep = make_user()
    customers = [make_customer(rep, at=local(2025, 1, 1)) for _ in range(4)]
    make_ticket(customers[0], at=local(2026, 3, 3), category="complaint")
    make_ticket(customers[1], at=local(2026, 3, 4), category="complaint")
    make_ticket(customers[1], at=local(2026, 3, 5), category="question")
    # 2 complaints for 4 customers active in March → 50 per 100 customers.
    assert value("complaint_rate") == d("50")
    assert value("complaint_rate", Scope.USER, rep.pk) == d("50")
    assert value("complaint_rate", first_day=APRIL) == d("0")
    assert row("complaint_rate", first_day=date(2024, 1, 1)).value is None
    # On 4 April at noon, April is compared with 1–4 March: the two complaints of those days, per the four
    # customers active on 1 March and one who joined on the 3rd (not the one who joined on the 20th).
    make_customer(rep, at=local(2026, 3, 3))
    make_customer(rep, at=local(2026, 3, 20))
    make_ticket(customers[2], at=local(2026, 3, 15), category="complaint")
    rows = compute("complaint_rate", first_day=APRIL, now=local(2026, 4, 4, 12), also=(date(2026, 3, 1),))
    compared = rows[(Scope.COMPANY, "")].extra.compared
    assert (compared["numerator"], compared["denominator"], compared["value"]) == (2.0, 5.0, 40.0)


def test_ticket_time_of_a_week_boundary(tickets):
    # The ISO week of Monday 30 March holds t5 (created 23:30 on Tuesday 31 March), not t4 (23 March).
    assert value("tickets_created", granularity="week", first_day=date(2026, 3, 30)) == d("1")

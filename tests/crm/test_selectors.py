"""Access rules (DESIGN.md §6): who sees which customers, deals, tickets and activities."""

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import User
from crm import customer_data, selectors, services
from crm.models import Activity, Customer, Deal, Ticket
from tests.factories import (
    make_admin,
    make_agent,
    make_answer,
    make_customer,
    make_deal,
    make_manager,
    make_survey,
    make_task,
    make_ticket,
    make_user,
)

pytestmark = pytest.mark.django_db


@dataclass
class Book:
    """Two reps' customers with deals, tickets and activities, and two agents with their queues."""

    rep_a: User
    rep_b: User
    agent_1: User
    agent_2: User
    customer_a: Customer
    customer_b: Customer
    customer_c: Customer
    deal_a: Deal
    deal_b: Deal
    ticket_a_agent_1: Ticket
    ticket_b_agent_2: Ticket
    ticket_c_unassigned: Ticket
    task_a: Activity
    task_b: Activity
    note_on_ticket_c: Activity


@pytest.fixture
def book(no_auto_assign) -> Book:
    rep_a, rep_b, rep_c = make_user(), make_user(), make_user()
    agent_1, agent_2 = make_agent(), make_agent()
    customer_a, customer_b, customer_c = make_customer(rep_a), make_customer(rep_b), make_customer(rep_c)
    ticket_c = make_ticket(customer_c)
    return Book(
        rep_a=rep_a,
        rep_b=rep_b,
        agent_1=agent_1,
        agent_2=agent_2,
        customer_a=customer_a,
        customer_b=customer_b,
        customer_c=customer_c,
        deal_a=make_deal(customer_a),
        deal_b=make_deal(customer_b),
        ticket_a_agent_1=make_ticket(customer_a, assignee=agent_1),
        ticket_b_agent_2=make_ticket(customer_b, assignee=agent_2),
        ticket_c_unassigned=ticket_c,
        task_a=make_task(customer_a),
        task_b=make_task(customer_b),
        note_on_ticket_c=services.activity_log(
            actor=rep_c, customer=customer_c, ticket=ticket_c, kind=Activity.Kind.NOTE, subject="Called in"
        ),
    )


def test_customer_list_rep_sees_only_own_customers(book):
    assert set(selectors.customer_list(user=book.rep_a)) == {book.customer_a}


def test_deal_list_rep_sees_only_deals_of_own_customers(book):
    assert set(selectors.deal_list(user=book.rep_a)) == {book.deal_a}
    assert set(selectors.deal_list(user=book.rep_b)) == {book.deal_b}


def test_ticket_list_rep_sees_only_tickets_of_own_customers(book):
    assert set(selectors.ticket_list(user=book.rep_a)) == {book.ticket_a_agent_1}


def test_activity_list_rep_sees_only_activities_of_own_customers(book):
    assert set(selectors.activity_list(user=book.rep_a)) == {book.task_a}


def test_ticket_list_agent_sees_assigned_and_unassigned_but_not_other_agents(book):
    assert set(selectors.ticket_list(user=book.agent_1)) == {book.ticket_a_agent_1, book.ticket_c_unassigned}
    assert set(selectors.ticket_list(user=book.agent_2)) == {book.ticket_b_agent_2, book.ticket_c_unassigned}


def test_customer_list_agent_sees_only_customers_of_visible_tickets(book):
    assert set(selectors.customer_list(user=book.agent_1)) == {book.customer_a, book.customer_c}


def test_deal_list_agent_sees_no_deals(book):
    assert not selectors.deal_list(user=book.agent_1).exists()


def test_activity_list_agent_sees_activities_on_visible_tickets_only(book):
    assert set(selectors.activity_list(user=book.agent_1)) == {book.note_on_ticket_c}


def test_ticket_list_agent_loses_ticket_when_reassigned(book):
    services.ticket_assign(ticket=book.ticket_c_unassigned, assignee=book.agent_2, actor=book.agent_2)
    assert set(selectors.ticket_list(user=book.agent_1)) == {book.ticket_a_agent_1}
    assert set(selectors.customer_list(user=book.agent_1)) == {book.customer_a}


@pytest.mark.parametrize("make_boss", [make_manager, make_admin])
def test_selectors_manager_and_admin_see_everything(book, make_boss):
    boss = make_boss()
    assert set(selectors.customer_list(user=boss)) == set(Customer.objects.all())
    assert set(selectors.deal_list(user=boss)) == set(Deal.objects.all())
    assert set(selectors.ticket_list(user=boss)) == set(Ticket.objects.all())
    assert set(selectors.activity_list(user=boss)) == set(Activity.objects.all())
    assert len(Customer.objects.all()) == 3


def test_customer_list_hides_merged_customers_by_default(book):
    duplicate = make_customer(book.rep_a, name=book.customer_a.name)
    Customer.objects.filter(pk=duplicate.pk).update(merged_into=book.customer_a)
    manager = make_manager()
    assert duplicate not in selectors.customer_list(user=manager)
    assert set(selectors.customer_list(user=book.rep_a)) == {book.customer_a}
    assert duplicate in selectors.customer_list(user=manager, include_merged=True)
    assert set(selectors.customer_list(user=book.rep_a, include_merged=True)) == {book.customer_a, duplicate}


def test_task_list_shows_own_open_tasks_soonest_first(book):
    later = book.task_a
    sooner = make_task(book.customer_a, due_at=later.due_at.replace(year=later.due_at.year - 1))
    done = make_task(book.customer_a)
    services.activity_complete(activity=done, actor=book.rep_a)
    assert list(selectors.task_list(user=book.rep_a)) == [sooner, later]


def test_the_timeline_holds_what_other_apps_register_within_the_same_access_rules():
    """Survey answers reach a customer's timeline through crm.customer_data (crm never imports surveys)."""
    rep, other_rep = make_user(), make_user()
    customer = make_customer(rep)
    make_deal(customer)
    make_answer(make_survey("nps"), customer, 9, timezone.now() - timedelta(hours=2), comment="Great")

    assert [source.app for source in customer_data.registered()] == ["surveys"]
    kinds = [entry["kind"] for entry in selectors.customer_timeline(customer=customer, user=make_manager())]
    assert sorted(kinds) == ["deal", "survey"]
    assert selectors.customer_timeline(customer=customer, user=other_rep) == []


def test_workspace_summary_holds_what_the_rep_may_see(book):
    summary = selectors.workspace_summary(user=book.rep_a, now=timezone.now() + timedelta(minutes=1))
    assert summary["customer_count"] == 1
    assert summary["open_deals_count"] == 1 and summary["open_deals_total"] == book.deal_a.amount
    assert summary["ticket_counts"] == {"mine": 0, "unassigned": 0, "breached": 0, "total": 1}
    assert list(summary["my_tickets"]) == [book.ticket_a_agent_1]
    assert list(summary["tasks"]) == [book.task_a] and summary["overdue_tasks"] == 1


def test_deal_changes_display_names_related_rows_and_choice_labels(book):
    changes = {"owner": (book.rep_a.pk, book.rep_b.pk), "kind": ("new", "renewal"), "title": ("Old", "New")}
    shown = selectors.record_changes_display(model=Deal, changes=changes)
    assert [(row["old"], row["new"]) for row in shown] == [
        (str(book.rep_a), str(book.rep_b)),
        (Deal.Kind.NEW.label, Deal.Kind.RENEWAL.label),
        ("Old", "New"),
    ]


def test_customer_record_counts_counts_what_a_merge_would_move(book):
    counts = selectors.customer_record_counts(customers=[book.customer_a, book.customer_c])
    assert counts == {
        book.customer_a.pk: {"deals": 1, "tickets": 1, "activities": 1},
        book.customer_c.pk: {"deals": 0, "tickets": 1, "activities": 1},
    }

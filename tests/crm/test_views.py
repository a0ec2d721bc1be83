"""Workspace pages: full pages and HTMX fragments, bad input, optimistic locking, query budgets."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import UsageEvent
from crm import services
from crm.models import Activity, Customer, Deal, DealStageChange, Ticket
from tests.factories import (
    make_agent,
    make_customer,
    make_deal,
    make_manager,
    make_pipeline,
    make_task,
    make_ticket,
    make_user,
    stage,
)

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


@pytest.fixture
def rep(client):
    user = make_user(username="rita", first_name="Rita")
    client.force_login(user)
    return user


# Pages and fragments
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["crm:workspace", "crm:customer_list", "crm:deal_list", "crm:deal_board", "crm:ticket_list"]
)
def test_pages_render_for_a_rep(client, rep, name):
    customer = make_customer(rep, name="Acme GmbH")
    make_deal(customer, title="Big deal")
    make_ticket(customer, subject="Printer on fire")
    make_task(customer, subject="Call back Acme")
    response = client.get(reverse(name))
    assert response.status_code == 200
    assert b"<html" in response.content


@pytest.mark.parametrize(
    ("name", "fragment_id"),
    [
        ("crm:customer_list", 'id="customer-table"'),
        ("crm:deal_list", 'id="deal-table"'),
        ("crm:deal_board", 'id="deal-board"'),
        ("crm:ticket_list", 'id="ticket-table"'),
    ],
)
def test_list_pages_answer_htmx_with_the_fragment_only(client, rep, name, fragment_id):
    make_deal(make_customer(rep))
    response = client.get(reverse(name), headers=HTMX)
    assert response.status_code == 200
    assert b"<html" not in response.content
    assert fragment_id.encode() in response.content
    assert "HX-Request" in response["Vary"]


def test_htmx_history_restore_gets_the_whole_page(client, rep):
    response = client.get(
        reverse("crm:customer_list"), headers={**HTMX, "HX-History-Restore-Request": "true"}
    )
    assert b"<html" in response.content


def test_customer_list_searches_name_email_and_phone(client, rep):
    make_customer(rep, name="Alpha Trading", email="hello@alpha.example", phone="+49 30 1234567")
    make_customer(rep, name="Beta Logistics", email="info@beta.example")
    for term in ("alpha", "HELLO@ALPHA", "030 1234567"):
        body = client.get(reverse("crm:customer_list"), {"q": term}, headers=HTMX).content.decode()
        assert "Alpha Trading" in body, term
        assert "Beta Logistics" not in body, term


def test_customer_list_filters_sorts_and_paginates(client, rep):
    for i in range(30):
        make_customer(
            rep, name=f"Firm {i:02d}", status=Customer.Status.LEAD if i % 2 else Customer.Status.ACTIVE
        )
    body = client.get(reverse("crm:customer_list"), {"status": "lead", "sort": "-name"}).content.decode()
    assert "15 customers" in body
    assert body.index("Firm 29") < body.index("Firm 27")
    assert "Firm 28" not in body
    page2 = client.get(reverse("crm:customer_list"), {"page": 2}).content.decode()
    assert "Firm 25" in page2 and "Firm 00" not in page2


def test_customer_list_bad_filter_values_do_not_fail(client, rep):
    response = client.get(
        reverse("crm:customer_list"), {"status": "nonsense", "sort": "drop table", "page": "x"}
    )
    assert response.status_code == 200


# Customers
# ---------------------------------------------------------------------------------------------------------


def test_customer_create_records_and_redirects(client, rep):
    response = client.post(
        reverse("crm:customer_create"),
        {
            "name": "  Gamma AG ",
            "kind": "company",
            "email": "a@gamma.example",
            "phone": "030 555 1234",
            "source": "referral",
            "language": "zh-hans",
        },
    )
    customer = Customer.objects.get(name="Gamma AG")
    assert response.status_code == 302
    assert response["Location"] == customer.get_absolute_url()
    assert customer.owner == rep
    assert customer.phone_key == "+49305551234"
    assert UsageEvent.objects.filter(user=rep, object_type="customer", verb="create").count() == 1


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": ""}, "name", "This field is required"),
        ({"name": "   "}, "name", "This field is required"),
        ({"email": "no-at-sign"}, "email", "valid email"),
        ({"phone": "12"}, "phone", "not a valid phone number"),
        ({"source": "martians"}, "source", "Select a valid choice"),
        ({"name": "x" * 201}, "name", "at most 200"),
    ],
)
def test_customer_create_bad_input_rerenders_fragment_with_field_errors(client, rep, data, field, message):
    payload = {"name": "Delta", "kind": "company", "source": "other", "language": "en", **data}
    response = client.post(reverse("crm:customer_create"), payload, headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200
    assert b"<html" not in response.content
    assert message in body
    assert f'id="id_{field}-error"' in body
    assert not Customer.objects.filter(name="Delta").exists()


def test_customer_duplicate_warning_lists_candidates(client, rep):
    make_customer(rep, name="Müller GmbH", email="info@mueller.example", phone="+49 89 1234567")
    for params in ({"email": "INFO@mueller.example"}, {"phone": "089 1234567"}, {"name": "Müller"}):
        body = client.get(reverse("crm:customer_duplicates"), params, headers=HTMX).content.decode()
        assert "may already exist" in body, params
        assert "Müller GmbH" in body, params
    body = client.get(reverse("crm:customer_duplicates"), {"name": "Zebra Farms"}).content.decode()
    assert "may already exist" not in body


def test_customer_update_and_history_shows_the_change(client, rep):
    customer = make_customer(rep, name="Epsilon", city="Berlin")
    data = {"name": "Epsilon", "kind": "company", "city": "Hamburg", "source": "other", "language": "en"}
    assert client.post(reverse("crm:customer_update", args=[customer.pk]), data).status_code == 302
    body = client.get(customer.get_absolute_url()).content.decode()
    assert "Berlin" in body and "Hamburg" in body
    assert "Change history" in body


def test_deal_history_names_stages_and_users(client, rep):
    deal = make_deal(make_customer(rep), title="Trail")
    services.deal_move_stage(deal=deal, stage=stage(order=30), actor=rep, version=1)
    body = client.get(deal.get_absolute_url()).content.decode()
    assert "<del>Lead in</del> → <ins>Proposal</ins>" in body
    assert "<del>Open</del> → <ins>Open</ins>" not in body


def test_customer_churn_needs_a_reason(client, rep):
    customer = make_customer(rep)
    client.post(reverse("crm:customer_status", args=[customer.pk]), {"status": "churned", "reason": ""})
    customer.refresh_from_db()
    assert customer.status == Customer.Status.ACTIVE
    client.post(reverse("crm:customer_status", args=[customer.pk]), {"status": "churned", "reason": "Price"})
    customer.refresh_from_db()
    assert customer.status == Customer.Status.CHURNED and customer.churn_reason == "Price"


def test_agent_cannot_create_customers(client):
    client.force_login(make_agent())
    assert client.get(reverse("crm:customer_create")).status_code == 404
    assert client.get(reverse("crm:deal_board")).status_code == 404


# Deals
# ---------------------------------------------------------------------------------------------------------


def _deal_payload(customer, **overrides):
    return {
        "customer": customer.pk,
        "title": "Website relaunch",
        "amount": "12500.50",
        "kind": "new",
        "stage": stage().pk,
        "source": "website",
        "expected_close_date": "2027-03-31",
        **overrides,
    }


def test_deal_create(client, rep):
    customer = make_customer(rep)
    response = client.post(reverse("crm:deal_create"), _deal_payload(customer))
    deal = Deal.objects.get(title="Website relaunch")
    assert response.status_code == 302
    assert deal.amount == Decimal("12500.50") and deal.owner == rep
    assert deal.stage_changes.count() == 1


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"amount": "1,2,3"}, "amount", "Enter an amount"),
        ({"amount": "-5"}, "amount", "greater than or equal to 0"),
        ({"amount": "100000000000000000000"}, "amount", "less than or equal to"),
        ({"amount": "12.345"}, "amount", "2 decimal places"),
        ({"expected_close_date": "2026-02-30"}, "expected_close_date", "valid date"),
        ({"expected_close_date": "9999-12-31"}, "expected_close_date", "between 1990 and 2100"),
        ({"probability": "101"}, "probability", "less than or equal to 100"),
        ({"title": ""}, "title", "required"),
    ],
)
def test_deal_create_bad_input(client, rep, overrides, field, message):
    response = client.post(
        reverse("crm:deal_create"), _deal_payload(make_customer(rep), **overrides), headers=HTMX
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert message in body
    assert f'id="id_{field}-error"' in body
    assert not Deal.objects.exists()


def test_deal_create_refuses_a_stage_of_another_pipeline_and_a_foreign_customer(client, rep):
    other_pipeline_stage = make_pipeline().stages.get(kind="open")
    response = client.post(
        reverse("crm:deal_create"),
        _deal_payload(make_customer(rep), stage=other_pipeline_stage.pk),
        headers=HTMX,
    )
    assert "Select a valid choice" in response.content.decode()
    foreign = make_customer(make_user())
    response = client.post(reverse("crm:deal_create"), _deal_payload(foreign), headers=HTMX)
    assert response.status_code == 200
    assert "Choose one of your customers from the list." in response.content.decode()
    assert not Deal.objects.exists()


def test_deal_update_with_stale_version_shows_what_changed_and_keeps_input(client, rep):
    deal = make_deal(make_customer(rep), amount=Decimal("1000"), title="Original")
    manager = make_manager(first_name="Max")
    services.deal_update(deal=deal, actor=manager, data={"amount": Decimal("1500")}, version=1)
    payload = {**_deal_payload(deal.customer, title="My new title", amount="900"), "version": 1}
    response = client.post(reverse("crm:deal_update", args=[deal.pk]), payload, headers=HTMX)
    body = response.content.decode()
    deal.refresh_from_db()
    assert response.status_code == 200
    assert "Someone else saved this deal" in body
    assert "Max" in body and "1500" in body
    assert 'value="My new title"' in body
    assert 'name="version" value="2"' in body
    assert deal.title == "Original" and deal.amount == Decimal("1500")
    # Saving again, knowingly, applies the user's values on top of the new version.
    payload["version"] = 2
    assert client.post(reverse("crm:deal_update", args=[deal.pk]), payload).status_code == 302
    deal.refresh_from_db()
    assert deal.title == "My new title" and deal.version == 3


def test_board_moves_a_deal_and_records_who(client, rep):
    deal = make_deal(make_customer(rep))
    target = stage(order=30)
    response = client.post(
        reverse("crm:deal_move", args=[deal.pk]),
        {"stage": target.pk, "version": deal.version, "from": "board"},
        headers=HTMX,
    )
    assert response.status_code == 200
    assert 'id="deal-board"' in response.content.decode()
    assert "dealMoved" in response["HX-Trigger"]
    change = DealStageChange.objects.filter(deal=deal).latest("at")
    assert change.to_stage == target and change.by == rep


def test_marking_lost_requires_a_reason_and_won_closes(client, rep):
    deal = make_deal(make_customer(rep))
    client.post(reverse("crm:deal_move", args=[deal.pk]), {"stage": stage("lost").pk, "version": 1})
    deal.refresh_from_db()
    assert deal.status == Deal.Status.OPEN
    client.post(reverse("crm:deal_move", args=[deal.pk]), {"stage": stage("won").pk, "version": 1})
    deal.refresh_from_db()
    assert deal.status == Deal.Status.WON and deal.closed_at is not None


def test_board_move_with_a_stale_version_is_refused(client, rep):
    deal = make_deal(make_customer(rep))
    services.deal_move_stage(deal=deal, stage=stage(order=20), actor=rep, version=1)
    response = client.post(
        reverse("crm:deal_move", args=[deal.pk]),
        {"stage": stage(order=30).pk, "version": 1, "from": "board"},
        headers=HTMX,
    )
    deal.refresh_from_db()
    assert deal.stage == stage(order=20)
    assert "Someone else changed this deal" in response.content.decode()


def test_board_shows_counts_and_sums_per_stage(client, rep):
    customer = make_customer(rep)
    make_deal(customer, amount=Decimal("100"))
    make_deal(customer, amount=Decimal("250"))
    body = client.get(reverse("crm:deal_board")).content.decode()
    assert "<strong>2</strong> · 350" in body


# Tickets and activities
# ---------------------------------------------------------------------------------------------------------


def test_agent_replies_publicly_then_solves(client):
    agent = make_agent()
    ticket = make_ticket(make_customer(), assignee=agent)
    client.force_login(agent)
    client.post(reverse("crm:ticket_reply", args=[ticket.pk]), {"body": "Internal thought", "public": "0"})
    ticket.refresh_from_db()
    assert ticket.first_response_at is None
    client.post(reverse("crm:ticket_reply", args=[ticket.pk]), {"body": "We are on it", "public": "1"})
    client.post(reverse("crm:ticket_status", args=[ticket.pk]), {"status": "solved"})
    ticket.refresh_from_db()
    assert ticket.first_response_at is not None
    assert ticket.status == Ticket.Status.SOLVED and ticket.solved_at is not None


def test_empty_reply_rerenders_with_error(client):
    agent = make_agent()
    ticket = make_ticket(make_customer(), assignee=agent)
    client.force_login(agent)
    response = client.post(
        reverse("crm:ticket_reply", args=[ticket.pk]), {"body": "   ", "public": "1"}, headers=HTMX
    )
    assert response.status_code == 200
    assert "Write a message" in response.content.decode()


def test_illegal_ticket_transition_is_a_message_not_a_500(client):
    agent = make_agent()
    ticket = make_ticket(make_customer(), assignee=agent)
    client.force_login(agent)
    client.post(reverse("crm:ticket_status", args=[ticket.pk]), {"status": "closed"})
    response = client.post(reverse("crm:ticket_status", args=[ticket.pk]), {"status": "open"}, follow=True)
    assert response.status_code == 200
    assert "cannot become" in response.content.decode()


def test_ticket_queues(client, no_auto_assign):
    agent, other = make_agent(), make_agent()
    customer = make_customer()
    make_ticket(customer, subject="Mine", assignee=agent)
    make_ticket(customer, subject="Nobody's", assignee=None)
    make_ticket(customer, subject="Theirs", assignee=other)
    client.force_login(agent)
    mine = client.get(reverse("crm:ticket_list"), {"queue": "mine"}).content.decode()
    unassigned = client.get(reverse("crm:ticket_list"), {"queue": "unassigned"}).content.decode()
    assert "Mine" in mine and "Nobody" not in mine and "Theirs" not in mine
    assert "Nobody&#x27;s" in unassigned and "Theirs" not in unassigned


def test_logging_a_call_with_a_follow_up_task(client, rep):
    customer = make_customer(rep)
    response = client.post(
        reverse("crm:activity_create"),
        {
            "customer": customer.pk,
            "kind": "call",
            "subject": "Intro call",
            "follow_up": "Send offer",
            "follow_up_due": "2027-01-15",
        },
        headers=HTMX,
    )
    assert response.status_code == 200
    assert "activityLogged" in response["HX-Trigger"]
    call = Activity.objects.get(subject="Intro call")
    task = Activity.objects.get(subject="Send offer")
    assert call.done_at is not None
    assert task.kind == Activity.Kind.TASK and task.done_at is None
    assert timezone.localtime(task.due_at).date().isoformat() == "2027-01-15"


def test_a_task_without_due_date_is_refused(client, rep):
    customer = make_customer(rep)
    response = client.post(
        reverse("crm:activity_create"),
        {"customer": customer.pk, "kind": "task", "subject": "Later"},
        headers=HTMX,
    )
    assert "needs a due date" in response.content.decode()
    assert not Activity.objects.filter(subject="Later").exists()


def test_completing_a_task_from_the_workspace(client, rep):
    task = make_task(make_customer(rep), due_at=timezone.now() - timedelta(days=1))
    response = client.post(reverse("crm:task_complete", args=[task.pk]), headers=HTMX)
    task.refresh_from_db()
    assert response.status_code == 200 and task.done_at is not None


def test_activity_with_garbage_ids_is_404_not_500(client, rep):
    for value in ("abc", "-1", "99999999999999999999999", ""):
        response = client.post(
            reverse("crm:activity_create"), {"customer": value, "kind": "note", "subject": "x"}
        )
        assert response.status_code == 404, value


# Query budgets: list pages and the board do not grow with the number of rows
# ---------------------------------------------------------------------------------------------------------


def _fill(rep, n):
    for _ in range(n):
        customer = make_customer(rep)
        make_deal(customer)
        make_ticket(customer)
        make_task(customer)


@pytest.mark.parametrize(
    "name", ["crm:workspace", "crm:customer_list", "crm:deal_list", "crm:deal_board", "crm:ticket_list"]
)
def test_list_pages_issue_a_bounded_number_of_queries(client, rep, name, django_assert_max_num_queries):
    _fill(rep, 3)
    client.get(reverse(name))  # warm caches (content types, sessions)
    with django_assert_max_num_queries(12) as few:
        client.get(reverse(name))
    _fill(rep, 30)
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(reverse(name))


@pytest.mark.parametrize("name", ["crm:customer_detail", "crm:deal_detail", "crm:ticket_detail"])
def test_detail_pages_issue_a_bounded_number_of_queries(client, rep, name, django_assert_max_num_queries):
    customer = make_customer(rep)
    deal = make_deal(customer)
    ticket = make_ticket(customer)
    obj = {"crm:customer_detail": customer, "crm:deal_detail": deal, "crm:ticket_detail": ticket}[name]
    client.get(reverse(name, args=[obj.pk]))
    with django_assert_max_num_queries(25) as few:
        client.get(reverse(name, args=[obj.pk]))
    for i in range(15):
        services.customer_update(customer=customer, actor=rep, data={"city": f"City {i}"})
        make_task(customer)
        services.deal_update(deal=deal, actor=rep, data={"title": f"Deal {i}"}, version=None)
        services.ticket_reply(ticket=ticket, actor=rep, body=f"Reply {i}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(reverse(name, args=[obj.pk]))

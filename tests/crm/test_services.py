from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from accounts.models import UsageEvent
from accounts.services import user_deactivate
from crm import services
from crm.models import (
    Activity,
    Customer,
    Deal,
    PipelineStage,
    SlaPolicy,
    SpendEntry,
    Ticket,
    TicketMessage,
)
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


def ago(**delta: float) -> datetime:
    return timezone.now() - timedelta(**delta)


def usage(user, verb: str, obj) -> list[UsageEvent]:
    return list(
        UsageEvent.objects.filter(user=user, verb=verb, object_type=obj._meta.model_name, object_id=obj.pk)
    )


# Customers
# ---------------------------------------------------------------------------------------------------------


def test_customer_create_writes_first_status_history_row():
    rep = make_user()
    at = ago(hours=1)
    customer = services.customer_create(actor=rep, name="Acme", at=at)
    assert customer.status == Customer.Status.LEAD
    changes = list(customer.status_changes.values_list("from_status", "to_status", "at", "by"))
    assert changes == [("", "lead", at, rep.pk)]


def test_customer_create_records_usage_event_with_via():
    rep = make_user()
    customer = services.customer_create(actor=rep, name="Acme", via=UsageEvent.Via.IMPORT)
    [event] = usage(rep, UsageEvent.Verb.CREATE, customer)
    assert event.via == UsageEvent.Via.IMPORT


def test_customer_create_as_active_sets_became_customer_at():
    rep = make_user()
    at = ago(days=3)
    customer = services.customer_create(actor=rep, name="Acme", status=Customer.Status.ACTIVE, at=at)
    assert (customer.became_customer_at, customer.churned_at) == (at, None)


def test_customer_create_lower_cases_email_key():
    customer = make_customer(email="Info@Example.COM")
    assert customer.email == "Info@Example.COM"
    assert customer.email_key == "info@example.com"


def test_customer_create_puts_phone_key_in_e164_for_default_region_de():
    customer = make_customer(phone="030 1234567")
    assert customer.phone_key == "+49301234567"


def test_customer_create_keeps_explicit_country_code_in_phone_key():
    customer = make_customer(phone="+44 20 7946 0958")
    assert customer.phone_key == "+442079460958"


def test_customer_create_leaves_phone_key_empty_for_garbage():
    customer = make_customer(phone="call reception")
    assert customer.phone_key == ""


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Müller & Söhne GmbH", "müller söhne"),
        ("ACME Trading Co., Ltd.", "acme trading"),
        ("Globex, Inc.", "globex"),
        ("北京星辰科技有限公司", "北京星辰科技"),
    ],
)
def test_customer_create_name_key_strips_legal_suffixes_and_punctuation(name, key):
    assert make_customer(name=name).name_key == key


def test_customer_create_by_rep_is_owned_by_that_rep():
    rep, other = make_user(), make_user()
    customer = services.customer_create(actor=rep, name="Acme", owner=other)
    assert customer.owner == rep


def test_customer_create_rejects_email_without_at_sign():
    rep = make_user()
    with pytest.raises(ValidationError) as excinfo:
        services.customer_create(actor=rep, name="Acme", email="acme.example.com")
    assert "email" in excinfo.value.error_dict
    assert not Customer.objects.filter(name="Acme").exists()


def test_customer_update_refreshes_match_keys():
    customer = make_customer(phone="030 1234567")
    services.customer_update(customer=customer, actor=customer.owner, data={"phone": "089 7654321"})
    customer.refresh_from_db()
    assert customer.phone_key == "+49897654321"


def test_customer_set_status_lead_to_active_sets_became_customer_at():
    customer = make_customer(status=Customer.Status.LEAD, at=ago(days=10))
    at = ago(days=5)
    services.customer_set_status(
        customer=customer, status=Customer.Status.ACTIVE, actor=customer.owner, at=at
    )
    customer.refresh_from_db()
    assert (customer.status, customer.became_customer_at, customer.churned_at) == ("active", at, None)
    last = customer.status_changes.last()
    assert (last.from_status, last.to_status, last.at) == ("lead", "active", at)


def test_customer_set_status_active_to_churned_sets_churned_at_and_reason():
    customer = make_customer(status=Customer.Status.ACTIVE, at=ago(days=10))
    at = ago(days=2)
    services.customer_set_status(
        customer=customer, status=Customer.Status.CHURNED, actor=customer.owner, at=at, reason="Price"
    )
    customer.refresh_from_db()
    assert (customer.status, customer.churned_at, customer.churn_reason) == ("churned", at, "Price")
    assert customer.status_changes.last().reason == "Price"


def test_customer_set_status_reactivation_clears_churn_and_keeps_start():
    start = ago(days=10)
    customer = make_customer(status=Customer.Status.ACTIVE, at=start)
    owner = customer.owner
    services.customer_set_status(
        customer=customer, status=Customer.Status.CHURNED, actor=owner, at=ago(days=5), reason="Price"
    )
    services.customer_set_status(
        customer=customer, status=Customer.Status.ACTIVE, actor=owner, at=ago(days=1)
    )
    customer.refresh_from_db()
    assert customer.status == Customer.Status.ACTIVE
    assert customer.became_customer_at == start
    assert (customer.churned_at, customer.churn_reason) == (None, "")
    assert list(customer.status_changes.values_list("from_status", "to_status")) == [
        ("", "active"),
        ("active", "churned"),
        ("churned", "active"),
    ]


@pytest.mark.parametrize("status", [Customer.Status.ACTIVE, Customer.Status.CHURNED])
def test_customer_set_status_cannot_go_back_to_lead(status):
    customer = make_customer(status=status)
    with pytest.raises(ValidationError) as excinfo:
        services.customer_set_status(customer=customer, status=Customer.Status.LEAD, actor=customer.owner)
    assert "status" in excinfo.value.error_dict
    customer.refresh_from_db()
    assert customer.status == status
    assert customer.status_changes.count() == 1


def test_customer_set_status_before_creation_is_a_validation_error():
    customer = make_customer(status=Customer.Status.LEAD, at=ago(days=1))
    with pytest.raises(ValidationError):
        services.customer_set_status(
            customer=customer, status=Customer.Status.ACTIVE, actor=customer.owner, at=ago(days=2)
        )


# Deals
# ---------------------------------------------------------------------------------------------------------


def test_deal_create_writes_initial_stage_change_from_none():
    customer = make_customer()
    at = ago(hours=2)
    deal = services.deal_create(actor=customer.owner, customer=customer, title="Pilot", at=at)
    assert deal.stage == stage(PipelineStage.Kind.OPEN)
    assert list(deal.stage_changes.values_list("from_stage", "to_stage", "at", "by")) == [
        (None, deal.stage_id, at, customer.owner.pk)
    ]
    assert len(usage(customer.owner, UsageEvent.Verb.CREATE, deal)) == 1


def test_deal_create_rejects_negative_amount():
    customer = make_customer()
    with pytest.raises(ValidationError) as excinfo:
        services.deal_create(actor=customer.owner, customer=customer, title="Pilot", amount=Decimal("-5"))
    assert "amount" in excinfo.value.error_dict
    assert not Deal.objects.filter(customer=customer).exists()


def test_deal_create_rejects_probability_above_100():
    customer = make_customer()
    with pytest.raises(ValidationError) as excinfo:
        services.deal_create(actor=customer.owner, customer=customer, title="Pilot", probability=101)
    assert "probability" in excinfo.value.error_dict


def test_deal_create_in_won_stage_makes_customer_active():
    customer = make_customer(status=Customer.Status.LEAD, at=ago(days=3))
    deal = services.deal_create(
        actor=customer.owner, customer=customer, title="Imported", stage=stage(PipelineStage.Kind.WON)
    )
    customer.refresh_from_db()
    assert deal.status == Deal.Status.WON
    assert deal.closed_at is not None
    assert customer.status == Customer.Status.ACTIVE


def test_deal_move_stage_keeps_history_chain():
    customer = make_customer(status=Customer.Status.LEAD, at=ago(days=10))
    deal = make_deal(customer, at=ago(days=9))
    qualified, proposal = stage(order=20), stage(order=30)
    deal = services.deal_move_stage(deal=deal, stage=qualified, actor=customer.owner, at=ago(days=8))
    deal = services.deal_move_stage(deal=deal, stage=proposal, actor=customer.owner, at=ago(days=7))
    chain = list(deal.stage_changes.values_list("from_stage__name", "to_stage__name"))
    assert chain == [(None, "Lead in"), ("Lead in", "Qualified"), ("Qualified", "Proposal")]
    assert deal.version == 3
    assert len(usage(customer.owner, UsageEvent.Verb.STAGE, deal)) == 2


def test_deal_move_stage_won_closes_deal_and_activates_customer():
    customer = make_customer(status=Customer.Status.LEAD, at=ago(days=10))
    deal = make_deal(customer, at=ago(days=9))
    at = ago(days=1)
    deal = services.deal_move_stage(
        deal=deal, stage=stage(PipelineStage.Kind.WON), actor=customer.owner, at=at
    )
    deal.refresh_from_db()
    customer.refresh_from_db()
    assert (deal.status, deal.closed_at, deal.effective_probability) == (Deal.Status.WON, at, 100)
    assert (customer.status, customer.became_customer_at) == (Customer.Status.ACTIVE, at)


def test_deal_move_stage_won_by_system_activates_customer():
    customer = make_customer(status=Customer.Status.LEAD, at=ago(days=10))
    deal = make_deal(customer, at=ago(days=9))
    services.deal_move_stage(deal=deal, stage=stage(PipelineStage.Kind.WON), actor=None)
    customer.refresh_from_db()
    assert customer.status == Customer.Status.ACTIVE


def test_deal_move_stage_lost_without_reason_is_validation_error_on_lost_reason():
    deal = make_deal(at=ago(days=1))
    with pytest.raises(ValidationError) as excinfo:
        services.deal_move_stage(deal=deal, stage=stage(PipelineStage.Kind.LOST), actor=deal.owner)
    assert "lost_reason" in excinfo.value.error_dict
    deal.refresh_from_db()
    assert (deal.status, deal.closed_at, deal.version) == (Deal.Status.OPEN, None, 1)
    assert deal.stage_changes.count() == 1


def test_deal_move_stage_lost_with_reason_closes_deal():
    deal = make_deal(at=ago(days=1))
    deal = services.deal_move_stage(
        deal=deal, stage=stage(PipelineStage.Kind.LOST), actor=deal.owner, lost_reason="  Budget cut "
    )
    deal.refresh_from_db()
    assert (deal.status, deal.lost_reason) == (Deal.Status.LOST, "Budget cut")
    assert deal.closed_at is not None


def test_deal_move_stage_reopening_won_deal_clears_closed_at():
    deal = make_deal(at=ago(days=2))
    deal = services.deal_move_stage(deal=deal, stage=stage(PipelineStage.Kind.WON), actor=deal.owner)
    deal = services.deal_move_stage(deal=deal, stage=stage(order=40), actor=deal.owner)
    deal.refresh_from_db()
    assert (deal.status, deal.closed_at, deal.stage.name) == (Deal.Status.OPEN, None, "Negotiation")


def test_deal_move_stage_rejects_stage_of_another_pipeline():
    deal = make_deal(at=ago(days=1))
    foreign = make_pipeline().stages.get(kind=PipelineStage.Kind.OPEN)
    with pytest.raises(ValidationError) as excinfo:
        services.deal_move_stage(deal=deal, stage=foreign, actor=deal.owner)
    assert "stage" in excinfo.value.error_dict
    deal.refresh_from_db()
    assert deal.stage == stage(PipelineStage.Kind.OPEN)


def test_deal_move_stage_with_stale_version_raises_concurrent_edit():
    deal = make_deal(at=ago(days=1))
    stale = Deal.objects.get(pk=deal.pk)
    services.deal_move_stage(deal=deal, stage=stage(order=20), actor=deal.owner, version=1)
    with pytest.raises(services.ConcurrentEditError) as excinfo:
        services.deal_move_stage(deal=stale, stage=stage(order=30), actor=deal.owner, version=stale.version)
    assert set(excinfo.value.changes) == {"stage"}
    deal.refresh_from_db()
    assert deal.stage.name == "Qualified"


def test_deal_update_with_stale_version_lists_changes_and_writes_nothing():
    deal = make_deal(at=ago(days=1), title="Pilot")
    owner = deal.owner
    stale = Deal.objects.get(pk=deal.pk)
    services.deal_update(deal=deal, actor=owner, data={"title": "Pilot 2", "amount": Decimal("5")}, version=1)
    updates_before = len(usage(owner, UsageEvent.Verb.UPDATE, deal))

    with pytest.raises(services.ConcurrentEditError) as excinfo:
        services.deal_update(deal=stale, actor=owner, data={"title": "Mine"}, version=stale.version)

    error = excinfo.value
    assert error.changes == {"title": ("Pilot", "Pilot 2"), "amount": (Decimal("1000"), Decimal("5"))}
    assert error.current.version == 2
    deal.refresh_from_db()
    assert (deal.title, deal.version) == ("Pilot 2", 2)
    assert len(usage(owner, UsageEvent.Verb.UPDATE, deal)) == updates_before


def test_deal_update_with_current_version_saves_and_increments_version():
    deal = make_deal(at=ago(days=1))
    updated = services.deal_update(
        deal=deal, actor=deal.owner, data={"amount": Decimal("2500.50")}, version=deal.version
    )
    assert updated.version == 2
    deal.refresh_from_db()
    assert (deal.amount, deal.version) == (Decimal("2500.50"), 2)
    assert len(usage(deal.owner, UsageEvent.Verb.UPDATE, deal)) == 1


def test_deal_update_rejects_negative_amount():
    deal = make_deal(at=ago(days=1))
    with pytest.raises(ValidationError):
        services.deal_update(deal=deal, actor=deal.owner, data={"amount": Decimal("-1")}, version=1)
    deal.refresh_from_db()
    assert (deal.amount, deal.version) == (Decimal("1000"), 1)


# Tickets
# ---------------------------------------------------------------------------------------------------------


def test_ticket_create_sets_sla_due_times_from_policy_hours():
    SlaPolicy.objects.filter(priority=Ticket.Priority.HIGH).update(
        first_response_hours=3, resolution_hours=30
    )
    at = ago(hours=1)
    ticket = make_ticket(at=at, priority=Ticket.Priority.HIGH)
    assert ticket.first_response_due_at == at + timedelta(hours=3)
    assert ticket.resolution_due_at == at + timedelta(hours=30)


def test_ticket_create_writes_status_history_and_usage_event():
    ticket = make_ticket()
    assert list(ticket.status_changes.values_list("from_status", "to_status")) == [("", "new")]
    assert len(usage(ticket.created_by, UsageEvent.Verb.CREATE, ticket)) == 1


def test_ticket_create_assigns_least_loaded_active_support_agent():
    busy, light, idle_but_gone = make_agent(), make_agent(), make_agent()
    make_manager()
    make_ticket(assignee=busy)
    make_ticket(assignee=busy)
    make_ticket(assignee=light)
    for _ in range(3):  # solved tickets are no load
        solved = make_ticket(assignee=busy)
        services.ticket_set_status(ticket=solved, status=Ticket.Status.SOLVED, actor=busy)
    user_deactivate(user=idle_but_gone)
    ticket = make_ticket()
    assert ticket.assignee == light


def test_ticket_create_leaves_ticket_unassigned_without_agents():
    make_manager()
    assert make_ticket().assignee is None


def test_ticket_create_does_not_assign_when_the_builtin_rule_is_off():
    from crm.models import AutomationRule

    make_agent()
    AutomationRule.objects.filter(builtin="ticket_auto_assign").update(is_active=False)
    assert make_ticket().assignee is None


def test_ticket_reply_public_sets_first_response_once_and_opens_ticket():
    agent = make_agent()
    ticket = make_ticket(at=ago(hours=5))
    first = ago(hours=4)
    services.ticket_reply(ticket=ticket, actor=agent, body="Looking into it", at=first)
    services.ticket_reply(ticket=ticket, actor=agent, body="Fixed", at=ago(hours=1))
    ticket.refresh_from_db()
    assert (ticket.first_response_at, ticket.status) == (first, Ticket.Status.OPEN)
    assert list(ticket.status_changes.values_list("from_status", "to_status")) == [
        ("", "new"),
        ("new", "open"),
    ]
    assert ticket.messages.count() == 2


def test_ticket_reply_internal_note_does_not_count_as_response():
    agent = make_agent()
    ticket = make_ticket(at=ago(hours=5))
    services.ticket_reply(ticket=ticket, actor=agent, body="Check the logs", public=False)
    ticket.refresh_from_db()
    assert (ticket.first_response_at, ticket.status) == (None, Ticket.Status.NEW)
    assert TicketMessage.objects.get(ticket=ticket).is_public is False


def test_ticket_reply_by_agent_takes_unassigned_ticket(no_auto_assign):
    agent = make_agent()
    ticket = make_ticket()
    services.ticket_reply(ticket=ticket, actor=agent, body="On it")
    ticket.refresh_from_db()
    assert ticket.assignee == agent


def test_ticket_reply_rejects_empty_body():
    ticket = make_ticket()
    with pytest.raises(ValidationError):
        services.ticket_reply(ticket=ticket, actor=ticket.created_by, body="   ")
    assert not ticket.messages.exists()


def test_ticket_set_status_solve_sets_first_solved_and_solved_at():
    ticket = make_ticket(at=ago(days=1))
    at = ago(hours=1)
    ticket = services.ticket_set_status(ticket=ticket, status=Ticket.Status.SOLVED, actor=None, at=at)
    ticket.refresh_from_db()
    assert (ticket.status, ticket.first_solved_at, ticket.solved_at) == ("solved", at, at)


def test_ticket_set_status_reopen_counts_and_keeps_first_solve():
    agent = make_agent()
    ticket = make_ticket(at=ago(days=3), assignee=agent)
    first_solve, resolve = ago(days=2), ago(days=1)
    services.ticket_set_status(ticket=ticket, status=Ticket.Status.SOLVED, actor=agent, at=first_solve)
    services.ticket_set_status(
        ticket=ticket, status=Ticket.Status.OPEN, actor=agent, at=ago(days=1, hours=12)
    )
    services.ticket_set_status(ticket=ticket, status=Ticket.Status.SOLVED, actor=agent, at=resolve)
    ticket.refresh_from_db()
    assert ticket.reopen_count == 1
    assert (ticket.first_solved_at, ticket.solved_at) == (first_solve, resolve)


def test_ticket_set_status_close_sets_closed_at_and_writes_history():
    agent = make_agent()
    ticket = make_ticket(at=ago(days=3), assignee=agent)
    solved_at, closed_at = ago(days=2), ago(days=1)
    services.ticket_set_status(ticket=ticket, status=Ticket.Status.SOLVED, actor=agent, at=solved_at)
    services.ticket_set_status(ticket=ticket, status=Ticket.Status.CLOSED, actor=agent, at=closed_at)
    ticket.refresh_from_db()
    assert (ticket.status, ticket.closed_at, ticket.solved_at) == ("closed", closed_at, solved_at)
    assert list(ticket.status_changes.values_list("from_status", "to_status", "at", "by")) == [
        ("", "new", ticket.created_at, ticket.created_by_id),
        ("new", "solved", solved_at, agent.pk),
        ("solved", "closed", closed_at, agent.pk),
    ]


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([Ticket.Status.CLOSED], Ticket.Status.OPEN),
        ([Ticket.Status.CLOSED], Ticket.Status.SOLVED),
        ([Ticket.Status.OPEN], Ticket.Status.NEW),
        ([Ticket.Status.SOLVED], Ticket.Status.PENDING),
    ],
)
def test_ticket_set_status_rejects_illegal_transition(path, illegal):
    ticket = make_ticket(at=ago(days=1))
    for status in path:
        ticket = services.ticket_set_status(ticket=ticket, status=status, actor=None)
    history = ticket.status_changes.count()
    with pytest.raises(ValidationError) as excinfo:
        services.ticket_set_status(ticket=ticket, status=illegal, actor=None)
    assert "status" in excinfo.value.error_dict
    ticket.refresh_from_db()
    assert ticket.status == path[-1]
    assert ticket.status_changes.count() == history


# Activities
# ---------------------------------------------------------------------------------------------------------


def test_activity_log_task_is_open_with_due_time():
    customer = make_customer()
    due = timezone.now() + timedelta(days=2)
    task = services.activity_log(
        actor=customer.owner, customer=customer, kind=Activity.Kind.TASK, subject="Send offer", due_at=due
    )
    assert (task.due_at, task.done_at) == (due, None)
    assert len(usage(customer.owner, UsageEvent.Verb.CREATE, task)) == 1


def test_activity_log_call_is_done_at_once():
    customer = make_customer()
    at = ago(minutes=30)
    call = services.activity_log(
        actor=customer.owner, customer=customer, kind=Activity.Kind.CALL, subject="Intro", at=at
    )
    assert (call.done_at, call.due_at) == (at, None)


def test_activity_log_rejects_deal_of_another_customer():
    customer = make_customer()
    other_deal = make_deal(make_customer(owner=customer.owner))
    with pytest.raises(ValidationError) as excinfo:
        services.activity_log(
            actor=customer.owner, customer=customer, kind=Activity.Kind.CALL, subject="Intro", deal=other_deal
        )
    assert "deal" in excinfo.value.error_dict
    assert not Activity.objects.filter(customer=customer).exists()


def test_activity_complete_is_idempotent():
    task = make_task(at=ago(hours=1))
    first = ago(minutes=1)
    services.activity_complete(activity=task, actor=task.user, at=first)
    services.activity_complete(activity=task, actor=task.user)
    task.refresh_from_db()
    assert task.done_at == first
    assert len(usage(task.user, UsageEvent.Verb.COMPLETE, task)) == 1


# Spend
# ---------------------------------------------------------------------------------------------------------


def test_spend_record_replaces_amount_for_the_month():
    services.spend_record(month=date(2025, 3, 14), category="marketing", amount=Decimal("100"))
    entry = services.spend_record(
        month=date(2025, 3, 1), category="marketing", amount=Decimal("250"), note="corrected"
    )
    assert list(SpendEntry.objects.values_list("month", "amount", "note")) == [
        (date(2025, 3, 1), Decimal("250"), "corrected")
    ]
    assert entry.amount == Decimal("250")


def test_spend_record_rejects_negative_amount():
    with pytest.raises(ValidationError):
        services.spend_record(month=date(2025, 3, 1), category="marketing", amount=Decimal("-1"))
    assert not SpendEntry.objects.exists()


def test_spend_record_rejects_unknown_category_without_writing():
    with pytest.raises(ValidationError):
        services.spend_record(month=date(2025, 3, 1), category="coffee", amount=Decimal("10"))
    assert not SpendEntry.objects.exists()


# Permissions: a rep works only on their own customers
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def foreign() -> dict:
    """Records of another rep's customer."""
    customer = make_customer(at=ago(days=3))
    return {
        "customer": customer,
        "deal": make_deal(customer, at=ago(days=2)),
        "ticket": make_ticket(customer, at=ago(days=2)),
        "task": make_task(customer),
    }


FOREIGN_ACTIONS = {
    "customer_update": lambda rep, f: services.customer_update(
        customer=f["customer"], actor=rep, data={"city": "Berlin"}
    ),
    "customer_set_status": lambda rep, f: services.customer_set_status(
        customer=f["customer"], status=Customer.Status.CHURNED, actor=rep, reason="x"
    ),
    "deal_create": lambda rep, f: services.deal_create(actor=rep, customer=f["customer"], title="Mine"),
    "deal_update": lambda rep, f: services.deal_update(
        deal=f["deal"], actor=rep, data={"title": "Mine"}, version=1
    ),
    "deal_move_stage": lambda rep, f: services.deal_move_stage(
        deal=f["deal"], stage=stage(PipelineStage.Kind.WON), actor=rep
    ),
    "ticket_create": lambda rep, f: services.ticket_create(actor=rep, customer=f["customer"], subject="Hi"),
    "ticket_reply": lambda rep, f: services.ticket_reply(ticket=f["ticket"], actor=rep, body="Hello"),
    "ticket_set_status": lambda rep, f: services.ticket_set_status(
        ticket=f["ticket"], status=Ticket.Status.SOLVED, actor=rep
    ),
    "activity_log": lambda rep, f: services.activity_log(
        actor=rep, customer=f["customer"], kind=Activity.Kind.CALL, subject="Call"
    ),
    "activity_complete": lambda rep, f: services.activity_complete(activity=f["task"], actor=rep),
}


@pytest.mark.parametrize("action", FOREIGN_ACTIONS)
def test_services_deny_rep_acting_on_another_reps_customer(action, foreign):
    rep = make_user()
    events_before = UsageEvent.objects.filter(user=rep).count()
    with pytest.raises(PermissionDenied):
        FOREIGN_ACTIONS[action](rep, foreign)
    assert UsageEvent.objects.filter(user=rep).count() == events_before


def test_services_let_manager_act_on_any_customer(foreign):
    manager = make_manager()
    services.customer_update(customer=foreign["customer"], actor=manager, data={"city": "Berlin"})
    deal = services.deal_create(actor=manager, customer=foreign["customer"], title="Upsell")
    assert deal.owner == foreign["customer"].owner
    foreign["customer"].refresh_from_db()
    assert foreign["customer"].city == "Berlin"

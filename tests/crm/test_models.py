"""The database itself refuses rows that break the data rules, whatever code path writes them."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Seat, User
from crm import services
from crm.models import (
    Activity,
    CompanySettings,
    CrmCostItem,
    Customer,
    CustomerStatusChange,
    Deal,
    Pipeline,
    PipelineStage,
    SlaPolicy,
    SpendEntry,
    Ticket,
    TicketStatusChange,
)
from tests.factories import make_customer, make_deal, make_pipeline, make_ticket, make_user, stage

pytestmark = pytest.mark.django_db


@contextmanager
def violates(constraint: str) -> Iterator[None]:
    """The block fails with an IntegrityError raised by exactly the named constraint."""
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        yield
    assert excinfo.value.__cause__.diag.constraint_name == constraint


def _won_deal() -> Deal:
    deal = make_deal(at=timezone.now() - timedelta(days=2))
    return services.deal_move_stage(deal=deal, stage=stage(PipelineStage.Kind.WON), actor=deal.owner)


def _lost_deal() -> Deal:
    deal = make_deal(at=timezone.now() - timedelta(days=2))
    return services.deal_move_stage(
        deal=deal, stage=stage(PipelineStage.Kind.LOST), actor=deal.owner, lost_reason="Too expensive"
    )


# Seeded by the data migration
# ---------------------------------------------------------------------------------------------------------


def test_migration_seeds_one_default_pipeline_with_open_won_and_lost_stages():
    pipeline = Pipeline.objects.get(is_default=True)
    stages = list(pipeline.stages.order_by("order").values_list("name", "kind", "probability"))
    assert stages == [
        ("Lead in", "open", 10),
        ("Qualified", "open", 25),
        ("Proposal", "open", 50),
        ("Negotiation", "open", 75),
        ("Won", "won", 100),
        ("Lost", "lost", 0),
    ]


def test_migration_seeds_sla_policy_for_every_ticket_priority():
    hours = {p.priority: (p.first_response_hours, p.resolution_hours) for p in SlaPolicy.objects.all()}
    assert set(hours) == set(Ticket.Priority.values)
    assert hours[Ticket.Priority.URGENT][0] < hours[Ticket.Priority.NORMAL][0] < hours[Ticket.Priority.LOW][0]


def test_migration_seeds_company_settings_singleton():
    assert list(CompanySettings.objects.values_list("pk", flat=True)) == [1]


def test_migration_seeds_the_builtin_rules_switched_on():
    from crm.models import AutomationRule

    builtin = dict(AutomationRule.objects.exclude(builtin="").values_list("builtin", "is_active"))
    assert builtin == {"survey_follow_up": True, "ticket_auto_assign": True}


# accounts
# ---------------------------------------------------------------------------------------------------------


def test_user_rejects_deactivation_before_joining():
    user = make_user()
    with violates("user_deactivated_after_joined"):
        User.objects.filter(pk=user.pk).update(deactivated_at=user.date_joined - timedelta(days=1))


def test_seat_rejects_end_before_start():
    user = make_user(with_seat=False)
    now = timezone.now()
    with violates("seat_ends_after_start"):
        Seat.objects.create(user=user, started_at=now, ended_at=now - timedelta(hours=1))


def test_seat_rejects_zero_length():
    user = make_user(with_seat=False)
    now = timezone.now()
    with violates("seat_ends_after_start"):
        Seat.objects.create(user=user, started_at=now, ended_at=now)


def test_seat_rejects_second_open_seat_for_one_user():
    user = make_user()
    with violates("seat_one_open_per_user"):
        Seat.objects.create(user=user, started_at=timezone.now())


def test_seat_allows_new_open_seat_after_the_previous_one_ended():
    user = make_user(at=timezone.now() - timedelta(days=30))
    Seat.objects.filter(user=user).update(ended_at=timezone.now() - timedelta(days=10))
    Seat.objects.create(user=user, started_at=timezone.now() - timedelta(days=5))
    assert user.seats.count() == 2


# Company settings
# ---------------------------------------------------------------------------------------------------------


def test_company_settings_rejects_second_row():
    with violates("companysettings_singleton"):
        CompanySettings.objects.create(pk=2)


def test_company_settings_rejects_margin_above_100():
    with violates("companysettings_margin_percent"):
        CompanySettings.objects.filter(pk=1).update(gross_margin_percent=Decimal("100.01"))


def test_company_settings_rejects_negative_hourly_rate():
    with violates("companysettings_benefits_nonneg"):
        CompanySettings.objects.filter(pk=1).update(loaded_hourly_rate=Decimal("-1"))


def test_company_settings_rejects_negative_hours_saved():
    with violates("companysettings_benefits_nonneg"):
        CompanySettings.objects.filter(pk=1).update(hours_saved_per_user_month=Decimal("-0.5"))


# Customers
# ---------------------------------------------------------------------------------------------------------


def test_customer_rejects_active_without_became_customer_at():
    customer = make_customer(status=Customer.Status.ACTIVE)
    with violates("customer_active_has_start"):
        Customer.objects.filter(pk=customer.pk).update(became_customer_at=None)


def test_customer_rejects_active_with_churned_at():
    customer = make_customer(status=Customer.Status.ACTIVE)
    with violates("customer_active_has_start"):
        Customer.objects.filter(pk=customer.pk).update(churned_at=timezone.now())


def test_customer_rejects_churned_without_churned_at():
    customer = make_customer(status=Customer.Status.CHURNED)
    with violates("customer_churned_has_dates"):
        Customer.objects.filter(pk=customer.pk).update(churned_at=None)


def test_customer_rejects_churn_before_becoming_customer():
    customer = make_customer(status=Customer.Status.CHURNED)
    with violates("customer_churn_after_start"):
        Customer.objects.filter(pk=customer.pk).update(
            churned_at=customer.became_customer_at - timedelta(days=1)
        )


def test_customer_rejects_becoming_customer_before_creation():
    customer = make_customer(status=Customer.Status.ACTIVE)
    with violates("customer_became_after_created"):
        Customer.objects.filter(pk=customer.pk).update(
            became_customer_at=customer.created_at - timedelta(days=1)
        )


def test_customer_rejects_merge_into_itself():
    customer = make_customer()
    with violates("customer_not_merged_into_self"):
        Customer.objects.filter(pk=customer.pk).update(merged_into=customer)


def test_customer_allows_merge_into_another_customer():
    original, duplicate = make_customer(), make_customer()
    Customer.objects.filter(pk=duplicate.pk).update(merged_into=original)
    assert list(original.merged_duplicates.all()) == [duplicate]


def test_customer_status_change_rejects_change_to_same_status():
    customer = make_customer()
    with violates("customerstatus_changes_status"):
        CustomerStatusChange.objects.create(
            customer=customer, from_status="active", to_status="active", at=timezone.now()
        )


# Pipelines and stages
# ---------------------------------------------------------------------------------------------------------


def test_pipeline_rejects_second_default():
    with violates("pipeline_one_default"):
        Pipeline.objects.create(name="Partners", is_default=True)


def test_stage_rejects_second_won_stage_in_pipeline():
    pipeline = Pipeline.objects.get(is_default=True)
    with violates("stage_one_won_per_pipeline"):
        PipelineStage.objects.create(
            pipeline=pipeline, name="Won again", order=95, probability=100, kind="won"
        )


def test_stage_rejects_second_lost_stage_in_pipeline():
    pipeline = Pipeline.objects.get(is_default=True)
    with violates("stage_one_lost_per_pipeline"):
        PipelineStage.objects.create(
            pipeline=pipeline, name="Lost again", order=98, probability=0, kind="lost"
        )


def test_stage_allows_won_stage_in_each_pipeline():
    pipeline = make_pipeline()
    assert pipeline.stages.filter(kind="won").count() == 1
    assert PipelineStage.objects.filter(kind="won").count() == 2


def test_stage_rejects_duplicate_order_in_pipeline():
    pipeline = Pipeline.objects.get(is_default=True)
    with violates("stage_unique_order"):
        PipelineStage.objects.create(pipeline=pipeline, name="Demo", order=10, probability=15)


def test_stage_rejects_duplicate_name_in_pipeline():
    pipeline = Pipeline.objects.get(is_default=True)
    with violates("stage_unique_name"):
        PipelineStage.objects.create(pipeline=pipeline, name="Qualified", order=15, probability=15)


def test_stage_rejects_probability_above_100():
    pipeline = Pipeline.objects.get(is_default=True)
    with violates("stage_probability_0_100"):
        PipelineStage.objects.create(pipeline=pipeline, name="Sure thing", order=85, probability=101)


def test_stage_rejects_won_stage_below_100_percent():
    pipeline = Pipeline.objects.create(name="Channel")
    with violates("stage_won_probability_100"):
        PipelineStage.objects.create(pipeline=pipeline, name="Won", order=90, probability=90, kind="won")


def test_stage_rejects_lost_stage_above_0_percent():
    pipeline = Pipeline.objects.create(name="Channel")
    with violates("stage_lost_probability_0"):
        PipelineStage.objects.create(pipeline=pipeline, name="Lost", order=99, probability=5, kind="lost")


# Deals
# ---------------------------------------------------------------------------------------------------------


def test_deal_rejects_negative_amount():
    deal = make_deal()
    with violates("deal_amount_nonneg"):
        Deal.objects.filter(pk=deal.pk).update(amount=Decimal("-0.01"))


def test_deal_rejects_probability_101():
    deal = make_deal()
    with violates("deal_probability_0_100"):
        Deal.objects.filter(pk=deal.pk).update(probability=101)


def test_deal_rejects_closed_before_created():
    deal = _won_deal()
    with violates("deal_close_after_open"):
        Deal.objects.filter(pk=deal.pk).update(closed_at=deal.created_at - timedelta(seconds=1))


def test_deal_rejects_won_without_closed_at():
    deal = _won_deal()
    with violates("deal_closed_iff_has_date"):
        Deal.objects.filter(pk=deal.pk).update(closed_at=None)


def test_deal_rejects_open_with_closed_at():
    deal = make_deal()
    with violates("deal_closed_iff_has_date"):
        Deal.objects.filter(pk=deal.pk).update(closed_at=timezone.now() + timedelta(days=1))


def test_deal_rejects_lost_without_reason():
    deal = _lost_deal()
    with violates("deal_lost_has_reason"):
        Deal.objects.filter(pk=deal.pk).update(lost_reason="")


def test_deal_rejects_term_ending_on_or_before_start():
    deal = make_deal()
    with violates("deal_term_ends_after_start"):
        Deal.objects.filter(pk=deal.pk).update(term_start=date(2025, 1, 1), term_end=date(2025, 1, 1))


def test_deal_rejects_version_zero():
    deal = make_deal()
    with violates("deal_version_positive"):
        Deal.objects.filter(pk=deal.pk).update(version=0)


# SLA policies and tickets
# ---------------------------------------------------------------------------------------------------------


def test_sla_policy_rejects_zero_response_hours():
    with violates("sla_hours_sensible"):
        SlaPolicy.objects.create(priority="vip", first_response_hours=0, resolution_hours=4)


def test_sla_policy_rejects_resolution_before_first_response():
    with violates("sla_hours_sensible"):
        SlaPolicy.objects.create(priority="vip", first_response_hours=8, resolution_hours=4)


@pytest.fixture
def ticket() -> Ticket:
    return make_ticket(at=timezone.now() - timedelta(days=1))


def test_ticket_rejects_first_response_before_created(ticket):
    with violates("ticket_response_after_created"):
        Ticket.objects.filter(pk=ticket.pk).update(first_response_at=ticket.created_at - timedelta(hours=1))


def test_ticket_rejects_solved_before_created(ticket):
    with violates("ticket_first_solved_after_created"):
        Ticket.objects.filter(pk=ticket.pk).update(first_solved_at=ticket.created_at - timedelta(hours=1))


def test_ticket_rejects_latest_solve_before_first_solve(ticket):
    first = ticket.created_at + timedelta(hours=2)
    with violates("ticket_solved_after_first_solved"):
        Ticket.objects.filter(pk=ticket.pk).update(
            first_solved_at=first, solved_at=first - timedelta(hours=1)
        )


def test_ticket_rejects_closed_before_created(ticket):
    with violates("ticket_closed_after_created"):
        Ticket.objects.filter(pk=ticket.pk).update(closed_at=ticket.created_at - timedelta(hours=1))


def test_ticket_rejects_solved_without_solved_at(ticket):
    with violates("ticket_solved_has_time"):
        Ticket.objects.filter(pk=ticket.pk).update(status=Ticket.Status.SOLVED)


def test_ticket_allows_spam_closed_without_solved_at(ticket):
    Ticket.objects.filter(pk=ticket.pk).update(
        status=Ticket.Status.CLOSED, is_spam=True, closed_at=ticket.created_at + timedelta(minutes=5)
    )
    ticket.refresh_from_db()
    assert (ticket.status, ticket.solved_at) == (Ticket.Status.CLOSED, None)


def test_ticket_rejects_closed_without_closed_at(ticket):
    at = ticket.created_at + timedelta(hours=1)
    with violates("ticket_closed_has_time"):
        Ticket.objects.filter(pk=ticket.pk).update(
            status=Ticket.Status.CLOSED, first_solved_at=at, solved_at=at
        )


def test_ticket_rejects_solved_at_without_first_solved_at(ticket):
    with violates("ticket_solved_implies_first_solved"):
        Ticket.objects.filter(pk=ticket.pk).update(solved_at=ticket.created_at + timedelta(hours=1))


def test_ticket_status_change_rejects_change_to_same_status(ticket):
    with violates("ticketstatus_changes_status"):
        TicketStatusChange.objects.create(
            ticket=ticket, from_status="open", to_status="open", at=timezone.now()
        )


# Activities
# ---------------------------------------------------------------------------------------------------------


def test_activity_rejects_due_time_on_a_call():
    customer = make_customer()
    now = timezone.now()
    with violates("activity_only_tasks_due"):
        Activity.objects.create(
            kind=Activity.Kind.CALL,
            subject="Intro call",
            user=customer.owner,
            customer=customer,
            created_at=now,
            due_at=now + timedelta(days=1),
        )


def test_activity_rejects_done_before_created():
    customer = make_customer()
    now = timezone.now()
    with violates("activity_done_after_created"):
        Activity.objects.create(
            kind=Activity.Kind.CALL,
            subject="Intro call",
            user=customer.owner,
            customer=customer,
            created_at=now,
            done_at=now - timedelta(minutes=1),
        )


# Spend and CRM costs
# ---------------------------------------------------------------------------------------------------------


def test_spend_rejects_month_not_on_first_day():
    with violates("spend_month_first_day"):
        SpendEntry.objects.create(month=date(2025, 3, 2), category="marketing", amount=Decimal("100"))


def test_spend_rejects_negative_amount():
    with violates("spend_amount_nonneg"):
        SpendEntry.objects.create(month=date(2025, 3, 1), category="marketing", amount=Decimal("-1"))


def test_spend_rejects_second_entry_for_month_category_and_channel():
    SpendEntry.objects.create(month=date(2025, 3, 1), category="marketing", amount=Decimal("100"))
    with violates("spend_unique_month_category_channel"):
        SpendEntry.objects.create(month=date(2025, 3, 1), category="marketing", amount=Decimal("50"))


def test_spend_allows_same_month_and_category_on_another_channel():
    SpendEntry.objects.create(month=date(2025, 3, 1), category="marketing", amount=Decimal("100"))
    SpendEntry.objects.create(
        month=date(2025, 3, 1), category="marketing", channel="ads", amount=Decimal("50")
    )
    assert SpendEntry.objects.filter(month=date(2025, 3, 1)).count() == 2


def test_crm_cost_rejects_negative_amount():
    with violates("crmcost_amount_nonneg"):
        CrmCostItem.objects.create(
            name="Licences", kind="monthly", amount=Decimal("-1"), start_month=date(2025, 1, 1)
        )


def test_crm_cost_rejects_end_before_start():
    with violates("crmcost_end_after_start"):
        CrmCostItem.objects.create(
            name="Licences",
            kind="monthly",
            amount=Decimal("10"),
            start_month=date(2025, 2, 1),
            end_month=date(2025, 1, 1),
        )

"""Triggers: CES 24 h after a solved ticket (cancelled on reopen), CSAT where configured, the relationship
NPS daily trickle and manual campaigns. Tasks are called directly, twice, to show they are idempotent."""

from collections import Counter
from datetime import timedelta
from unittest import mock

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from crm import services as crm_services
from crm.models import Customer, Ticket
from surveys import services, tasks
from surveys.models import Survey, SurveyCampaign, SurveyInvitation
from tests.factories import make_customer, make_manager, make_ticket, make_user

pytestmark = pytest.mark.django_db

Status, Reason = SurveyInvitation.Status, SurveyInvitation.Reason


def solved_ticket(customer=None, *, at):
    ticket = make_ticket(customer, at=at - timedelta(hours=2))
    return crm_services.ticket_set_status(ticket=ticket, status=Ticket.Status.SOLVED, actor=None, at=at)


# CES / CSAT after a solved ticket
# ---------------------------------------------------------------------------------------------------------


def test_ces_is_sent_24_hours_after_the_ticket_is_solved(default_surveys, no_auto_assign):
    now = timezone.now()
    ces = default_surveys[("ces", "ticket_solved")]
    ticket = solved_ticket(at=now - timedelta(hours=23))
    with mock.patch("django.utils.timezone.now", return_value=now):
        tasks.send_ticket_surveys()
    assert not SurveyInvitation.objects.exists()
    later = now + timedelta(hours=1, minutes=1)
    with mock.patch("django.utils.timezone.now", return_value=later):
        assert tasks.send_ticket_surveys() == {"sent": 1, "suppressed": 0}
        assert tasks.send_ticket_surveys() == {"sent": 0, "suppressed": 0}
    invitation = SurveyInvitation.objects.get()
    assert (invitation.survey, invitation.ticket, invitation.status) == (ces, ticket, Status.SENT)
    assert invitation.scheduled_for == ticket.solved_at + timedelta(hours=24)
    assert len(mail.outbox) == 1


def test_a_ticket_reopened_within_24_hours_gets_no_survey(default_surveys, no_auto_assign):
    now = timezone.now()
    ticket = solved_ticket(at=now - timedelta(hours=30))
    crm_services.ticket_set_status(
        ticket=ticket, status=Ticket.Status.OPEN, actor=None, at=now - timedelta(hours=20)
    )
    services.ticket_surveys_run(now=now)
    assert not SurveyInvitation.objects.exists()
    # Solved again: the 24 hours count from the latest solve.
    crm_services.ticket_set_status(
        ticket=ticket, status=Ticket.Status.SOLVED, actor=None, at=now - timedelta(hours=1)
    )
    services.ticket_surveys_run(now=now + timedelta(hours=22))
    assert not SurveyInvitation.objects.exists()
    services.ticket_surveys_run(now=now + timedelta(hours=24))
    assert SurveyInvitation.objects.get().status == Status.SENT


def test_a_scheduled_invitation_is_suppressed_when_the_ticket_reopens_before_sending(
    default_surveys, no_auto_assign
):
    now = timezone.now()
    ticket = solved_ticket(at=now - timedelta(hours=25))
    assert services.ticket_invitations_create(now=now) == 1
    crm_services.ticket_set_status(ticket=ticket, status=Ticket.Status.OPEN, actor=None, at=now)
    services.invitations_send_due(now=now)
    invitation = SurveyInvitation.objects.get()
    assert (invitation.status, invitation.suppression_reason) == (Status.SUPPRESSED, Reason.REOPENED)
    assert mail.outbox == []


def test_closed_tickets_count_spam_and_old_tickets_do_not(default_surveys, no_auto_assign):
    now = timezone.now()
    closed = solved_ticket(at=now - timedelta(hours=30))
    crm_services.ticket_set_status(
        ticket=closed, status=Ticket.Status.CLOSED, actor=None, at=now - timedelta(hours=29)
    )
    spam = solved_ticket(at=now - timedelta(hours=30))
    Ticket.objects.filter(pk=spam.pk).update(is_spam=True)
    solved_ticket(at=now - timedelta(days=5))
    assert services.ticket_invitations_create(now=now) == 1
    assert SurveyInvitation.objects.get().ticket == closed


def test_ces_at_most_once_per_customer_per_seven_days_even_with_several_tickets(
    default_surveys, no_auto_assign
):
    now = timezone.now()
    customer = make_customer()
    first = solved_ticket(customer, at=now - timedelta(hours=26))
    second = solved_ticket(customer, at=now - timedelta(hours=25))
    services.ticket_surveys_run(now=now)
    by_ticket = {i.ticket_id: i for i in SurveyInvitation.objects.all()}
    assert by_ticket[first.pk].status == Status.SENT
    assert (by_ticket[second.pk].status, by_ticket[second.pk].suppression_reason) == (
        Status.SUPPRESSED,
        Reason.CADENCE,
    )


def test_csat_per_solved_ticket_only_where_switched_on(default_surveys, no_auto_assign):
    now = timezone.now()
    csat = default_surveys[("csat", "ticket_solved")]
    assert not csat.is_active
    solved_ticket(at=now - timedelta(hours=30))
    services.ticket_invitations_create(now=now)
    assert set(SurveyInvitation.objects.values_list("survey__kind", flat=True)) == {"ces"}
    Survey.objects.filter(pk=csat.pk).update(is_active=True)
    solved_ticket(at=now - timedelta(hours=30))
    services.ticket_invitations_create(now=now)
    # Both tickets (still within the scan window) get the CSAT, the second also its CES.
    assert Counter(SurveyInvitation.objects.values_list("survey__kind", flat=True)) == {"ces": 2, "csat": 2}


# Relationship NPS: the daily trickle
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def nps(default_surveys):
    return default_surveys[("nps", "periodic")]


def active_customers(n: int, *, since_days: int = 100, **fields) -> list[Customer]:
    owner = make_user()
    at = timezone.now() - timedelta(days=since_days)
    return [make_customer(owner, at=at, **fields) for _ in range(n)]


def test_trickle_asks_about_one_ninetieth_per_day_and_a_rerun_asks_nobody_new(nps):
    active_customers(181)
    # 09:00 today: the rerun two hours later is the same local day (from 22:00 on it would not be).
    now = timezone.localtime().replace(hour=9, minute=0, second=0, microsecond=0)
    first = services.nps_trickle_run(now=now)
    assert first.sent == 3  # ceil(181 / 90)
    again = services.nps_trickle_run(now=now + timedelta(hours=2))
    assert (again.sent, again.suppressed) == (0, 0)
    assert SurveyInvitation.objects.count() == 3


def test_trickle_asks_each_eligible_customer_once_per_ninety_days(nps):
    customers = active_customers(45)
    now = timezone.now()
    for day in range(90):
        services.nps_trickle_run(now=now + timedelta(days=day))
    per_customer = Counter(
        SurveyInvitation.objects.filter(status=Status.SENT).values_list("customer_id", flat=True)
    )
    assert per_customer == {c.pk: 1 for c in customers}
    days = {timezone.localtime(i.sent_at).date() for i in SurveyInvitation.objects.all()}
    assert len(days) == 45  # spread out: one a day, not a burst


def test_trickle_picks_are_random_but_fixed_for_the_day(nps):
    active_customers(300)
    now = timezone.now()
    day_start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    from surveys.selectors import nps_trickle_picks

    kwargs = {"survey": nps, "now": now, "day_start": day_start, "min_tenure_days": 60, "limit": 4}
    assert nps_trickle_picks(**kwargs) == nps_trickle_picks(**kwargs)
    tomorrow = {**kwargs, "day_start": day_start + timedelta(days=1)}
    assert nps_trickle_picks(**kwargs) != nps_trickle_picks(**tomorrow)


def test_trickle_eligibility(nps):
    owner = make_user()
    now = timezone.now()
    eligible = make_customer(owner, at=now - timedelta(days=61))
    make_customer(owner, at=now - timedelta(days=50))  # tenure under 60 days for the next 10 days
    make_customer(owner, status=Customer.Status.LEAD, at=now - timedelta(days=200))
    make_customer(owner, at=now - timedelta(days=200), is_internal=True)
    make_customer(owner, at=now - timedelta(days=200), email="")
    opted_out = make_customer(owner, at=now - timedelta(days=200))
    services.suppression_add(customer=opted_out, reason="unsubscribed")
    asked = make_customer(owner, at=now - timedelta(days=200))
    services.invitation_send(
        invitation_id=SurveyInvitation.objects.create(
            survey=nps,
            customer=asked,
            trigger="periodic",
            created_at=now - timedelta(days=80),
            scheduled_for=now - timedelta(days=80),
        ).pk,
        now=now - timedelta(days=80),
    )
    for day in range(10):
        tasks_now = now + timedelta(days=day)
        services.nps_trickle_run(now=tasks_now)
    new = SurveyInvitation.objects.filter(created_at__gte=now)
    assert set(new.values_list("customer_id", flat=True)) == {eligible.pk}


def test_the_trickle_task_is_idempotent(nps):
    active_customers(5)
    assert tasks.send_nps_trickle() == {"sent": 1, "suppressed": 0}
    assert tasks.send_nps_trickle() == {"sent": 0, "suppressed": 0}


# Manual campaigns
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def campaign_survey(default_surveys):
    return default_surveys[("csat", "manual")]


def test_a_campaign_is_queued_after_commit_and_sent_by_the_task_once(
    campaign_survey, django_capture_on_commit_callbacks
):
    manager = make_manager()
    rep = make_user()
    targets = [make_customer(rep, source="referral") for _ in range(3)]
    make_customer(rep, source="ads")
    internal = make_customer(rep, source="referral", is_internal=True)
    with (
        mock.patch("surveys.tasks.launch_survey_campaign.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        campaign = services.campaign_launch(
            survey=campaign_survey, filters={"source": "referral", "owner": rep.pk}, actor=manager
        )
    delay.assert_called_once_with(campaign.pk)
    assert campaign.matched == 4
    assert tasks.launch_survey_campaign(campaign.pk) == {"sent": 3, "suppressed": 1}
    assert tasks.launch_survey_campaign(campaign.pk) == {"sent": 0, "suppressed": 0}
    invitations = SurveyInvitation.objects.filter(campaign=campaign)
    assert {i.customer_id for i in invitations if i.status == Status.SENT} == {c.pk for c in targets}
    assert invitations.get(customer=internal).suppression_reason == Reason.INTERNAL
    assert SurveyCampaign.objects.get().status == SurveyCampaign.Status.DONE
    assert len(mail.outbox) == 3


def test_a_campaign_applies_the_cooldown(campaign_survey):
    manager = make_manager()
    customer = make_customer(make_user(), segment="enterprise")
    services.invitation_send(
        invitation_id=SurveyInvitation.objects.create(
            survey=campaign_survey,
            customer=customer,
            trigger="manual",
            created_at=timezone.now(),
            scheduled_for=timezone.now(),
        ).pk
    )
    campaign = services.campaign_launch(
        survey=campaign_survey, filters={"segment": "enterprise"}, actor=manager
    )
    result = services.campaign_run(campaign_id=campaign.pk)
    assert (result.sent, result.suppressed) == (0, 1)


def test_campaigns_are_for_managers_and_need_a_sendable_survey(campaign_survey, default_surveys):
    make_customer()
    with pytest.raises(PermissionDenied):
        services.campaign_launch(survey=campaign_survey, filters={}, actor=make_user())
    with pytest.raises(ValidationError):
        services.campaign_launch(
            survey=default_surveys[("ces", "ticket_solved")], filters={}, actor=make_manager()
        )
    with pytest.raises(ValidationError):
        services.campaign_launch(
            survey=campaign_survey, filters={"source": "partner", "segment": "mid"}, actor=make_manager()
        )

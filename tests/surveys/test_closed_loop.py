"""The closed loop: a low score creates exactly one follow-up task for the account owner."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from accounts.models import UsageEvent
from crm.models import Activity
from surveys import services
from surveys.models import SurveyResponse
from surveys.selectors import open_followup_list
from tests.factories import (
    make_agent,
    make_customer,
    make_invitation,
    make_manager,
    make_survey,
    make_ticket,
    make_user,
)

pytestmark = pytest.mark.django_db

BERLIN = ZoneInfo("Europe/Berlin")


def answer(kind: str, score: int, customer=None, **invitation_fields) -> SurveyResponse:
    invitation = make_invitation(
        make_survey(kind), customer or make_customer(make_user()), **invitation_fields
    )
    response, _created = services.response_submit_score(invitation_id=invitation.pk, score=score)
    return response


@pytest.mark.parametrize(
    ("kind", "score", "task"),
    [
        ("nps", 0, True),
        ("nps", 6, True),
        ("nps", 7, False),
        ("nps", 10, False),
        ("csat", 2, True),
        ("csat", 3, False),
        ("ces", 3, True),
        ("ces", 4, False),
    ],
)
def test_low_scores_create_a_follow_up_task(kind, score, task):
    response = answer(kind, score)
    assert (response.followup_task is not None) is task
    assert Activity.objects.filter(kind=Activity.Kind.TASK).count() == int(task)


def test_the_task_is_for_the_owner_due_in_two_business_days_and_not_staff_adoption():
    owner = make_user()
    response = answer("nps", 2, make_customer(owner, name="Unhappy AG"))
    task = response.followup_task
    assert (task.user, task.customer, task.kind, task.done_at) == (owner, response.customer, "task", None)
    assert "Unhappy AG" in task.subject and "2/10" in task.subject
    assert 2 <= (task.due_at - task.created_at).days <= 4
    event = UsageEvent.objects.get(object_type="activity", object_id=task.pk)
    assert event.via == UsageEvent.Via.SYSTEM


def test_exactly_one_task_per_response_even_when_the_score_is_resubmitted():
    response = answer("csat", 1)
    invitation = response.invitation
    again, created = services.response_submit_score(invitation_id=invitation.pk, score=1)
    assert not created and again.pk == response.pk
    services.response_finish(invitation_id=invitation.pk, comment="Still angry")
    assert Activity.objects.filter(kind=Activity.Kind.TASK).count() == 1


def test_without_an_owner_the_task_goes_to_the_ticket_assignee():
    agent = make_agent()
    customer = make_customer(make_user())
    ticket = make_ticket(customer, assignee=agent)
    customer.owner = None
    customer.save(update_fields=["owner"])
    response = answer("ces", 1, customer, ticket=ticket, trigger="ticket_solved")
    assert response.followup_task.user == agent
    assert response.followup_task.ticket == ticket


def test_managers_see_open_follow_ups_until_the_task_is_done():
    manager = make_manager()
    response = answer("nps", 3)
    assert list(open_followup_list(user=manager)) == [response]
    from crm.services import activity_complete

    activity_complete(activity=response.followup_task, actor=response.followup_task.user)
    assert list(open_followup_list(user=manager)) == []


@pytest.mark.parametrize(
    ("start", "due"),
    [
        (
            datetime(2026, 6, 12, 15, 0, tzinfo=BERLIN),
            datetime(2026, 6, 16, 15, 0, tzinfo=BERLIN),
        ),  # Fri → Tue
        (datetime(2026, 6, 15, 9, 0, tzinfo=BERLIN), datetime(2026, 6, 17, 9, 0, tzinfo=BERLIN)),  # Mon → Wed
        (
            datetime(2026, 6, 13, 10, 0, tzinfo=BERLIN),
            datetime(2026, 6, 16, 10, 0, tzinfo=BERLIN),
        ),  # Sat → Tue
    ],
)
def test_two_business_days(settings, start, due):
    settings.TIME_ZONE = "Europe/Berlin"
    timezone.activate(BERLIN)
    try:
        assert services.add_business_days(start, 2) == due
    finally:
        timezone.deactivate()

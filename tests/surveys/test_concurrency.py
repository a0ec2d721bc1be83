"""Two submits of the same link racing in real threads against PostgreSQL give exactly one response."""

import threading

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from surveys import services
from surveys.models import SurveyInvitation, SurveyResponse
from tests.factories import make_customer, make_invitation, make_survey, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def race(n: int, action) -> list:
    """Run ``action(i)`` in ``n`` threads released together; each thread uses (and closes) its own
    database connection."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = action(i)
        except Exception as exc:  # the test inspects what each thread got
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.fixture
def invitation():
    return make_invitation(make_survey("nps"), make_customer(make_user()))


def test_two_concurrent_posts_give_exactly_one_response(invitation):
    url = reverse("surveys_public:answer", args=[invitation.token])
    scores = ["3", "10"]
    statuses = race(2, lambda i: Client().post(url, {"step": "score", "score": scores[i]}).status_code)
    assert statuses == [200, 200]
    assert SurveyResponse.objects.filter(invitation=invitation).count() == 1
    answer = SurveyResponse.objects.get()
    assert answer.score in (3, 10)
    invitation.refresh_from_db()
    assert invitation.status == SurveyInvitation.Status.PARTIAL
    # A detractor score creates its follow-up task once, whichever submit won.
    assert (answer.followup_task_id is not None) == (answer.score == 3)


def test_eight_concurrent_service_calls_create_one_response(invitation):
    results = race(8, lambda i: services.response_submit_score(invitation_id=invitation.pk, score=i))
    created = [r for r in results if isinstance(r, tuple) and r[1]]
    assert len(created) == 1
    assert not [r for r in results if isinstance(r, Exception)]
    assert SurveyResponse.objects.count() == 1


def test_concurrent_comment_submits_finish_once(invitation):
    services.response_submit_score(invitation_id=invitation.pk, score=8)
    results = race(4, lambda i: services.response_finish(invitation_id=invitation.pk, comment=f"comment {i}"))
    finished = [r for r in results if isinstance(r, SurveyResponse)]
    refused = [r for r in results if isinstance(r, services.SurveyUnavailable)]
    assert len(finished) == 1 and len(refused) == 3
    assert all(r.state == "answered" for r in refused)
    assert SurveyResponse.objects.get().comment == finished[0].comment

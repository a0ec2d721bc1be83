"""The surveys' part of a customer's record: answers on the timeline, invitations and answers in a
privacy export, comments and addresses blanked by an erasure (registered in ``SurveysConfig.ready``)."""

from collections.abc import Iterable, Mapping

from django.db.models import QuerySet

from accounts.models import User
from crm.customer_data import CustomerData, TimelineEntry
from crm.models import Customer
from surveys.models import SurveyInvitation, SurveyResponse
from surveys.selectors import survey_response_list


def _timeline(customer: Customer, user: User, limit: int) -> Iterable[TimelineEntry]:
    answers = survey_response_list(user=user).filter(customer=customer)
    answers = answers.order_by("-score_submitted_at")[:limit]
    return [{"at": answer.score_submitted_at, "kind": "survey", "object": answer} for answer in answers]


def _export(customer: Customer) -> Mapping[str, QuerySet]:
    return {
        "survey_invitations": SurveyInvitation.objects.filter(customer=customer).order_by("created_at"),
        "survey_responses": SurveyResponse.objects.filter(customer=customer).order_by("score_submitted_at"),
    }


def _erase(customer: Customer) -> None:
    SurveyResponse.objects.filter(customer=customer).update(comment="")
    SurveyInvitation.objects.filter(customer=customer).update(email="")


SURVEYS = CustomerData(app="surveys", timeline=_timeline, export=_export, erase=_erase)

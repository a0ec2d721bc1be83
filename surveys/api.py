"""Survey invitations (managers) and answers (as the survey pages show them) through the API, read only.
Tokens and addresses of invitations are never exposed."""

from django.http import HttpRequest
from ninja import ModelSchema, Query, Router, Schema

from crm.api.common import ErrorOut, Page, paginate
from surveys import selectors
from surveys.models import SurveyInvitation, SurveyResponse

router = Router(tags=["surveys"])


class InvitationOut(ModelSchema):
    class Meta:
        model = SurveyInvitation
        fields = [
            "id",
            "survey",
            "customer",
            "ticket",
            "campaign",
            "trigger",
            "status",
            "suppression_reason",
            "language",
            "created_at",
            "sent_at",
            "expires_at",
            "opened_at",
            "started_at",
            "completed_at",
            "reminder_count",
        ]


class ResponseOut(ModelSchema):
    class Meta:
        model = SurveyResponse
        fields = [
            "id",
            "invitation",
            "survey",
            "customer",
            "owner",
            "agent",
            "score",
            "scale_min",
            "scale_max",
            "comment",
            "score_submitted_at",
            "finished",
            "finished_at",
        ]


class InvitationPage(Page):
    results: list[InvitationOut]


class ResponsePage(Page):
    results: list[ResponseOut]


class Cursor(Schema):
    cursor: str | None = None
    limit: int | None = None


@router.get("/invitations", response={200: InvitationPage, 422: ErrorOut}, summary="Survey invitations")
def invitation_list(request: HttpRequest, page: Query[Cursor]) -> dict:
    """Newest first; managers and admins (anyone else gets an empty list, as on the pages)."""
    qs = selectors.invitation_list(user=request.user)
    return paginate(qs, order="-created_at", cursor=page.cursor, limit=page.limit)


@router.get("/responses", response={200: ResponsePage, 422: ErrorOut}, summary="Survey answers")
def response_list(request: HttpRequest, page: Query[Cursor]) -> dict:
    """The answers you may see, newest first."""
    qs = selectors.survey_response_list(user=request.user)
    return paginate(qs, order="-score_submitted_at", cursor=page.cursor, limit=page.limit)

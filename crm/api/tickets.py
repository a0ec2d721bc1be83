"""Tickets: list (the queues), read with messages, create, change custom values, reply or note, change
status, assign."""

from typing import Any

from django.http import HttpRequest
from ninja import Field, ModelSchema, Query, Router, Schema, Status

from accounts.models import User
from accounts.web import require_staff_role
from crm import forms, selectors, services
from crm.api.common import (
    CUSTOM_IN,
    CUSTOM_OUT,
    VIA,
    CustomConflictOut,
    ErrorOut,
    Page,
    builtin_form,
    clean_payload,
    custom_changes,
    custom_conflict_is_409,
    get_visible,
    paginate,
    validated,
)
from crm.api.custom_filters import custom_filter_query, custom_filters
from crm.models import Ticket, TicketMessage

router = Router(tags=["tickets"])
ORDERS = ("created_at", "-created_at", "updated_at", "-updated_at")


class TicketOut(ModelSchema):
    custom: dict[str, Any] = Field(description=CUSTOM_OUT)

    class Meta:
        model = Ticket
        fields = [
            "id",
            "customer",
            "assignee",
            "subject",
            "description",
            "priority",
            "category",
            "channel",
            "status",
            "created_at",
            "updated_at",
            "first_response_at",
            "first_solved_at",
            "solved_at",
            "closed_at",
            "reopen_count",
            "first_response_due_at",
            "resolution_due_at",
        ]


class MessageOut(ModelSchema):
    class Meta:
        model = TicketMessage
        fields = ["id", "author", "body", "is_public", "created_at"]


class TicketDetailOut(TicketOut):
    messages: list[MessageOut]

    @staticmethod
    def resolve_messages(ticket: Ticket) -> list[TicketMessage]:
        return list(ticket.messages.order_by("created_at", "id"))


class TicketPage(Page):
    results: list[TicketOut]


class TicketFilters(Schema):
    q: str = Field("", description="Search the subject, the customer's name and the text custom fields.")
    queue: str = "all"
    status: str = ""
    order: str = "-created_at"
    cursor: str | None = None
    limit: int | None = None


class TicketIn(Schema):
    customer: int
    subject: str
    description: str = ""
    priority: str = Ticket.Priority.NORMAL
    category: str
    channel: str
    assignee: int | None = None
    custom: dict[str, Any] | None = Field(None, description=CUSTOM_IN)


class TicketUpdateIn(Schema):
    custom: dict[str, Any] = Field(description=CUSTOM_IN)
    seen: dict[str, Any] | None = Field(
        None,
        description=(
            "The ticket's ``custom`` as you read it. With it, a key you change that someone else changed "
            "since is refused (409 with the value you read and the value now, and who changed it) and "
            "nothing is written; without it, the keys sent are written as they are."
        ),
    )


class ReplyIn(Schema):
    body: str
    public: bool = True


class StatusIn(Schema):
    status: str


class AssignIn(Schema):
    assignee: int | None = None


@router.get(
    "/",
    response={200: TicketPage, 422: ErrorOut},
    summary="List tickets",
    openapi_extra=custom_filters("ticket"),
)
def ticket_list(request: HttpRequest, filters: Query[TicketFilters]) -> dict:
    """The tickets you may see; ``queue``: mine, unassigned, open or all, as on the tickets page; its
    search and custom-field filters (``cf_…``)."""
    query = clean_payload({"q": filters.q}) | custom_filter_query(request, "ticket")
    data = validated(forms.TicketFilterForm(query))
    qs = selectors.ticket_queue(
        qs=selectors.ticket_list(user=request.user),
        user=request.user,
        queue=filters.queue,
        status=filters.status or None,
    )
    qs = selectors.ticket_filter(qs=qs, data=data)
    order = filters.order if filters.order in ORDERS else "-created_at"
    return paginate(qs, order=order, cursor=filters.cursor, limit=filters.limit)


@router.get("/{ticket_id}", response={200: TicketDetailOut, 404: ErrorOut}, summary="Read a ticket")
def ticket_detail(request: HttpRequest, ticket_id: int) -> Ticket:
    return get_visible(selectors.ticket_list(user=request.user), ticket_id)


@router.post("/", response={201: TicketOut, 404: ErrorOut, 422: ErrorOut}, summary="Create a ticket")
def ticket_create(request: HttpRequest, payload: TicketIn) -> Status[Ticket]:
    customers = selectors.customer_list(user=request.user)
    ticket_form = builtin_form(forms.TicketForm)
    data = validated(ticket_form(clean_payload(payload.dict(exclude={"custom"})), customers=customers))
    data |= custom_changes(payload)
    return Status(201, services.ticket_create(actor=request.user, via=VIA, **data))


@router.patch(
    "/{ticket_id}",
    response={200: TicketOut, 404: ErrorOut, 409: CustomConflictOut, 422: ErrorOut},
    summary="Change a ticket's custom-field values",
)
def ticket_update(request: HttpRequest, ticket_id: int, payload: TicketUpdateIn) -> Ticket:
    """What the ticket page edits: its custom fields (only the keys sent change; null clears one). Its
    status, assignee and messages change through their own endpoints."""
    ticket = get_visible(selectors.ticket_list(user=request.user), ticket_id)
    if not payload.custom:
        return ticket
    with custom_conflict_is_409():
        return services.custom_values_set(
            obj=ticket, actor=request.user, changes=payload.custom, seen=payload.seen, via=VIA
        )


@router.post(
    "/{ticket_id}/messages",
    response={201: MessageOut, 404: ErrorOut, 422: ErrorOut},
    summary="Reply to the customer, or add an internal note (public=false)",
)
def ticket_reply(request: HttpRequest, ticket_id: int, payload: ReplyIn) -> Status[TicketMessage]:
    ticket = get_visible(selectors.ticket_list(user=request.user), ticket_id)
    reply = {"body": payload.body, "public": "1" if payload.public else "0"}
    data = validated(forms.TicketReplyForm(clean_payload(reply)))
    return Status(201, services.ticket_reply(ticket=ticket, actor=request.user, via=VIA, **data))


@router.post(
    "/{ticket_id}/status",
    response={200: TicketOut, 404: ErrorOut, 422: ErrorOut},
    summary="Change a ticket's status (the transitions the ticket page offers)",
)
def ticket_status(request: HttpRequest, ticket_id: int, payload: StatusIn) -> Ticket:
    ticket = get_visible(selectors.ticket_list(user=request.user), ticket_id)
    data = validated(forms.TicketStatusForm(clean_payload(payload.dict())))
    return services.ticket_set_status(ticket=ticket, status=data["status"], actor=request.user, via=VIA)


@router.post(
    "/{ticket_id}/assign",
    response={200: TicketOut, 404: ErrorOut, 422: ErrorOut},
    summary="Assign a ticket to an agent or a manager (null: back to the unassigned queue)",
)
def ticket_assign(request: HttpRequest, ticket_id: int, payload: AssignIn) -> Ticket:
    ticket = get_visible(selectors.ticket_list(user=request.user), ticket_id)
    require_staff_role(request.user, User.Role.AGENT)
    data = validated(forms.TicketAssignForm(clean_payload(payload.dict())))
    return services.ticket_assign(ticket=ticket, assignee=data["assignee"], actor=request.user, via=VIA)

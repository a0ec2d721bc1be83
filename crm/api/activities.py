"""Activities and tasks: list, read one, log one on a customer (or one of its deals or tickets), complete
a task."""

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, ModelSchema, Query, Router, Schema, Status

from crm import forms, selectors, services
from crm.api.common import (
    CUSTOM_IN,
    CUSTOM_OUT,
    VIA,
    ErrorOut,
    Page,
    builtin_form,
    clean_payload,
    custom_changes,
    get_visible,
    paginate,
    validated,
)
from crm.models import Activity

router = Router(tags=["activities"])


class ActivityOut(ModelSchema):
    custom: dict[str, Any] = Field(description=CUSTOM_OUT)

    class Meta:
        model = Activity
        fields = [
            "id",
            "kind",
            "subject",
            "notes",
            "user",
            "customer",
            "deal",
            "ticket",
            "created_at",
            "due_at",
            "done_at",
        ]


class ActivityPage(Page):
    results: list[ActivityOut]


class ActivityFilters(Schema):
    customer: int | None = None
    tasks: bool = False
    open: bool = False
    cursor: str | None = None
    limit: int | None = None


class ActivityIn(Schema):
    customer: int | None = None
    deal: int | None = None
    ticket: int | None = None
    kind: str
    subject: str
    notes: str = ""
    due_at: datetime | None = None
    custom: dict[str, Any] | None = Field(None, description=CUSTOM_IN)


@router.get("/", response={200: ActivityPage, 422: ErrorOut}, summary="List activities and tasks")
def activity_list(request: HttpRequest, filters: Query[ActivityFilters]) -> dict:
    """Newest first; ``tasks=true`` lists tasks only, ``open=true`` those not done."""
    qs = selectors.activity_list(user=request.user)
    if filters.customer is not None:
        qs = qs.filter(customer_id=filters.customer)
    if filters.tasks:
        qs = qs.filter(kind=Activity.Kind.TASK)
    if filters.open:
        qs = qs.filter(done_at=None)
    return paginate(qs, order="-created_at", cursor=filters.cursor, limit=filters.limit)


@router.get("/{activity_id}", response={200: ActivityOut, 404: ErrorOut}, summary="Read an activity")
def activity_detail(request: HttpRequest, activity_id: int) -> Activity:
    return get_visible(selectors.activity_list(user=request.user), activity_id)


@router.post("/", response={201: ActivityOut, 404: ErrorOut, 422: ErrorOut}, summary="Log an activity")
def activity_create(request: HttpRequest, payload: ActivityIn) -> Status[Activity]:
    """On a deal or a ticket (its customer follows), else on ``customer``; a task needs ``due_at``."""
    user, deal, ticket = request.user, None, None
    if payload.deal is not None:
        deal = get_visible(selectors.deal_list(user=user), payload.deal)
        customer = deal.customer
    elif payload.ticket is not None:
        ticket = get_visible(selectors.ticket_list(user=user), payload.ticket)
        customer = ticket.customer
    else:
        customer = get_visible(selectors.customer_list(user=user), payload.customer or 0)
    fields = clean_payload(payload.dict(include={"kind", "subject", "notes", "due_at"}))
    form = builtin_form(forms.ActivityForm)(fields)
    validated(form)
    data = form.activity_fields()
    activity = services.activity_log(
        actor=user,
        customer=customer,
        deal=deal,
        ticket=ticket,
        via=VIA,
        **{k: data[k] for k in ("kind", "subject", "notes", "due_at")},
        **custom_changes(payload),
    )
    return Status(201, activity)


@router.post(
    "/{activity_id}/complete",
    response={200: ActivityOut, 404: ErrorOut},
    summary="Mark a task done",
)
def task_complete(request: HttpRequest, activity_id: int) -> Activity:
    task = get_visible(
        selectors.activity_list(user=request.user).filter(kind=Activity.Kind.TASK), activity_id
    )
    return services.activity_complete(activity=task, actor=request.user, via=VIA)

"""Deals: list (the UI's filters, keyset pages), read, create, change with optimistic locking (``version``
or ``If-Match``), and stage moves, won or lost with a reason."""

from datetime import date
from decimal import Decimal
from typing import Any

from django.http import HttpRequest
from ninja import Field, Header, ModelSchema, Query, Router, Schema, Status

from accounts.models import User
from accounts.web import require_staff_role
from crm import forms, selectors, services
from crm.api.common import (
    CUSTOM_IN,
    CUSTOM_OUT,
    VIA,
    ApiError,
    ConflictOut,
    ErrorOut,
    Page,
    builtin_form,
    clean_payload,
    client_version,
    conflict_is_409,
    custom_changes,
    form_defaults,
    get_visible,
    paginate,
    validated,
)
from crm.api.custom_filters import custom_filter_query, custom_filters
from crm.models import Customer, Deal, PipelineStage

router = Router(tags=["deals"])
ORDERS = ("created_at", "-created_at", "updated_at", "-updated_at", "title", "-title")


class DealOut(ModelSchema):
    custom: dict[str, Any] = Field(description=CUSTOM_OUT)
    effective_forecast_category: str = Field(
        description="The forecast category that counts: the deal's own (forecast_category), else its stage's."
    )

    @staticmethod
    def resolve_effective_forecast_category(deal: Deal) -> str:
        return deal.effective_forecast_category

    class Meta:
        model = Deal
        fields = [
            "id",
            "customer",
            "owner",
            "title",
            "amount",
            "kind",
            "stage",
            "status",
            "probability",
            "forecast_category",
            "source",
            "campaign",
            "expected_close_date",
            "created_at",
            "updated_at",
            "closed_at",
            "lost_reason",
            "term_start",
            "term_end",
            "renewal_of",
            "version",
        ]


class DealPage(Page):
    results: list[DealOut]


class DealFilters(Schema):
    q: str = ""
    status: str = ""
    stage: int | None = None
    owner: int | None = None
    campaign: int | None = None
    forecast_category: str = ""
    order: str = "-created_at"
    cursor: str | None = None
    limit: int | None = None


class DealIn(Schema):
    customer: int | None = None
    title: str | None = None
    amount: Decimal | None = None
    kind: str | None = None
    stage: int | None = None
    probability: int | None = None
    forecast_category: str | None = Field(
        None, description="commit, best_case, pipeline or omitted; empty: the stage's category."
    )
    source: str | None = None
    campaign: int | None = Field(
        None, description="The campaign that last touched the customer; left out on a new deal, it is found."
    )
    expected_close_date: date | None = None
    custom: dict[str, Any] | None = Field(None, description=CUSTOM_IN)
    version: int | None = None


class DealMoveIn(Schema):
    stage: int
    version: int | None = None
    lost_reason: str = ""


def _deal_form(request: HttpRequest, data: dict, deal: Deal | None = None) -> forms.DealForm:
    customers = selectors.customer_list(user=request.user)
    if deal is None:
        customers = customers.exclude(status=Customer.Status.CHURNED)
    stages = selectors.stage_list().filter(kind=PipelineStage.Kind.OPEN)
    if deal is not None:
        stored = {f: getattr(deal, f) for f in forms.DealForm.base_fields if f not in ("stage", "version")}
        stored["customer"] = deal.customer_id
        data = {**stored, **data}
    else:
        data = {**form_defaults(forms.DealForm), **data}
        if "stage" not in data and (first := stages.first()) is not None:
            data["stage"] = first.pk
    return builtin_form(forms.DealForm)(
        clean_payload(data), customers=customers, stages=stages, editing=deal is not None
    )


@router.get(
    "/",
    response={200: DealPage, 422: ErrorOut},
    summary="List deals",
    openapi_extra=custom_filters("deal"),
)
def deal_list(request: HttpRequest, filters: Query[DealFilters]) -> dict:
    """The deals you may see, with the deal list's filters, its custom-field filters included (``cf_…``);
    ``order``: created_at, updated_at, title."""
    stages = selectors.stage_list()
    query = clean_payload(filters.dict(exclude={"order", "cursor", "limit"}))
    query |= custom_filter_query(request, "deal")
    data = validated(forms.DealFilterForm(query, user=request.user, stages=stages))
    qs = selectors.deal_filter(qs=selectors.deal_list(user=request.user), data=data)
    order = filters.order if filters.order in ORDERS else "-created_at"
    return paginate(qs, order=order, cursor=filters.cursor, limit=filters.limit)


@router.get("/{deal_id}", response={200: DealOut, 404: ErrorOut}, summary="Read a deal")
def deal_detail(request: HttpRequest, deal_id: int) -> Deal:
    return get_visible(selectors.deal_list(user=request.user), deal_id)


@router.post("/", response={201: DealOut, 404: ErrorOut, 422: ErrorOut}, summary="Create a deal")
def deal_create(request: HttpRequest, payload: DealIn) -> Status[Deal]:
    require_staff_role(request.user, User.Role.REP)
    form = _deal_form(request, payload.dict(exclude_unset=True, exclude={"version", "custom"}))
    validated(form)
    data = form.record_fields() | custom_changes(payload)
    return Status(201, services.deal_create(actor=request.user, via=VIA, **data))


@router.patch(
    "/{deal_id}",
    response={200: DealOut, 404: ErrorOut, 409: ConflictOut, 422: ErrorOut},
    summary="Change a deal",
)
def deal_update(
    request: HttpRequest, deal_id: int, payload: DealIn, if_match: str | None = Header(None, alias="If-Match")
) -> Deal:
    """Only the fields sent change (of ``custom``, only the keys sent); the stage changes through
    ``/move``. Send the ``version`` you read (or ``If-Match: "<version>"``): if someone saved in between,
    nothing is written and 409 says what changed and who changed it."""
    require_staff_role(request.user, User.Role.REP)
    deal = get_visible(selectors.deal_list(user=request.user), deal_id)
    version = client_version(payload.version, if_match)
    if version is None:
        raise ApiError(422, "invalid", "Send the version you read.", {"version": ["This field is required."]})
    form = _deal_form(
        request, {**payload.dict(exclude_unset=True, exclude={"stage", "custom"}), "version": version}, deal
    )
    validated(form)
    data = form.record_fields() | custom_changes(payload)
    with conflict_is_409():
        return services.deal_update(deal=deal, actor=request.user, data=data, version=version, via=VIA)


@router.post(
    "/{deal_id}/move",
    response={200: DealOut, 404: ErrorOut, 409: ConflictOut, 422: ErrorOut},
    summary="Move a deal to a stage (won and lost stages close it)",
)
def deal_move(
    request: HttpRequest,
    deal_id: int,
    payload: DealMoveIn,
    if_match: str | None = Header(None, alias="If-Match"),
) -> Deal:
    """A lost stage needs ``lost_reason``; with ``version`` (or ``If-Match``) a stale move gets 409."""
    require_staff_role(request.user, User.Role.REP)
    deal = get_visible(selectors.deal_list(user=request.user), deal_id)
    version = client_version(payload.version, if_match)
    data = {**payload.dict(), "version": version or deal.version}
    form = forms.DealMoveForm(
        clean_payload(data), stages=selectors.stage_list(pipeline_id=deal.stage.pipeline_id)
    )
    cleaned = validated(form)
    with conflict_is_409():
        return services.deal_move_stage(deal=deal, actor=request.user, via=VIA, **cleaned)

"""Customers: list (the UI's filters, keyset pages), read, create, change, and move between statuses."""

from typing import Any

from django.http import HttpRequest
from ninja import Field, Header, ModelSchema, Query, Router, Schema, Status

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
from crm.models import Customer

router = Router(tags=["customers"])
ORDERS = ("name", "-name", "created_at", "-created_at", "updated_at", "-updated_at")


class CustomerOut(ModelSchema):
    custom: dict[str, Any] = Field(description=CUSTOM_OUT)

    class Meta:
        model = Customer
        fields = [
            "id",
            *services.CUSTOMER_FIELDS,
            "version",
            "status",
            "created_at",
            "updated_at",
            "became_customer_at",
            "churned_at",
            "churn_reason",
        ]


class CustomerPage(Page):
    results: list[CustomerOut]


class CustomerFilters(Schema):
    q: str = ""
    status: str = ""
    owner: int | None = None
    source: str = ""
    segment: str = ""
    campaign: int | None = None
    order: str = "name"
    cursor: str | None = None
    limit: int | None = None


class CustomerIn(Schema):
    name: str | None = None
    kind: str | None = None
    email: str | None = None
    phone: str | None = None
    industry: str | None = None
    city: str | None = None
    segment: str | None = None
    source: str | None = None
    language: str | None = None
    owner: int | None = None
    campaign: int | None = Field(None, description="The campaign the customer came from (first touch).")
    custom: dict[str, Any] | None = Field(None, description=CUSTOM_IN)
    version: int | None = None


class CustomerStatusIn(Schema):
    status: str
    reason: str = ""


def _form(request: HttpRequest, data: dict, customer: Customer | None = None) -> dict:
    """The customer form's cleaned data: ``data`` over the customer's stored values, as the edit page."""
    initial = form_defaults(forms.CustomerForm)
    if customer is not None:
        initial = {f: getattr(customer, f) for f in services.CUSTOMER_FIELDS} | {"owner": customer.owner_id}
    form = builtin_form(forms.CustomerForm)(clean_payload({**initial, **data}), user=request.user)
    validated(form)
    return form.record_fields()


@router.get(
    "/",
    response={200: CustomerPage, 422: ErrorOut},
    summary="List customers",
    openapi_extra=custom_filters("customer"),
)
def customer_list(request: HttpRequest, filters: Query[CustomerFilters]) -> dict:
    """The customers you may see; the filters of the customer list, its custom-field filters included
    (``cf_…``); ``order`` is one of name, created_at, updated_at (``-`` for descending); follow ``next``
    as ``cursor`` for the next page."""
    query = clean_payload(filters.dict(exclude={"order", "cursor", "limit"}))
    query |= custom_filter_query(request, "customer")
    data = validated(forms.CustomerFilterForm(query, user=request.user))
    qs = selectors.customer_filter(qs=selectors.customer_list(user=request.user), data=data)
    order = filters.order if filters.order in ORDERS else "name"
    return paginate(qs, order=order, cursor=filters.cursor, limit=filters.limit)


@router.get("/{customer_id}", response={200: CustomerOut, 404: ErrorOut}, summary="Read a customer")
def customer_detail(request: HttpRequest, customer_id: int) -> Customer:
    return get_visible(selectors.customer_list(user=request.user), customer_id)


@router.post("/", response={201: CustomerOut, 422: ErrorOut}, summary="Create a customer")
def customer_create(request: HttpRequest, payload: CustomerIn) -> Status[Customer]:
    """Creates a lead; a rep's customers are always their own."""
    data = _form(request, payload.dict(exclude_unset=True, exclude={"version", "custom"}))
    data |= custom_changes(payload)
    return Status(201, services.customer_create(actor=request.user, via=VIA, **data))


@router.patch(
    "/{customer_id}",
    response={200: CustomerOut, 404: ErrorOut, 409: ConflictOut, 422: ErrorOut},
    summary="Change a customer",
)
def customer_update(
    request: HttpRequest,
    customer_id: int,
    payload: CustomerIn,
    if_match: str | None = Header(None, alias="If-Match"),
) -> Customer:
    """Only the fields sent change (of ``custom``, only the keys sent). Send the ``version`` you read
    (or ``If-Match: "<version>"``): if someone saved in between, nothing is written and 409 says what
    changed and who changed it."""
    customer = get_visible(selectors.customer_list(user=request.user), customer_id)
    version = client_version(payload.version, if_match)
    if version is None:
        raise ApiError(422, "invalid", "Send the version you read.", {"version": ["This field is required."]})
    data = _form(request, payload.dict(exclude_unset=True, exclude={"version", "custom"}), customer)
    data |= custom_changes(payload)
    with conflict_is_409():
        return services.customer_update(
            customer=customer, actor=request.user, data=data, version=version, via=VIA
        )


@router.post(
    "/{customer_id}/status",
    response={200: CustomerOut, 404: ErrorOut, 422: ErrorOut},
    summary="Mark a customer active or churned",
)
def customer_status(request: HttpRequest, customer_id: int, payload: CustomerStatusIn) -> Customer:
    customer = get_visible(selectors.customer_list(user=request.user), customer_id)
    data = validated(forms.CustomerStatusForm(clean_payload(payload.dict())))
    return services.customer_set_status(
        customer=customer, status=data["status"], reason=data["reason"], actor=request.user, via=VIA
    )

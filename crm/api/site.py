"""The API's assembly: ``/api/v1/`` with token auth, the per-token rate limit, the routers of every app
and one error shape. The other apps' routers are named by import path (as ``urls`` includes them), so
that the CRM does not import the apps built on it.

The OpenAPI document is at ``/api/v1/openapi.json``; the interactive docs (``/api/v1/docs``) are
served from our own static files (django-ninja ships Swagger UI), for signed-in staff only.
"""

import logging
import math
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled
from ninja.errors import ValidationError as SchemaError
from ninja.openapi.schema import OpenAPISchema

from accounts.api import TokenAuth
from crm.api.common import ApiError, TokenRateThrottle, error_response, validation_fields
from crm.api.custom_filters import document_custom_filters
from crm.transactions import WriteConflict

logger = logging.getLogger(__name__)


class CrmApi(NinjaAPI):
    def get_openapi_schema(self, **kwargs: Any) -> OpenAPISchema:
        """The document, with the lists' custom-field filters as the fields are defined now."""
        schema = super().get_openapi_schema(**kwargs)
        document_custom_filters(schema)
        return schema


api = CrmApi(
    title="Mini CRM API",
    version="1",
    description=(
        "Customers, deals, tickets, activities, pipelines, users, survey answers and KPI numbers. "
        "Every request acts as the user of its token, with the same access rules as the pages."
    ),
    auth=TokenAuth(),
    throttle=[TokenRateThrottle()],
    urls_namespace="api",
    docs_url=None,  # docs_view below: for signed-in staff, while the schema itself is public
)


def _schema_error(request: HttpRequest, exc: SchemaError) -> HttpResponse:
    fields: dict[str, list[str]] = {}
    for error in exc.errors:
        location = [
            str(part)
            for part in error.get("loc", ())
            if part not in ("body", "query", "path", "payload", "filters", "q")
        ]
        fields.setdefault(".".join(location) or "__all__", []).append(str(error.get("msg", "not valid")))
    return error_response(422, "invalid", "Some fields are not valid.", fields)


def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return error_response(exc.status, exc.code, exc.message, exc.fields, **exc.extra)


def _throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    response = error_response(429, "rate_limited", "Too many requests for this token; wait and retry.")
    response["Retry-After"] = str(max(1, math.ceil(exc.wait or 1)))
    return response


def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
    return error_response(exc.status_code, codes.get(exc.status_code, "error"), str(exc))


def _unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = error_response(401, "unauthorized", "Send a valid API token: Authorization: Bearer mcrm_…")
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


api.add_exception_handler(SchemaError, _schema_error)
api.add_exception_handler(ApiError, _api_error)
api.add_exception_handler(Throttled, _throttled)
api.add_exception_handler(AuthenticationError, _unauthorized)
api.add_exception_handler(HttpError, _http_error)


def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    if isinstance(exc, WriteConflict):  # transient: nothing was written, the same request may succeed
        response = error_response(409, "write_conflict", " ".join(exc.messages))
        response["Retry-After"] = "1"
        return response
    return error_response(422, "invalid", "Some fields are not valid.", validation_fields(exc))


api.add_exception_handler(ValidationError, _invalid)
api.add_exception_handler(
    Http404, lambda request, exc: error_response(404, "not_found", "No such record, or not one you may see.")
)
api.add_exception_handler(
    PermissionDenied,
    lambda request, exc: error_response(404, "not_found", "No such record, or not one you may see."),
)

api.add_router("/customers/", "crm.api.customers.router")
api.add_router("/deals/", "crm.api.deals.router")
api.add_router("/tickets/", "crm.api.tickets.router")
api.add_router("/activities/", "crm.api.activities.router")
api.add_router("/pipelines/", "crm.api.pipelines.router")
api.add_router("/users/", "accounts.api.router")
api.add_router("/surveys/", "surveys.api.router")
api.add_router("/kpis/", "metrics.api.router")
api.add_router("/targets/", "metrics.api.targets_router")


@login_required
def docs_view(request: HttpRequest) -> HttpResponse:
    """Swagger UI on the OpenAPI document, from django-ninja's static files (no CDN; CSP unchanged)."""
    return api.docs.render_page(request, api)


def not_found_view(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other path under /api/: the API's 404, in its JSON shape rather than the site's page."""
    return error_response(404, "not_found", "There is no such API endpoint; see /api/v1/docs.")

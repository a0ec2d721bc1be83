"""The download of the stays behind one stage's time in stage (the KPI page shows the same list)."""

from typing import cast

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET

from accounts.models import User
from accounts.security import security_log
from accounts.web import require_staff_role
from crm.data.exports import csv_response, xlsx_response
from metrics.velocity import pages
from metrics.views import _filters


@login_required
@require_GET
def stays_export_view(request: HttpRequest) -> HttpResponseBase:
    """One stage's stays (``stage``, an open stage's id) in the filters' period and scope as CSV or XLSX:
    the deals ``request.user`` may see, longest first; managers and reps (who see deals) only."""
    require_staff_role(request.user, User.Role.REP)
    _form, filters = _filters(request)
    stage = pages.export_stage(request.GET.get("stage"))
    if stage is None:
        raise Http404
    fmt = "xlsx" if request.GET.get("format") == "xlsx" else "csv"
    user = cast(User, request.user)  # signed in (login_required)
    rows = pages.stays_export_rows(user=user, filters=filters, stage=stage)
    security_log(kind="export", request=request, what="time-in-stage", format=fmt, rows=len(rows) - 1)
    name = f"time-in-stage-{stage.pk}-{filters.granularity}-{filters.period.first_day}"
    if fmt == "xlsx":
        return xlsx_response(rows, f"{name}.xlsx", title="time in stage")
    return csv_response(rows, f"{name}.csv")

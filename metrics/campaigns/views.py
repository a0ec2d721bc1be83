"""The campaigns report (managers and admins): which campaigns pay, under both attribution models.

A rep does not see it: its figures are company marketing economics — a campaign's cost against what every
rep's customers brought — as the CAC is; a rep finds their own customers and deals of a campaign through
the customer and deal lists' campaign filter, which shows only their own.
"""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.web import require_staff_role
from metrics import dashboard
from metrics.campaigns.report import report
from metrics.forms import DashboardFilterForm

# Revenue comes weeks or months after a campaign's cost: the page opens on quarters.
DEFAULT_GRANULARITY = "quarter"


@login_required
@require_GET
def campaigns_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    form = DashboardFilterForm({"granularity": DEFAULT_GRANULARITY, **request.GET.dict()}, user=request.user)
    data = form.cleaned()
    filters = dashboard.resolve_filters(
        user=request.user,
        granularity=data["granularity"] or DEFAULT_GRANULARITY,
        period=data["period"].isoformat() if data["period"] else None,
        count=data["count"],
        team=None,
        rep=None,
        campaign=data["campaign"],
    )
    complete = request.GET.copy()
    complete["period"] = filters.period.previous().first_day.isoformat()
    context = {
        **report(period=filters.period, campaign=filters.campaign),
        "form": form,
        "filters": filters,
        "freshness": dashboard.freshness(),
        "complete_query": complete.urlencode(),
        "kpi_query": f"granularity={filters.granularity}&period={filters.period.first_day.isoformat()}",
    }
    return render(request, "metrics/campaigns.html", context)

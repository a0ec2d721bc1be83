"""The cohorts and revenue retention page: everyone sees it for the numbers they may see (a rep their own
customers'), read from snapshot rows."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from metrics import dashboard
from metrics.cohorts import pages
from metrics.cohorts.forms import DEFAULT_COHORTS, CohortFilterForm


@login_required
@require_GET
def cohorts_view(request: HttpRequest) -> HttpResponse:
    form = CohortFilterForm({"granularity": "month", **request.GET.dict()}, user=request.user)
    data = form.cleaned()
    filters = dashboard.resolve_filters(
        user=request.user,
        granularity=data["granularity"],
        period=data["period"].isoformat() if data["period"] else None,
        count=None,
        team=data.get("team"),
        rep=data.get("rep"),
    )
    context = {
        **pages.cohorts_context(filters=filters, cohorts=data["cohorts"] or DEFAULT_COHORTS),
        "form": form,
        # The shown period and scope, for the links to the KPIs' pages (valid values only).
        "query": urlencode(
            {
                "granularity": filters.granularity,
                "period": filters.period.first_day.isoformat(),
                **({"team": filters.team.pk} if filters.team else {}),
                **({"rep": filters.rep.pk} if filters.rep and request.user.is_manager else {}),
            }
        ),
    }
    return render(request, "metrics/cohorts.html", context)

"""The forecast calibration page and the one-click change of a stage's probability."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from accounts.web import partial_template
from metrics.forecasts import pages
from metrics.forms import ForecastFilterForm, StageProbabilityApplyForm

TEMPLATE = "metrics/forecast_calibration.html"


def _may_see(request: HttpRequest) -> None:
    """Managers see everything, reps their own numbers; support agents own no deals (404)."""
    if not (request.user.is_manager or request.user.is_rep):
        raise Http404


@login_required
@require_GET
@vary_on_headers("HX-Request")
def forecast_calibration_view(request: HttpRequest) -> HttpResponse:
    _may_see(request)
    form = ForecastFilterForm(request.GET)
    data = form.cleaned()
    context = {
        **pages.forecast_page_context(
            user=request.user, granularity=data["granularity"], count=data["count"]
        ),
        "form": form,
        "query": request.GET.urlencode(),
    }
    return render(request, partial_template(request, TEMPLATE, "stage-calibration"), context)


@login_required
@require_POST
def stage_probability_apply_view(request: HttpRequest) -> HttpResponse:
    """Apply a suggested probability to a stage (managers): a new version of the stage's probability, so
    forecasts from now on use it and earlier ones keep theirs. Refused when the probability the page
    showed is no longer the stage's (someone changed it meanwhile)."""
    if not request.user.is_manager:
        raise Http404
    form = StageProbabilityApplyForm(request.POST)
    error, done = pages.stage_probability_apply(form=form, actor=request.user)
    if done:
        messages.success(request, done)
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect(reverse("metrics:forecast_calibration"))
    filters = ForecastFilterForm(request.GET).cleaned()
    context = {
        **pages.forecast_page_context(
            user=request.user, granularity=filters["granularity"], count=filters["count"]
        ),
        "apply_error": error,
        "apply_form": form,
    }
    return render(request, f"{TEMPLATE}#stage-calibration", context)

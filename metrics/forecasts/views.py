"""The forecast calibration page and the one-click change of a stage's probability."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from accounts.web import partial_template
from crm.forecasting.services import stage_probability_set
from metrics.forecasts import pages, selectors
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
    error = None
    if form.is_valid():
        stage, probability = form.cleaned_data["stage"], form.cleaned_data["probability"]
        try:
            stage_probability_set(
                stage_id=stage.pk,
                probability=probability,
                expected=form.cleaned_data["expected"],
                actor=request.user,
                note=_calibration_note(stage.pk),
            )
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            messages.success(
                request,
                _(
                    "%(stage)s now has %(new)s %%. Forecasts frozen from now on use it; those frozen "
                    "before keep %(old)s %%."
                )
                % {"stage": stage, "new": probability, "old": form.cleaned_data["expected"]},
            )
    else:
        error = form.errors_text()
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


def _calibration_note(stage_id: int) -> str:
    """What the suggestion rested on, kept with the version."""
    for row in selectors.stage_calibration_list(calibration=selectors.calibration_latest()):
        if row.stage.pk == stage_id and row.reached:
            return f"{row.won} / {row.reached} won ({row.percent:.1f} %)"
    return ""

"""The managers' survey pages under ``/surveys/``: surveys and settings, invitations and their funnel,
answers with comments, open follow-ups and campaigns. Managers and admins only; everyone else gets 404."""

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import F, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from accounts.web import form_errors_from, partial_template, require_staff_role
from crm import selectors as crm_selectors
from surveys import selectors, services
from surveys.forms import CampaignForm, InvitationFilterForm, ResponseFilterForm, SurveyForm
from surveys.models import Survey

PAGE_SIZE = 25


def _query(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@login_required
@require_GET
def survey_home_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    since = timezone.now() - timedelta(days=90)
    invitations = selectors.invitation_list(user=request.user).filter(created_at__gte=since)
    context = {
        "surveys": selectors.survey_list(),
        "funnel": selectors.invitation_funnel(invitations=invitations),
        "followups": selectors.open_followup_list(user=request.user)[:20],
        "followup_count": selectors.open_followup_list(user=request.user).count(),
        "now": timezone.now(),
    }
    return render(request, "surveys/survey_home.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def survey_update_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user)
    survey = get_object_or_404(Survey, pk=pk)
    form = SurveyForm(request.POST or None, instance=Survey.objects.get(pk=pk))
    if request.method == "POST" and form.is_valid():
        try:
            services.survey_update(survey=survey, data=form.cleaned_data, actor=request.user)
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, _("Survey %(name)s saved.") % {"name": survey.name})
            return _redirect(request, reverse("surveys:home"))
    context = {"form": form, "survey": survey}
    return render(request, partial_template(request, "surveys/survey_form.html", "survey-form"), context)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def invitation_list_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    form = InvitationFilterForm(request.GET)
    invitations = selectors.invitation_list(user=request.user)
    if form.is_valid():
        data = form.cleaned_data
        if data["days"]:
            invitations = invitations.filter(created_at__gte=timezone.now() - timedelta(days=data["days"]))
        filters = {"survey": data["survey"], "status": data["status"], "suppression_reason": data["reason"]}
        invitations = invitations.filter(**{k: v for k, v in filters.items() if v})
    page = Paginator(invitations.order_by("-created_at", "-id"), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "funnel": selectors.invitation_funnel(invitations=invitations),
        "query": _query(request),
        "now": timezone.now(),
    }
    return render(
        request, partial_template(request, "surveys/invitation_list.html", "invitation-table"), context
    )


@login_required
@require_POST
def invitation_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user)
    invitation = get_object_or_404(selectors.invitation_list(user=request.user), pk=pk)
    try:
        services.invitation_revoke(invitation=invitation, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, _("The link is closed."))
    return _redirect(request, reverse("surveys:invitations") + "?" + request.POST.get("query", "")[:500])


@login_required
@require_GET
@vary_on_headers("HX-Request")
def response_list_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    form = ResponseFilterForm(request.GET)
    responses = selectors.survey_response_list(user=request.user).select_related("followup_task")
    if form.is_valid():
        data = form.cleaned_data
        if data["survey"]:
            responses = responses.filter(survey=data["survey"])
        responses = responses.filter(**crm_selectors.by_owner(owner=data["owner"]))
        if data["with_comment"]:
            responses = responses.exclude(comment="")
        bucket = {
            "negative": Q(score__lte=F("survey__negative_max")),
            "positive": Q(score__gte=F("survey__positive_min")),
            "neutral": Q(score__gt=F("survey__negative_max"), score__lt=F("survey__positive_min")),
        }.get(data["bucket"])
        if bucket is not None:
            responses = responses.filter(bucket)
    page = Paginator(responses.order_by("-score_submitted_at", "-id"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    context = {"form": form, "page": page, "query": _query(request)}
    return render(request, partial_template(request, "surveys/response_list.html", "response-table"), context)


@login_required
@require_http_methods(["GET", "POST"])
def campaign_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    form = CampaignForm(request.POST or None, initial={"status": "active"})
    if request.method == "POST" and form.is_valid():
        try:
            campaign = services.campaign_launch(
                survey=form.cleaned_data["survey"], filters=form.filters(), actor=request.user
            )
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(
                request,
                _(
                    "Campaign queued: %(n)s customers will be invited "
                    "(some may be skipped by the throttling rules)."
                )
                % {"n": campaign.matched},
            )
            return _redirect(request, reverse("surveys:campaigns"))
    context = {"form": form, "campaigns": selectors.campaign_list()[:20], "preview": None}
    return render(request, partial_template(request, "surveys/campaign_list.html", "campaign-form"), context)


@login_required
@require_GET
def campaign_preview_view(request: HttpRequest) -> HttpResponse:
    """How many customers the campaign form's filters match (swapped in while the manager chooses)."""
    require_staff_role(request.user)
    form = CampaignForm(request.GET)
    form.is_valid()
    # The survey is not needed to count customers; any other invalid filter shows no count.
    preview = selectors.campaign_preview(filters=form.filters()) if set(form.errors) <= {"survey"} else None
    return render(request, "surveys/campaign_list.html#campaign-preview", {"preview": preview, "form": form})

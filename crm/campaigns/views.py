"""The campaign pages (managers and admins): the list, a new campaign, one campaign (what it brought and its
change history), its edit form with optimistic locking, archiving and restoring; and, on a customer's page,
a campaign touch recorded by hand (whoever may edit the customer)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from accounts.models import User
from accounts.web import PAGE_SIZE, CappedPaginator, form_errors_from, partial_template, require_staff_role
from crm import selectors as crm_selectors
from crm.campaigns import selectors, services
from crm.campaigns.forms import CampaignFilterForm, CampaignForm, TouchForm
from crm.models import Campaign
from crm.services import ConcurrentEditError

FORM_TEMPLATE = "crm/campaign_form.html"


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _campaign_or_404(request: HttpRequest, pk: int) -> Campaign:
    return get_object_or_404(selectors.campaign_list(user=request.user), pk=pk)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def campaign_list_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    form = CampaignFilterForm(request.GET)
    campaigns = selectors.campaign_list(user=request.user)
    data = form.cleaned_data if form.is_valid() else {}
    campaigns = selectors.campaign_filter(qs=campaigns, data=data)
    page = CappedPaginator(campaigns, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "query": query.urlencode()}
    return render(request, partial_template(request, "crm/campaign_list.html", "campaign-table"), context)


@login_required
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def campaign_create_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    form = CampaignForm(request.POST or None)
    if form.is_bound and form.is_valid():
        try:
            campaign = services.campaign_create(actor=request.user, **form.campaign_fields())
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, _("Campaign %(name)s created.") % {"name": campaign.name})
            return _redirect(request, campaign.get_absolute_url())
    return render(request, partial_template(request, FORM_TEMPLATE, "campaign-form"), {"form": form})


@login_required
@require_GET
def campaign_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user)
    campaign = _campaign_or_404(request, pk)
    context = {
        "campaign": campaign,
        "summary": selectors.campaign_summary(campaign=campaign, user=request.user),
        "touches": selectors.campaign_recent_touches(campaign=campaign, user=request.user),
        "history": crm_selectors.record_history(obj=campaign),
    }
    return render(request, "crm/campaign_detail.html", context)


@login_required
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def campaign_update_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user)
    campaign = _campaign_or_404(request, pk)
    initial = {name: getattr(campaign, name) for name in CampaignForm.base_fields}
    form = CampaignForm(request.POST or None, initial=initial, editing=True)
    conflict = None
    if form.is_bound and form.is_valid():
        version = form.cleaned_data["version"]
        try:
            services.campaign_update(
                campaign=campaign, actor=request.user, data=form.campaign_fields(), version=version
            )
        except ConcurrentEditError as exc:
            changes = crm_selectors.record_changes_display(model=Campaign, changes=exc.changes)
            conflict = {"changes": changes, "by": exc.changed_by}
            form.rebase(version=exc.current.version)
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, _("Changes saved."))
            return _redirect(request, campaign.get_absolute_url())
    context = {"form": form, "campaign": campaign, "conflict": conflict}
    return render(request, partial_template(request, FORM_TEMPLATE, "campaign-form"), context)


def _set_archived(request: HttpRequest, pk: int, *, archived: bool) -> HttpResponse:
    require_staff_role(request.user)
    campaign = _campaign_or_404(request, pk)
    services.campaign_set_archived(campaign=campaign, actor=request.user, archived=archived)
    if archived:
        messages.success(
            request, _("Campaign %(name)s archived; its figures are kept.") % {"name": campaign.name}
        )
    else:
        messages.success(request, _("Campaign %(name)s restored.") % {"name": campaign.name})
    return _redirect(request, reverse("crm:campaign_detail", args=[campaign.pk]))


@login_required
@require_POST
def campaign_archive_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Hide the campaign from the pickers; its customers, deals and figures stay."""
    return _set_archived(request, pk, archived=True)


@login_required
@require_POST
def campaign_restore_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _set_archived(request, pk, archived=False)


@login_required
@require_POST
def customer_touch_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Record that a campaign reached the customer now; back to the customer's page either way."""
    require_staff_role(request.user, User.Role.REP)
    customer = get_object_or_404(crm_selectors.customer_list(user=request.user), pk=pk)
    form = TouchForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
    else:
        campaign = form.cleaned_data["campaign"]
        touch = services.customer_touch_add(customer=customer, campaign=campaign, actor=request.user)
        if touch is None:
            messages.info(
                request,
                _("%(campaign)s already is this customer's latest campaign.") % {"campaign": campaign},
            )
        else:
            messages.success(request, _("Touch by %(campaign)s recorded.") % {"campaign": campaign})
    return _redirect(request, customer.get_absolute_url())

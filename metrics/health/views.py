"""Customer health pages: the list with the backtest beside it, one customer's score (shown on the
customer's page) and the settings a manager changes. Each reads stored scores through the access rules."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers

from accounts.web import partial_template
from crm.selectors import customer_list
from metrics.health import pages
from metrics.health.forms import HealthFilterForm, HealthSettingsForm
from metrics.health.selectors import health_settings
from metrics.health.services import health_settings_update


@login_required
@require_GET
@vary_on_headers("HX-Request")
def health_list_view(request: HttpRequest) -> HttpResponse:
    form = HealthFilterForm(request.GET)
    data = form.cleaned()
    context = {
        **pages.health_list_context(
            user=request.user, band=data["band"], sort=data["sort"], page=request.GET.get("page")
        ),
        "form": form,
        "query": urlencode({name: value for name, value in data.items() if value}),
    }
    return render(request, partial_template(request, "metrics/health.html", "health-table"), context)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def customer_health_view(request: HttpRequest, pk: int) -> HttpResponse:
    """One customer's score and its components: a fragment for the customer's page, a page on its own."""
    customer = get_object_or_404(customer_list(user=request.user), pk=pk)
    context = pages.customer_health_context(user=request.user, customer=customer)
    template = partial_template(request, "metrics/customer_health.html", "customer-health")
    return render(request, template, context)


@login_required
@require_http_methods(["GET", "POST"])
def health_settings_view(request: HttpRequest) -> HttpResponse:
    """The weights and bands (managers only); a saved change re-scores every customer in the background."""
    if not request.user.is_manager:
        raise Http404
    current = health_settings()
    if request.method == "POST":
        form = HealthSettingsForm(request.POST, instance=current)
        if form.is_valid():
            health_settings_update(actor=request.user, **form.settings_values)
            messages.success(request, _("Settings saved. Every customer is being scored again with them."))
            return redirect("metrics:health")
    else:
        form = HealthSettingsForm(instance=current)
    return render(request, "metrics/health_settings.html", {"form": form, "settings": current})

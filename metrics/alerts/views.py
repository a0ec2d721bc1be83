"""The alert list and dismissing an alert. Everyone signed in has alerts: a manager all of them, anyone else
those about their own numbers; another person's alert does not exist for them (404)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import trigger_client_event

from accounts.redirects import safe_local_path
from accounts.web import partial_template

from . import pages, selectors, services
from .forms import AlertFilterForm


@login_required
@require_GET
@vary_on_headers("HX-Request")
def alert_list_view(request: HttpRequest) -> HttpResponse:
    form = AlertFilterForm(request.GET, user=request.user)
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        **pages.alert_list_context(user=request.user, filters=form.filters(), page=request.GET.get("page")),
        "form": form,
        "query": query.urlencode(),
    }
    return render(request, partial_template(request, "metrics/alerts.html", "alert-list"), context)


@login_required
@require_POST
def alert_dismiss_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Dismiss an alert the user may see; htmx gets the alert back (dismissed) and an ``alertDismissed``
    event, a form post goes back where it came from."""
    alert = get_object_or_404(selectors.alert_list(user=request.user), pk=pk)
    alert = services.alert_dismiss(alert=alert, actor=request.user)
    if request.htmx:
        shown = selectors.alerts_shown(
            alerts=selectors.alert_list(user=request.user).filter(pk=alert.pk)
        ).get()
        response = render(request, "metrics/_alert_item.html", {"row": pages.alert_row(shown)})
        return trigger_client_event(response, "alertDismissed", {"id": alert.pk})
    messages.success(request, _("Alert dismissed."))
    return redirect(safe_local_path(request, request.POST.get("next")) or "metrics:alert_list")

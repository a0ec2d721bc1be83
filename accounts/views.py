from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from accounts import selectors
from accounts.forms import FeedbackForm, LoginForm, SecurityEventFilterForm
from accounts.services import feedback_send
from crm.views import PAGE_SIZE, CappedPaginator, _partial

login_view = auth_views.LoginView.as_view(
    template_name="accounts/login.html", authentication_form=LoginForm, redirect_authenticated_user=True
)


def locked_out_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """What django-axes answers a locked-out sign-in with: a page saying when to try again (429)."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return render(request, "accounts/locked_out.html", {"minutes": minutes}, status=429)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    return auth_views.LogoutView.as_view()(request)


@login_required
@require_POST
def feedback_view(request: HttpRequest) -> HttpResponse:
    """Staff feedback on the CRM, from the form every page carries; htmx swaps in a thank-you."""
    form = FeedbackForm(request.POST)
    if form.is_valid():
        feedback_send(user=request.user, **form.cleaned_data)
        if not request.htmx:
            messages.success(request, _("Thank you for your feedback."))
            page = form.cleaned_data["page"]
            safe = url_has_allowed_host_and_scheme(page, allowed_hosts={request.get_host()})
            return redirect(page if page and safe else "home")
        return render(request, "accounts/_feedback.html", {"feedback_form": FeedbackForm(), "sent": True})
    return render(request, "accounts/_feedback.html", {"feedback_form": form, "open": True})


@login_required
@require_GET
@vary_on_headers("HX-Request")
def security_event_list_view(request: HttpRequest) -> HttpResponse:
    """The security log for managers and admins (a 404 for everyone else), filtered by kind and user."""
    if not request.user.is_manager:
        raise Http404
    form = SecurityEventFilterForm(request.GET)
    filters = form.cleaned_data if form.is_valid() else {}
    events = selectors.security_event_list(
        user=request.user, kind=filters.get("kind", ""), actor=filters.get("user")
    )
    page = CappedPaginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "query": query.urlencode()}
    return render(request, _partial(request, "accounts/security_event_list.html", "security-events"), context)

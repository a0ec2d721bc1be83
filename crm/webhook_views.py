"""The webhooks pages (managers and admins): the subscriptions, one subscription with its delivery log,
a new secret, and sending a delivery again."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from accounts.web import CappedPaginator, form_errors_from, require_staff_role
from crm import selectors
from crm.forms import WebhookForm
from crm.models import WebhookSubscription
from crm.webhooks import services

NEW_SECRET_KEY = "webhook_new_secret"  # noqa: S105 (a session key, not a secret)


@login_required
@require_http_methods(["GET", "POST"])
def webhook_list_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    form = WebhookForm(request.POST or None)
    if form.is_bound and form.is_valid():
        data = {k: v for k, v in form.cleaned_data.items() if k != "is_active"}
        try:
            subscription, secret = services.subscription_create(actor=request.user, **data)
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            request.session[NEW_SECRET_KEY] = secret
            return redirect("crm:webhook_detail", pk=subscription.pk)
    context = {"form": form, "subscriptions": selectors.webhook_list()}
    return render(request, "crm/webhook_list.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def webhook_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user)
    subscription = get_object_or_404(WebhookSubscription, pk=pk)
    form = WebhookForm(request.POST or None, initial=selectors.webhook_initial(subscription=subscription))
    if form.is_bound and form.is_valid():
        try:
            services.subscription_update(actor=request.user, subscription=subscription, **form.cleaned_data)
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, _("Webhook saved."))
            return redirect("crm:webhook_detail", pk=pk)
    deliveries = CappedPaginator(selectors.webhook_deliveries(subscription=subscription), 50)
    context = {
        "subscription": subscription,
        "form": form,
        "page": deliveries.get_page(request.GET.get("page")),
        "new_secret": request.session.pop(NEW_SECRET_KEY, None),
    }
    response = render(request, "crm/webhook_detail.html", context)
    response["Cache-Control"] = "no-store"  # a new secret may be on it
    return response


@login_required
@require_POST
def webhook_rotate_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user)
    subscription = get_object_or_404(WebhookSubscription, pk=pk)
    request.session[NEW_SECRET_KEY] = services.subscription_rotate_secret(
        actor=request.user, subscription=subscription
    )
    messages.success(request, _("New secret made: the old one keeps signing for 24 hours."))
    return redirect("crm:webhook_detail", pk=pk)


@login_required
@require_POST
def webhook_redeliver_view(request: HttpRequest, pk: int, delivery_pk: int) -> HttpResponse:
    require_staff_role(request.user)
    delivery = get_object_or_404(selectors.webhook_deliveries(subscription=pk), pk=delivery_pk)
    services.webhook_redeliver(actor=request.user, delivery=delivery)
    messages.success(request, _("The delivery is sent again."))
    return redirect("crm:webhook_detail", pk=pk)

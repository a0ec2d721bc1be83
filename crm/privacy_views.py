"""Personal data of one customer (managers only; a 404 for everyone else): JSON export and erasure."""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from accounts.security import security_log
from crm import forms, selectors
from crm.data import privacy
from crm.models import Customer


def _customer_for_manager(request: HttpRequest, pk: int) -> Customer:
    if not request.user.is_manager:
        raise Http404
    return get_object_or_404(selectors.customer_list(user=request.user), pk=pk)


@login_required
@require_GET
def customer_personal_data_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Everything held about the customer as a JSON download; recorded in the security log."""
    customer = _customer_for_manager(request, pk)
    data = privacy.customer_personal_data(customer=customer)
    security_log(kind="personal_data_export", request=request, customer=customer.pk)
    response = HttpResponse(
        json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2),
        content_type="application/json; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="customer-{customer.pk}-personal-data.json"'
    return response


@login_required
@require_http_methods(["GET", "POST"])
def customer_erase_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Erase the customer's personal data after the manager typed the name; recorded in the security log."""
    customer = _customer_for_manager(request, pk)
    form = forms.ErasePersonalDataForm(request.POST or None, customer=customer)
    if request.method == "POST" and form.is_valid():
        privacy.customer_erase_personal_data(customer=customer, actor=request.user)
        security_log(kind="personal_data_erase", request=request, customer=customer.pk)
        messages.success(request, _("The customer's personal data was erased."))
        return redirect("crm:customer_detail", pk=customer.pk)
    return render(request, "crm/customer_erase.html", {"customer": customer, "form": form})

"""The custom fields pages (managers and admins): the fields of each record type, a new field, one field's
definition, archiving and restoring. A change of type or options that existing values would not fit is
refused with the records holding them."""

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

from accounts.web import form_errors_from, partial_template, require_staff_role
from crm.custom_field_forms import CustomFieldForm
from crm.custom_fields import selectors, services
from crm.custom_fields.models import CustomField

FORM_TEMPLATE = "crm/custom_field_form.html"


def _to_list(request: HttpRequest) -> HttpResponse:
    url = reverse("crm:custom_field_list")
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@login_required
@require_GET
def custom_field_list_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    return render(request, "crm/custom_field_list.html", {"groups": selectors.field_groups()})


@login_required
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def custom_field_create_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    form = CustomFieldForm(request.POST or None, initial={"entity": request.GET.get("entity", "")[:10]})
    if form.is_bound and form.is_valid():
        try:
            field = services.field_create(actor=request.user, **form.definition_fields())
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, _("Field %(label)s created.") % {"label": field.label})
            return _to_list(request)
    return render(request, partial_template(request, FORM_TEMPLATE, "custom-field-form"), {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def custom_field_update_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user)
    field = get_object_or_404(CustomField, pk=pk)
    form = CustomFieldForm(request.POST or None, definition=field)
    misfits = None
    if form.is_bound and form.is_valid():
        try:
            services.field_update(actor=request.user, field=field, **form.changed_fields())
        except services.ValuesWouldNotFit as exc:
            form_errors_from(exc, form)
            misfits = {"shown": exc.misfits, "more": exc.total - len(exc.misfits)}
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, _("Changes saved."))
            return _to_list(request)
    context = {
        "form": form,
        "field": field,
        "misfits": misfits,
        "values_count": services.field_values_count(field),
    }
    return render(request, partial_template(request, FORM_TEMPLATE, "custom-field-form"), context)


@login_required
@require_POST
def custom_field_archive_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Hide the field from forms and pages; its values stay (rules using it are switched off)."""
    require_staff_role(request.user)
    field = get_object_or_404(CustomField, pk=pk)
    services.field_update(actor=request.user, field=field, is_active=False)
    messages.success(request, _("Field %(label)s archived; its values are kept.") % {"label": field.label})
    return _to_list(request)


@login_required
@require_POST
def custom_field_restore_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user)
    field = get_object_or_404(CustomField, pk=pk)
    services.field_update(actor=request.user, field=field, is_active=True)
    messages.success(request, _("Field %(label)s restored.") % {"label": field.label})
    return _to_list(request)

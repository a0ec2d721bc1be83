"""The automation rules pages (managers and admins): the rules with their run counts, a rule's form, its
definition, dry run and run log, and switching a rule on or off."""

from typing import Any

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

from accounts.redirects import safe_local_path
from accounts.text import storable_text
from accounts.web import CappedPaginator, form_errors_from, partial_template, require_staff_role
from crm.automation import selectors, services
from crm.automation.models import AutomationRule
from crm.automation_forms import AutomationRuleForm, rule_initial

RUNS_PER_PAGE = 50
# What an action's texts may name (crm.automation.actions.render).
TEXT_VARIABLES = ("customer", "deal", "amount", "stage", "owner", "ticket", "custom.<key>")


def _rule_form(request: HttpRequest, rule: AutomationRule | None) -> AutomationRuleForm:
    """The posted form; or, to lay the form out again for changed choices (htmx, or the "Update the
    form" button), the current values unchecked; or the rule's definition."""
    url = reverse("crm:automation_update", args=[rule.pk]) if rule else reverse("crm:automation_create")
    common: dict[str, Any] = {"lookups": selectors.Lookups(), "creating": rule is None, "refresh_url": url}
    if request.method == "POST" and "refresh" not in request.POST:
        return AutomationRuleForm(request.POST, **common)
    if request.method == "POST" or "trigger" in request.GET:
        values = (request.POST if request.method == "POST" else request.GET).dict()
        return AutomationRuleForm(initial={k: storable_text(v) for k, v in values.items()}, **common)
    return AutomationRuleForm(initial=rule_initial(rule) if rule else {}, **common)


def _saved(request: HttpRequest, rule: AutomationRule) -> HttpResponse:
    messages.success(request, _("Rule “%(name)s” saved.") % {"name": rule.name})
    url = reverse("crm:automation_detail", args=[rule.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _form_page(request: HttpRequest, form: AutomationRuleForm, rule: AutomationRule | None) -> HttpResponse:
    context = {"form": form, "rule": rule, "action": form.refresh_url, "variables": TEXT_VARIABLES}
    return render(request, partial_template(request, "crm/automation_form.html", "rule-form"), context)


@login_required
@require_GET
def automation_list_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    context = {"rules": selectors.rule_list(lookups=selectors.Lookups()), "days": services.COUNTED_DAYS}
    return render(request, "crm/automation_list.html", context)


@login_required
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def automation_create_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    form = _rule_form(request, None)
    if form.is_bound and form.is_valid():
        try:
            rule = services.rule_create(actor=request.user, **form.rule_data())
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            return _saved(request, rule)
    return _form_page(request, form, None)


@login_required
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def automation_update_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user)
    rule = get_object_or_404(AutomationRule, pk=pk)
    if rule.builtin:
        messages.info(request, _("A built-in rule can only be switched on or off."))
        return redirect("crm:automation_detail", pk=pk)
    form = _rule_form(request, rule)
    if form.is_bound and form.is_valid():
        try:
            rule = services.rule_update(actor=request.user, rule=rule, **form.rule_data())
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            return _saved(request, rule)
    return _form_page(request, form, rule)


def _detail_context(request: HttpRequest, rule: AutomationRule) -> dict[str, Any]:
    runs = CappedPaginator(selectors.rule_runs(rule=rule), RUNS_PER_PAGE)
    page = runs.get_page(request.GET.get("page"))
    page.object_list = selectors.runs_with_records(runs=page.object_list)
    return {
        "rule": rule,
        "definition": selectors.rule_definition(rule=rule, lookups=selectors.Lookups()),
        "page": page,
        "dry_run_days": services.DRY_RUN_DAYS,
    }


@login_required
@require_GET
@vary_on_headers("HX-Request")
def automation_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user)
    rule = get_object_or_404(AutomationRule, pk=pk)
    template = partial_template(request, "crm/automation_detail.html", "run-log")
    return render(request, template, _detail_context(request, rule))


@login_required
@require_GET
@vary_on_headers("HX-Request")
def automation_dry_run_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The dry run: a fragment for htmx, the rule's page with the result without JavaScript."""
    require_staff_role(request.user)
    rule = get_object_or_404(AutomationRule, pk=pk)
    dry_run = selectors.rule_dry_run(rule=rule)
    if request.htmx and not request.htmx.history_restore_request:
        context = {"rule": rule, "dry_run": dry_run, "dry_run_days": services.DRY_RUN_DAYS}
        return render(request, "crm/automation_detail.html#dry-run", context)
    context = {**_detail_context(request, rule), "dry_run": dry_run}
    return render(request, "crm/automation_detail.html", context)


@login_required
@require_POST
def automation_switch_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Switch a rule on (``on=1``) or off; htmx gets the switch back, a form post its page."""
    require_staff_role(request.user)
    rule = get_object_or_404(AutomationRule, pk=pk)
    error = ""
    try:
        rule = services.rule_set_active(
            actor=request.user, rule=rule, is_active=request.POST.get("on") == "1"
        )
    except ValidationError as exc:
        error = " ".join(exc.messages)
    if request.htmx:
        return render(request, "crm/_automation_switch.html", {"rule": rule, "error": error})
    if error:
        messages.error(request, error)
    else:
        messages.success(request, _("Rule switched on.") if rule.is_active else _("Rule switched off."))
    return redirect(safe_local_path(request, request.POST.get("next")) or rule_url(rule))


def rule_url(rule: AutomationRule) -> str:
    return reverse("crm:automation_detail", args=[rule.pk])

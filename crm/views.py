"""The sales and service workspace. Each view parses, calls one selector or service, and renders.

Every object is fetched through a scoped selector (``get_object_or_404(<model>_list(user=...), pk=...)``),
so a record the user may not see is a 404 on pages, fragments and actions alike.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.forms import BaseForm
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from accounts.models import UsageEvent, User
from accounts.pickers import PICKER_FIELD, PICKER_OPTIONS
from accounts.redirects import safe_local_path
from accounts.text import is_record_id, storable_text
from accounts.web import PAGE_SIZE, CappedPaginator, form_errors_from, partial_template, require_staff_role
from crm import forms, selectors, services
from crm.campaigns import selectors as campaign_selectors
from crm.campaigns.forms import TouchForm
from crm.custom_field_forms import CustomValuesForm
from crm.custom_fields import lists as custom_lists
from crm.custom_fields.selectors import custom_values_shown
from crm.models import Activity, Customer, Deal, PipelineStage, Ticket


def _form_error_text(form: BaseForm) -> str:
    """All of a form's errors as one message, for views that answer with a redirect."""
    return " ".join(e for errors in form.errors.values() for e in errors)


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_GET
def home_view(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("accounts:login")
    return redirect("crm:workspace")


@require_GET
def favicon_view(request: HttpRequest) -> HttpResponse:
    return redirect(static("img/favicon.svg"), permanent=True)


@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: the process answers and PostgreSQL is reachable."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


# Workspace
# ---------------------------------------------------------------------------------------------------------


@login_required
@require_GET
def workspace_view(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    summary = selectors.workspace_summary(user=request.user, now=now)
    context = {
        **summary,
        "activity_form": forms.ActivityForm(),
        "quick_log": summary["customer_count"] > 0,
        "now": now,
    }
    return render(request, "crm/workspace.html", context)


# Customers
# ---------------------------------------------------------------------------------------------------------


@login_required
@require_GET
@vary_on_headers("HX-Request")
def customer_list_view(request: HttpRequest) -> HttpResponse:
    user = request.user
    form = forms.CustomerFilterForm(request.GET, user=user)
    customers = selectors.customer_list(user=user)
    if form.is_valid():
        customers = selectors.customer_filter(qs=customers, data=form.cleaned_data)
    else:
        customers = customers.order_by("name", "id")
    page = CappedPaginator(customers, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "sort": request.GET.get("sort", "name"),
        **custom_lists.list_context(request, entity="customer", fields=form.custom_fields, page=page),
    }
    return render(request, partial_template(request, "crm/customer_list.html", "customer-table"), context)


@login_required
@require_GET
def customer_options_view(request: HttpRequest) -> HttpResponse:
    """The customers matching what is typed in a customer picker (``crm/_combobox.html``): name, e-mail or
    phone, among those the user may see, as listbox options (without JavaScript the picker links to the
    customer list instead)."""
    field = request.GET.get("field", "customer")
    if not PICKER_FIELD.match(field):
        field = "customer"
    q = request.GET.get(f"{field}_search", request.GET.get("q", ""))[:200]
    customers = selectors.customer_search(qs=selectors.customer_list(user=request.user), q=storable_text(q))
    found = list(customers.order_by("name", "id").only("id", "name", "city", "owner")[: PICKER_OPTIONS + 1])
    context = {
        "customers": found[:PICKER_OPTIONS],
        "more": len(found) > PICKER_OPTIONS,
        "field": field,
        "q": q,
    }
    return render(request, "crm/_customer_options.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def customer_create_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user, User.Role.REP)
    form = _customer_form(request)
    if request.method == "POST" and form.is_valid():
        try:
            customer = services.customer_create(actor=request.user, **form.record_fields())
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, _("Customer %(name)s created.") % {"name": customer.name})
            return _redirect(request, customer.get_absolute_url())
    return render(
        request, partial_template(request, "crm/customer_form.html", "customer-form"), {"form": form}
    )


def _customer_form(request: HttpRequest, customer: Customer | None = None) -> forms.CustomerForm:
    """The customer form (bound to a POST), showing ``customer``'s values when it edits one."""
    initial = {f: getattr(customer, f) for f in forms.CustomerForm.base_fields} if customer else None
    duplicate_check_url = reverse("crm:customer_duplicates")
    return forms.CustomerForm(
        request.POST or None,
        initial=initial,
        user=request.user,
        duplicate_check_url=duplicate_check_url,
        record=customer,
    )


@login_required
@require_GET
def customer_duplicates_view(request: HttpRequest) -> HttpResponse:
    """While a customer is typed in: existing ones that look alike (only those the user may see are named)."""
    require_staff_role(request.user, User.Role.REP)
    form = forms.DuplicateCheckForm(request.GET)
    # Half-typed or hostile input (a NUL, 300 characters) finds nothing rather than failing.
    candidates = (
        selectors.customer_duplicate_candidates(
            name=form.cleaned_data["name"],
            email=form.cleaned_data["email"],
            phone=form.cleaned_data["phone"],
            exclude_pk=form.cleaned_data["exclude"],
        )
        if form.is_valid()
        else []
    )
    visible_ids = set(
        selectors.customer_list(user=request.user)
        .filter(pk__in=[c.pk for c in candidates])
        .values_list("pk", flat=True)
    )
    context = {
        "visible": [c for c in candidates if c.pk in visible_ids],
        "hidden_count": sum(1 for c in candidates if c.pk not in visible_ids),
    }
    return render(request, "crm/customer_form.html#duplicate-warning", context)


@login_required
@require_http_methods(["GET", "POST"])
def customer_update_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user, User.Role.REP)
    customer = get_object_or_404(selectors.customer_list(user=request.user), pk=pk)
    form = _customer_form(request, customer)
    conflict = None
    if request.method == "POST" and form.is_valid():
        data, version = form.record_fields(), form.cleaned_data["version"]
        try:
            services.customer_update(customer=customer, actor=request.user, data=data, version=version)
        except services.ConcurrentEditError as exc:
            changes = selectors.record_changes_display(model=Customer, changes=exc.changes)
            conflict = {"changes": changes, "by": exc.changed_by}
            form.rebase(version=exc.current.version)
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, _("Changes saved."))
            return _redirect(request, customer.get_absolute_url())
    context = {"form": form, "customer": customer, "conflict": conflict}
    return render(request, partial_template(request, "crm/customer_form.html", "customer-form"), context)


@login_required
@require_POST
def customer_status_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user, User.Role.REP)
    customer = get_object_or_404(selectors.customer_list(user=request.user), pk=pk)
    form = forms.CustomerStatusForm(request.POST)
    if form.is_valid():
        try:
            services.customer_set_status(
                customer=customer,
                status=form.cleaned_data["status"],
                reason=form.cleaned_data["reason"],
                actor=request.user,
            )
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(
                request, _("Status changed to %(status)s.") % {"status": customer.get_status_display()}
            )
            return _redirect(request, customer.get_absolute_url())
    for error in form.errors.values():
        messages.error(request, " ".join(error))
    return _redirect(request, customer.get_absolute_url())


@login_required
@require_GET
def customer_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    customer = get_object_or_404(selectors.customer_list(user=request.user), pk=pk)
    can_edit = request.user.is_manager or customer.owner_id == request.user.pk
    timeline = selectors.customer_timeline(customer=customer, user=request.user)
    _show_custom_values(customer, [entry["object"] for entry in timeline if entry["kind"] == "activity"])
    context = {
        "customer": customer,
        "can_edit": can_edit,
        "timeline": timeline,
        "history": selectors.record_history(obj=customer),
        "activity_form": forms.ActivityForm(),
        "customer_target": {"customer": customer},
        "campaign_touches": campaign_selectors.customer_touches(customer_id=customer.pk),
        "touch_form": TouchForm() if can_edit and not request.user.is_agent else None,
    }
    return render(request, "crm/customer_detail.html", context)


def _show_custom_values(record: Customer | Deal | Ticket, activities: list[Activity]) -> None:
    """The custom values a record's page shows: the record's own (``custom_shown``), and its activities'."""
    custom_values_shown(entity=record._meta.model_name, records=[record])
    custom_values_shown(entity="activity", records=activities)


# Deals
# ---------------------------------------------------------------------------------------------------------


@login_required
@require_GET
@vary_on_headers("HX-Request")
def deal_list_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user, User.Role.REP)
    stages = selectors.stage_list()
    form = forms.DealFilterForm(request.GET, user=request.user, stages=stages)
    deals = selectors.deal_list(user=request.user)
    if form.is_valid():
        deals = selectors.deal_filter(qs=deals, data=form.cleaned_data)
    page = CappedPaginator(deals.order_by("-created_at", "-id"), PAGE_SIZE).get_page(request.GET.get("page"))
    columns = custom_lists.list_context(request, entity="deal", fields=form.custom_fields, page=page)
    context = {"form": form, "page": page, **columns}
    return render(request, partial_template(request, "crm/deal_list.html", "deal-table"), context)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def deal_board_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user, User.Role.REP)
    return _render_board(request)


def _render_board(request: HttpRequest) -> HttpResponse:
    stages = list(selectors.stage_list())
    columns = selectors.deal_board(user=request.user, stages=[s for s in stages if s.kind == "open"])
    context = {"columns": columns, "stages": stages, "today": timezone.localdate()}
    return render(request, partial_template(request, "crm/deal_board.html", "deal-board"), context)


@login_required
@require_http_methods(["GET", "POST"])
def deal_create_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user, User.Role.REP)
    customers = selectors.customer_list(user=request.user).exclude(status=Customer.Status.CHURNED)
    stages = _open_stages_qs()
    initial = {"customer": request.GET.get("customer"), "stage": stages.first()}
    form = forms.DealForm(request.POST or None, initial=initial, customers=customers, stages=stages)
    if request.method == "POST" and form.is_valid():
        try:
            deal = services.deal_create(actor=request.user, **form.record_fields())
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, _("Deal %(title)s created.") % {"title": deal.title})
            return _redirect(request, deal.get_absolute_url())
    return render(request, partial_template(request, "crm/deal_form.html", "deal-form"), {"form": form})


def _open_stages_qs():
    return selectors.stage_list().filter(kind=PipelineStage.Kind.OPEN)


@login_required
@require_http_methods(["GET", "POST"])
def deal_update_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user, User.Role.REP)
    deal = get_object_or_404(selectors.deal_list(user=request.user), pk=pk)
    form = _deal_edit_form(request, deal)
    conflict = None
    if request.method == "POST" and form.is_valid():
        try:
            deal = services.deal_update(
                deal=deal, actor=request.user, data=form.record_fields(), version=form.cleaned_data["version"]
            )
        except services.ConcurrentEditError as exc:
            conflict = {
                "changes": selectors.record_changes_display(model=Deal, changes=exc.changes),
                "by": exc.changed_by,
            }
            form.rebase(version=exc.current.version)
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, _("Changes saved."))
            return _redirect(request, deal.get_absolute_url())
    context = {"form": form, "deal": deal, "conflict": conflict}
    return render(request, partial_template(request, "crm/deal_form.html", "deal-form"), context)


def _deal_edit_form(request: HttpRequest, deal: Deal) -> forms.DealForm:
    """The deal form (bound to a POST) showing ``deal``'s values; its stage moves on the board instead."""
    initial = {f: getattr(deal, f) for f in forms.DealForm.base_fields if f != "stage"}
    customers = selectors.customer_list(user=request.user)
    return forms.DealForm(
        request.POST or None,
        initial=initial,
        customers=customers,
        stages=_open_stages_qs(),
        editing=True,
        record=deal,
    )


@login_required
@require_GET
def deal_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    require_staff_role(request.user, User.Role.REP)
    deal = get_object_or_404(selectors.deal_list(user=request.user), pk=pk)
    activities = list(
        selectors.activity_list(user=request.user).filter(deal=deal).order_by("-created_at")[:50]
    )
    _show_custom_values(deal, activities)
    context = {
        "deal": deal,
        "stages": selectors.stage_list(pipeline_id=deal.stage.pipeline_id),
        "stage_changes": deal.stage_changes.select_related("from_stage", "to_stage", "by").order_by(
            "-at", "-id"
        )[:50],
        "activities": activities,
        "history": selectors.record_history(obj=deal),
        "activity_form": forms.ActivityForm(),
        "deal_target": {"customer": deal.customer, "deal": deal},
    }
    return render(request, "crm/deal_detail.html", context)


@login_required
@require_POST
def deal_move_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Move a deal to another stage (board drag-and-drop, the card's menu, or won/lost on the detail page)."""
    require_staff_role(request.user, User.Role.REP)
    deal = get_object_or_404(selectors.deal_list(user=request.user), pk=pk)
    form = forms.DealMoveForm(request.POST, stages=selectors.stage_list(pipeline_id=deal.stage.pipeline_id))
    error = None
    if form.is_valid():
        try:
            deal = services.deal_move_stage(deal=deal, actor=request.user, **form.cleaned_data)
        except services.ConcurrentEditError as exc:
            deal = exc.current
            error = _("Someone else changed this deal a moment ago; it is shown as it is now. Try again.")
        except ValidationError as exc:
            error = " ".join(exc.messages)
    else:
        error = _form_error_text(form)
    return _deal_move_answer(request, deal, error=error)


def _deal_move_answer(request: HttpRequest, deal: Deal, *, error: str | None) -> HttpResponse:
    """The outcome as a message, then the board again (a move made on it) or the deal's page; a move that
    happened also tells the page's other regions (``dealMoved``)."""
    if error:
        messages.error(request, error)
    else:
        messages.success(
            request, _("%(title)s moved to %(stage)s.") % {"title": deal.title, "stage": deal.stage}
        )
    from_board = request.htmx and request.POST.get("from") == "board"
    response = _render_board(request) if from_board else _redirect(request, deal.get_absolute_url())
    if error:
        return response
    return trigger_client_event(response, "dealMoved", {"id": deal.pk, "stage": deal.stage_id})


# Tickets
# ---------------------------------------------------------------------------------------------------------

QUEUES = {
    "mine": gettext_lazy("Mine"),
    "unassigned": gettext_lazy("Unassigned"),
    "open": gettext_lazy("All open"),
    "all": gettext_lazy("All"),
}


@login_required
@require_GET
@vary_on_headers("HX-Request")
def ticket_list_view(request: HttpRequest) -> HttpResponse:
    user = request.user
    default = selectors.ticket_default_queue(user=user)
    queue = request.GET.get("queue") if request.GET.get("queue") in QUEUES else default
    status = request.GET.get("status")
    tickets = selectors.ticket_queue(
        qs=selectors.ticket_list(user=user), user=user, queue=queue, status=status
    )
    form = forms.TicketFilterForm(request.GET)
    if form.is_valid():
        tickets = selectors.ticket_filter(qs=tickets, data=form.cleaned_data)
    page = CappedPaginator(tickets, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "queue": queue,
        "queues": list(QUEUES.items()),
        "status": status,
        "now": timezone.now(),
        **custom_lists.list_context(
            request, entity="ticket", fields=form.custom_fields, page=page, tabs=("queue", "status")
        ),
    }
    return render(request, partial_template(request, "crm/ticket_list.html", "ticket-table"), context)


@login_required
@require_http_methods(["GET", "POST"])
def ticket_create_view(request: HttpRequest) -> HttpResponse:
    customers = selectors.customer_list(user=request.user)
    form = forms.TicketForm(
        request.POST or None, initial={"customer": request.GET.get("customer")}, customers=customers
    )
    if request.method == "POST" and form.is_valid():
        try:
            ticket = services.ticket_create(actor=request.user, **form.record_fields())
        except ValidationError as exc:
            form_errors_from(exc, form)
        except PermissionDenied:
            raise Http404 from None
        else:
            messages.success(request, _("Ticket created."))
            return _redirect(request, ticket.get_absolute_url())
    return render(request, partial_template(request, "crm/ticket_form.html", "ticket-form"), {"form": form})


def _ticket_context(request: HttpRequest, ticket: Ticket, **extra) -> dict:
    custom_values_shown(entity="ticket", records=[ticket])
    if "fields_form" not in extra:
        extra["fields_form"] = CustomValuesForm(entity="ticket", record=ticket)
    return {
        "ticket": ticket,
        "ticket_messages": ticket.messages.select_related("author").order_by("created_at", "id"),
        "status_changes": ticket.status_changes.select_related("by").order_by("-at", "-id")[:50],
        "history": selectors.record_history(obj=ticket),
        "reply_form": forms.TicketReplyForm(),
        "assign_form": forms.TicketAssignForm(initial={"assignee": ticket.assignee_id}),
        "next_statuses": [
            (s, Ticket.Status(s).label) for s in sorted(services.TICKET_TRANSITIONS.get(ticket.status, ()))
        ],
        "now": timezone.now(),
        **extra,
    }


@login_required
@require_GET
def ticket_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    ticket = get_object_or_404(selectors.ticket_list(user=request.user), pk=pk)
    return render(request, "crm/ticket_detail.html", _ticket_context(request, ticket))


@login_required
@require_POST
def ticket_reply_view(request: HttpRequest, pk: int) -> HttpResponse:
    ticket = get_object_or_404(selectors.ticket_list(user=request.user), pk=pk)
    form = forms.TicketReplyForm(request.POST)
    if form.is_valid():
        try:
            services.ticket_reply(ticket=ticket, actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, _("Reply sent.") if form.cleaned_data["public"] else _("Note added."))
            return _redirect(request, ticket.get_absolute_url())
    context = _ticket_context(request, ticket, reply_form=form)
    return render(request, partial_template(request, "crm/ticket_detail.html", "reply-form"), context)


@login_required
@require_POST
def ticket_fields_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Change the ticket's custom-field values (tickets have no edit form)."""
    ticket = get_object_or_404(selectors.ticket_list(user=request.user), pk=pk)
    form = CustomValuesForm(request.POST, entity="ticket", record=ticket)
    if form.is_valid():
        try:
            if changes := form.custom_changes():
                services.custom_values_set(
                    obj=ticket, actor=request.user, changes=changes, via=UsageEvent.Via.WEB
                )
        except ValidationError as exc:
            form_errors_from(exc, form)
        except PermissionDenied:
            raise Http404 from None
        else:
            messages.success(request, _("Changes saved."))
            return _redirect(request, ticket.get_absolute_url())
    context = _ticket_context(request, ticket, fields_form=form)
    return render(request, partial_template(request, "crm/ticket_detail.html", "ticket-fields"), context)


@login_required
@require_POST
def ticket_status_view(request: HttpRequest, pk: int) -> HttpResponse:
    ticket = get_object_or_404(selectors.ticket_list(user=request.user), pk=pk)
    form = forms.TicketStatusForm(request.POST)
    if form.is_valid():
        try:
            ticket = services.ticket_set_status(
                ticket=ticket, status=form.cleaned_data["status"], actor=request.user
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(
                request, _("Ticket is now %(status)s.") % {"status": ticket.get_status_display()}
            )
    else:
        messages.error(request, _("Choose a valid status."))
    return _redirect(request, ticket.get_absolute_url())


@login_required
@require_POST
def ticket_assign_view(request: HttpRequest, pk: int) -> HttpResponse:
    ticket = get_object_or_404(selectors.ticket_list(user=request.user), pk=pk)
    require_staff_role(request.user, User.Role.AGENT)
    form = forms.TicketAssignForm(request.POST)
    if form.is_valid():
        try:
            services.ticket_assign(ticket=ticket, assignee=form.cleaned_data["assignee"], actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, _("Assignment saved."))
    else:
        messages.error(request, _("Choose someone from the list."))
    return _redirect(request, ticket.get_absolute_url())


# Activities and tasks
# ---------------------------------------------------------------------------------------------------------


def _activity_target(
    request: HttpRequest, form: forms.ActivityForm, *, quick: bool
) -> tuple[Customer | None, Deal | None, Ticket | None]:
    """The customer (and deal or ticket) an activity is logged on, each fetched via its scoped selector.

    The workspace's quick-log form with no customer picked yet is the user's slip, not a missing page:
    no target, and an error on the form."""
    if quick and not request.POST.get("customer"):
        form.is_valid()
        form.add_error(None, _("Choose the customer: type part of the name and pick it from the list."))
        return None, None, None
    user = request.user
    deal = ticket = None
    if deal_id := request.POST.get("deal"):
        deal = get_object_or_404(selectors.deal_list(user=user), pk=_int_or_404(deal_id))
        customer = deal.customer
    elif ticket_id := request.POST.get("ticket"):
        ticket = get_object_or_404(selectors.ticket_list(user=user), pk=_int_or_404(ticket_id))
        customer = ticket.customer
    else:
        customer = get_object_or_404(
            selectors.customer_list(user=user), pk=_int_or_404(request.POST.get("customer"))
        )
    return customer, deal, ticket


def _int_or_404(value: str | None) -> int:
    if not value or not is_record_id(value):
        raise Http404
    return int(value)


@login_required
@require_POST
def activity_create_view(request: HttpRequest) -> HttpResponse:
    quick = request.POST.get("quick") == "1"
    form = forms.ActivityForm(request.POST)
    customer, deal, ticket = _activity_target(request, form, quick=quick)
    saved = False
    if customer is not None and form.is_valid():
        try:
            services.activity_log_with_follow_up(
                actor=request.user, customer=customer, deal=deal, ticket=ticket, **form.activity_fields()
            )
        except ValidationError as exc:
            form_errors_from(exc, form)
        except PermissionDenied:
            raise Http404 from None
        else:
            saved, form = True, forms.ActivityForm()
    if not request.htmx:
        return _activity_redirect(request, form, saved=saved, record=deal or ticket or customer)
    # The workspace's quick-log form: the user picks the customer each time.
    target = None if quick else {"customer": customer, "deal": deal, "ticket": ticket}
    context = {"activity_form": form, "target": target, "quick_log": quick, "saved": saved}
    response = render(request, "crm/_activity_form.html", context)
    return trigger_client_event(response, "activityLogged") if saved else response


def _activity_redirect(
    request: HttpRequest, form: forms.ActivityForm, *, saved: bool, record: Customer | Deal | Ticket | None
) -> HttpResponse:
    """Without htmx: the outcome as a message, back on the record (the workspace for the quick-log form)."""
    if saved:
        messages.success(request, _("Logged."))
    else:
        messages.error(request, _form_error_text(form))
    return redirect(record.get_absolute_url() if record is not None else reverse("crm:workspace"))


@login_required
@require_POST
def task_complete_view(request: HttpRequest, pk: int) -> HttpResponse:
    task = get_object_or_404(
        selectors.activity_list(user=request.user).filter(kind=Activity.Kind.TASK), pk=pk
    )
    try:
        services.activity_complete(activity=task, actor=request.user)
    except PermissionDenied:
        raise Http404 from None
    if request.htmx:
        return trigger_client_event(HttpResponse(""), "taskCompleted", {"id": task.pk})
    messages.success(request, _("Task completed."))
    return redirect(safe_local_path(request, request.POST.get("next")) or "crm:workspace")

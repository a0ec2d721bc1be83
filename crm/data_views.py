"""Data quality pages: imports (upload → map → preview → run → report), exports, duplicate review and
merge, and the explanation of past merges. Each view parses, calls one selector or service, and renders.

Imports: managers and reps (a rep's rows are always theirs). Duplicate review: managers only. Exports and
merge explanations: whoever may see the records, through the scoped selectors. Anything else is a 404.
"""

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRefresh

from accounts.models import User
from accounts.security import security_log
from accounts.text import is_record_id
from accounts.web import form_errors_from, partial_template, require_staff_role
from crm import data_forms, forms, selectors
from crm.data import dedupe, exports, imports, merge
from crm.models import CustomerMerge, DuplicateCandidate, ImportJob
from crm.tasks import scan_duplicates
from crm.views import _redirect

logger = logging.getLogger(__name__)
PAGE_SIZE = 25


def _require_importer(user: User) -> None:
    if not (user.is_manager or user.is_rep):
        raise Http404


def _kinds(user: User) -> list[tuple[str, str]]:
    """What ``user`` may import: campaigns are the managers'."""
    return [
        (k, label) for k, label in ImportJob.Kind.choices if user.is_manager or k != ImportJob.Kind.CAMPAIGNS
    ]


def _import_job(request: HttpRequest, pk: int) -> ImportJob:
    """One of the user's own imports (everyone else's is a 404), without the file's bytes."""
    _require_importer(request.user)
    return get_object_or_404(ImportJob.objects.without_content().filter(created_by=request.user), pk=pk)


# Imports
# ---------------------------------------------------------------------------------------------------------


@login_required
@require_GET
def import_list_view(request: HttpRequest) -> HttpResponse:
    _require_importer(request.user)
    jobs = ImportJob.objects.without_content().filter(created_by=request.user).order_by("-created_at", "-id")
    context = {"jobs": jobs[:30], "kinds": _kinds(request.user)}
    return render(request, "crm/import_list.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def import_upload_view(request: HttpRequest) -> HttpResponse:
    _require_importer(request.user)
    kinds = _kinds(request.user)
    kind = request.GET.get("kind") if request.GET.get("kind") in dict(kinds) else "customers"
    form = data_forms.ImportUploadForm(request.POST or None, request.FILES or None, initial={"kind": kind})
    form.fields["kind"].choices = kinds
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            job = imports.import_job_create(
                actor=request.user,
                kind=form.cleaned_data["kind"],
                file_name=upload.name,
                data=upload.read(),
                encoding=form.cleaned_data["encoding"] or "auto",
            )
        except ValidationError as exc:
            form.add_error("file", exc.messages)
        else:
            return _redirect(request, reverse("crm:import_map", args=[job.pk]))
    context = {"form": form, "kind": kind, "kinds": kinds}
    return render(request, partial_template(request, "crm/import_upload.html", "upload-form"), context)


@login_required
@require_GET
def import_template_view(request: HttpRequest) -> HttpResponse:
    """An example file for one kind, in CSV or XLSX, with the column names the mapping recognises."""
    _require_importer(request.user)
    kind = request.GET.get("kind")
    if kind not in dict(_kinds(request.user)):
        raise Http404
    file_format = "xlsx" if request.GET.get("format") == "xlsx" else "csv"
    rows = imports.template_rows(kind)
    name = f"{kind}-import-template.{file_format}"
    if file_format == "xlsx":
        return exports.xlsx_response(rows, name, title=str(ImportJob.Kind(kind).label))
    return exports.csv_response(rows, name)


@login_required
@require_http_methods(["GET", "POST"])
def import_map_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _import_job(request, pk)
    if job.status not in (ImportJob.Status.UPLOADED, ImportJob.Status.FAILED):
        return redirect(job.get_absolute_url())
    form = data_forms.ImportMappingForm(request.POST or None, job=job)
    if request.method == "POST" and form.is_valid():
        try:
            imports.import_job_set_mapping(
                job=job,
                actor=request.user,
                mapping=form.cleaned_data["mapping"],
                date_order=form.cleaned_data["date_order"],
            )
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            return _redirect(request, reverse("crm:import_preview", args=[job.pk]))
    context = {"job": job, "form": form}
    return render(request, partial_template(request, "crm/import_map.html", "map-form"), context)


@login_required
@require_http_methods(["GET", "POST"])
def import_preview_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _import_job(request, pk)
    if (elsewhere := _instead_of_preview(request, job)) is not None:
        return elsewhere
    form = data_forms.ImportStartForm(request.POST or None, job=job)
    if request.method == "POST" and form.is_valid():
        try:
            imports.import_job_start(
                job=job,
                actor=request.user,
                mode=form.cleaned_data["mode"],
                all_or_nothing=form.cleaned_data["scope"],
            )
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            return _redirect(request, job.get_absolute_url())
    return _render_preview(request, job, form)


def _instead_of_preview(request: HttpRequest, job: ImportJob) -> HttpResponse | None:
    """What answers instead of the preview: the progress of a check still running, the whole page once
    htmx polls a finished check, the mapping while the job is unchecked, the job's page once it started."""
    if job.preview.get("checking"):
        return _render_checking(request, job)
    if request.htmx and request.method == "GET" and request.htmx.target == "check-progress":
        return HttpResponseClientRefresh()
    if job.preview.get("error"):
        messages.error(request, job.preview["error"])
    if not job.is_checked:
        return redirect(reverse("crm:import_map", args=[job.pk]))
    if job.status not in (ImportJob.Status.UPLOADED, ImportJob.Status.FAILED):
        return redirect(job.get_absolute_url())
    return None


def _render_preview(request: HttpRequest, job: ImportJob, form: data_forms.ImportStartForm) -> HttpResponse:
    """The checked rows as they would be imported, with what each mode would do, and the start form."""
    fields = {f.name: f.label for f in imports.import_fields(job.kind)}
    context = {
        "job": job,
        "form": form,
        "outcomes": imports.preview_outcomes(job),
        "columns": [
            # .get: a custom field archived since the mapping is shown by its name
            (int(index), fields.get(name, name))
            for index, name in sorted(job.mapping.items(), key=lambda i: int(i[0]))
        ],
        "counts": job.preview["counts"],
        "rows": job.preview["rows"],
        "issues": job.preview["issues"],
        "more_issues": job.preview["counts"]["fail"] - len(job.preview["issues"]),
    }
    return render(request, partial_template(request, "crm/import_preview.html", "start-form"), context)


def _render_checking(request: HttpRequest, job: ImportJob) -> HttpResponse:
    """A long file is being checked by a task: a progress bar that polls, then the preview itself."""
    if request.method == "POST":
        raise Http404
    processed = imports.import_progress(job)
    context = {
        "job": job,
        "processed": processed,
        "percent": min(99, processed * 100 // max(job.row_count, 1)),
    }
    return render(request, partial_template(request, "crm/import_check.html", "check-progress"), context)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def import_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Progress while the import runs (htmx polls the fragment every second), the report when done."""
    job = _import_job(request, pk)
    processed = imports.import_progress(job)
    context = {
        "job": job,
        "processed": processed,
        "percent": 100 if job.is_finished else min(99, processed * 100 // max(job.row_count, 1)),
        "report": job.report[:200],
        "more_report": max(0, len(job.report) - 200),
        "can_retry": job.status == ImportJob.Status.FAILED and job.is_checked,
    }
    return render(request, partial_template(request, "crm/import_detail.html", "import-progress"), context)


@login_required
@require_GET
def import_report_view(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    job = _import_job(request, pk)
    if not job.is_finished:
        raise Http404
    return exports.csv_response(imports.report_rows(job), f"import-{job.pk}-report.csv")


# Exports
# ---------------------------------------------------------------------------------------------------------


def _export(request: HttpRequest, kind: str, queryset) -> HttpResponse:
    file_format = "xlsx" if request.GET.get("format") == "xlsx" else "csv"
    # Which filters were used, not their values: a search term can be a customer's name or e-mail.
    filters = sorted(key for key, value in request.GET.items() if value and key != "format")
    logger.info("export of %s (%s) by user %s, filtered by %s", kind, file_format, request.user.pk, filters)
    security_log(kind="export", request=request, what=kind, format=file_format, filtered_by=filters)
    return exports.export_response(kind, queryset, file_format)


@login_required
@require_GET
def customer_export_view(request: HttpRequest) -> HttpResponse:
    """The customer list as shown (same filters and sort), as CSV or XLSX."""
    form = forms.CustomerFilterForm(request.GET, user=request.user)
    customers = selectors.customer_list(user=request.user)
    customers = (
        selectors.customer_filter(qs=customers, data=form.cleaned_data) if form.is_valid() else customers
    )
    return _export(request, "customers", customers)


@login_required
@require_GET
def deal_export_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_agent:
        raise Http404
    form = forms.DealFilterForm(request.GET, user=request.user, stages=selectors.stage_list())
    deals = selectors.deal_list(user=request.user)
    deals = (
        selectors.deal_filter(qs=deals, data=form.cleaned_data)
        if form.is_valid()
        else deals.order_by("-created_at")
    )
    return _export(request, "deals", deals)


@login_required
@require_GET
def ticket_export_view(request: HttpRequest) -> HttpResponse:
    user = request.user
    queue = request.GET.get("queue")
    queue = queue if queue in selectors.TICKET_QUEUES else selectors.ticket_default_queue(user=user)
    tickets = selectors.ticket_queue(
        qs=selectors.ticket_list(user=user), user=user, queue=queue, status=request.GET.get("status")
    )
    form = forms.TicketFilterForm(request.GET)  # the list's search and custom-field filters
    if form.is_valid():
        tickets = selectors.ticket_filter(qs=tickets, data=form.cleaned_data)
    return _export(request, "tickets", tickets)


@login_required
@require_GET
def activity_export_view(request: HttpRequest) -> HttpResponse:
    """Activities the user may see: of one customer (``?customer=``) or all of them."""
    activities = selectors.activity_list(user=request.user).order_by("-created_at", "-id")
    if customer_id := request.GET.get("customer"):
        if not is_record_id(customer_id):
            raise Http404
        customer = get_object_or_404(selectors.customer_list(user=request.user), pk=int(customer_id))
        activities = activities.filter(customer=customer)
    return _export(request, "activities", activities)


# Duplicates and merges
# ---------------------------------------------------------------------------------------------------------

STATUS_TABS = {
    DuplicateCandidate.Status.OPEN: DuplicateCandidate.Status.OPEN.label,
    DuplicateCandidate.Status.NOT_DUPLICATE: DuplicateCandidate.Status.NOT_DUPLICATE.label,
    DuplicateCandidate.Status.MERGED: DuplicateCandidate.Status.MERGED.label,
}


@login_required
@require_GET
@vary_on_headers("HX-Request")
def duplicate_list_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    status = request.GET.get("status")
    status = status if status in STATUS_TABS else DuplicateCandidate.Status.OPEN
    pairs = dedupe.duplicate_candidate_list(user=request.user, status=status)
    page = Paginator(pairs, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "status": status,
        "tabs": list(STATUS_TABS.items()),
        "query": f"status={status}",
        "last_scan": dedupe.last_scan(),
    }
    return render(request, partial_template(request, "crm/duplicate_list.html", "duplicate-table"), context)


@login_required
@require_POST
def duplicate_scan_view(request: HttpRequest) -> HttpResponse:
    require_staff_role(request.user)
    scan_duplicates.delay_on_commit()
    messages.success(
        request, _("The scan has started. New pairs appear here in a minute or two; reload the page.")
    )
    return _redirect(request, reverse("crm:duplicate_list"))


def _candidate(request: HttpRequest, pk: int) -> DuplicateCandidate:
    require_staff_role(request.user)
    return get_object_or_404(dedupe.duplicate_candidate_list(user=request.user, status=None), pk=pk)


@login_required
@require_http_methods(["GET", "POST"])
def duplicate_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The pair side by side: a radio per differing field picks the value to keep, one picks the survivor."""
    candidate = _candidate(request, pk)
    a, b = candidate.customer_a, candidate.customer_b
    form = data_forms.MergeForm(request.POST or None, a=a, b=b)
    if request.method == "POST" and form.is_valid():
        survivor, loser = (a, b) if form.cleaned_data["survivor"] == a.pk else (b, a)
        try:
            merge.customer_merge(
                survivor=survivor,
                merged=loser,
                actor=request.user,
                choices=form.choices(),
                candidate=candidate,
            )
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            security_log(kind="merge", request=request, survivor=survivor.pk, merged=loser.pk)
            names = {"merged": loser.name, "survivor": survivor.name}
            messages.success(request, _("%(merged)s was merged into %(survivor)s.") % names)
            return _redirect(request, reverse("crm:customer_merges", args=[survivor.pk]))
    return _render_pair(request, candidate, form)


def _render_pair(
    request: HttpRequest, candidate: DuplicateCandidate, form: data_forms.MergeForm
) -> HttpResponse:
    """The two customers side by side, with what each has that a merge would move, and the merge form."""
    a, b = candidate.customer_a, candidate.customer_b
    counts = selectors.customer_record_counts(customers=[a, b])
    context = {
        "candidate": candidate,
        "a": a,
        "b": b,
        "sides": [(a, counts[a.pk]), (b, counts[b.pk])],
        "form": form,
        "decided": candidate.status != DuplicateCandidate.Status.OPEN,
    }
    return render(request, partial_template(request, "crm/duplicate_detail.html", "merge-form"), context)


@login_required
@require_POST
def duplicate_dismiss_view(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Not a duplicate": remembered, so the scan never proposes the pair again."""
    candidate = _candidate(request, pk)
    try:
        merge.duplicate_mark_not_duplicate(candidate=candidate, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except PermissionDenied:
        raise Http404 from None
    else:
        messages.success(
            request, _("Marked as two different customers; this pair will not be proposed again.")
        )
    return _redirect(request, reverse("crm:duplicate_list"))


@login_required
@require_GET
def customer_merges_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Which customers were merged into this one, by whom, when, and which values were kept."""
    customer = get_object_or_404(selectors.customer_list(user=request.user), pk=pk)
    records = (
        CustomerMerge.objects.filter(survivor=customer)
        .select_related("merged", "by", "candidate")
        .order_by("-at", "-id")
    )
    explained = [(record, merge.merge_explanation(record)) for record in records]
    return render(request, "crm/merge_history.html", {"customer": customer, "records": explained})

"""The import job's steps as services: create, map and preview, start, run (the Celery task), report."""

import logging
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.models import User
from crm.data.imports import campaigns
from crm.data.imports.cells import normalize_header
from crm.data.imports.fields import guess_mapping, import_fields, modes_for
from crm.data.imports.planning import CREATE, FAIL, SKIP, UPDATE, Planner
from crm.data.imports.reading import inspect_file, job_rows
from crm.data.imports.writing import _write
from crm.models import ImportJob, ImportMapping

logger = logging.getLogger(__name__)

PREVIEW_ROWS = 20
PREVIEW_ISSUES = 200
# The report keeps the reasons of this many skipped or failed rows (the counts are always complete).
REPORT_LIMIT = 20_000


def _ensure_may_import(actor: User, kind: str) -> None:
    if not (actor.is_manager or actor.is_rep) or kind not in ImportJob.Kind.values:
        raise PermissionDenied(_("You cannot import these records."))
    if kind == ImportJob.Kind.CAMPAIGNS and not actor.is_manager:
        raise PermissionDenied(_("Only managers import campaigns."))


def import_job_create(
    *, actor: User, kind: str, file_name: str, data: bytes, encoding: str = "auto"
) -> ImportJob:
    """Check and keep an uploaded file. Invariant: a saved job has a readable file with ≥ 1 data row."""
    _ensure_may_import(actor, kind)
    info = inspect_file(name=file_name, data=data, encoding=encoding)
    remembered = ImportMapping.objects.filter(user=actor, kind=kind).values_list("mapping", flat=True).first()
    job = ImportJob(
        kind=kind,
        created_by=actor,
        created_at=timezone.now(),
        file_name=file_name[:255],
        file_format=info.file_format,
        file_size=len(data),
        encoding=info.encoding,
        delimiter=info.delimiter,
        content=data,
        headers=info.headers,
        row_count=info.row_count,
        mapping=guess_mapping(kind, info.headers, remembered),
        preview={"sample": info.sample},
        date_order=ImportJob.DateOrder.MDY if settings.CRM_PHONE_REGION == "US" else ImportJob.DateOrder.DMY,
        mode=modes_for(kind)[-1],
    )
    job.full_clean(exclude=["content"])
    job.save()
    return job


def _ensure_open(job: ImportJob, actor: User) -> None:
    if job.created_by_id != actor.pk:
        raise PermissionDenied(_("This is someone else's import."))
    if job.status not in (ImportJob.Status.UPLOADED, ImportJob.Status.FAILED) or not job.content:
        raise ValidationError(_("This import has already run; upload the file again to import it once more."))


@transaction.atomic
def import_job_set_mapping(
    *, job: ImportJob, actor: User, mapping: dict[str, str], date_order: str
) -> ImportJob:
    """Keep the column mapping (and remember it for the user's next import of this kind), then check
    every row into ``job.preview``: right away for files up to ``CRM_IMPORT_SYNC_CHECK_ROWS`` rows, in the
    ``check_import`` task for longer ones (the page polls). Nothing is imported. Invariant: every required
    field is mapped exactly once."""
    _ensure_open(job, actor)
    fields = {f.name: f for f in import_fields(job.kind)}
    mapping = {str(k): v for k, v in mapping.items() if v}
    unknown = set(mapping.values()) - set(fields)
    if unknown:
        raise ValidationError(_("Unknown fields: %(names)s") % {"names": ", ".join(sorted(unknown))})
    if len(set(mapping.values())) != len(mapping):
        raise ValidationError(_("Each field can take only one column."))
    missing = [str(f.label) for f in fields.values() if f.required and f.name not in mapping.values()]
    if missing:
        raise ValidationError(_("Choose the column for: %(fields)s.") % {"fields": ", ".join(missing)})
    job.mapping, job.date_order = mapping, date_order
    remembered = {normalize_header(h): mapping.get(str(i), "") for i, h in enumerate(job.headers)}
    ImportMapping.objects.update_or_create(
        user=actor, kind=job.kind, defaults={"mapping": remembered, "updated_at": timezone.now()}
    )
    sample = job.preview.get("sample", [])
    if job.row_count <= settings.CRM_IMPORT_SYNC_CHECK_ROWS:
        job.preview = _preview(job, actor)
    else:
        from crm.tasks import check_import

        job.preview = {"sample": sample, "checking": True}
        cache.delete(progress_key(job.pk))
        check_import.delay_on_commit(job.pk)
    job.save(update_fields=["mapping", "date_order", "preview"])
    return job


def import_job_check(*, job_id: int) -> ImportJob | None:
    """Check every row of a mapped job into its preview (the task behind long files). Idempotent: a job
    that is not waiting for its check, or whose row another worker holds, is left alone."""
    with transaction.atomic():
        job = (
            ImportJob.objects.select_for_update(skip_locked=True)
            .filter(pk=job_id, status=ImportJob.Status.UPLOADED, preview__checking=True)
            .first()
        )
        if job is None:
            return None
        try:
            job.preview = _preview(job, job.created_by)
        except ValidationError as exc:
            job.preview = {**job.preview, "checking": False, "error": " ".join(exc.messages)}
        job.save(update_fields=["preview"])
        return job


def _preview(job: ImportJob, actor: User) -> dict[str, Any]:
    """All rows checked as in "create new and update existing" mode; counts let each mode be described."""
    planner = Planner(job, actor, ImportJob.Mode.BOTH)
    counts = {"rows": 0, CREATE: 0, UPDATE: 0, SKIP: 0, FAIL: 0}
    rows: list[dict[str, Any]] = []
    issues: list[dict[str, Any]] = []
    for chunk in planner.chunks(job_rows(job)):
        _publish_progress(job.pk, counts["rows"] + len(chunk))
        for plan in chunk:
            counts["rows"] += 1
            counts[plan.action] += 1
            if len(rows) < PREVIEW_ROWS:
                rows.append(
                    {"row": plan.row, "cells": plan.cells, "action": plan.action, "messages": plan.messages}
                )
            if plan.action == FAIL and len(issues) < PREVIEW_ISSUES:
                issues.append({"row": plan.row, "messages": plan.messages})
    return {"counts": counts, "rows": rows, "issues": issues, "sample": job.preview.get("sample", [])}


def preview_outcomes(job: ImportJob) -> dict[str, dict[str, int]]:
    """What each mode would do with the previewed rows: {mode: {"create", "update", "skip", "fail"}}."""
    counts = job.preview.get("counts", {})
    new, changed, same, bad = (counts.get(k, 0) for k in (CREATE, UPDATE, SKIP, FAIL))
    outcomes: dict[str, dict[str, int]] = {
        ImportJob.Mode.CREATE: {"create": new, "update": 0, "skip": changed + same, "fail": bad},
        ImportJob.Mode.UPDATE: {"create": 0, "update": changed, "skip": new + same, "fail": bad},
        ImportJob.Mode.BOTH: {"create": new, "update": changed, "skip": same, "fail": bad},
    }
    return {mode: outcomes[mode] for mode in modes_for(job.kind)}


@transaction.atomic
def import_job_start(*, job: ImportJob, actor: User, mode: str, all_or_nothing: bool) -> ImportJob:
    """Queue the import (runs in ``run_import`` after commit). Invariant: only a mapped job that has not
    finished (or failed without writing) is queued, and only once."""
    job = ImportJob.objects.without_content().select_for_update().get(pk=job.pk)
    if job.created_by_id != actor.pk:
        raise PermissionDenied(_("This is someone else's import."))
    if job.status not in (ImportJob.Status.UPLOADED, ImportJob.Status.FAILED) or not job.is_checked:
        raise ValidationError(_("This import cannot be started (again)."))
    if mode not in modes_for(job.kind):
        raise ValidationError({"mode": _("Choose how to treat existing records.")})
    from crm.tasks import run_import

    job.mode, job.all_or_nothing = mode, all_or_nothing
    job.status, job.queued_at = ImportJob.Status.QUEUED, timezone.now()
    job.processed_rows = job.created_count = job.updated_count = job.skipped_count = job.failed_count = 0
    job.report, job.error, job.finished_at = [], "", None
    job.save()
    cache.delete(progress_key(job.pk))
    run_import.delay_on_commit(job.pk)
    return job


def progress_key(job_id: int) -> str:
    return f"crm:import-progress:{job_id}"


def _publish_progress(job_id: int, rows: int) -> None:
    try:
        cache.set(progress_key(job_id), rows, timeout=6 * 3600)
    except Exception:  # a cache outage costs the progress bar, never the import
        logger.warning("import progress not published", exc_info=True)


def import_progress(job: ImportJob) -> int:
    """Rows processed so far: the running task publishes it in the cache (its transaction is still open)."""
    if job.is_finished:
        return job.row_count
    try:
        return int(cache.get(progress_key(job.pk)) or 0)
    except Exception:  # the cache is down: the page still works, without progress
        logger.warning("import progress unavailable", exc_info=True)
        return 0


# How a job tells that its run crashed (the catch-all of ``import_job_run``); the hostile sweep looks for it.
UNEXPECTED_ERROR = gettext_lazy(
    "The import stopped because of an unexpected error; nothing was imported. (%(error)s)"
)


class _RollBack(Exception):
    """All-or-nothing import met a bad row: undo every write of the run (of ``job``)."""

    def __init__(self, job: ImportJob) -> None:
        super().__init__(job.pk)
        self.job = job


def import_job_run(*, job_id: int) -> ImportJob | None:
    """Run a queued import. Idempotent: a finished job, or one another worker is running (its row is
    locked), is left alone. The whole run is one transaction: an all-or-nothing run with a bad row, an
    error, or a lost worker leaves no row written; "valid rows" runs skip bad rows, never half a row."""
    try:
        with transaction.atomic():
            job = (
                ImportJob.objects.select_for_update(skip_locked=True)
                .filter(pk=job_id, status=ImportJob.Status.QUEUED)
                .first()
            )
            if job is None:
                return None
            _run(job)
            if job.all_or_nothing and job.failed_count:
                raise _RollBack(job)
            job.status, job.finished_at, job.content = ImportJob.Status.DONE, timezone.now(), b""
            job.save()
            return job
    except _RollBack as rollback:
        job = rollback.job
        job.status, job.finished_at = ImportJob.Status.FAILED, timezone.now()
        job.created_count = job.updated_count = 0
        job.error = _(
            "Nothing was imported: %(n)s rows have problems. Fix them, or import only the valid rows."
        ) % {"n": job.failed_count}
        ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.QUEUED).update(
            **{name: getattr(job, name) for name in _RESULT_FIELDS}
        )
        return job
    except Exception as exc:
        logger.exception("import %s failed", job_id)
        ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
            status=ImportJob.Status.FAILED,
            finished_at=timezone.now(),
            error=UNEXPECTED_ERROR % {"error": type(exc).__name__},
            created_count=0,
            updated_count=0,
        )
        return ImportJob.objects.without_content().get(pk=job_id)


_RESULT_FIELDS = [
    "status",
    "finished_at",
    "processed_rows",
    "created_count",
    "updated_count",
    "skipped_count",
    "failed_count",
    "report",
    "error",
]


def _run(job: ImportJob) -> None:
    actor = job.created_by
    _ensure_may_import(actor, job.kind)
    at = timezone.now()
    planner = Planner(job, actor, job.mode)
    report: list[dict[str, Any]] = []
    writing = True
    for chunk in planner.chunks(job_rows(job)):
        if job.all_or_nothing and any(p.action == FAIL for p in chunk):
            writing = False  # keep checking the remaining rows for the report, but write nothing more
        if writing:
            _write(job.kind, chunk, actor, at)
            if job.all_or_nothing and any(p.action == FAIL for p in chunk):
                writing = False
        for plan in chunk:
            job.processed_rows += 1
            if plan.action in (FAIL, SKIP) and len(report) < REPORT_LIMIT:
                outcome = "failed" if plan.action == FAIL else "skipped"
                report.append({"row": plan.row, "outcome": outcome, "messages": plan.messages})
            if plan.action == FAIL:
                job.failed_count += 1
            elif plan.action == SKIP:
                job.skipped_count += 1
            elif plan.action == CREATE:
                job.created_count += 1
            else:
                job.updated_count += 1
        _publish_progress(job.pk, job.processed_rows)
    job.report = report


def report_rows(job: ImportJob) -> Iterator[list[str]]:
    """The report as CSV rows: a summary, then every skipped or failed row with its reasons."""
    yield [_("File"), job.file_name]
    yield [_("Status"), str(job.get_status_display())]
    for label, value in (
        (_("Created"), job.created_count),
        (_("Updated"), job.updated_count),
        (_("Skipped"), job.skipped_count),
        (_("Failed"), job.failed_count),
    ):
        yield [label, str(value)]
    if job.error:
        yield [_("Note"), job.error]
    if len(job.report) < job.skipped_count + job.failed_count:
        yield [
            _("Note"),
            _("Only the first %(n)s skipped or failed rows are listed.") % {"n": len(job.report)},
        ]
    yield []
    yield [_("Row"), _("Outcome"), _("Reasons")]
    outcome = {"failed": _("failed"), "skipped": _("skipped")}
    for entry in job.report:
        yield [
            str(entry["row"]),
            outcome.get(entry["outcome"], entry["outcome"]),
            " ".join(entry["messages"]),
        ]


def template_rows(kind: str) -> list[list[str]]:
    """A template for one kind: the header row and two example rows."""
    fields = [f for f in import_fields(kind) if f.name != "id"]
    by_kind: dict[str, list[dict[str, str]]] = {
        ImportJob.Kind.CUSTOMERS: [
            {},
            {
                "name": "上海星光贸易有限公司",
                "kind": "company",
                "email": "sales@xingguang.example.cn",
                "phone": "+86 21 5555 0101",
                "industry": "Trade",
                "city": "上海",
                "segment": "mid",
                "language": "zh-hans",
                "source": "event",
                "status": "active",
            },
        ],
        ImportJob.Kind.DEALS: [
            {},
            {
                "title": "Service contract 2026",
                "customer": "sales@xingguang.example.cn",
                "amount": "12500.00",
                "kind": "renewal",
                "stage": "Won",
                "source": "referral",
                "created_at": "2026-01-15",
                "closed_at": "2026-02-01",
            },
        ],
        ImportJob.Kind.TICKETS: [
            {},
            {
                "subject": "Delivery arrived damaged",
                "customer": "+86 21 5555 0101",
                "priority": "high",
                "category": "complaint",
                "channel": "phone",
                "status": "solved",
                "created_at": "2026-02-03",
                "solved_at": "2026-02-04",
            },
        ],
        ImportJob.Kind.CAMPAIGNS: [{}, campaigns.EXAMPLE],
    }
    header = [str(f.label) for f in fields]
    rows = [header]
    for example in by_kind[kind]:
        rows.append([example.get(f.name, f.example) if example else f.example for f in fields])
    return rows

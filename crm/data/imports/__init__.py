"""CSV and XLSX imports of customers, deals and tickets: read the file, map its columns, preview every
row's problems, then run the import (a Celery task) and keep a report.

The flow, one service per step (views call these, the task calls ``import_job_run``):

1. ``import_job_create``: check the upload (size, format, encoding, header row, at least one data row)
   and keep the file in the job.
2. ``import_job_set_mapping``: remember the column → field mapping (per user and kind) and validate all
   rows into the job's preview (counts, the first rows, the first problems). Nothing is written.
3. ``import_job_start``: choose the mode (create only, update only, both) and all-or-nothing, queue.
4. ``import_job_run``: the same row checks as the preview, then the writes, in ONE transaction: an
   all-or-nothing import that meets a bad row writes nothing; "import the valid rows" skips bad rows,
   and a row is always written completely or not at all.

Rows are read as a stream and handled in chunks, so memory stays flat: a 100 000-row file keeps only
the current chunk and two small sets of hashes (for duplicates inside the file) in memory. Customers are
written in bulk (``services.customer_bulk_create`` / ``customer_bulk_update``); deals and tickets go row
by row through the ordinary services, which keep their stage and status histories. Every write records
a usage event with ``via=import``, so imports never count as staff adoption.

The package, one module per stage: ``reading`` (the file), ``cells`` (one value), ``fields`` (the columns
and their mapping), ``planning`` (what each row will do), ``writing`` (the writes) and ``services`` (the
job's steps above). Callers use the names below.
"""

from crm.data.imports.cells import RowError, parse_date
from crm.data.imports.fields import guess_mapping, has_date_fields, import_fields, modes_for
from crm.data.imports.reading import ENCODINGS, MAX_COLUMNS, inspect_file, too_large_message
from crm.data.imports.services import (
    PREVIEW_ROWS,
    import_job_check,
    import_job_create,
    import_job_run,
    import_job_set_mapping,
    import_job_start,
    import_progress,
    preview_outcomes,
    progress_key,
    report_rows,
    template_rows,
)

__all__ = [
    "ENCODINGS",
    "MAX_COLUMNS",
    "PREVIEW_ROWS",
    "RowError",
    "guess_mapping",
    "has_date_fields",
    "import_fields",
    "import_job_check",
    "import_job_create",
    "import_job_run",
    "import_job_set_mapping",
    "import_job_start",
    "import_progress",
    "inspect_file",
    "modes_for",
    "parse_date",
    "preview_outcomes",
    "progress_key",
    "report_rows",
    "template_rows",
    "too_large_message",
]

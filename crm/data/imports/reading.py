"""Reading an uploaded file: format, encoding and separator checks, then its rows as a stream
(CSV or XLSX, with the limits that refuse damaged files and zip bombs).
"""

import codecs
import csv
import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from openpyxl.utils.exceptions import InvalidFileException

from crm.models import ImportJob

MAX_CELL_CHARS = 100_000
MAX_COLUMNS = 200
ENCODINGS = {
    "auto": gettext_lazy("Automatic: UTF-8, with or without BOM"),
    "gb18030": gettext_lazy("Chinese Excel (GB18030 / GBK)"),
    "cp1252": gettext_lazy("Western European Excel (Windows-1252)"),
}
_XLSX_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


# Reading files
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    file_format: str
    encoding: str
    delimiter: str
    headers: list[str]
    row_count: int
    sample: list[list[str]]


def too_large_message(size: int) -> str:
    return _(
        "The file is %(size)s MB; files up to %(limit)s MB can be imported. Split it into smaller files."
    ) % {"size": round(size / 1024 / 1024, 1), "limit": settings.CRM_IMPORT_MAX_BYTES // 1024 // 1024}


def inspect_file(*, name: str, data: bytes, encoding: str = "auto") -> FileInfo:
    """Check an uploaded file and read its header row and row count; a ValidationError says what is wrong."""
    if len(data) > settings.CRM_IMPORT_MAX_BYTES:
        raise ValidationError(too_large_message(len(data)))
    if not data.strip():
        raise ValidationError(_("The file is empty."))
    file_format = _file_format(name, data)
    if file_format == "csv":
        encoding = _detect_encoding(data, encoding)
        delimiter = _detect_delimiter(data, encoding)
    else:
        encoding, delimiter = "", ""
    rows = _raw_rows(data, file_format, encoding, delimiter)
    try:
        first = next(rows, None)
        if first is None:
            raise ValidationError(_("The file is empty."))
        _row_number, header = first
        if len(header) > MAX_COLUMNS:
            raise ValidationError(
                _(
                    "The file has %(n)s columns; up to %(max)s can be imported. "
                    "Remove the columns you do not need."
                )
                % {"n": len(header), "max": MAX_COLUMNS}
            )
        headers = _headers(header)
        sample: list[list[str]] = []
        row_count = 0
        for _number, cells in rows:
            row_count += 1
            if len(sample) < 3:
                sample.append(cells)
    finally:
        rows.close()
    if row_count == 0:
        raise ValidationError(_("The file has a header row but no data rows."))
    return FileInfo(file_format, encoding, delimiter, headers, row_count, sample)


def _file_format(name: str, data: bytes) -> str:
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if data.startswith(_OLE_MAGIC) or extension == "xls":
        raise ValidationError(
            _("Old Excel files (.xls) cannot be read. In Excel, save the file as .xlsx or as “CSV UTF-8”.")
        )
    if data.startswith(_XLSX_MAGIC):
        if extension not in ("xlsx", "xlsm"):
            raise ValidationError(_("This file is not a CSV or Excel (.xlsx) file."))
        return "xlsx"
    if extension in ("xlsx", "xlsm"):
        raise ValidationError(_("The file is not a valid Excel workbook (.xlsx). It may be damaged."))
    if extension not in ("csv", "txt", "tsv"):
        raise ValidationError(
            _(
                "Files ending in “.%(extension)s” cannot be imported. "
                "Upload a CSV (.csv) or Excel (.xlsx) file."
            )
            % {"extension": extension or "?"}
        )
    return "csv"


def _detect_encoding(data: bytes, chosen: str) -> str:
    """The encoding of a CSV file: a BOM decides, otherwise UTF-8 or the chosen one; either way the whole
    file must decode (a UTF-16 file with a lone surrogate does not) and hold no NUL characters."""
    by_bom = next((encoding for bom, encoding in _BOMS if data.startswith(bom)), None)
    encoding = by_bom or ("utf-8" if chosen == "auto" else chosen)
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        for start in range(0, len(data), 1 << 20):
            text = decoder.decode(data[start : start + (1 << 20)], final=start + (1 << 20) >= len(data))
            if "\x00" in text:
                raise ValidationError(_("This does not look like a CSV text file (it contains binary data)."))
    except UnicodeDecodeError:
        if by_bom:
            raise ValidationError(
                _(
                    "The file starts like %(encoding)s text but is damaged further on. "
                    "Save it again as “CSV UTF-8”."
                )
                % {"encoding": "UTF-16" if by_bom == "utf-16" else "UTF-8"}
            ) from None
        if chosen == "auto":
            raise ValidationError(
                _(
                    "The file is not UTF-8 text. In Excel, save it as “CSV UTF-8”, or choose the file's "
                    "encoding (e.g. GB18030 for files from Chinese Excel) and upload it again."
                )
            ) from None
        raise ValidationError(
            _("The file cannot be read as %(encoding)s. Choose another encoding.") % {"encoding": chosen}
        ) from None
    return encoding


def _detect_delimiter(data: bytes, encoding: str) -> str:
    """The separator the header line uses most: comma, semicolon (German Excel), tab or pipe."""
    head = data[:65536].decode(encoding, errors="ignore")
    first_line = head.lstrip("\ufeff").splitlines()[0] if head.strip() else ""
    counts = {d: first_line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _raw_rows(
    data: bytes, file_format: str, encoding: str, delimiter: str
) -> Iterator[tuple[int, list[str]]]:
    """(row number as a spreadsheet shows it, cell texts) for every non-empty row, header included."""
    if file_format == "xlsx":
        return _xlsx_rows(data)
    return _csv_rows(data, encoding, delimiter)


def _csv_rows(data: bytes, encoding: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    csv.field_size_limit(MAX_CELL_CHARS)
    text = io.TextIOWrapper(io.BytesIO(data), encoding=encoding, newline="")
    reader = csv.reader(text, delimiter=delimiter)
    number = 0
    try:
        for number, cells in enumerate(reader, start=1):
            if any(cell.strip() for cell in cells):
                yield number, [_unescape(cell.strip()) for cell in cells]
    except csv.Error as exc:
        raise ValidationError(
            _("Row %(row)s cannot be read (%(problem)s). Check the quotes in that row.")
            % {"row": number + 1, "problem": exc}
        ) from None


# Excel's own last row: a row number beyond it is a damaged or hostile file.
MAX_SHEET_ROW = 1_048_576
# A workbook may unpack to this many times the upload limit (sheet XML packs about 5-10 times).
MAX_XLSX_UNPACKED_RATIO = 10
_XLSX_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    SyntaxError,  # the XML parsers' errors (ElementTree's ParseError, lxml's XMLSyntaxError)
    InvalidFileException,
    EOFError,
    OSError,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
)


def _xlsx_unreadable() -> ValidationError:
    return ValidationError(_("The Excel file cannot be read. It may be damaged or password-protected."))


def _xlsx_rows(data: bytes) -> Iterator[tuple[int, list[str]]]:
    """The first sheet's non-empty rows, never trusting the sizes the file declares.

    A sheet declares its size (``<dimension ref="A1:GR1048576">``); read-only openpyxl pads every row
    and column up to it, so a 1.5 kB file could cost minutes. The declared size is dropped, the rows read
    stop at Excel's last row, and the columns at the header's width (a cell without a header cannot be
    imported anyway): the work is bounded by the cells the file really holds.
    """
    from openpyxl import load_workbook

    _refuse_xlsx_bomb(data)
    try:
        # data_only=False: a formula is imported as its text ("=HYPERLINK(…)"), never evaluated.
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=False)
    except _XLSX_ERRORS as exc:
        raise _xlsx_unreadable() from exc
    try:
        if not workbook.worksheets:
            return
        sheet = workbook.worksheets[0]
        sheet.reset_dimensions()
        header = _xlsx_header(sheet)
        if header is None:
            return
        first, width = header
        rows = sheet.iter_rows(min_row=first, max_row=MAX_SHEET_ROW + 1, max_col=width, values_only=True)
        try:
            for number, values in enumerate(rows, start=first):
                if number > MAX_SHEET_ROW:
                    raise ValidationError(
                        _("The Excel sheet has rows beyond row %(max)s, the last row Excel allows. "
                          "The file is damaged.") % {"max": f"{MAX_SHEET_ROW:,}"}
                    )  # fmt: skip
                cells = [_unescape(_cell_text(value)) for value in values]
                if any(cells):
                    yield number, cells
        except _XLSX_ERRORS as exc:
            raise _xlsx_unreadable() from exc
    finally:
        workbook.close()


def _xlsx_header(sheet: Any) -> tuple[int, int] | None:
    """(row number, width) of the first non-empty row, the header; refused beyond MAX_COLUMNS columns."""
    rows = sheet.iter_rows(max_row=MAX_SHEET_ROW, max_col=MAX_COLUMNS + 1, values_only=True)
    try:
        for number, values in enumerate(rows, start=1):
            width = len(values)
            while width and values[width - 1] in (None, ""):
                width -= 1
            if width > MAX_COLUMNS:
                raise ValidationError(
                    _("The file has more than %(max)s columns. Remove the columns you do not need.")
                    % {"max": MAX_COLUMNS}
                )
            if width:
                return number, width
    except _XLSX_ERRORS as exc:
        raise _xlsx_unreadable() from exc
    return None


def _refuse_xlsx_bomb(data: bytes) -> None:
    """Refuse a workbook whose parts unpack to far more than any real upload (a zip bomb)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except _XLSX_ERRORS as exc:
        raise _xlsx_unreadable() from exc
    limit = MAX_XLSX_UNPACKED_RATIO * settings.CRM_IMPORT_MAX_BYTES
    if unpacked > limit:
        raise ValidationError(
            _("The Excel file unpacks to %(size)s MB, more than the %(limit)s MB an import can read.")
            % {"size": unpacked // 1024 // 1024, "limit": limit // 1024 // 1024}
        )


def _cell_text(value: Any) -> str:
    """A spreadsheet cell as the text a person sees in it (dates as ISO dates, 42.0 as 42)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(Decimal(repr(value)), "f")
    text = getattr(value, "text", value)  # array formulas
    return str(text).strip()[:MAX_CELL_CHARS]


def _unescape(text: str) -> str:
    """Undo the apostrophe our exports put before text that starts like a formula ("'+49 …"), so an
    exported file imports back unchanged; a formula itself stays text."""
    if text[:1] == "'" and text[1:2] in ("=", "+", "-", "@"):
        return text[1:]
    return text


def _headers(cells: list[str]) -> list[str]:
    return [cell.strip()[:200] or _("Column %(n)s") % {"n": i} for i, cell in enumerate(cells, start=1)]


def job_rows(job: ImportJob) -> Iterator[tuple[int, list[str]]]:
    """The data rows of the job's file (header skipped), streamed."""
    rows = _raw_rows(bytes(job.content), job.file_format, job.encoding, job.delimiter)
    next(rows, None)
    yield from rows

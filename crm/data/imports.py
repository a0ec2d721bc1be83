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
"""

import codecs
import csv
import hashlib
import io
import logging
import re
import unicodedata
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone, translation
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from openpyxl.utils.exceptions import InvalidFileException
from psycopg import sql as pg

from accounts import dates
from accounts.models import UsageEvent, User
from accounts.text import is_record_id
from crm import normalize, selectors, services
from crm.data import quality
from crm.models import Customer, Deal, ImportJob, ImportMapping, PipelineStage, Source, Ticket

logger = logging.getLogger(__name__)

CHUNK_SIZE = 2000
PREVIEW_ROWS = 20
PREVIEW_ISSUES = 200
# The report keeps the reasons of this many skipped or failed rows (the counts are always complete).
REPORT_LIMIT = 20_000
MAX_CELL_CHARS = 100_000
MAX_COLUMNS = 200
MAX_AMOUNT = Decimal("999999999999.99")
ENCODINGS = {
    "auto": gettext_lazy("Automatic: UTF-8, with or without BOM"),
    "gb18030": gettext_lazy("Chinese Excel (GB18030 / GBK)"),
    "cp1252": gettext_lazy("Western European Excel (Windows-1252)"),
}
_XLSX_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class RowError(Exception):
    """One cell's value cannot be used; the message says why."""


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


# Fields, choices and mapping
# ---------------------------------------------------------------------------------------------------------


def normalize_header(text: str) -> str:
    """ "E-Mail Address " → "emailaddress"; Chinese headers keep their characters."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[\W_]+", "", text)


@dataclass(frozen=True)
class ImportField:
    name: str
    label: Promise
    convert: Callable[[str, "Context"], Any]
    required: bool = False
    synonyms: tuple[str, ...] = ()
    example: str = ""
    help: Promise | str = ""


@dataclass
class Context:
    """What cleaning a row needs to know: who imports, the date order, and lookups built once."""

    actor: User
    kind: str
    date_order: str
    now: datetime = field(default_factory=timezone.now)
    _users: dict[str, User] | None = None
    _stages: dict[str, PipelineStage] | None = None

    @property
    def users(self) -> dict[str, User]:
        if self._users is None:
            self._users = {}
            for user in User.objects.filter(is_active=True, is_service_account=False).order_by("-id"):
                for key in (user.username, user.email, user.get_full_name()):
                    if key:
                        self._users[key.strip().casefold()] = user
        return self._users

    @property
    def stages(self) -> dict[str, PipelineStage]:
        if self._stages is None:
            self._stages = {}
            for stage in selectors.stage_list():
                for language in _languages():
                    with translation.override(language):
                        self._stages[normalize_header(str(stage))] = stage
                self._stages[normalize_header(stage.name)] = stage
        return self._stages


def _languages() -> list[str]:
    return [code for code, _name in settings.LANGUAGES]


def _text(max_length: int) -> Callable[[str, Context], str]:
    def convert(value: str, ctx: Context) -> str:
        if len(value) > max_length:
            raise RowError(_("is longer than %(n)s characters") % {"n": max_length})
        return value

    return convert


# Words people write for choice values, besides the values and their labels in every language.
CHOICE_SYNONYMS = {
    "company": ("business", "organisation", "organization", "firma", "公司", "企业", "单位"),
    "person": ("individual", "private", "privat", "个人"),
    "lead": ("prospect", "线索", "潜在"),
    "active": ("customer", "client", "客户", "活跃", "正式客户"),
    "churned": ("lost", "former", "inactive", "流失", "已流失"),
    "en": ("english", "英文", "英语"),
    "zh-hans": ("zh", "cn", "chinese", "中文", "简体中文", "汉语"),
}


def _choice(
    choices: Sequence[tuple[str, Any]], *, extra: dict[str, tuple[str, ...]] | None = None
) -> Callable:
    lookup: dict[str, str] = {}
    built = False

    def convert(value: str, ctx: Context) -> str:
        nonlocal built
        if not built:
            for key, label in choices:
                lookup[normalize_header(key)] = key
                for language in _languages():
                    with translation.override(language):
                        lookup.setdefault(normalize_header(str(label)), key)
                for word in (extra or CHOICE_SYNONYMS).get(key, ()):
                    lookup.setdefault(normalize_header(word), key)
            built = True
        try:
            return lookup[normalize_header(value)]
        except KeyError:
            allowed = ", ".join(str(label) for _key, label in choices)
            raise RowError(
                _("“%(value)s” is not one of: %(allowed)s") % {"value": value, "allowed": allowed}
            ) from None

    return convert


def _email(value: str, ctx: Context) -> str:
    if len(value) > 254:
        raise RowError(_("is longer than %(n)s characters") % {"n": 254})
    return value


def _amount(value: str, ctx: Context) -> Decimal:
    """1250 · 1,250.50 · 1.250,50 · € 1 250 · 1250 EUR."""
    text = re.sub(r"[^\d,.\-]", "", value)
    if "," in text and "." in text:
        decimal_mark = "," if text.rfind(",") > text.rfind(".") else "."
        text = text.replace("." if decimal_mark == "," else ",", "").replace(",", ".")
    elif "," in text:
        head, _sep, tail = text.rpartition(",")
        text = f"{head.replace(',', '')}.{tail}" if len(tail) in (1, 2) else text.replace(",", "")
    try:
        amount = Decimal(text).quantize(Decimal("0.01"))
    except InvalidOperation:
        raise RowError(_("“%(value)s” is not an amount (e.g. 1250 or 1250.50)") % {"value": value}) from None
    if amount < 0:
        raise RowError(_("must not be negative"))
    if amount > MAX_AMOUNT:
        raise RowError(_("is too large"))
    return amount


def _percent(value: str, ctx: Context) -> int:
    try:
        number = Decimal(value.replace("%", "").replace(",", ".").strip())
    except InvalidOperation:
        raise RowError(_("“%(value)s” is not a percentage from 0 to 100") % {"value": value}) from None
    # NaN and infinities parse as Decimals; comparing a NaN raises, so they are refused first.
    if not number.is_finite() or not (0 <= number <= 100) or number != number.to_integral_value():
        raise RowError(_("“%(value)s” is not a percentage from 0 to 100") % {"value": value})
    return int(number)


_ISO_DATE = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T][\d:.]+)?$")
_CJK_DATE = re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日?$")
_DOTTED_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{2}|\d{4})$")
_SLASHED_DATE = re.compile(r"^(\d{1,2})[/-](\d{1,2})[/-](\d{2}|\d{4})$")


def parse_date(value: str, date_order: str) -> date:
    """2026-03-01 and 2026年3月1日 (year first), 01.03.2026 (always day first), 1/3/2026 and 1-3-26 in the
    job's date order (day or month first); a two-digit year is 20xx."""
    text = value.strip()
    if match := _ISO_DATE.match(text) or _CJK_DATE.match(text):
        year, month, day = (int(g) for g in match.groups())
        order = _("year-month-day")
    elif match := _DOTTED_DATE.match(text):
        day, month, year = (int(g) for g in match.groups())
        order = _("day.month.year")
    elif match := _SLASHED_DATE.match(text):
        first, second, year = (int(g) for g in match.groups())
        if date_order == ImportJob.DateOrder.MDY:
            month, day, order = first, second, _("month/day/year")
        else:
            day, month, order = first, second, _("day/month/year")
    else:
        raise RowError(
            _("“%(value)s” is not a date; write it like 2026-03-01, 01.03.2026 or 1/3/2026")
            % {"value": value}
        )
    if year < 100:
        year += 2000
    try:
        result = date(year, month, day)
    except ValueError:
        raise RowError(
            _("“%(value)s” is not a valid date (read as %(order)s)") % {"value": value, "order": order}
        ) from None
    if not dates.in_range(result):
        raise RowError(
            _("“%(value)s” is outside %(earliest)s–%(latest)s")
            % {"value": value, "earliest": dates.EARLIEST.year, "latest": dates.LATEST.year}
        )
    return result


def _date(value: str, ctx: Context) -> date:
    return parse_date(value, ctx.date_order)


def _past_day(value: str, ctx: Context) -> datetime:
    """A date that has happened, as the start of that day in the reporting time zone."""
    day = parse_date(value, ctx.date_order)
    if day > timezone.localdate(ctx.now):
        raise RowError(_("“%(value)s” lies in the future") % {"value": value})
    return timezone.make_aware(datetime.combine(day, time()))


def _user(*roles: str) -> Callable[[str, Context], User]:
    def convert(value: str, ctx: Context) -> User:
        user = ctx.users.get(value.strip().casefold())
        if user is None or user.role not in roles:
            raise RowError(
                _("no active colleague with the user name or e-mail “%(value)s”") % {"value": value}
            )
        return user

    return convert


def _id(value: str, ctx: Context) -> int:
    if not is_record_id(value):
        raise RowError(_("“%(value)s” is not a record number") % {"value": value})
    return int(value)


def _customer_ref(value: str, ctx: Context) -> str:
    if len(value) > 254:
        raise RowError(_("is longer than %(n)s characters") % {"n": 254})
    return value


def _stage(value: str, ctx: Context) -> PipelineStage:
    stage = ctx.stages.get(normalize_header(value))
    if stage is None:
        names = ", ".join(str(s) for s in dict.fromkeys(ctx.stages.values()))
        raise RowError(
            _("“%(value)s” is not a stage of the pipeline: %(names)s") % {"value": value, "names": names}
        )
    return stage


MANAGERS_AND_REPS = (User.Role.REP, User.Role.MANAGER, User.Role.ADMIN)
SUPPORT = (User.Role.AGENT, User.Role.MANAGER, User.Role.ADMIN)
ID_SYNONYMS = ("id", "recordid", "编号", "序号", "记录编号")
OWNER_SYNONYMS = (
    "owner",
    "accountowner",
    "rep",
    "salesrep",
    "salesperson",
    "负责人",
    "所有者",
    "销售",
    "销售员",
)
SOURCE_SYNONYMS = ("source", "leadsource", "channel", "来源", "渠道", "客户来源")
CUSTOMER_REF_SYNONYMS = (
    "customer",
    "customername",
    "company",
    "companyname",
    "account",
    "customeremail",
    "客户",
    "客户名称",
    "公司",
    "公司名称",
)
CREATED_SYNONYMS = (
    "created",
    "createdat",
    "createdon",
    "createddate",
    "creationdate",
    "创建日期",
    "创建时间",
)

FIELDS: dict[str, tuple[ImportField, ...]] = {
    ImportJob.Kind.CUSTOMERS: (
        ImportField(
            "id",
            gettext_lazy("ID (from an export)"),
            _id,
            synonyms=(*ID_SYNONYMS, "customerid", "客户编号"),
            help=gettext_lazy("Matches existing customers exactly; leave empty for new ones."),
        ),
        ImportField(
            "name",
            gettext_lazy("Name"),
            _text(200),
            required=True,
            synonyms=(
                "name",
                "company",
                "companyname",
                "customer",
                "customername",
                "account",
                "accountname",
                "organisation",
                "organization",
                "firma",
                "名称",
                "客户名称",
                "公司",
                "公司名称",
                "客户",
                "姓名",
            ),
            example="Nordlicht Solar GmbH",
        ),
        ImportField(
            "kind",
            gettext_lazy("Kind"),
            _choice(Customer.Kind.choices),
            synonyms=("kind", "type", "customertype", "类型", "客户类型"),
            example="company",
        ),
        ImportField(
            "email",
            gettext_lazy("E-mail"),
            _email,
            synonyms=("email", "emailaddress", "mail", "邮箱", "电子邮件", "电子邮箱", "邮件", "邮箱地址"),
            example="info@nordlicht.example",
        ),
        ImportField(
            "phone",
            gettext_lazy("Phone"),
            _text(40),
            synonyms=(
                "phone",
                "phonenumber",
                "telephone",
                "tel",
                "mobile",
                "telefon",
                "电话",
                "手机",
                "联系电话",
                "电话号码",
                "手机号",
                "手机号码",
            ),
            example="+49 40 1234567",
        ),
        ImportField(
            "industry",
            gettext_lazy("Industry"),
            _text(100),
            synonyms=("industry", "sector", "branche", "行业", "所属行业"),
            example="Energy",
        ),
        ImportField(
            "city",
            gettext_lazy("City"),
            _text(100),
            synonyms=("city", "town", "ort", "stadt", "城市"),
            example="Hamburg",
        ),
        ImportField(
            "segment",
            gettext_lazy("Segment"),
            _choice(Customer.Segment.choices),
            synonyms=("segment", "size", "customersegment", "细分", "客户细分", "规模"),
            example="smb",
        ),
        ImportField(
            "language",
            gettext_lazy("Language"),
            _choice(settings.LANGUAGES),
            synonyms=("language", "lang", "语言"),
            example="en",
        ),
        ImportField(
            "source",
            gettext_lazy("Source"),
            _choice(Source.choices),
            synonyms=SOURCE_SYNONYMS,
            example="referral",
        ),
        ImportField("owner", gettext_lazy("Owner"), _user(*MANAGERS_AND_REPS), synonyms=OWNER_SYNONYMS),
        ImportField(
            "status",
            gettext_lazy("Status"),
            _choice(Customer.Status.choices),
            synonyms=("status", "customerstatus", "状态", "客户状态"),
            example="lead",
        ),
    ),
    ImportJob.Kind.DEALS: (
        ImportField(
            "id",
            gettext_lazy("ID (from an export)"),
            _id,
            synonyms=(*ID_SYNONYMS, "dealid"),
            help=gettext_lazy("Updates that deal; leave empty for new deals."),
        ),
        ImportField(
            "title",
            gettext_lazy("Title"),
            _text(200),
            required=True,
            synonyms=(
                "title",
                "deal",
                "dealname",
                "dealtitle",
                "opportunity",
                "name",
                "标题",
                "商机",
                "商机名称",
                "交易名称",
            ),
            example="Rooftop installation",
        ),
        ImportField(
            "customer",
            gettext_lazy("Customer"),
            _customer_ref,
            required=True,
            synonyms=CUSTOMER_REF_SYNONYMS,
            example="info@nordlicht.example",
            help=gettext_lazy("The customer's e-mail, phone or exact name."),
        ),
        ImportField(
            "amount",
            gettext_lazy("Amount"),
            _amount,
            synonyms=("amount", "value", "dealvalue", "dealamount", "金额", "价值", "金额元"),
            example="48000",
        ),
        ImportField(
            "kind",
            gettext_lazy("Kind"),
            _choice(
                Deal.Kind.choices, extra={"new": ("新", "新业务"), "renewal": ("续约",), "upsell": ("增购",)}
            ),
            synonyms=("kind", "type", "dealtype", "类型"),
            example="new",
        ),
        ImportField(
            "stage",
            gettext_lazy("Stage"),
            _stage,
            synonyms=("stage", "dealstage", "pipelinestage", "阶段", "销售阶段"),
            example="Qualified",
        ),
        ImportField(
            "probability",
            gettext_lazy("Probability %"),
            _percent,
            synonyms=("probability", "probabilitypercent", "winprobability", "概率", "赢单率", "成交概率"),
        ),
        ImportField(
            "source",
            gettext_lazy("Source"),
            _choice(Source.choices),
            synonyms=SOURCE_SYNONYMS,
            example="referral",
        ),
        ImportField(
            "expected_close_date",
            gettext_lazy("Expected close date"),
            _date,
            synonyms=(
                "expectedclosedate",
                "closedate",
                "expectedclose",
                "预计成交日期",
                "预计关闭日期",
                "预计成交时间",
            ),
            example="2026-09-30",
        ),
        ImportField("owner", gettext_lazy("Owner"), _user(*MANAGERS_AND_REPS), synonyms=OWNER_SYNONYMS),
        ImportField(
            "lost_reason",
            gettext_lazy("Lost reason"),
            _text(200),
            synonyms=("lostreason", "reasonlost", "丢单原因", "输单原因"),
        ),
        ImportField("created_at", gettext_lazy("Created on"), _past_day, synonyms=CREATED_SYNONYMS),
        ImportField(
            "closed_at",
            gettext_lazy("Closed on"),
            _past_day,
            synonyms=("closedat", "closedon", "actualclosedate", "wonon", "成交日期", "关闭日期", "赢单日期"),
            help=gettext_lazy("For won or lost deals."),
        ),
    ),
    ImportJob.Kind.TICKETS: (
        ImportField(
            "subject",
            gettext_lazy("Subject"),
            _text(200),
            required=True,
            synonyms=("subject", "title", "summary", "主题", "标题", "问题"),
            example="Invoice shows wrong VAT",
        ),
        ImportField(
            "customer",
            gettext_lazy("Customer"),
            _customer_ref,
            required=True,
            synonyms=CUSTOMER_REF_SYNONYMS,
            example="info@nordlicht.example",
            help=gettext_lazy("The customer's e-mail, phone or exact name."),
        ),
        ImportField(
            "description",
            gettext_lazy("Description"),
            _text(20000),
            synonyms=("description", "details", "body", "message", "描述", "内容", "详情", "问题描述"),
            example="The invoice of March shows 16% VAT instead of 19%.",
        ),
        ImportField(
            "priority",
            gettext_lazy("Priority"),
            _choice(
                Ticket.Priority.choices,
                extra={"urgent": ("紧急",), "high": ("高",), "normal": ("普通", "中"), "low": ("低",)},
            ),
            synonyms=("priority", "优先级"),
            example="normal",
        ),
        ImportField(
            "category",
            gettext_lazy("Category"),
            _choice(Ticket.Category.choices),
            synonyms=("category", "type", "tickettype", "类别", "分类", "类型"),
            example="problem",
        ),
        ImportField(
            "channel",
            gettext_lazy("Channel"),
            _choice(Ticket.Channel.choices),
            synonyms=("channel", "渠道"),
            example="email",
        ),
        ImportField(
            "status",
            gettext_lazy("Status"),
            _choice(
                Ticket.Status.choices,
                extra={"solved": ("resolved", "已解决"), "closed": ("已关闭",), "new": ("新建",)},
            ),
            synonyms=("status", "ticketstatus", "状态"),
            example="new",
        ),
        ImportField(
            "assignee",
            gettext_lazy("Assignee"),
            _user(*SUPPORT),
            synonyms=("assignee", "agent", "assignedto", "处理人", "受理人", "负责人"),
        ),
        ImportField("created_at", gettext_lazy("Created on"), _past_day, synonyms=CREATED_SYNONYMS),
        ImportField(
            "solved_at",
            gettext_lazy("Solved on"),
            _past_day,
            synonyms=("solvedat", "solvedon", "resolvedat", "resolvedon", "解决时间", "解决日期"),
        ),
    ),
}


def import_fields(kind: str) -> tuple[ImportField, ...]:
    return FIELDS[kind]


def has_date_fields(kind: str) -> bool:
    """Whether the date order (3/1/2026) matters for this kind of import."""
    return any(f.convert in (_date, _past_day) for f in import_fields(kind))


def modes_for(kind: str) -> list[str]:
    """Tickets can only be created; customers and deals can also be updated."""
    if kind == ImportJob.Kind.TICKETS:
        return [ImportJob.Mode.CREATE]
    return list(ImportJob.Mode.values)


def guess_mapping(
    kind: str, headers: Sequence[str], remembered: dict[str, str] | None = None
) -> dict[str, str]:
    """Column index (as text) → field name, from the user's last mapping, then English and Chinese
    synonyms and the field labels; each field is used at most once, unknown columns stay unmapped."""
    fields = import_fields(kind)
    by_word: dict[str, str] = {}
    for f in fields:
        for word in (f.name, *f.synonyms):
            by_word.setdefault(normalize_header(word), f.name)
        for language in _languages():
            with translation.override(language):
                by_word.setdefault(normalize_header(str(f.label)), f.name)
    valid = {f.name for f in fields}
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for index, header in enumerate(headers):
        key = normalize_header(header)
        if remembered and key in remembered:
            name = remembered[key]
            if name in valid and name not in used:
                mapping[str(index)] = name
                used.add(name)
            continue
        name = by_word.get(key)
        if name and name not in used:
            mapping[str(index)] = name
            used.add(name)
    return mapping


# Row plans: clean, match, decide
# ---------------------------------------------------------------------------------------------------------

CREATE, UPDATE, SKIP, FAIL = "create", "update", "skip", "fail"
# Fields an import may change on an existing record (deals: the stage moves through deal_move_stage).
UPDATABLE = {
    ImportJob.Kind.CUSTOMERS: {*services.CUSTOMER_FIELDS, "status"},
    ImportJob.Kind.DEALS: {*services.DEAL_FIELDS, "stage", "lost_reason"} - {"customer"},
    ImportJob.Kind.TICKETS: set(),
}


@dataclass
class RowPlan:
    row: int
    cells: list[str]
    values: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    action: str = CREATE
    target: Any = None
    changes: dict[str, Any] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        self.action = FAIL
        self.messages.append(message)


class SeenKeys:
    """The match keys met so far in one file, with the first row that had each: duplicates inside the
    file. Kept in a temporary table, so memory stays flat however long the file is; the table belongs
    to the surrounding transaction and is dropped when it ends (planning always runs in one)."""

    def __init__(self) -> None:
        if not connection.in_atomic_block:
            raise RuntimeError("SeenKeys needs a transaction (its table lives until the transaction ends)")
        self.table = pg.Identifier(f"crm_import_seen_{uuid.uuid4().hex[:16]}")
        with connection.cursor() as cursor:
            cursor.execute(
                pg.SQL(
                    "CREATE TEMPORARY TABLE {} (key uuid PRIMARY KEY, row integer NOT NULL) ON COMMIT DROP"
                ).format(self.table)
            )

    @staticmethod
    def digest(kind: str, key: Any) -> str:
        raw = hashlib.blake2b(f"{kind}\x00{key}".encode(), digest_size=16).digest()
        return str(uuid.UUID(bytes=raw))

    def first_rows(self, entries: list[tuple[str, int]]) -> dict[str, int]:
        """Register (key, row) pairs in row order; returns the first row of the file with each key."""
        if not entries:
            return {}
        keys, rows = [key for key, _row in entries], [row for _key, row in entries]
        with connection.cursor() as cursor:
            cursor.execute(
                pg.SQL(
                    "INSERT INTO {} (key, row) SELECT k, r FROM unnest(%s::uuid[], %s::int[]) "
                    "WITH ORDINALITY AS t(k, r, o) ORDER BY o ON CONFLICT (key) DO NOTHING"
                ).format(self.table),
                [keys, rows],
            )
            cursor.execute(
                pg.SQL("SELECT key::text, row FROM {} WHERE key = ANY(%s::uuid[])").format(self.table), [keys]
            )
            return dict(cursor.fetchall())


class Planner:
    """Turns the rows of one job into plans, chunk by chunk; the preview and the run share it."""

    def __init__(self, job: ImportJob, actor: User, mode: str) -> None:
        self.job, self.actor, self.mode = job, actor, mode
        self.kind = job.kind
        self.fields = {f.name: f for f in import_fields(job.kind)}
        self.columns = {int(index): name for index, name in job.mapping.items() if name in self.fields}
        self.ctx = Context(actor=actor, kind=job.kind, date_order=job.date_order)
        self.seen = SeenKeys()

    def chunks(self, rows: Iterable[tuple[int, list[str]]]) -> Iterator[list[RowPlan]]:
        chunk: list[RowPlan] = []
        for number, cells in rows:
            chunk.append(RowPlan(row=number, cells=cells))
            if len(chunk) >= CHUNK_SIZE:
                yield self.plan(chunk)
                chunk = []
        if chunk:
            yield self.plan(chunk)

    def plan(self, chunk: list[RowPlan]) -> list[RowPlan]:
        for plan in chunk:
            self._clean(plan)
        {
            ImportJob.Kind.CUSTOMERS: self._plan_customers,
            ImportJob.Kind.DEALS: self._plan_deals,
            ImportJob.Kind.TICKETS: self._plan_tickets,
        }[self.kind]([p for p in chunk if p.action != FAIL])
        return chunk

    def _clean(self, plan: RowPlan) -> None:
        for index, name in self.columns.items():
            spec = self.fields[name]
            text = plan.cells[index].strip() if index < len(plan.cells) else ""
            if not text:
                continue
            try:
                plan.values[name] = spec.convert(text, self.ctx)
            except RowError as exc:
                plan.fail(f"{spec.label}: {exc}")
        for spec in self.fields.values():
            if (
                spec.required
                and spec.name not in plan.values
                and not any(m.startswith(f"{spec.label}:") for m in plan.messages)
            ):
                plan.fail(_("%(field)s is required.") % {"field": spec.label})
        if self.actor.is_rep:
            plan.values.pop("owner", None)

    def _claim(self, claims: list[tuple[RowPlan, str, Any, str]]) -> None:
        """Register each row's key; a row whose key an earlier row of the file had fails with the
        message ("… as row %(row)s"). One batch per chunk, kept in the database, not in memory."""
        digests = [self.seen.digest(kind, key) for _plan, kind, key, _message in claims]
        first = self.seen.first_rows(
            [(d, plan.row) for d, (plan, *_rest) in zip(digests, claims, strict=True)]
        )
        for digest, (plan, _kind, _key, message) in zip(digests, claims, strict=True):
            if plan.action != FAIL and first[digest] != plan.row:
                plan.fail(message % {"row": first[digest]})

    def _quality(self, plan: RowPlan, model: type, values: dict[str, Any]) -> None:
        for rule in quality.row_failures(
            model, values, kinds=[quality.Kind.FORMAT, quality.Kind.CONSISTENCY]
        ):
            plan.fail(str(rule.message))

    # Customers ------------------------------------------------------------------------------------------

    def _plan_customers(self, plans: list[RowPlan]) -> None:
        for plan in plans:
            self._quality(plan, Customer, plan.values)
            plan.values["email_key"] = normalize.email_key(plan.values.get("email", ""))
            plan.values["phone_key"] = normalize.phone_key(plan.values.get("phone", ""))
        plans = [p for p in plans if p.action != FAIL]
        same_email, same_phone = _("Same e-mail as row %(row)s."), _("Same phone number as row %(row)s.")
        self._claim(
            [(p, "email", p.values["email_key"], same_email) for p in plans if p.values["email_key"]]
            + [(p, "phone", p.values["phone_key"], same_phone) for p in plans if p.values["phone_key"]]
        )
        plans = [p for p in plans if p.action != FAIL]
        existing = self._existing_customers(plans)
        matches = [(plan, *self._match_customer(plan, existing)) for plan in plans]
        same_customer = _("Matches the same customer as row %(row)s.")
        self._claim([(plan, "customer", match.pk, same_customer) for plan, match, _how in matches if match])
        for plan, match, how in matches:
            if plan.action != FAIL:
                self._decide(plan, match, how)

    def _existing_customers(self, plans: list[RowPlan]) -> dict[str, dict[Any, Customer]]:
        emails = {p.values["email_key"] for p in plans} - {""}
        phones = {p.values["phone_key"] for p in plans} - {""}
        ids = {p.values["id"] for p in plans if "id" in p.values}
        if not (emails or phones or ids):
            return {"id": {}, "email": {}, "phone": {}}
        found = (
            Customer.objects.filter(merged_into__isnull=True)
            .filter(Q(email_key__in=emails) | Q(phone_key__in=phones) | Q(pk__in=ids))
            .order_by("-pk")
        )
        index: dict[str, dict[Any, Customer]] = {"id": {}, "email": {}, "phone": {}}
        for customer in found:  # newest first, so the oldest customer with a key wins
            index["id"][customer.pk] = customer
            if customer.email_key:
                index["email"][customer.email_key] = customer
            if customer.phone_key:
                index["phone"][customer.phone_key] = customer
        return index

    def _match_customer(
        self, plan: RowPlan, existing: dict[str, dict[Any, Customer]]
    ) -> tuple[Customer | None, str]:
        values = plan.values
        if "id" in values:
            match = existing["id"].get(values["id"])
            if match is None or not self._may_edit(match):
                plan.fail(
                    _("There is no customer with ID %(id)s that you may change.") % {"id": values["id"]}
                )
                return None, ""
            return match, _("ID")
        for key, how in (("email", _("e-mail")), ("phone", _("phone"))):
            match = existing[key].get(values[f"{key}_key"]) if values[f"{key}_key"] else None
            if match is not None:
                if not self._may_edit(match):
                    # Counted, never named: a rep must not learn a colleague's customer from an e-mail.
                    plan.fail(
                        _("A colleague's customer already has this %(key)s; ask a manager to import it.")
                        % {"key": how}
                    )
                    return None, ""
                return match, how
        return None, ""

    def _may_edit(self, customer: Customer) -> bool:
        return self.actor.is_manager or customer.owner_id == self.actor.pk

    def _decide(self, plan: RowPlan, match: Any, how: str) -> None:
        if match is None:
            if self.mode == ImportJob.Mode.UPDATE:
                plan.action = SKIP
                plan.messages.append(_("No existing record matches; not created in update-only mode."))
            else:
                plan.action = CREATE
            return
        plan.target = match
        if self.mode == ImportJob.Mode.CREATE:
            plan.action = SKIP
            plan.messages.append(
                _("Already exists (same %(key)s: %(name)s); not changed in create-only mode.")
                % {"key": how, "name": str(match)}
            )
            return
        plan.changes = self._changes(plan, match)
        if plan.action == FAIL:
            return
        if not plan.changes:
            plan.action = SKIP
            plan.messages.append(
                _("No changes (matched %(name)s by %(key)s).") % {"name": str(match), "key": how}
            )
        else:
            plan.action = UPDATE

    def _changes(self, plan: RowPlan, match: Any) -> dict[str, Any]:
        """The mapped, non-empty values that differ from the record's; empty cells never erase data."""
        updatable = UPDATABLE[self.kind]
        changes = {}
        for name, value in plan.values.items():
            if name not in updatable:
                continue
            if name in ("owner", "stage"):
                differs = getattr(match, f"{name}_id") != value.pk
            elif name == "email":
                differs = normalize.email_key(match.email) != normalize.email_key(value)
            else:
                differs = getattr(match, name) != value
            if differs:
                changes[name] = value
        if "lost_reason" in changes and "stage" not in changes:
            del changes["lost_reason"]
        if self.kind == ImportJob.Kind.CUSTOMERS and changes.get("status") == Customer.Status.LEAD:
            plan.fail(_("A customer cannot become a lead again."))
        return changes

    # Deals and tickets ------------------------------------------------------------------------------------

    def _resolve_customers(self, plans: list[RowPlan]) -> None:
        """Find each row's customer among those the user may see: by e-mail, phone, then exact name."""
        refs = {p.values["customer"] for p in plans}
        emails = {normalize.email_key(r) for r in refs if "@" in r}
        phones = {k for r in refs if (k := normalize.phone_key(r))}
        names = {normalize.name_key(r) for r in refs}
        visible = selectors.customer_list(user=self.actor).select_related(None)
        found = visible.filter(Q(email_key__in=emails) | Q(phone_key__in=phones) | Q(name_key__in=names))
        by_email: dict[str, Customer] = {}
        by_phone: dict[str, Customer] = {}
        by_name: dict[str, list[Customer]] = {}
        for customer in found.order_by("-pk"):  # the oldest customer with a key wins
            if customer.email_key:
                by_email[customer.email_key] = customer
            if customer.phone_key:
                by_phone[customer.phone_key] = customer
            by_name.setdefault(customer.name_key, []).append(customer)
        for plan in plans:
            ref = plan.values["customer"]
            customer = by_email.get(normalize.email_key(ref)) if "@" in ref else None
            if customer is None and (key := normalize.phone_key(ref)):
                customer = by_phone.get(key)
            if customer is None:
                named = by_name.get(normalize.name_key(ref), [])
                if len(named) > 1:
                    plan.fail(
                        _("%(n)s customers are called “%(ref)s”; use the customer's e-mail instead.")
                        % {"n": len(named), "ref": ref}
                    )
                    continue
                customer = named[0] if named else None
            if customer is None:
                plan.fail(
                    _("No customer you may see matches “%(ref)s” (e-mail, phone or exact name).")
                    % {"ref": ref}
                )
                continue
            plan.values["customer"] = customer

    def _plan_deals(self, plans: list[RowPlan]) -> None:
        self._resolve_customers(plans)
        plans = [p for p in plans if p.action != FAIL]
        ids = {p.values["id"] for p in plans if "id" in p.values}
        existing = {d.pk: d for d in selectors.deal_list(user=self.actor).filter(pk__in=ids)} if ids else {}
        decided: list[tuple[RowPlan, Any]] = []
        claims: list[tuple[RowPlan, str, Any, str]] = []
        for plan in plans:
            values = plan.values
            match = None
            if "id" in values:
                match = existing.get(values["id"])
                if match is None:
                    plan.fail(
                        _("There is no deal with ID %(id)s that you may change.") % {"id": values["id"]}
                    )
                    continue
            stage = values.get("stage") or (match.stage if match else None)
            closing = stage is not None and stage.kind != PipelineStage.Kind.OPEN
            if "stage" in values and stage.kind == PipelineStage.Kind.LOST and not values.get("lost_reason"):
                plan.fail(_("Say why the deal was lost (Lost reason)."))
                continue
            if values.get("closed_at") and not closing:
                plan.fail(_("Only won or lost deals have a close date; set the stage to Won or Lost."))
                continue
            created = values.get("created_at") or (match.created_at if match else None)
            created = created or values.get("closed_at") or self.ctx.now
            self._quality(
                plan,
                Deal,
                {
                    "amount": values.get("amount", match.amount if match else None),
                    "status": stage.kind if stage else Deal.Status.OPEN,
                    "created_at": created,
                    "closed_at": (values.get("closed_at") or created) if closing else None,
                },
            )
            if plan.action == FAIL:
                continue
            if match is not None:
                claims.append((plan, "deal", match.pk, _("Updates the same deal as row %(row)s.")))
            else:
                key = f"{values['customer'].pk}:{normalize.name_key(values['title'])}"
                claims.append((plan, "new deal", key, _("Same customer and title as row %(row)s.")))
            decided.append((plan, match))
        self._claim(claims)
        for plan, match in decided:
            if plan.action != FAIL:
                self._decide(plan, match, _("ID") if match else "")

    def _plan_tickets(self, plans: list[RowPlan]) -> None:
        self._resolve_customers(plans)
        claims: list[tuple[RowPlan, str, Any, str]] = []
        for plan in plans:
            if plan.action == FAIL:
                continue
            values = plan.values
            created = values.get("created_at") or self.ctx.now
            status = values.get("status", Ticket.Status.NEW)
            done = status in (Ticket.Status.SOLVED, Ticket.Status.CLOSED)
            if values.get("solved_at") and not done:
                plan.fail(_("Only solved or closed tickets have a solved date."))
                continue
            self._quality(
                plan,
                Ticket,
                {
                    "status": status,
                    "created_at": created,
                    "solved_at": (values.get("solved_at") or created) if done else None,
                },
            )
            if plan.action == FAIL:
                continue
            text = f"{values['subject']}\x00{values.get('description', '')}".casefold()
            key = f"{values['customer'].pk}:{text}"
            claims.append((plan, "ticket", key, _("Same customer, subject and description as row %(row)s.")))
        self._claim(claims)
        for plan, *_rest in claims:
            if plan.action != FAIL:
                self._decide(plan, None, "")


# Writing
# ---------------------------------------------------------------------------------------------------------


def _write_customers(plans: list[RowPlan], actor: User, at: datetime) -> None:
    creates = [p for p in plans if p.action == CREATE]
    updates = [p for p in plans if p.action == UPDATE]
    fields = set(services.CUSTOMER_FIELDS) | {"status"}
    _in_batch_or_alone(
        creates,
        lambda batch: services.customer_bulk_create(
            actor=actor,
            rows=[{k: v for k, v in p.values.items() if k in fields} for p in batch],
            via=UsageEvent.Via.IMPORT,
            at=at,
        ),
    )
    _in_batch_or_alone(
        updates,
        lambda batch: services.customer_bulk_update(
            actor=actor, changes=[(p.target, p.changes) for p in batch], via=UsageEvent.Via.IMPORT, at=at
        ),
    )


def _in_batch_or_alone(plans: list[RowPlan], write: Callable[[list[RowPlan]], Any]) -> None:
    """Write the batch at once; if the database refuses it, write row by row to find the bad rows."""
    if not plans:
        return
    try:
        with transaction.atomic():
            write(plans)
        return
    except (ValidationError, PermissionDenied):
        if len(plans) == 1:
            raise
    for plan in plans:
        try:
            with transaction.atomic():
                write([plan])
        except (ValidationError, PermissionDenied) as exc:
            plan.fail(" ".join(_messages(exc)))


def _messages(exc: Exception) -> list[str]:
    if isinstance(exc, ValidationError):
        return exc.messages
    return [str(exc) or _("You may not change this record.")]


def _write_deal(plan: RowPlan, actor: User, at: datetime) -> None:
    values = plan.values
    via = UsageEvent.Via.IMPORT
    stage = values.get("stage")
    passed_apart = ("customer", "owner", "title")
    fields = {k: v for k, v in values.items() if k in services.DEAL_FIELDS and k not in passed_apart}
    if plan.action == UPDATE:
        deal = plan.target
        data = {k: v for k, v in plan.changes.items() if k in services.DEAL_FIELDS}
        if data:
            deal = services.deal_update(deal=deal, actor=actor, data=data, version=None, via=via)
        if "stage" in plan.changes:
            services.deal_move_stage(
                deal=deal,
                stage=stage,
                actor=actor,
                lost_reason=values.get("lost_reason", ""),
                at=values.get("closed_at") or at,
                via=via,
            )
        return
    closed_at = values.get("closed_at")
    created = values.get("created_at") or closed_at or at
    first_stage = stage
    if stage is not None and stage.kind != PipelineStage.Kind.OPEN and closed_at and closed_at != created:
        first_stage = (
            None  # opened at ``created``, then closed at ``closed_at``: the stage history shows both
        )
    deal = services.deal_create(
        actor=actor,
        customer=values["customer"],
        title=values["title"],
        stage=first_stage,
        owner=values.get("owner"),
        at=created,
        lost_reason=values.get("lost_reason", "") if first_stage is not None else "",
        via=via,
        **fields,
    )
    if first_stage is None and stage is not None:
        services.deal_move_stage(
            deal=deal,
            stage=stage,
            actor=actor,
            lost_reason=values.get("lost_reason", ""),
            at=closed_at,
            via=via,
        )


def _write_ticket(plan: RowPlan, actor: User, at: datetime) -> None:
    values = plan.values
    via = UsageEvent.Via.IMPORT
    created = values.get("created_at") or at
    fields = {k: values[k] for k in ("description", "priority", "category", "channel") if k in values}
    ticket = services.ticket_create(
        actor=actor,
        customer=values["customer"],
        subject=values["subject"],
        assignee=values.get("assignee"),
        at=created,
        via=via,
        **fields,
    )
    status = values.get("status", Ticket.Status.NEW)
    if status != Ticket.Status.NEW:
        done_at = values.get("solved_at") or created
        services.ticket_set_status(
            ticket=ticket,
            status=status,
            actor=actor,
            at=done_at if status in (Ticket.Status.SOLVED, Ticket.Status.CLOSED) else created,
            via=via,
        )


def _write_one_by_one(
    plans: list[RowPlan], write: Callable[[RowPlan, User, datetime], None], actor: User, at: datetime
) -> None:
    for plan in plans:
        if plan.action not in (CREATE, UPDATE):
            continue
        try:
            with transaction.atomic():
                write(plan, actor, at)
        except (ValidationError, PermissionDenied) as exc:
            plan.fail(" ".join(_messages(exc)))


def _write(kind: str, plans: list[RowPlan], actor: User, at: datetime) -> None:
    if kind == ImportJob.Kind.CUSTOMERS:
        _write_customers(plans, actor, at)
    elif kind == ImportJob.Kind.DEALS:
        _write_one_by_one(plans, _write_deal, actor, at)
    else:
        _write_one_by_one(plans, _write_ticket, actor, at)


# Services
# ---------------------------------------------------------------------------------------------------------


def _ensure_may_import(actor: User, kind: str) -> None:
    if not (actor.is_manager or actor.is_rep) or kind not in ImportJob.Kind.values:
        raise PermissionDenied(_("You cannot import these records."))


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
    outcomes = {
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


class _RollBack(Exception):
    """All-or-nothing import met a bad row: undo every write of the run."""


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
                raise _RollBack
            job.status, job.finished_at, job.content = ImportJob.Status.DONE, timezone.now(), b""
            job.save()
            return job
    except _RollBack:
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
            error=_("The import stopped because of an unexpected error; nothing was imported. (%(error)s)")
            % {"error": type(exc).__name__},
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
    examples = {
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
    }[kind]
    header = [str(f.label) for f in fields]
    rows = [header]
    for example in examples:
        rows.append([example.get(f.name, f.example) if example else f.example for f in fields])
    return rows

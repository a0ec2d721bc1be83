"""Imports: reading files, mapping, preview, the run (modes, all-or-nothing, duplicates), pages and task."""

import io
import re
import time
import zipfile
from collections.abc import Callable
from datetime import date
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from openpyxl import Workbook, load_workbook

from accounts.models import UsageEvent
from crm import services
from crm.data import imports
from crm.data.imports import RowError, cells, import_job_run, parse_date, writing
from crm.models import Customer, CustomerStatusChange, Deal, ImportJob, ImportMapping, Ticket
from crm.tasks import check_import, run_import
from tests.factories import (
    make_agent,
    make_customer,
    make_deal,
    make_import_job,
    make_manager,
    make_user,
)

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
HEADER = "name,email,phone,city\n"


def run(job: ImportJob, *, mode: str = "both", all_or_nothing: bool = True) -> ImportJob:
    """Start the job as the page does, then run the queued task as a worker would."""
    imports.import_job_start(job=job, actor=job.created_by, mode=mode, all_or_nothing=all_or_nothing)
    run_import(job.pk)
    return ImportJob.objects.get(pk=job.pk)


def xlsx_bytes(rows: list[list]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


@pytest.fixture
def manager():
    return make_manager(username="mia")


# Reading files
# ---------------------------------------------------------------------------------------------------------


def test_csv_with_bom_and_chinese_headers_is_mapped_and_imported(manager):
    content = (
        "\ufeff名称,邮箱,电话,城市\n上海星光贸易有限公司,sales@xingguang.example.cn,+86 21 5555 0101,上海\n"
    )
    job = make_import_job(manager, content.encode("utf-8"), checked=False)
    assert job.encoding == "utf-8-sig"
    assert job.headers == ["名称", "邮箱", "电话", "城市"]
    assert job.mapping == {"0": "name", "1": "email", "2": "phone", "3": "city"}
    job = run(make_import_job(manager, content.encode("utf-8")))
    customer = Customer.objects.get(email="sales@xingguang.example.cn")
    assert (customer.name, customer.city, customer.phone_key) == (
        "上海星光贸易有限公司",
        "上海",
        "+862155550101",
    )
    assert job.status == ImportJob.Status.DONE and job.created_count == 1


def test_semicolon_csv_from_german_excel(manager):
    job = make_import_job(manager, "Firma;E-Mail;Telefon\nMüller Bau GmbH;info@mueller.example;030 1234567\n")
    assert job.delimiter == ";"
    assert job.mapping == {"0": "name", "1": "email", "2": "phone"}
    run(job)
    assert Customer.objects.get(name="Müller Bau GmbH").phone_key == "+49301234567"


def test_xlsx_cells_numbers_dates_and_formulas_are_read_as_text(manager):
    data = xlsx_bytes(
        [
            ["Name", "Phone", "City", "Industry"],
            ['=HYPERLINK("http://evil.example","Click")', 4930123456, "Berlin", 42.0],
            ["Plain GmbH", "+49 30 7654321", date(2026, 3, 1), None],
        ]
    )
    job = make_import_job(manager, data, name="customers.xlsx")
    assert job.file_format == "xlsx"
    assert job.preview["rows"][0]["cells"][:2] == ['=HYPERLINK("http://evil.example","Click")', "4930123456"]
    assert job.preview["rows"][1]["cells"][2] == "2026-03-01"
    run(job, all_or_nothing=False)
    assert Customer.objects.filter(name='=HYPERLINK("http://evil.example","Click")', industry="42").exists()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.csv", b"", "The file is empty."),
        ("blank.csv", b"\n\n  \n", "The file is empty."),
        ("header.csv", b"name,email\n", "no data rows"),
        ("latin1.csv", "name\nMüller\n".encode("latin-1"), "not UTF-8"),
        ("notes.pdf", b"%PDF-1.4 something", "cannot be imported"),
        ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1rest", "Old Excel files"),
        ("broken.xlsx", b"PK\x03\x04 not really a zip", "cannot be read"),
        ("fake.xlsx", b"name\nAcme\n", "not a valid Excel workbook"),
        ("binary.csv", b"name\n\x00\x01\x02\n", "binary data"),
        (
            "wide.csv",
            (",".join(f"c{i}" for i in range(300)) + "\n" + "x," * 299 + "x\n").encode(),
            "300 columns",
        ),
        ("quotes.csv", b'name,email\n"Acme' + b"x" * 200_000 + b'",a@b.example\n', "Row 2 cannot be read"),
    ],
)
def test_bad_files_get_a_clear_message(manager, name, data, message):
    with pytest.raises(ValidationError) as exc:
        imports.import_job_create(actor=manager, kind="customers", file_name=name, data=data)
    assert message in " ".join(exc.value.messages)
    assert not ImportJob.objects.exists()


def xlsx_rewritten(rows: list[list], sheet_xml: Callable[[str], str]) -> bytes:
    """A real workbook whose first sheet's XML is then changed by ``sheet_xml`` (as a hostile file is)."""
    source = zipfile.ZipFile(io.BytesIO(xlsx_bytes(rows)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                content = sheet_xml(content.decode()).encode()
            target.writestr(item, content)
    return buffer.getvalue()


def _declare_huge_with_a_cell_in_the_last_row(xml: str) -> str:
    xml = re.sub(r'<dimension ref="[^"]*" ?/>', '<dimension ref="A1:GR1048576"/>', xml)
    assert "A1:GR1048576" in xml
    return xml.replace(
        "</sheetData>",
        '<row r="1048576"><c r="GR1048576" t="inlineStr"><is><t>x</t></is></c></row></sheetData>',
    )


def test_an_xlsx_declaring_a_million_rows_costs_what_it_holds_at_every_step(manager, client):
    """1.5 kB declaring A1:GR1048576 with one cell in the last row used to cost ~25 s of CPU per step."""
    data = xlsx_rewritten(
        [["name", "email"], ["Acme", "a@acme.example"]], _declare_huge_with_a_cell_in_the_last_row
    )
    assert len(data) < 8_000
    started = time.process_time()
    job = make_import_job(manager, data, name="bomb.xlsx")  # upload check, mapping, preview of every row
    client.force_login(manager)
    assert client.get(reverse("crm:import_preview", args=[job.pk])).status_code == 200
    job = run(job, all_or_nothing=False)
    elapsed = time.process_time() - started
    assert job.created_count == 1  # the cell in column GR has no header: nothing to import there
    assert elapsed < 10, f"{elapsed:.1f} s of CPU"


def test_an_xlsx_with_a_row_beyond_excels_last_row_is_refused(manager):
    def far_row(xml: str) -> str:
        cell = '<c r="A1048577" t="inlineStr"><is><t>x</t></is></c>'
        return xml.replace("</sheetData>", f'<row r="1048577">{cell}</row></sheetData>')

    data = xlsx_rewritten([["name"], ["Acme"]], far_row)
    with pytest.raises(ValidationError, match="beyond row 1,048,576"):
        imports.import_job_create(actor=manager, kind="customers", file_name="far.xlsx", data=data)


def test_an_xlsx_wider_than_200_columns_is_refused(manager):
    data = xlsx_bytes([[f"c{i}" for i in range(250)], ["x"] * 250])
    with pytest.raises(ValidationError, match="more than 200 columns"):
        imports.import_job_create(actor=manager, kind="customers", file_name="wide.xlsx", data=data)


def test_an_xlsx_that_unpacks_to_far_more_than_an_upload_is_refused(manager, settings):
    settings.CRM_IMPORT_MAX_BYTES = 100_000  # unpacking may reach 1 MB
    padding = "<!--" + " " * 2_000_000 + "-->"
    data = xlsx_rewritten(
        [["name"], ["Acme"]], lambda xml: xml.replace("<sheetData>", padding + "<sheetData>")
    )
    assert len(data) < 100_000
    with pytest.raises(ValidationError, match="unpacks to 1 MB"):
        imports.import_job_create(actor=manager, kind="customers", file_name="zip.xlsx", data=data)


@pytest.mark.parametrize("cut", [100, 1000, -200])
def test_a_truncated_xlsx_gets_a_clear_message(manager, cut):
    data = xlsx_bytes([["name"], ["Acme"]])[:cut]
    with pytest.raises(ValidationError, match=r"cannot be read|not a valid Excel"):
        imports.import_job_create(actor=manager, kind="customers", file_name="cut.xlsx", data=data)


def test_chosen_encoding_reads_chinese_excel_files(manager):
    data = "名称,邮箱\n北京测试有限公司,a@b.example\n".encode("gb18030")
    with pytest.raises(ValidationError):
        imports.import_job_create(actor=manager, kind="customers", file_name="gbk.csv", data=data)
    job = imports.import_job_create(
        actor=manager, kind="customers", file_name="gbk.csv", data=data, encoding="gb18030"
    )
    assert job.headers == ["名称", "邮箱"]
    assert job.preview["sample"] == [["北京测试有限公司", "a@b.example"]]


def test_files_above_the_size_limit_are_refused(manager, settings):
    settings.CRM_IMPORT_MAX_BYTES = 1024 * 1024
    data = HEADER.encode() + b"x,y@z.example,,\n" * 80_000
    with pytest.raises(ValidationError) as exc:
        imports.import_job_create(actor=manager, kind="customers", file_name="big.csv", data=data)
    assert "up to 1 MB" in exc.value.messages[0]


@pytest.mark.parametrize(
    ("text", "order", "expected"),
    [
        ("2026-03-01", "dmy", date(2026, 3, 1)),
        ("2026/3/1", "mdy", date(2026, 3, 1)),
        ("2026年3月1日", "dmy", date(2026, 3, 1)),
        ("01.03.2026", "mdy", date(2026, 3, 1)),
        ("3/1/2026", "dmy", date(2026, 1, 3)),
        ("3/1/2026", "mdy", date(2026, 3, 1)),
        ("1-3-26", "dmy", date(2026, 3, 1)),
        ("2026-03-01 00:00:00", "dmy", date(2026, 3, 1)),
    ],
)
def test_dates_in_several_formats(text, order, expected):
    assert parse_date(text, order) == expected


@pytest.mark.parametrize(
    ("text", "order", "message"),
    [
        ("13/31/2026", "dmy", "not a valid date (read as day/month/year)"),
        ("31/12/2026", "mdy", "not a valid date (read as month/day/year)"),
        ("next friday", "dmy", "is not a date"),
        ("1850-01-01", "dmy", "outside"),
    ],
)
def test_bad_dates_say_how_they_were_read(text, order, message):
    with pytest.raises(RowError) as exc:
        parse_date(text, order)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1250", "1250.00"),
        ("1,250.50", "1250.50"),
        ("1.250,50", "1250.50"),
        ("€ 1 250", "1250.00"),
        ("12,5", "12.50"),
    ],
)
def test_amounts_in_several_notations(text, expected):
    assert cells._amount(text, None) == Decimal(expected)


# Mapping
# ---------------------------------------------------------------------------------------------------------


def test_mapping_is_remembered_per_user_and_kind(manager):
    other = make_manager()
    content = "Kundenname,Notiz,Kontaktadresse\nAcme AG,call back,a@acme.example\n"
    job = make_import_job(manager, content, checked=False)
    assert job.mapping == {}
    make_import_job(manager, content, mapping={"0": "name", "2": "email"})
    assert ImportMapping.objects.get(user=manager, kind="customers").mapping == {
        "kundenname": "name",
        "notiz": "",
        "kontaktadresse": "email",
    }
    assert make_import_job(manager, content, checked=False).mapping == {"0": "name", "2": "email"}
    assert make_import_job(other, content, checked=False).mapping == {}
    deals = make_import_job(manager, content, kind="deals", checked=False)
    assert "0" not in deals.mapping


def test_mapping_needs_the_required_fields_once(manager):
    job = make_import_job(manager, HEADER + "Acme,a@acme.example,,\n", checked=False)
    with pytest.raises(ValidationError, match="Name"):
        imports.import_job_set_mapping(job=job, actor=manager, mapping={"1": "email"}, date_order="dmy")
    with pytest.raises(ValidationError, match="only one column"):
        imports.import_job_set_mapping(
            job=job, actor=manager, mapping={"0": "name", "1": "name"}, date_order="dmy"
        )


def test_unknown_columns_are_ignored(manager):
    job = run(make_import_job(manager, "name,favourite colour\nAcme,blue\n"))
    assert job.created_count == 1
    assert Customer.objects.get(name="Acme").industry == ""


# Preview
# ---------------------------------------------------------------------------------------------------------


def test_preview_checks_every_row_and_reports_each_problem(manager):
    rows = "".join(f"Firm {i},firm{i}@example.com,,\n" for i in range(60))
    rows += "Bad Mail,not-an-email,,\n,nobody@example.com,,\nBad Phone,,12,\n"
    job = make_import_job(manager, HEADER + rows)
    counts = job.preview["counts"]
    assert counts == {"rows": 63, "create": 60, "update": 0, "skip": 0, "fail": 3}
    assert len(job.preview["rows"]) == imports.PREVIEW_ROWS
    issues = {issue["row"]: " ".join(issue["messages"]) for issue in job.preview["issues"]}
    assert "e-mail address is not valid" in issues[62]
    assert "Name is required" in issues[63]
    assert "phone number cannot be read" in issues[64]
    assert not Customer.objects.filter(name__startswith="Firm").exists()


def test_duplicate_rows_in_one_file_are_reported(manager):
    content = HEADER + (
        "Acme,info@acme.example,+49 30 1234567,\n"
        "ACME GmbH,INFO@acme.example,,\n"
        "Acme Berlin,,030 1234567,\n"
        "Other,other@example.com,,\n"
    )
    job = make_import_job(manager, content)
    issues = {issue["row"]: issue["messages"] for issue in job.preview["issues"]}
    assert issues == {3: ["Same e-mail as row 2."], 4: ["Same phone number as row 2."]}
    job = run(job, all_or_nothing=False)
    assert (job.created_count, job.failed_count) == (2, 2)


# Running: modes, all or nothing
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def existing(manager):
    return make_customer(manager, name="Acme GmbH", email="Info@Acme.example", phone="+49 30 1234567")


CONTENT = (
    HEADER
    + "Acme Renamed,info@acme.example,,Hamburg\n"
    + "New Firm,new@firm.example,,Köln\n"
    + "Old Phone,,030/1234567,Bonn\n"
)


def test_create_only_skips_existing_customers(manager, existing):
    job = run(make_import_job(manager, CONTENT), mode="create", all_or_nothing=False)
    assert (job.created_count, job.updated_count, job.skipped_count, job.failed_count) == (1, 0, 1, 1)
    existing.refresh_from_db()
    assert existing.name == "Acme GmbH"
    assert "Already exists (same e-mail: Acme GmbH)" in job.report[0]["messages"][0]
    # The third row's phone is the same customer's: one customer is never changed by two rows.
    assert job.report[1] == {
        "row": 4,
        "outcome": "failed",
        "messages": ["Matches the same customer as row 2."],
    }


def test_update_only_updates_customers_matched_by_email_or_phone(manager, existing):
    job = run(
        make_import_job(manager, HEADER + "Acme Renamed,INFO@acme.example,,Hamburg\nNew,new@f.example,,\n"),
        mode="update",
    )
    assert (job.created_count, job.updated_count, job.skipped_count) == (0, 1, 1)
    existing.refresh_from_db()
    # Only the letter case of the e-mail differs: that is no change.
    assert (existing.name, existing.city, existing.email) == ("Acme Renamed", "Hamburg", "Info@Acme.example")
    assert existing.name_key == "acme renamed"
    assert not Customer.objects.filter(email="new@f.example").exists()


def test_both_creates_and_updates_and_never_duplicates(manager, existing):
    job = run(
        make_import_job(manager, HEADER + "New Firm,new@firm.example,,Köln\nAcme,,+493012 34567,Bonn\n")
    )
    assert (job.created_count, job.updated_count) == (1, 1)
    assert Customer.objects.filter(phone_key="+49301234567").count() == 1
    existing.refresh_from_db()
    assert existing.city == "Bonn" and existing.name == "Acme"


def test_update_keeps_values_where_the_file_is_empty_and_writes_history(manager, existing):
    existing.industry = "Energy"
    existing.save()
    job = run(make_import_job(manager, "name,email,industry,status\nAcme GmbH,info@acme.example,,churned\n"))
    existing.refresh_from_db()
    assert existing.industry == "Energy"
    assert existing.status == Customer.Status.CHURNED and existing.churned_at is not None
    assert list(existing.status_changes.values_list("to_status", flat=True)) == ["active", "churned"]
    assert existing.history.first().history_type == "~"
    assert job.updated_count == 1


def test_reimporting_the_same_file_changes_nothing(manager):
    content = HEADER + "Acme,info@acme.example,,Berlin\n"
    run(make_import_job(manager, content))
    again = run(make_import_job(manager, content))
    assert (again.created_count, again.updated_count, again.skipped_count) == (0, 0, 1)
    assert "No changes" in again.report[0]["messages"][0]


def test_all_or_nothing_imports_nothing_when_one_row_is_bad(manager):
    content = HEADER + "".join(f"Firm {i},f{i}@example.com,,\n" for i in range(5000)) + "Bad,broken@,,\n"
    job = run(make_import_job(manager, content))
    assert job.status == ImportJob.Status.FAILED
    assert (job.created_count, job.failed_count) == (0, 1)
    assert job.report == [
        {"row": 5002, "outcome": "failed", "messages": ["The e-mail address is not valid."]}
    ]
    assert "Nothing was imported" in job.error
    assert not Customer.objects.filter(name__startswith="Firm").exists()
    assert not UsageEvent.objects.filter(via="import").exists()


def test_valid_rows_mode_imports_the_good_rows_only(manager):
    job = run(
        make_import_job(manager, HEADER + "Good,good@example.com,,\nBad,broken@,,\n"), all_or_nothing=False
    )
    assert job.status == ImportJob.Status.DONE
    assert (job.created_count, job.failed_count) == (1, 1)
    assert Customer.objects.filter(name="Good").exists() and not Customer.objects.filter(name="Bad").exists()


def test_a_failed_all_or_nothing_job_can_be_run_again_with_the_valid_rows(manager):
    job = run(make_import_job(manager, HEADER + "Good,good@example.com,,\nBad,broken@,,\n"))
    assert job.status == ImportJob.Status.FAILED
    job = run(job, all_or_nothing=False)
    assert job.status == ImportJob.Status.DONE and job.created_count == 1
    assert bytes(ImportJob.objects.get(pk=job.pk).content) == b""


def test_an_unexpected_error_rolls_everything_back(manager, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    job = make_import_job(manager, HEADER + "".join(f"F{i},f{i}@example.com,,\n" for i in range(2500)))
    monkeypatch.setattr(
        writing,
        "_write_customers",
        lambda plans, actor, at: (
            explode()
            if plans[0].row > 2
            else services.customer_bulk_create(
                actor=actor, rows=[{"name": p.values["name"]} for p in plans], at=at
            )
        ),
    )
    job = run(job)
    assert job.status == ImportJob.Status.FAILED
    assert "unexpected error" in job.error and "RuntimeError" in job.error
    assert not Customer.objects.exists()


def test_imported_rows_are_marked_as_import_with_history(manager):
    run(make_import_job(manager, "name,email,status\nAcme,a@acme.example,active\nBeta,b@beta.example,\n"))
    acme, beta = Customer.objects.get(name="Acme"), Customer.objects.get(name="Beta")
    assert acme.status == "active" and acme.became_customer_at is not None
    assert beta.status == "lead"
    events = UsageEvent.objects.filter(object_type="customer", object_id__in=[acme.pk, beta.pk])
    assert set(events.values_list("via", "verb", "user")) == {("import", "create", manager.pk)}
    assert CustomerStatusChange.objects.filter(customer=acme, from_status="", to_status="active").exists()
    assert acme.history.get().history_user == manager


def test_a_rep_imports_only_their_own_customers(manager):
    rep, colleague = make_user(username="rita"), make_user(username="carl")
    theirs = make_customer(colleague, name="Carl's Client", email="client@carl.example")
    content = "name,email,owner\nMine,mine@example.com,carl\nClash,client@carl.example,rita\n"
    job = run(make_import_job(rep, content), all_or_nothing=False)
    assert Customer.objects.get(name="Mine").owner == rep
    assert (job.created_count, job.failed_count) == (1, 1)
    assert "colleague's customer already has this e-mail" in job.report[0]["messages"][0]
    theirs.refresh_from_db()
    assert theirs.name == "Carl's Client"


def test_the_preview_and_report_count_a_colleagues_customer_but_never_name_it(client):
    """Anyone could look up whose customer an e-mail or phone is by uploading it: the row says that a
    colleague's customer has it, never which one."""
    rep, colleague = make_user(), make_user()
    make_customer(colleague, name="Swiftline Consulting (苏州) 有限公司", email="li@swiftline.example",
                  phone="+49 30 1234567")  # fmt: skip
    content = "name,email,phone\nProbe A,li@swiftline.example,\nProbe B,,+49 30 1234567\n"
    job = make_import_job(rep, content)
    client.force_login(rep)
    pages = [
        client.get(reverse("crm:import_preview", args=[job.pk])),
        client.get(reverse("crm:import_map", args=[job.pk])),
        client.get(reverse("crm:import_detail", args=[job.pk])),
    ]
    job = run(job, all_or_nothing=False)
    pages.append(client.get(reverse("crm:import_report", args=[job.pk])))
    pages.append(client.get(reverse("crm:import_report", args=[job.pk]) + "?format=csv"))
    assert job.failed_count == 2
    messages = [m for row in job.report for m in row["messages"]]
    assert "A colleague's customer already has this e-mail; ask a manager to import it." in messages
    assert "A colleague's customer already has this phone; ask a manager to import it." in messages
    for page in pages:
        assert page.status_code == 200
        body = b"".join(page.streaming_content) if page.streaming else page.content
        assert b"Swiftline" not in body


def test_a_manager_assigns_owners_from_the_file(manager):
    rep = make_user(username="rita", email="rita@crm.example")
    run(make_import_job(manager, "name,owner\nA,rita\nB,RITA@crm.example\nC,nobody\n"), all_or_nothing=False)
    assert set(Customer.objects.filter(owner=rep).values_list("name", flat=True)) == {"A", "B"}
    assert not Customer.objects.filter(name="C").exists()


def test_agents_cannot_import():
    with pytest.raises(Exception, match="cannot import"):
        imports.import_job_create(actor=make_agent(), kind="customers", file_name="a.csv", data=b"name\nA\n")


def test_running_the_task_twice_does_nothing_the_second_time(manager):
    job = make_import_job(manager, HEADER + "Acme,a@acme.example,,\n")
    imports.import_job_start(job=job, actor=manager, mode="both", all_or_nothing=True)
    run_import(job.pk)
    run_import(job.pk)
    assert import_job_run(job_id=job.pk) is None
    assert Customer.objects.filter(name="Acme").count() == 1
    job.refresh_from_db()
    assert (job.status, job.created_count, job.processed_rows) == ("done", 1, 1)


def test_a_finished_job_cannot_be_started_again(manager):
    job = run(make_import_job(manager, HEADER + "Acme,a@acme.example,,\n"))
    with pytest.raises(ValidationError):
        imports.import_job_start(job=job, actor=manager, mode="both", all_or_nothing=True)


def test_report_rows_list_every_skipped_and_failed_row(manager):
    job = run(
        make_import_job(manager, HEADER + "Good,g@example.com,,\nBad,broken@,,\n"), all_or_nothing=False
    )
    rows = list(imports.report_rows(job))
    assert ["Created", "1"] in rows and ["Failed", "1"] in rows
    assert rows[-1] == ["3", "failed", "The e-mail address is not valid."]


@pytest.mark.parametrize("kind", ["customers", "deals", "tickets"])
def test_templates_are_recognised_by_their_own_mapping(manager, kind):
    rows = imports.template_rows(kind)
    fields = {f.name for f in imports.import_fields(kind)} - {"id"}
    assert set(imports.guess_mapping(kind, rows[0]).values()) == fields
    assert len(rows) == 3


# Deals and tickets
# ---------------------------------------------------------------------------------------------------------


def test_deals_are_imported_for_customers_found_by_email_phone_or_name(manager):
    acme = make_customer(manager, name="Acme GmbH", email="info@acme.example", phone="+49 30 1234567")
    content = (
        "Title,Customer,Amount,Stage,Created on,Closed on,Expected close date\n"
        'Won deal,INFO@acme.example,"12.500,00",Won,01.02.2026,15.02.2026,\n'
        "Open deal,030 1234567,800,Qualified,,,2026-12-31\n"
        "Named deal,acme gmbh,,,,,\n"
        "Won free,Acme GmbH,,Won,,,\n"
        "Lost deal,Acme GmbH,100,Lost,,,\n"
        "Ghost,ghost@nowhere.example,1,,,,\n"
    )
    job = run(make_import_job(manager, content, kind="deals", name="deals.csv"), all_or_nothing=False)
    assert (job.created_count, job.failed_count) == (3, 3)
    won = Deal.objects.get(title="Won deal")
    assert (won.customer, won.amount, won.status) == (acme, Decimal("12500.00"), "won")
    assert timezone.localdate(won.closed_at) == date(2026, 2, 15)
    assert timezone.localdate(won.created_at) == date(2026, 2, 1)
    assert [c.to_stage.kind for c in won.stage_changes.order_by("at")] == ["open", "won"]
    assert Deal.objects.get(title="Open deal").expected_close_date == date(2026, 12, 31)
    messages = {entry["row"]: " ".join(entry["messages"]) for entry in job.report}
    assert "won but has no amount" in messages[5]
    assert "Say why the deal was lost" in messages[6]
    assert "No customer you may see matches" in messages[7]
    acme.refresh_from_db()
    assert acme.status == "active"
    assert set(UsageEvent.objects.filter(object_type="deal").values_list("via", flat=True)) == {"import"}


def test_deals_are_updated_by_their_exported_id(manager):
    deal = make_deal(make_customer(manager), title="Old title", amount=Decimal("100"))
    email = deal.customer.email
    content = f"ID,Title,Customer,Amount\n{deal.pk},New title,{email},250\n999999,X,{email},1\n"
    job = run(make_import_job(manager, content, kind="deals"), mode="update", all_or_nothing=False)
    deal.refresh_from_db()
    assert (deal.title, deal.amount, deal.version) == ("New title", Decimal("250.00"), 2)
    assert (job.updated_count, job.failed_count) == (1, 1)


def test_a_rep_cannot_import_deals_for_a_colleagues_customer():
    rep, colleague = make_user(), make_user()
    hidden = make_customer(colleague, email="hidden@example.com")
    job = run(make_import_job(rep, "title,customer\nSneaky,hidden@example.com\n", kind="deals"))
    assert job.status == "failed" and not Deal.objects.filter(customer=hidden).exists()


def test_tickets_are_imported_with_their_status(manager, no_auto_assign):
    acme = make_customer(manager, email="info@acme.example")
    content = (
        "Subject,Customer,Priority,Status,Created on,Solved on\n"
        "Printer on fire,info@acme.example,紧急,已解决,2026-01-10,2026-01-12\n"
        "Question,info@acme.example,normal,new,,\n"
        "Question,info@acme.example,normal,new,,\n"
    )
    job = run(
        make_import_job(manager, content, kind="tickets", name="t.csv"), mode="create", all_or_nothing=False
    )
    assert (job.created_count, job.failed_count) == (2, 1)
    ticket = Ticket.objects.get(subject="Printer on fire")
    assert (ticket.customer, ticket.priority, ticket.status) == (acme, "urgent", "solved")
    assert timezone.localdate(ticket.solved_at) == date(2026, 1, 12)
    assert "Same customer, subject and description as row 3" in job.report[0]["messages"][0]
    assert imports.modes_for("tickets") == ["create"]


# Pages
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def signed_in(client, manager):
    client.force_login(manager)
    return client


def test_upload_page_and_fragment(signed_in):
    page = signed_in.get(reverse("crm:import_upload"), {"kind": "deals"})
    assert page.status_code == 200 and b"<html" in page.content
    assert re.search(rb'value="deals"[^>]*checked', page.content)
    bad = signed_in.post(reverse("crm:import_upload"), {"kind": "customers"}, headers=HTMX)
    assert bad.status_code == 200 and b"<html" not in bad.content
    assert b"Choose a file to upload." in bad.content


def test_upload_with_a_bad_file_rerenders_with_the_message(signed_in):
    upload = SimpleUploadedFile("data.csv", "name\nMüller\n".encode("latin-1"), content_type="text/csv")
    response = signed_in.post(
        reverse("crm:import_upload"), {"kind": "customers", "file": upload}, headers=HTMX
    )
    assert response.status_code == 200
    assert b"not UTF-8" in response.content


def test_the_whole_flow_through_the_pages(signed_in, manager):
    upload = SimpleUploadedFile("c.csv", (HEADER + "Acme,a@acme.example,,Berlin\nBad,oops,,\n").encode())
    response = signed_in.post(
        reverse("crm:import_upload"), {"kind": "customers", "file": upload}, headers=HTMX
    )
    job = ImportJob.objects.get()
    assert response["HX-Redirect"] == reverse("crm:import_map", args=[job.pk])

    page = signed_in.get(reverse("crm:import_map", args=[job.pk]))
    assert b"Match the file" in page.content and b"a@acme.example" in page.content
    missing = signed_in.post(
        reverse("crm:import_map", args=[job.pk]), {"col_1": "email", "date_order": "dmy"}, headers=HTMX
    )
    assert missing.status_code == 200 and b"Choose the column for: Name" in missing.content
    twice = signed_in.post(
        reverse("crm:import_map", args=[job.pk]),
        {"col_0": "name", "col_1": "name", "date_order": "dmy"},
        headers=HTMX,
    )
    assert b"Another column already fills this field." in twice.content
    mapping = {"col_0": "name", "col_1": "email", "col_2": "phone", "col_3": "city", "date_order": "dmy"}
    response = signed_in.post(reverse("crm:import_map", args=[job.pk]), mapping)
    assert response.status_code == 302 and response["Location"] == reverse(
        "crm:import_preview", args=[job.pk]
    )

    preview = signed_in.get(reverse("crm:import_preview", args=[job.pk])).content.decode()
    assert "The e-mail address is not valid." in preview and "Start the import" in preview
    bad_start = signed_in.post(
        reverse("crm:import_preview", args=[job.pk]), {"mode": "nonsense", "scope": "all"}, headers=HTMX
    )
    assert bad_start.status_code == 200 and b"<html" not in bad_start.content
    response = signed_in.post(
        reverse("crm:import_preview", args=[job.pk]), {"mode": "both", "scope": "valid"}
    )
    assert response["Location"] == job.get_absolute_url()

    waiting = signed_in.get(job.get_absolute_url(), headers=HTMX)
    assert b'hx-trigger="every 1s"' in waiting.content and b"<html" not in waiting.content
    run_import(job.pk)
    done = signed_in.get(job.get_absolute_url(), headers=HTMX)
    assert b'hx-trigger="every 1s"' not in done.content
    assert b"Import finished: 1 created, 0 updated." in done.content
    page = signed_in.get(job.get_absolute_url())
    assert b"<html" in page.content

    report = signed_in.get(reverse("crm:import_report", args=[job.pk]))
    body = b"".join(report.streaming_content).decode("utf-8-sig")
    assert "3,failed,The e-mail address is not valid." in body


def test_import_pages_are_404_for_others(client, manager):
    job = make_import_job(manager, HEADER + "Acme,a@acme.example,,\n")
    for user in (make_manager(), make_user(), make_agent()):
        client.force_login(user)
        for name in ("crm:import_detail", "crm:import_map", "crm:import_preview", "crm:import_report"):
            assert client.get(reverse(name, args=[job.pk])).status_code == 404
    client.force_login(make_agent())
    assert client.get(reverse("crm:import_upload")).status_code == 404
    assert client.get(reverse("crm:import_list")).status_code == 404


@pytest.mark.parametrize("file_format", ["csv", "xlsx"])
def test_templates_download(signed_in, file_format):
    response = signed_in.get(reverse("crm:import_template"), {"kind": "customers", "format": file_format})
    body = b"".join(response.streaming_content) if response.streaming else response.content
    if file_format == "csv":
        assert body.decode("utf-8").startswith("\ufeffName,Kind,E-mail")
    else:
        sheet = load_workbook(io.BytesIO(body)).active
        assert [c.value for c in sheet[1]][:3] == ["Name", "Kind", "E-mail"]
        assert sheet.max_row == 3


def test_long_files_are_checked_by_a_task_while_the_page_polls(client, manager, settings):
    settings.CRM_IMPORT_SYNC_CHECK_ROWS = 2
    job = make_import_job(manager, HEADER + "A,a@a.example,,\nB,b@b.example,,\nC,broken@,,\n")
    assert job.preview["checking"] is True and not job.is_checked
    client.force_login(manager)
    waiting = client.get(reverse("crm:import_preview", args=[job.pk]), headers=HTMX)
    assert b'hx-trigger="every 1s"' in waiting.content and b"of 3 rows" in waiting.content
    assert b"<html" in client.get(reverse("crm:import_preview", args=[job.pk])).content
    check_import(job.pk)
    check_import(job.pk)
    job.refresh_from_db()
    assert job.is_checked and job.preview["counts"]["fail"] == 1 and "checking" not in job.preview
    done = client.get(
        reverse("crm:import_preview", args=[job.pk]), headers={**HTMX, "HX-Target": "check-progress"}
    )
    assert done["HX-Refresh"] == "true"
    page = client.get(reverse("crm:import_preview", args=[job.pk]))
    assert b"Start the import" in page.content


def test_an_export_imports_back_unchanged(client, manager):
    from crm.data import exports

    make_customer(manager, name="=cmd|' /C calc'!A0", phone="+49 30 1234567", email="calc@example.com")
    rows = list(exports.csv_lines(exports.export_rows("customers", Customer.objects.all())))
    assert "'+49 30 1234567" in rows[2]
    job = run(make_import_job(manager, "".join(rows).encode("utf-8")))
    assert (job.created_count, job.updated_count, job.skipped_count) == (0, 0, 1)
    assert "No changes" in job.report[0]["messages"][0]

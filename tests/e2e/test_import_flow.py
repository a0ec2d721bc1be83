"""A rep imports customers from an Excel-style CSV in a real browser: upload, map, check, run, report."""

import pytest
from django.core.cache import cache
from playwright.sync_api import expect

from crm.data import imports
from crm.models import Customer, ImportJob
from crm.tasks import run_import
from tests.e2e.conftest import sign_in
from tests.factories import make_customer, make_user

pytestmark = pytest.mark.django_db(transaction=True)

CSV = (
    "\ufeff客户名称,邮箱,电话,城市,Notes\n"
    "上海星光贸易有限公司,sales@xingguang.example.cn,+86 21 5555 0101,上海,met at fair\n"
    "Nordlicht Solar GmbH,INFO@nordlicht.example,040 1234567,Hamburg,\n"
    "Kranich Logistik,kontakt@kranich.example,not a number,Bremen,\n"
    "Elbe Consulting,elbe@consulting.example,,Dresden,\n"
)


def test_rep_imports_customers_and_watches_the_progress(page, shot, tmp_path, monkeypatch):
    queued: list[int] = []
    monkeypatch.setattr(run_import, "delay_on_commit", queued.append)
    rita = make_user(username="rita", first_name="Rita")
    existing = make_customer(rita, name="Nordlicht Solar", email="info@nordlicht.example")
    upload = tmp_path / "kunden.csv"
    upload.write_bytes(CSV.encode("utf-8"))
    sign_in(page, "rita")

    page.get_by_role("link", name="Customers").first.click()
    page.get_by_role("link", name="Import").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Import from a CSV or Excel file")
    page.get_by_label("File").set_input_files(str(upload))
    shot(page, "import-upload", phone=False)
    page.get_by_role("button", name="Upload and continue").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Match the file's columns")
    expect(page.get_by_label("客户名称")).to_have_value("name")
    expect(page.get_by_label("邮箱")).to_have_value("email")
    expect(page.get_by_label("Notes")).to_have_value("")
    shot(page, "import-map")
    page.get_by_role("button", name="Check all rows").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Check the rows and start the import")
    expect(page.locator("#import-issues")).to_contain_text("The phone number cannot be read")
    page.get_by_label("Import the valid rows and skip the others").check()
    shot(page, "import-preview")
    page.get_by_role("button", name="Start the import").click()

    job = ImportJob.objects.get()
    expect(page.locator("#import-progress")).to_contain_text("Waiting for a worker")
    assert queued == [job.pk]
    cache.set(imports.progress_key(job.pk), 2)
    expect(page.locator("#import-progress")).to_contain_text("2 of 4 rows")
    shot(page, "import-progress", phone=False)

    run_import(job.pk)
    expect(page.locator("#import-progress")).to_contain_text("Import finished: 2 created, 1 updated.")
    expect(page.locator("#import-progress")).not_to_have_attribute("hx-trigger", "every 1s")
    expect(page.locator("#import-progress table")).to_contain_text("The phone number cannot be read")
    shot(page, "import-report")

    existing.refresh_from_db()
    assert existing.name == "Nordlicht Solar GmbH" and existing.city == "Hamburg"
    assert Customer.objects.get(email="sales@xingguang.example.cn").owner == rita
    assert not Customer.objects.filter(name="Kranich Logistik").exists()

    with page.expect_download() as download:
        page.get_by_role("link", name="Download the report (CSV)").click()
    report = download.value.path().read_text(encoding="utf-8-sig")
    assert "4,failed,The phone number cannot be read" in report

    page.get_by_role("link", name="Go to Customers").click()
    expect(page.locator("#customer-table")).to_contain_text("上海星光贸易有限公司")
    with page.expect_download() as download:
        page.get_by_role("link", name="Excel").click()
    assert download.value.suggested_filename.endswith(".xlsx")
    shot(page, "customer-list-with-import-export", phone=False)


def test_manager_reviews_and_merges_a_duplicate(page, shot):
    from crm.data.dedupe import duplicate_scan
    from tests.factories import make_deal, make_manager

    make_manager(username="mia", first_name="Mia")
    rita = make_user(username="rita")
    first = make_customer(rita, name="Nordlicht Solar GmbH", email="info@nordlicht.example", city="Hamburg")
    second = make_customer(
        rita, name="NORDLICHT SOLAR", email="INFO@nordlicht.example", phone="+49 40 1234567"
    )
    make_deal(second, title="Rooftop installation")
    duplicate_scan()
    sign_in(page, "mia")
    page.get_by_role("link", name="Duplicates").click()
    expect(page.locator("#duplicate-table")).to_contain_text("same e-mail + same name")
    shot(page, "duplicates-list")
    page.get_by_role("link", name="Review").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Same customer?")
    page.locator("input[name=phone]").nth(1).check()
    shot(page, "duplicate-review")
    page.get_by_role("button", name="Merge").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Records merged into Nordlicht Solar GmbH")
    shot(page, "merge-explained", phone=False)
    first.refresh_from_db()
    assert first.phone == "+49 40 1234567" and first.deals.count() == 1
    assert Customer.objects.get(pk=second.pk).merged_into == first
    page.get_by_role("link", name="Nordlicht Solar GmbH").first.click()
    merged_note = page.locator(".callout-warning")
    expect(merged_note).to_contain_text("1 duplicate record was merged into this customer")

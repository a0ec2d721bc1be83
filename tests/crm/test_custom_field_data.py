"""Custom fields in the data paths: imports, exports, webhook payloads, duplicate merges, data quality
(rule and completeness) and the audit history. The API's: tests/api/test_custom_fields.py."""

import csv
import io
from datetime import date, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import translation
from openpyxl import load_workbook

from crm import selectors, services
from crm.custom_fields.services import field_create, field_update
from crm.data import exports, imports, quality
from crm.data.merge import customer_merge, merge_explanation
from crm.models import Customer, Deal, ImportJob, Ticket
from crm.tasks import run_import
from crm.webhooks import payloads
from metrics.kpis.data_quality import FIELD_COMPLETENESS
from metrics.models import Scope
from metrics.periods import Period
from tests.factories import (
    make_customer,
    make_deal,
    make_duplicate_pair,
    make_import_job,
    make_manager,
    make_ticket,
    make_user,
    stage,
)
from tests.metrics.kit import NOW, row

pytestmark = pytest.mark.django_db
JUNE = date(2026, 6, 1)

REGIONS = [
    {"key": "north", "en": "North", "zh": "北区"},
    {"key": "south", "en": "South", "zh": "南区"},
]


@pytest.fixture
def manager():
    return make_manager(username="mia")


@pytest.fixture
def region(manager):
    return field_create(
        actor=manager,
        entity="customer",
        key="region",
        label_en="Region",
        label_zh="区域",
        kind="choice",
        choices=REGIONS,
    )


@pytest.fixture
def signed(manager):
    return field_create(
        actor=manager,
        entity="customer",
        key="signed_on",
        label_en="Signed on",
        label_zh="签约日期",
        kind="date",
    )


@pytest.fixture
def budget(manager):
    return field_create(
        actor=manager, entity="customer", key="budget", label_en="Budget", label_zh="预算", kind="money"
    )


def run(job: ImportJob, *, mode: str = "both", all_or_nothing: bool = False) -> ImportJob:
    imports.import_job_start(job=job, actor=job.created_by, mode=mode, all_or_nothing=all_or_nothing)
    run_import(job.pk)
    return ImportJob.objects.get(pk=job.pk)


# Imports
# ---------------------------------------------------------------------------------------------------------


def test_import_maps_custom_columns_by_chinese_label_and_key(manager, region, signed, budget):
    content = (
        "名称,邮箱,区域,signed_on,预算\n"
        '甲公司,a@example.cn,南区,2026-03-01,"1.250,50"\n'
        "乙公司,b@example.cn,North,01.02.2026,800\n"
        "丙公司,c@example.cn,West,2026-13-40,lots\n"
    )
    job = make_import_job(manager, content)
    assert job.mapping == {
        "0": "name",
        "1": "email",
        "2": "custom.region",
        "3": "custom.signed_on",
        "4": "custom.budget",
    }
    assert job.preview["counts"]["create"] == 2 and job.preview["counts"]["fail"] == 1
    (issue,) = job.preview["issues"]
    messages = " ".join(issue["messages"])
    assert issue["row"] == 4
    assert "Region: “West” is not one of the choices: North, South." in messages
    assert "Signed on: “2026-13-40” is not a valid date" in messages
    assert "Budget: “lots” is not an amount" in messages
    job = run(job)
    assert (job.created_count, job.failed_count) == (2, 1)
    assert Customer.objects.get(email="a@example.cn").custom == {
        "region": "south",
        "signed_on": "2026-03-01",
        "budget": "1250.50",
    }
    assert Customer.objects.get(email="b@example.cn").custom == {
        "region": "north",
        "signed_on": "2026-02-01",
        "budget": "800.00",
    }


def test_the_mapping_offers_custom_fields_with_their_labels_and_chinese_headers(client, manager, region):
    with translation.override("zh-hans"):
        job = make_import_job(manager, "名称,区域\n甲公司,北区\n", checked=False)
    assert job.mapping == {"0": "name", "1": "custom.region"}
    client.force_login(manager)
    page = client.get(reverse("crm:import_map", args=[job.pk])).content.decode()
    assert 'value="custom.region"' in page and ">Region<" in page
    template = imports.template_rows("customers")
    assert template[0][-1] == "Region" and template[-1][-1] == "North"
    checked = make_import_job(manager, "Name,Region\nAcme,North\n")
    field_update(actor=manager, field=region, is_active=False)  # archived after the mapping: still shown
    preview = client.get(reverse("crm:import_preview", args=[checked.pk]))
    assert preview.status_code == 200 and "custom.region" in preview.content.decode()


def test_import_updates_merge_custom_values_and_empty_cells_keep_them(manager, region, signed):
    customer = make_customer(
        manager, email="a@example.com", custom={"region": "north", "signed_on": "2026-01-01"}
    )
    job = run(make_import_job(manager, "Name,E-mail,Region,Signed on\nAcme,a@example.com,South,\n"))
    customer.refresh_from_db()
    assert job.updated_count == 1
    assert customer.custom == {"region": "south", "signed_on": "2026-01-01"}
    again = run(make_import_job(manager, "Name,E-mail,Region\nAcme,a@example.com,南区\n"))
    assert again.skipped_count == 1 and "No changes" in again.report[0]["messages"][0]


def test_required_custom_fields_must_be_mapped_and_filled(manager, region):
    field_update(actor=manager, field=region, required=True)
    job = make_import_job(manager, "Name,E-mail\nAcme,a@example.com\n", checked=False)
    with pytest.raises(ValidationError, match="Choose the column for: Region"):
        imports.import_job_set_mapping(job=job, actor=manager, mapping=job.mapping, date_order="dmy")
    job = make_import_job(manager, "Name,E-mail,Region\nAcme,a@example.com,\nBeta,b@example.com,North\n")
    assert job.preview["counts"]["fail"] == 1
    assert job.preview["issues"][0]["messages"] == ["Region is required."]
    run(job)
    assert list(Customer.objects.values_list("name", "custom")) == [("Beta", {"region": "north"})]


def test_deal_and_ticket_imports_store_custom_values_and_stage_requirements(manager, no_auto_assign):
    customer = make_customer(manager, email="info@acme.example")
    proposal = stage("open", 30)
    field_create(
        actor=manager,
        entity="deal",
        key="po",
        label_en="PO number",
        kind="text",
        required=True,
        required_from_stage=proposal,
    )
    field_create(
        actor=manager, entity="ticket", key="serial", label_en="Serial", label_zh="序列号", kind="integer"
    )
    content = (
        "Title,Customer,Stage,PO number\n"
        "Early,info@acme.example,Qualified,\n"
        "Late,info@acme.example,Negotiation,\n"
        "Late with PO,info@acme.example,Negotiation,PO-7\n"
    )
    job = run(make_import_job(manager, content, kind="deals"))
    assert (job.created_count, job.failed_count) == (2, 1)
    assert job.report[0]["messages"] == ["PO number is required."]
    assert Deal.objects.get(title="Late with PO").custom == {"po": "PO-7"}
    tickets = 'Subject,Customer,Category,Channel,序列号\nBroken,info@acme.example,problem,email,"12,345"\n'
    job = run(make_import_job(manager, tickets, kind="tickets"), mode="create")
    assert job.created_count == 1
    assert Ticket.objects.get(customer=customer).custom == {"serial": 12345}


# Exports
# ---------------------------------------------------------------------------------------------------------


def test_exports_have_a_column_per_custom_field_and_keep_the_access_rules(client, manager, region, budget):
    rep = make_user(username="rita")
    make_customer(rep, name="Mine", custom={"region": "south", "budget": "1250.5"})
    make_customer(make_user(), name="Theirs", custom={"region": "north"})
    field_create(actor=manager, entity="customer", key="old", label_en="Old", kind="text", is_active=False)
    client.force_login(rep)
    body = b"".join(client.get(reverse("crm:customer_export")).streaming_content).decode()
    rows = list(csv.reader(io.StringIO(body[1:])))
    assert rows[0][-2:] == ["Region", "Budget"]
    assert [r[1] for r in rows[1:]] == ["Mine"]
    assert rows[1][-2:] == ["South", "1250.50"]
    response = client.get(reverse("crm:customer_export"), {"format": "xlsx"})
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content))).active
    xlsx = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert xlsx[1][-2:] == ["South", 1250.5]  # the amount a number cell
    with translation.override("zh-hans"):
        header = next(exports.export_rows("customers", Customer.objects.none()))
    assert header[-2:] == ["区域", "预算"]


def test_an_export_with_custom_columns_imports_back_unchanged(manager, region, signed):
    make_customer(
        manager, name="Acme", email="a@example.com", custom={"region": "north", "signed_on": "2026-03-01"}
    )
    rows = "".join(exports.csv_lines(exports.export_rows("customers", Customer.objects.all())))
    job = run(make_import_job(manager, rows.encode()))
    assert (job.created_count, job.updated_count, job.skipped_count) == (0, 0, 1)


# Webhooks (the API's tests: tests/api/test_custom_fields.py)
# ---------------------------------------------------------------------------------------------------------


def test_webhook_payloads_carry_the_custom_values(region, no_auto_assign):
    customer = make_customer(custom={"region": "north"})
    assert payloads.customer_data(customer)["custom"] == {"region": "north"}
    assert payloads.deal_data(make_deal(customer))["custom"] == {}
    assert payloads.ticket_data(make_ticket(customer))["custom"] == {}


# Duplicates and merges
# ---------------------------------------------------------------------------------------------------------


def test_merge_keeps_the_survivors_values_and_fills_the_missing_ones(manager, region, signed, budget):
    survivor = make_customer(manager, name="Acme GmbH", custom={"region": "north", "budget": "100.00"})
    merged = make_customer(
        manager, name="ACME", custom={"region": "south", "signed_on": "2026-03-01", "budget": "250.00"}
    )
    record = customer_merge(
        survivor=survivor, merged=merged, actor=manager, choices={"custom.budget": merged.pk}
    )
    survivor.refresh_from_db()
    assert survivor.custom == {"region": "north", "signed_on": "2026-03-01", "budget": "250.00"}
    assert record.chosen["custom.region"] == {
        "kept": "survivor",
        "value": "north",
        "survivor": "north",
        "merged": "south",
    }
    assert record.chosen["custom.signed_on"]["kept"] == "merged"
    assert record.chosen["custom.budget"]["value"] == "250.00"
    assert record.merged_snapshot["custom.region"] == "south"
    explained = merge_explanation(record)
    by_label = {c["label"]: c for c in explained["chosen"]}
    assert by_label["Region"]["value"] == "North" and by_label["Region"]["merged"] == "South"
    assert ("Region", "South") in explained["snapshot"]
    with pytest.raises(ValidationError):
        customer_merge(
            survivor=survivor, merged=make_customer(manager), actor=manager, choices={"custom.x": 1}
        )


def test_the_review_page_shows_custom_values_side_by_side_and_merges_the_choice(
    client, manager, region, signed
):
    a = make_customer(manager, name="Acme GmbH", custom={"region": "north"})
    b = make_customer(manager, name="ACME", custom={"region": "south", "signed_on": "2026-03-01"})
    candidate = make_duplicate_pair(a, b)
    client.force_login(manager)
    page = client.get(reverse("crm:duplicate_detail", args=[candidate.pk])).content.decode()
    assert "Region" in page and "North" in page and "South" in page and "Signed on" in page
    response = client.post(
        reverse("crm:duplicate_detail", args=[candidate.pk]),
        {"survivor": a.pk, "cf_region": b.pk, "cf_signed_on": b.pk},
    )
    assert response.status_code == 302
    a.refresh_from_db()
    assert a.custom == {"region": "south", "signed_on": "2026-03-01"}
    explained = client.get(reverse("crm:customer_merges", args=[a.pk])).content.decode()
    assert "Region" in explained and "South" in explained


# Data quality
# ---------------------------------------------------------------------------------------------------------


def test_required_custom_field_rule_finds_records_lacking_the_key(manager, region):
    make_customer(manager, custom={"region": "north"})
    lacking = make_customer(manager)
    field_update(actor=manager, field=region, required=True)
    rule = quality.RULES_BY_CODE["customer_custom_required"]
    failing = set(quality.live_records(Customer).filter(rule.failing).values_list("pk", flat=True))
    assert failing == {lacking.pk}
    assert rule.fails({"custom": {}}) and not rule.fails({"custom": {"region": "north"}})
    counts = quality.failure_counts()
    assert counts["customer_custom_required"] == 1
    links = quality.failure_links(quality.quality_failure_list(user=manager, rule="customer_custom_required"))
    assert [link.pk for link in links] == [lacking.pk]
    field_update(actor=manager, field=region, is_active=False)
    assert quality.failure_counts()["customer_custom_required"] == 0


def test_deal_fields_required_from_a_stage_count_from_that_stage(manager):
    proposal = stage("open", 30)
    field_create(
        actor=manager,
        entity="deal",
        key="po",
        label_en="PO",
        kind="text",
        required=True,
        required_from_stage=proposal,
    )
    customer = make_customer(manager)
    early = make_deal(customer)
    late = make_deal(customer, stage=stage("open", 40), custom={"po": "1"})
    Deal.objects.filter(pk=late.pk).update(custom={})
    rule = quality.RULES_BY_CODE["deal_custom_required"]
    assert set(quality.live_records(Deal).filter(rule.failing).values_list("pk", flat=True)) == {late.pk}
    assert not rule.fails({"custom": {}, "stage": early.stage})
    assert rule.fails({"custom": {}, "stage": late.stage})


def test_field_completeness_counts_required_custom_fields_and_its_drill_agrees(manager, region):
    before = NOW - timedelta(days=30)
    rep = make_user()
    customer = make_customer(
        rep, at=before, industry="IT", city="Berlin", segment="smb", custom={"region": "north"}
    )
    make_customer(rep, at=before, industry="IT", city="Berlin", segment="smb")
    field_update(actor=manager, field=region, required=True)
    field_create(
        actor=manager,
        entity="deal",
        key="po",
        label_en="PO",
        kind="text",
        required=True,
        required_from_stage=stage("open", 30),
    )
    make_deal(customer, at=before)  # Lead in: the PO does not apply yet
    make_deal(customer, at=before, stage=stage("open", 40), custom={"po": "1"})
    cleared = make_deal(customer, at=before, stage=stage("open", 40), custom={"po": "2"})
    Deal.objects.filter(pk=cleared.pk).update(custom={})
    # Customers: 4 built-in fields + the region each: 5/5 and 4/5. Open deals: amount and close date
    # (the amount filled) + the PO from Proposal on: 1/2, 2/3, 1/3. → (9 + 4) / (10 + 8).
    r = row("field_completeness", first_day=JUNE, now=NOW)
    assert (r.numerator, r.denominator) == (13, 18)
    detail = r.extra.to_json()
    assert detail == {"customer_filled": 9, "customer_slots": 10, "deal_filled": 4, "deal_slots": 8}
    period = Period("month", JUNE)
    for part in FIELD_COMPLETENESS.drill.parts.values():  # the records behind the numbers give them
        records = part.records(manager, period, Scope.COMPANY, "")
        for key, total in part.checks:
            assert total(records, period, Scope.COMPANY, "") == detail[key], key


# History
# ---------------------------------------------------------------------------------------------------------


def test_history_shows_one_labelled_line_per_changed_custom_field(client, manager, region, signed):
    customer = make_customer(manager, custom={"region": "north"})
    services.customer_update(
        customer=customer, actor=manager, data={"custom": {"region": "south", "signed_on": "2026-03-01"}}
    )
    field_update(actor=manager, field=signed, is_active=False)
    lines = selectors.record_history(obj=customer)[0]["changes"]
    assert {"field": "Region", "old": "North", "new": "South"} in lines
    assert {"field": "Signed on", "old": "", "new": "2026-03-01"} in lines  # archived, still labelled
    assert not any(line["field"] == "custom fields" for line in lines)
    with translation.override("zh-hans"):
        lines = selectors.record_history(obj=customer)[0]["changes"]
    assert {"field": "区域", "old": "北区", "new": "南区"} in lines
    client.force_login(manager)
    page = client.get(customer.get_absolute_url()).content.decode()
    assert '<span class="history-field">Region</span>: <del>North</del> → <ins>South</ins>' in page
    described = selectors.record_changes_display(
        model=Customer, changes={"custom": ({"region": "north"}, {"region": "south"})}
    )
    assert described == [{"label": "Region", "old": "North", "new": "South"}]

"""Exports: the list pages' filters, access rules, CSV injection escaping, streaming, readable XLSX."""

import csv
import io
from datetime import datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.http import FileResponse, StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from openpyxl import load_workbook

from crm.data import exports
from crm.models import Customer, Deal
from tests.factories import (
    make_agent,
    make_closed_deal,
    make_customer,
    make_deal,
    make_manager,
    make_task,
    make_ticket,
    make_user,
)

pytestmark = pytest.mark.django_db


def csv_rows(response) -> list[list[str]]:
    assert isinstance(response, StreamingHttpResponse)
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    return list(csv.reader(io.StringIO(body[1:])))


def xlsx_rows(response) -> list[list]:
    assert isinstance(response, FileResponse)
    workbook = load_workbook(io.BytesIO(b"".join(response.streaming_content)))
    return [list(row) for row in workbook.active.iter_rows(values_only=True)]


@pytest.fixture
def rep(client):
    user = make_user(username="rita")
    client.force_login(user)
    return user


def test_escape_neutralises_formulas_only():
    assert (
        exports.escape('=HYPERLINK("http://evil.example","x")') == '\'=HYPERLINK("http://evil.example","x")'
    )
    for value in ("+49 30 1", "-1+2", "@SUM(A1)", "\tcmd", "\rcmd"):
        assert exports.escape(value) == "'" + value
    assert exports.escape("Acme GmbH") == "Acme GmbH"
    assert exports.escape("") == ""


def test_customer_csv_has_the_lists_filters_and_only_the_reps_customers(client, rep):
    make_customer(rep, name="Lead One", status=Customer.Status.LEAD)
    make_customer(rep, name="Active One", status=Customer.Status.ACTIVE)
    make_customer(make_user(), name="Secret Lead", status=Customer.Status.LEAD)
    response = client.get(reverse("crm:customer_export"), {"status": "lead", "format": "csv"})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    today = timezone.localdate().isoformat()
    assert response["Content-Disposition"] == f'attachment; filename="customers-{today}.csv"'
    rows = csv_rows(response)
    assert rows[0][:4] == ["ID", "Name", "Kind", "E-mail"]
    assert [row[1] for row in rows[1:]] == ["Lead One"]


def test_customer_export_search_and_sort_match_the_list(client, rep):
    for name in ("Beta Alpha", "Alpha One", "Gamma"):
        make_customer(rep, name=name)
    rows = csv_rows(client.get(reverse("crm:customer_export"), {"q": "alpha", "sort": "-name"}))
    assert [row[1] for row in rows[1:]] == ["Beta Alpha", "Alpha One"]


def test_formula_values_are_escaped_in_csv_and_xlsx(client, rep):
    make_customer(rep, name='=HYPERLINK("http://evil.example","Click")', phone="+49 30 1234567", city="@home")
    rows = csv_rows(client.get(reverse("crm:customer_export")))
    assert rows[1][1] == '\'=HYPERLINK("http://evil.example","Click")'
    assert rows[1][4] == "'+49 30 1234567" and rows[1][6] == "'@home"
    rows = xlsx_rows(client.get(reverse("crm:customer_export"), {"format": "xlsx"}))
    assert rows[1][1] == '\'=HYPERLINK("http://evil.example","Click")'
    assert rows[1][4] == "'+49 30 1234567"


def test_chinese_text_survives_csv_and_xlsx(client, rep):
    make_customer(rep, name="上海星光贸易有限公司", city="上海")
    assert csv_rows(client.get(reverse("crm:customer_export")))[1][1] == "上海星光贸易有限公司"
    assert (
        xlsx_rows(client.get(reverse("crm:customer_export"), {"format": "xlsx"}))[1][1]
        == "上海星光贸易有限公司"
    )


def test_deal_xlsx_has_native_numbers_and_dates_and_the_filters(client, rep):
    customer = make_customer(rep, name="Acme")
    make_deal(customer, title="Open one", amount=Decimal("1250.50"))
    make_closed_deal(customer, title="Won one", amount=Decimal("9000"))
    make_deal(make_customer(make_user()), title="Secret deal")
    response = client.get(reverse("crm:deal_export"), {"status": "won", "format": "xlsx"})
    assert response["Content-Disposition"].startswith('attachment; filename="deals-')
    rows = xlsx_rows(response)
    assert rows[0][:5] == ["ID", "Title", "Customer", "Customer e-mail", "Amount"]
    assert [row[1] for row in rows[1:]] == ["Won one"]
    assert rows[1][4] == 9000 and isinstance(rows[1][12], datetime)
    everything = csv_rows(client.get(reverse("crm:deal_export"), {"q": "one"}))
    assert sorted(row[1] for row in everything[1:]) == ["Open one", "Won one"]
    assert "1250.50" in [row[4] for row in everything[1:]]


def test_ticket_export_follows_the_queue_and_access_rules(client, no_auto_assign):
    agent = make_agent()
    mine = make_ticket(make_customer(), subject="Assigned to me", assignee=agent)
    make_ticket(make_customer(), subject="Unassigned one")
    make_ticket(make_customer(), subject="Someone else's", assignee=make_agent())
    client.force_login(agent)
    rows = csv_rows(client.get(reverse("crm:ticket_export"), {"queue": "mine"}))
    assert [row[1] for row in rows[1:]] == [mine.subject]
    rows = csv_rows(client.get(reverse("crm:ticket_export"), {"queue": "all"}))
    assert sorted(row[1] for row in rows[1:]) == ["Assigned to me", "Unassigned one"]
    assert client.get(reverse("crm:deal_export")).status_code == 404


def test_activity_export_of_one_customer_or_all_visible(client, rep):
    customer = make_customer(rep, name="Acme")
    make_task(customer, subject="Call Acme back")
    make_task(make_customer(rep), subject="Other task")
    hidden = make_customer(make_user())
    make_task(hidden, subject="Secret task")
    rows = csv_rows(client.get(reverse("crm:activity_export"), {"customer": customer.pk}))
    assert [row[2] for row in rows[1:]] == ["Call Acme back"]
    rows = csv_rows(client.get(reverse("crm:activity_export")))
    assert sorted(row[2] for row in rows[1:]) == ["Call Acme back", "Other task"]
    assert client.get(reverse("crm:activity_export"), {"customer": hidden.pk}).status_code == 404
    assert client.get(reverse("crm:activity_export"), {"customer": "x"}).status_code == 404


def test_a_manager_exports_everything(client):
    make_customer(make_user(), name="Anyone's")
    client.force_login(make_manager())
    rows = csv_rows(client.get(reverse("crm:customer_export")))
    assert "Anyone's" in [row[1] for row in rows[1:]]


def test_exports_read_rows_in_one_query_with_related_rows(rep):
    customer = make_customer(rep)
    for _ in range(5):
        make_deal(customer)
    with CaptureQueriesContext(connection) as queries:
        rows = list(exports.export_rows("deals", Deal.objects.all()))
    assert len(rows) == 6
    assert len(queries) == 2  # the custom fields' definitions once, then every row with its related rows


def test_exports_need_a_signed_in_user(client):
    response = client.get(reverse("crm:customer_export"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_list_pages_link_to_exports_with_their_filters(client, rep):
    make_customer(rep, name="Lead One", status=Customer.Status.LEAD)
    make_deal(make_customer(rep))
    page = client.get(reverse("crm:customer_list"), {"status": "lead", "q": "Lead"}).content.decode()
    assert f"{reverse('crm:customer_export')}?status=lead&amp;q=Lead&format=xlsx" in page
    page = client.get(
        reverse("crm:deal_list"), {"status": "open"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert f"{reverse('crm:deal_export')}?status=open&format=csv" in page
    page = client.get(reverse("crm:ticket_list"), {"queue": "all"}).content.decode()
    assert reverse("crm:ticket_export") in page or "The queue is empty" in page

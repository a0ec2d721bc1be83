"""The causes of server errors a hostile sweep found (issue: "Eight causes of 500s"), one test each.

Each request here answered 500 before; each now gets a clear answer and stores nothing it cannot.
"""

from urllib.parse import quote

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from accounts.models import StaffFeedback
from crm.data import imports
from crm.data.imports import RowError, cells
from crm.models import ImportJob
from metrics.kpis import registry
from tests.crm.test_imports import run
from tests.factories import make_customer, make_import_job, make_invitation, make_manager, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager_client(client):
    client.force_login(make_manager())
    return client


@pytest.mark.parametrize(
    "page", ["crm:deal_list", "https://evil.example/", "//evil.example/x", "/\x07x", "ÿ"]
)
def test_feedback_goes_back_only_to_a_page_of_this_site(client, page):
    client.force_login(make_user())
    response = client.post(reverse("accounts:feedback"), {"rating": "4", "page": page})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert StaffFeedback.objects.count() == 1


def test_feedback_with_a_nul_in_its_page_is_refused_by_the_form(client):
    client.force_login(make_user())
    response = client.post(reverse("accounts:feedback"), {"rating": "4", "page": "/a\x00b"})
    assert response.status_code == 200
    assert not StaffFeedback.objects.exists()


def test_feedback_returns_to_the_page_it_was_sent_from(client):
    client.force_login(make_user())
    response = client.post(reverse("accounts:feedback"), {"rating": "4", "page": "/crm/deals/?page=2"})
    assert response["Location"] == "/crm/deals/?page=2"


def _metrics_pages() -> list[str]:
    code = next(iter(registry()))
    return [
        reverse("metrics:dashboard"),
        reverse("metrics:kpi_detail", args=[code]),
        reverse("metrics:kpi_export", args=[code]),
        reverse("metrics:kpi_export", args=[code]) + "?what=breakdown&format=xlsx&",
        reverse("metrics:adoption"),
        reverse("metrics:segments"),
        reverse("metrics:data_quality"),
    ]


@pytest.mark.parametrize("url", _metrics_pages())
@pytest.mark.parametrize(
    "query",
    [
        "period=0001-01-01",
        "period=0001-01-01&granularity=week",
        "period=0001-01-03&granularity=week&count=36",
        "period=0001-12-31&granularity=year&count=36",
        "period=9999-12-31&granularity=quarter",
        "period=1990-01-01&granularity=year&count=36",
    ],
)
def test_periods_near_year_0_or_9999_fall_back_to_the_default_period(manager_client, url, query):
    joined = url + ("&" if "?" in url else "?") + query
    response = manager_client.get(joined)
    assert response.status_code == 200


def test_an_invalid_period_keeps_the_other_filters(manager_client):
    response = manager_client.get(
        reverse("metrics:dashboard"), {"period": "0001-01-01", "granularity": "week"}
    )
    assert response.context["filters"].granularity == "week"


@pytest.mark.parametrize(
    "since", ["0001-01-01", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59", "x", "", "2026-13-01"]
)
def test_recompute_status_with_a_time_out_of_range_answers(manager_client, since):
    response = manager_client.get(reverse("metrics:recompute_status"), {"since": since})
    assert response.status_code == 200


@pytest.mark.parametrize("field", ["email", "name", "phone", "exclude"])
@pytest.mark.parametrize("value", ["a\x00b", "x" * 10_000, "²", "-1", "99999999999999999999999"])
def test_duplicate_check_with_hostile_input_finds_nothing(client, field, value):
    rep = make_user()
    make_customer(rep, name="Acme GmbH", email="a@acme.example")
    client.force_login(rep)
    response = client.get(reverse("crm:customer_duplicates"), {"name": "Acme GmbH", field: value})
    assert response.status_code == 200


@pytest.mark.parametrize("value", ["NaN", "nan", "sNaN", "Infinity", "-Inf", "1e999999"])
def test_a_probability_of_nan_or_infinity_is_a_row_error(value):
    with pytest.raises(RowError, match="not a percentage from 0 to 100"):
        cells._percent(value, None)


def test_a_deals_import_with_probability_nan_reports_the_row():
    manager = make_manager()
    make_customer(manager, email="info@acme.example")
    content = "Title,Customer,Probability\nA,info@acme.example,NaN\nB,info@acme.example,40\n"
    job = run(make_import_job(manager, content, kind="deals"), all_or_nothing=False)
    assert (job.created_count, job.failed_count) == (1, 1)
    assert "not a percentage" in " ".join(job.report[0]["messages"])


@pytest.mark.parametrize("value", ["²", "١٢", "１２"])
def test_digits_that_are_not_ascii_are_not_record_numbers(client, value):
    """``"²".isdigit()`` is true but ``int("²")`` fails: ids and scores accept ASCII digits only."""
    rep = make_user()
    customer = make_customer(rep)
    client.force_login(rep)
    assert client.get(reverse("crm:activity_export"), {"customer": value}).status_code == 404
    response = client.post(
        reverse("crm:activity_create"), {"customer": value, "kind": "call", "subject": "x"}
    )
    assert response.status_code == 404
    invitation = make_invitation(customer=customer)
    assert (
        client.get(reverse("surveys_public:answer", args=[invitation.token]), {"score": value}).status_code
        == 200
    )
    with pytest.raises(RowError):
        cells._id(value, None)


@pytest.mark.parametrize("charset", ["utf-7", "unicode_escape", "raw_unicode_escape", "utf-16"])
def test_a_query_string_in_another_charset_is_read_as_utf8(client, charset):
    """A charset declared in a request's Content-Type decoded its query string with any codec Python knows:
    ``+2AA-`` in UTF-7 and ``\\ud800`` in unicode_escape are lone surrogates, which the database driver
    cannot encode (Django 6 already refuses such form bodies with a 400; query strings it decodes)."""
    rep = make_user()
    make_customer(rep, name="Acme GmbH")
    client.force_login(rep)
    for q in ("+2AA-", "\\ud800", "\\u0000"):
        response = client.get(
            reverse("crm:customer_list"), {"q": q}, CONTENT_TYPE=f"text/plain; charset={charset}"
        )
        assert response.status_code == 200
        assert response.wsgi_request.GET["q"] == q


def test_a_utf16_csv_with_a_lone_surrogate_gets_a_clear_message():
    manager = make_manager()
    data = "\ufeffname\nAcme\n".encode("utf-16-le") + b"\x00\xd8\n\x00"
    with pytest.raises(ValidationError, match="damaged further on"):
        imports.import_job_create(actor=manager, kind="customers", file_name="u16.csv", data=data)
    assert not ImportJob.objects.exists()


def test_json_fields_store_nul_and_lone_surrogates_as_storable_text():
    manager = make_manager()
    job = make_import_job(manager, "name\nAcme\n")
    ImportJob.objects.filter(pk=job.pk).update(
        report=[{"row": 2, "messages": ["a\x00b", "\ud800", "\\u0000"]}]
    )
    job.refresh_from_db()
    assert job.report == [{"row": 2, "messages": ["ab", "\ufffd", "\\u0000"]}]


def test_a_nul_in_a_path_is_a_404_not_a_500(client):
    client.force_login(make_user())
    assert client.get("/crm/customers/" + quote("1\x00") + "/").status_code == 404

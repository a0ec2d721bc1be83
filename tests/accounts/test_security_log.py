"""The security log: sign-ins, failures, refused access, exports, merges; the managers' page; no secrets."""

import pytest
from django.contrib import admin
from django.http import HttpRequest
from django.test import RequestFactory
from django.urls import reverse

from accounts.models import SecurityEvent
from accounts.security import safe_path, security_log
from tests.factories import make_admin, make_customer, make_duplicate_pair, make_manager, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def events(kind: str):
    return SecurityEvent.objects.filter(kind=kind)


def test_sign_in_and_failed_sign_in_are_logged_without_the_password(client):
    user = make_user()
    client.post(reverse("accounts:login"), {"username": user.username, "password": "hunter2-secret"})
    [failed] = events("sign_in_failed")
    assert failed.username == user.username and failed.user is None
    assert failed.ip == "127.0.0.1" and failed.path == "/accounts/login/"
    client.post(reverse("accounts:login"), {"username": user.username, "password": PASSWORD})
    [signed_in] = events("sign_in")
    assert signed_in.user == user
    stored = str(list(SecurityEvent.objects.values()))
    assert "hunter2-secret" not in stored and PASSWORD not in stored


def test_security_log_drops_secret_keys_query_strings_and_survey_tokens():
    request = RequestFactory().get("/s/abcdefSECRETTOKEN/?token=xyz", REMOTE_ADDR="192.0.2.7")
    event = security_log(kind="access_refused", request=request, password="p", token="t", status=404)
    assert event.path == "/s/…/" and event.detail == {"status": 404} and event.ip == "192.0.2.7"
    assert safe_path("/s/unsubscribe/SECRETTOKEN/") == "/s/…/"
    assert safe_path("/crm/customers/5/?q=x") == "/crm/customers/5/"
    assert security_log(kind="export", request=HttpRequest()).ip is None


def test_forbidden_records_are_logged_as_refused_access(client):
    rep, other = make_user(), make_user()
    customer = make_customer(other)
    client.force_login(rep)
    assert client.get(reverse("crm:customer_detail", args=[customer.pk]) + "?q=secret").status_code == 404
    [event] = events("access_refused")
    assert event.user == rep and event.path == f"/crm/customers/{customer.pk}/"
    assert event.detail == {"status": 404, "method": "GET"}
    # Anonymous visitors and pages outside the record URLs are not logged.
    client.get("/no-such-page/")
    client.logout()
    client.get(reverse("crm:customer_detail", args=[customer.pk]))
    assert events("access_refused").count() == 1


def test_exports_and_merges_are_logged(client):
    manager = make_manager()
    client.force_login(manager)
    query = {"format": "csv", "status": "active", "q": "li@swiftline.example"}
    assert client.get(reverse("crm:customer_export"), query).status_code == 200
    [export] = events("export")
    assert export.user == manager and export.detail["what"] == "customers"
    # Which filters, never their values (the README promises no query strings in the log).
    assert export.detail["filtered_by"] == ["q", "status"]
    assert "swiftline" not in str(export.detail) and "?" not in export.path
    a, b = make_customer(name="Twin A"), make_customer(name="Twin B")
    candidate = make_duplicate_pair(a, b)
    form = {"survivor": a.pk, "name": a.pk, "email": a.pk}
    client.post(reverse("crm:duplicate_detail", args=[candidate.pk]), form)
    [merge] = events("merge")
    assert merge.detail == {"survivor": a.pk, "merged": b.pk}


def test_kpi_export_is_logged(client):
    client.force_login(make_manager())
    response = client.get(reverse("metrics:kpi_export", args=["win_rate"]))
    assert response.status_code == 200
    assert events("export").get().detail["what"] == "kpi:win_rate"


@pytest.mark.parametrize("make", [make_user, lambda: make_user(role="agent")])
def test_security_page_is_a_404_for_reps_and_agents(client, make):
    client.force_login(make())
    assert client.get(reverse("accounts:security_events")).status_code == 404


def test_security_page_lists_filters_and_paginates(client):
    manager, rep = make_manager(), make_user()
    for n in range(30):
        security_log(kind="export", user=rep, what=f"run{n}")
    security_log(kind="sign_in_failed", username="mallory")
    client.force_login(manager)
    page = client.get(reverse("accounts:security_events"))
    assert page.status_code == 200 and b"mallory" in page.content and b"Page 1 of 2" in page.content
    fragment = client.get(
        reverse("accounts:security_events"),
        {"kind": "export", "user": rep.pk},
        headers={"HX-Request": "true"},
    )
    assert b"<html" not in fragment.content and b"mallory" not in fragment.content
    assert b"run29" in fragment.content and b"run0<" not in fragment.content
    second = client.get(reverse("accounts:security_events"), {"kind": "export", "page": 2})
    assert b"run0" in second.content


def test_security_page_for_admins_and_read_only_admin(client):
    admin_user = make_admin()
    client.force_login(admin_user)
    assert client.get(reverse("accounts:security_events")).status_code == 200
    model_admin = admin.site._registry[SecurityEvent]
    request = RequestFactory().get("/")
    request.user = admin_user
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


@pytest.mark.parametrize("path", ["/crm/customers/export/", "/crm/deals/a\x00b/", "/metrics/%ED%A0%80/"])
def test_nul_and_lone_surrogates_in_a_path_or_query_are_logged_storably(client, path):
    """NUL went into the log's path and JSON detail and failed the request (215 of the sweep's 500s)."""
    client.force_login(make_user())
    response = client.get(path, {"q": "a\x00b", "status": "\x00"})
    assert response.status_code in (200, 404)
    event = SecurityEvent.objects.filter(kind__in=["export", "access_refused"]).latest("at")
    assert "\x00" not in event.path and "\x00" not in str(event.detail)


def test_a_nul_query_value_in_a_detail_is_stored_without_it():
    event = security_log(
        kind="export", username="bad\x00name\ud800", what="a\x00b", nested={"k\x00": ["\ud800"]}
    )
    event.refresh_from_db()
    assert event.username == "badname\ufffd"
    assert event.detail == {"what": "ab", "nested": {"k": ["\ufffd"]}}

"""The admin checks its URL arguments and query strings before Django's admin and django-simple-history
read them: each case below answered 500 in the hostile sweep."""

import pytest

from accounts.models import User
from accounts.services import two_factor
from tests.factories import make_admin

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = make_admin()
    User.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
    client.force_login(user)
    session = client.session
    session[two_factor.SESSION_KEY] = two_factor.VERIFIED
    session.save()
    return client


@pytest.mark.parametrize(
    "url",
    [
        "/admin/crm/customer/{huge}/change/",
        "/admin/crm/customer/{huge}/history/",
        "/admin/crm/customer/1/history/{huge}/",
        "/admin/crm/ticket/x%00/delete/",
        "/admin/crm/deal/²/change/",
    ],
)
def test_admin_row_urls_with_ids_that_are_not_numbers_are_404(admin_client, url):
    url = url.format(huge="9" * 10_000)
    assert admin_client.get(url).status_code == 404
    assert admin_client.post(url, {"x": "1"}).status_code == 404


def test_admin_ignores_an_empty_to_field(admin_client):
    from crm.models import CustomerStatusChange
    from tests.factories import make_customer

    change = CustomerStatusChange.objects.filter(customer=make_customer()).first()
    assert (
        admin_client.get(f"/admin/crm/customerstatuschange/{change.pk}/delete/?_to_field=").status_code == 200
    )


@pytest.mark.parametrize(
    "query",
    [
        "attempt_time__year=9223372036854775808",
        "attempt_time__year=2026&attempt_time__month=99999999999999999999",
    ],
)
def test_admin_date_drilldown_with_a_huge_number_is_an_incorrect_filter(admin_client, query):
    response = admin_client.get(f"/admin/axes/accesslog/?{query}")
    assert response.status_code == 302
    assert response.url == "/admin/axes/accesslog/?e=1"
    assert admin_client.get(response.url).status_code == 200


def test_admin_filter_with_a_nul_is_an_incorrect_filter(admin_client):
    response = admin_client.get("/admin/metrics/kpitarget/?scope__exact=a%00b")
    assert response.status_code == 302 and response.url.endswith("?e=1")


def test_every_model_in_the_admin_has_an_integer_key():
    """The admin's guard refuses ids that are not numbers: it relies on this."""
    from django.contrib import admin
    from django.db import models

    for model in admin.site._registry:
        assert isinstance(model._meta.pk, models.AutoField | models.BigAutoField | models.IntegerField), model


@pytest.mark.parametrize(
    "query", ["at__year=9999", "at__year=0", "at__year=2026&at__month=13", "at__year=2026&at__day=0"]
)
def test_admin_date_drilldown_outside_the_calendar_is_an_incorrect_filter(admin_client, query):
    response = admin_client.get(f"/admin/accounts/loginevent/?{query}")
    assert response.status_code == 302 and response.url.endswith("?e=1")


def test_admin_date_drilldown_inside_the_calendar_works(admin_client):
    assert (
        admin_client.get("/admin/accounts/loginevent/?at__year=2026&at__month=2&at__day=28").status_code
        == 200
    )


def test_a_huge_inline_form_count_builds_a_bounded_formset(admin_client):
    """TOTAL_FORMS = 2^63 made Django build its default maximum of 2 000 stage forms (5 s of CPU)."""
    from crm.models import Pipeline

    pipeline = Pipeline.objects.get(is_default=True)
    page = admin_client.get(f"/admin/crm/pipeline/{pipeline.pk}/change/")
    formset = page.context["inline_admin_formsets"][0].formset
    data = {"name": pipeline.name, "is_default": "on"}
    data.update({f"stages-{key}": value for key, value in formset.management_form.initial.items()})
    data["stages-TOTAL_FORMS"] = str(2**63)
    response = admin_client.post(f"/admin/crm/pipeline/{pipeline.pk}/change/", data)
    assert response.status_code == 200
    assert len(response.context["inline_admin_formsets"][0].formset.forms) <= 30


def test_company_settings_are_one_row_that_cannot_be_added_again_or_deleted(admin_client):
    from crm.models import CompanySettings

    settings_row = CompanySettings.load()
    assert admin_client.get("/admin/crm/companysettings/add/").status_code == 403
    response = admin_client.post("/admin/crm/companysettings/add/", {"company_name": "Again"})
    assert response.status_code == 403
    assert admin_client.get(f"/admin/crm/companysettings/{settings_row.pk}/delete/").status_code == 403
    assert admin_client.get(f"/admin/crm/companysettings/{settings_row.pk}/change/").status_code == 200


@pytest.mark.parametrize("model", ["importjob", "customermerge"])
def test_records_made_by_services_are_read_only_in_the_admin(admin_client, model):
    """Their JSON is not for hand edits (a 10 000-digit number in it failed the admin's JSON field)."""
    assert admin_client.get(f"/admin/crm/{model}/add/").status_code == 403
    response = admin_client.post(f"/admin/crm/{model}/add/", {"headers": "9" * 10_000})
    assert response.status_code == 403


@pytest.mark.parametrize("page", ["config", "qrcode"])
def test_a_two_factor_device_that_does_not_exist_is_404_in_the_admin(admin_client, page):
    """django-otp's admin pages look the device up with .get(): a 500 in the sweep."""
    assert admin_client.get(f"/admin/otp_totp/totpdevice/999999/{page}/").status_code == 404

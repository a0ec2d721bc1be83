"""The admin checks its URL arguments and query strings before Django's admin and django-simple-history
read them: each case below answered 500 in the hostile sweep."""

import pytest

from accounts import totp
from accounts.models import User
from tests.factories import make_admin

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = make_admin()
    User.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
    client.force_login(user)
    session = client.session
    session[totp.SESSION_KEY] = totp.VERIFIED
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

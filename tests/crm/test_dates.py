"""Every way a date comes in keeps it between 1990 and 2100, and a stored one outside breaks no page."""

import inspect
from datetime import UTC, date, datetime

import pytest
from django import forms as django_forms
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import DataError, connection, models
from django.urls import reverse
from django.utils import timezone

from accounts import dates
from accounts.models import User
from crm import data_forms, services
from crm import forms as crm_forms
from crm.models import Activity
from crm.services import stored_dates_repair
from metrics import forms as metrics_forms
from surveys import forms as survey_forms
from tests.factories import make_admin, make_customer, make_deal, make_manager, make_task, make_user

pytestmark = pytest.mark.django_db

OUR_APPS = ("accounts", "crm", "metrics", "surveys")


def test_a_task_due_in_year_1_is_refused_with_a_field_message(client, settings):
    """The sweep's case: typed in a zone ahead of UTC, it used to be stored before year 1."""
    settings.TIME_ZONE = "Asia/Shanghai"
    customer = make_customer()
    client.force_login(customer.owner)
    response = client.post(
        reverse("crm:activity_create"),
        {"customer": customer.pk, "kind": "task", "subject": "Call back", "due_at": "0001-01-01T00:30"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert "Enter a date between 1990 and 2100." in response.text
    assert not Activity.objects.filter(customer=customer).exists()
    assert client.get(reverse("crm:workspace")).status_code == 200


@pytest.mark.parametrize("value", ["0001-01-01", "1989-12-31", "2101-01-01", "9999-12-31"])
def test_deal_expected_close_date_outside_the_range_is_refused(client, value):
    customer = make_customer()
    client.force_login(customer.owner)
    data = {"customer": customer.pk, "title": "Big one", "kind": "new", "source": "other", "stage": ""}
    data["expected_close_date"] = value
    response = client.post(reverse("crm:deal_create"), data, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "Enter a date between 1990 and 2100." in response.text


def test_the_range_ends_are_accepted():
    assert dates.in_range(date(1990, 1, 1)) and dates.in_range(date(2100, 12, 31))
    assert not dates.in_range(date(1989, 12, 31)) and not dates.in_range(date(2101, 1, 1))
    # A datetime by its own calendar day: no conversion that would overflow.
    assert not dates.in_range(datetime(1, 1, 1, 0, 30, tzinfo=timezone.get_fixed_timezone(480)))


def test_services_refuse_out_of_range_dates_whoever_calls_them():
    customer = make_customer()
    with pytest.raises(ValidationError) as caught:
        year_1 = datetime(1, 1, 1, tzinfo=UTC)
        owner = customer.owner
        services.activity_log(actor=owner, customer=customer, kind="task", subject="x", due_at=year_1)
    assert "due_at" in caught.value.error_dict


def test_the_target_form_refuses_year_0_and_9999():
    for value in ("0001-01-01", "9999-12-31"):
        form = metrics_forms.TargetForm(
            {"value": "1", "granularity": "month", "period": value, "scope": "company"}, scopes=("company",)
        )
        assert not form.is_valid()
        assert form.errors["period"] == ["Enter a date between 1990 and 2100."]


def test_admin_forms_refuse_out_of_range_dates(client):
    admin = make_admin()
    User.objects.filter(pk=admin.pk).update(is_staff=True, is_superuser=True)
    client.force_login(admin)
    task = make_task()
    url = reverse("admin:crm_activity_change", args=[task.pk])
    page = client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and not isinstance(v, datetime)}
    data.update({"customer": task.customer_id, "user": task.user_id})
    data.update({"due_at_0": "0001-01-01", "due_at_1": "00:30"})
    data.update({"created_at_0": "2026-01-01", "created_at_1": "10:00"})
    response = client.post(url, data)
    assert response.status_code == 200
    assert "Enter a date between 1990 and 2100." in response.text
    task.refresh_from_db()
    assert task.due_at.year > 2000


def test_every_date_field_of_our_models_has_the_range():
    unbounded = [
        f"{model._meta.label}.{field.name}"
        for model in apps.get_models()
        if model._meta.app_label in OUR_APPS
        for field in model._meta.concrete_fields
        if isinstance(field, models.DateField)
        and dates.validate_date_in_range not in field.validators
        and field.name != "history_date"  # the audit trail's own time stamp, always set to now
    ]
    assert unbounded == []


def test_every_date_field_of_our_forms_has_the_range():
    unbounded = []
    for module in (crm_forms, data_forms, metrics_forms, survey_forms):
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if not issubclass(cls, django_forms.BaseForm):
                continue
            for field_name, field in cls.base_fields.items():
                if isinstance(field, django_forms.DateField | django_forms.DateTimeField) and (
                    dates.validate_date_in_range not in field.validators
                ):
                    unbounded.append(f"{module.__name__}.{name}.{field_name}")
    assert unbounded == []


def _store(table: str, column: str, pk: int, value: str, kind: str = "timestamptz") -> None:
    """Write ``value`` straight into the database, as the old code let it through."""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {column} = %s::{kind} WHERE id = %s", [value, pk])  # noqa: S608


def test_the_migration_brings_stored_dates_into_range_and_reports_each(client, capsys):
    rep = make_user()
    task = make_task(make_customer(rep))
    deal = make_deal(task.customer)
    _store("crm_activity", "due_at", task.pk, "0001-01-01 00:30+08")
    _store("crm_activity", "created_at", task.pk, "9999-12-31 10:00+00")
    _store("crm_deal", "expected_close_date", deal.pk, "0002-06-01", "date")

    with connection.schema_editor() as editor:
        report = stored_dates_repair(apps=apps, using=editor.connection)

    task.refresh_from_db()
    deal.refresh_from_db()
    assert task.due_at is None
    assert task.created_at == datetime(2100, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert deal.expected_close_date is None
    assert f"crm_activity.due_at id {task.pk}: 0001-12-31 16:30:00+00 BC cleared" in report
    assert f"crm_deal.expected_close_date id {deal.pk}: 0002-06-01 cleared" in report
    assert "brought into range" in capsys.readouterr().out
    # Run again: nothing left to change.
    with connection.schema_editor() as editor:
        assert stored_dates_repair(apps=apps, using=editor.connection) == []


def test_pages_and_exports_that_showed_such_a_date_work_after_the_migration(client):
    rep = make_user()
    customer = make_customer(rep)
    task = make_task(customer)
    _store("crm_activity", "due_at", task.pk, "0001-01-01 00:30+08")
    client.force_login(rep)
    with pytest.raises(DataError, match="before year 1"):  # what every page showing it answered: a 500
        client.get(customer.get_absolute_url())
    with connection.schema_editor() as editor:
        stored_dates_repair(apps=apps, using=editor.connection)
    assert client.get(reverse("crm:workspace")).status_code == 200
    assert client.get(customer.get_absolute_url()).status_code == 200
    assert client.get(reverse("crm:activity_export")).status_code == 200
    client.force_login(make_manager())
    assert client.get(reverse("crm:activity_export") + "?format=xlsx").status_code == 200
    assert client.get(reverse("crm:customer_personal_data", args=[customer.pk])).status_code == 200

"""A write that PostgreSQL aborts as a deadlock victim or serialization failure is retried once, then told
to the user; nothing half-done stays behind. The failures are real ones, raised by PostgreSQL itself from a
trigger that fails the first N stage-change inserts."""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection
from django.urls import reverse

from crm import services
from crm.models import Customer, Deal, DealStageChange, PipelineStage
from crm.transactions import WriteConflict
from tests.conftest import seed_defaults
from tests.factories import make_customer, make_deal, make_manager, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def stage_change_inserts_fail(times: int, sqlstate: str) -> Iterator[None]:
    """The next ``times`` inserts into crm_dealstagechange fail with ``sqlstate`` (a sequence counts them:
    sequences are not rolled back with the failed transaction)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE SEQUENCE test_conflict_seq")
        cursor.execute(
            f"""
            CREATE FUNCTION test_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('test_conflict_seq') <= {int(times)} THEN
                    RAISE EXCEPTION 'test conflict' USING ERRCODE = '{sqlstate}';
                END IF;
                RETURN NEW;
            END $$
            """
        )
        cursor.execute(
            "CREATE TRIGGER test_conflict BEFORE INSERT ON crm_dealstagechange "
            "FOR EACH ROW EXECUTE FUNCTION test_conflict()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER test_conflict ON crm_dealstagechange")
            cursor.execute("DROP FUNCTION test_conflict()")
            cursor.execute("DROP SEQUENCE test_conflict_seq")


@pytest.fixture
def deal_and_stages():
    seed_defaults()  # an earlier transactional test may have emptied the tables
    deal = make_deal(make_customer(make_user()))
    target = PipelineStage.objects.filter(kind="open").exclude(pk=deal.stage_id).order_by("order").first()
    return deal, target


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
def test_one_conflict_is_retried_and_the_move_lands_once(deal_and_stages, sqlstate):
    deal, target = deal_and_stages
    with stage_change_inserts_fail(1, sqlstate):
        moved = services.deal_move_stage(deal=deal, stage=target, actor=deal.owner, version=deal.version)
    assert moved.stage_id == target.pk
    deal.refresh_from_db()
    assert (deal.stage_id, deal.version) == (target.pk, 2)
    assert DealStageChange.objects.filter(deal=deal).count() == 2  # created, moved: once


def test_two_conflicts_in_a_row_are_a_form_error_and_nothing_is_saved(deal_and_stages):
    deal, target = deal_and_stages
    with stage_change_inserts_fail(2, "40P01"), pytest.raises(WriteConflict):
        services.deal_move_stage(deal=deal, stage=target, actor=deal.owner, version=deal.version)
    deal.refresh_from_db()
    assert (deal.stage_id, deal.version) != (target.pk, 2)
    assert deal.version == 1
    assert DealStageChange.objects.filter(deal=deal).count() == 1


def test_the_board_tells_the_user_when_the_retry_fails_too(client, deal_and_stages):
    deal, target = deal_and_stages
    client.force_login(deal.owner)
    url = reverse("crm:deal_move", args=[deal.pk])
    with stage_change_inserts_fail(2, "40P01"):
        data = {"stage": target.pk, "version": deal.version, "from": "board"}
        response = client.post(url, data, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "Nothing was saved: please try again." in response.text
    assert Deal.objects.get(pk=deal.pk).stage_id == deal.stage_id


def test_other_database_errors_are_not_retried(deal_and_stages):
    deal, target = deal_and_stages
    query_canceled = "57014"
    with stage_change_inserts_fail(1, query_canceled), pytest.raises(Exception, match="test conflict"):
        services.deal_move_stage(deal=deal, stage=target, actor=deal.owner, version=deal.version)
    assert DealStageChange.objects.filter(deal=deal).count() == 1


def test_inside_an_outer_transaction_the_conflict_goes_to_the_outer_caller(deal_and_stages):
    """Only the outermost transaction can be run again; a nested service leaves that to its caller."""
    from django.db import OperationalError, transaction

    deal, target = deal_and_stages
    with stage_change_inserts_fail(1, "40P01"), pytest.raises(OperationalError), transaction.atomic():
        services.deal_move_stage(deal=deal, stage=target, actor=deal.owner, version=deal.version)


def test_two_people_editing_one_customer_the_second_sees_what_changed(client):
    seed_defaults()
    manager = make_manager(first_name="Mia")
    customer = make_customer(city="Berlin")
    form = {
        "name": customer.name,
        "kind": "company",
        "source": "other",
        "language": "en",
        "version": customer.version,
    }
    services.customer_update(
        customer=customer, actor=manager, data={"city": "Köln"}, version=customer.version
    )
    client.force_login(customer.owner)
    response = client.post(reverse("crm:customer_update", args=[customer.pk]), {**form, "city": "Bonn"})
    assert response.status_code == 200
    assert (
        "Someone else saved this customer" in response.text
        and "Köln" in response.text
        and "Mia" in response.text
    )
    assert Customer.objects.get(pk=customer.pk).city == "Köln"
    again = client.post(
        reverse("crm:customer_update", args=[customer.pk]),
        {**form, "city": "Bonn", "version": customer.version},
    )
    assert again.status_code == 302 and Customer.objects.get(pk=customer.pk).city == "Bonn"


def test_a_status_change_from_a_stale_copy_keeps_the_other_users_changes():
    seed_defaults()
    customer = make_customer(name="Alt GmbH")
    stale = Customer.objects.get(pk=customer.pk)
    services.customer_update(customer=customer, actor=make_manager(), data={"name": "Neu GmbH"}, version=1)
    services.customer_set_status(customer=stale, status=Customer.Status.CHURNED, actor=None, reason="Price")
    stored = Customer.objects.get(pk=customer.pk)
    assert (stored.name, stored.status, stored.version) == ("Neu GmbH", Customer.Status.CHURNED, 3)

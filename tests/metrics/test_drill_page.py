"""A drill-down page: found unsorted, sorted like the records' own order (NULLs as PostgreSQL puts them),
read by id; beyond the cap SQL sorts their ids."""

from datetime import timedelta

import pytest
from django.utils import timezone

from crm.models import Deal
from metrics.selectors import drill_page
from tests.factories import make_customer, make_deal, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def deals():
    customer = make_customer(make_user())
    today = timezone.localdate()
    made = [make_deal(customer, title=f"Deal {i}") for i in range(7)]
    due = [
        today + timedelta(days=3),
        None,
        today + timedelta(days=1),
        None,
        today + timedelta(days=3),
        today,
        None,
    ]
    for deal, day in zip(made, due, strict=True):
        Deal.objects.filter(pk=deal.pk).update(expected_close_date=day)
    return Deal.objects.select_related("customer")


@pytest.mark.parametrize(
    "ordering", [("-expected_close_date", "id"), ("expected_close_date", "-id"), ("-created_at", "-id")]
)
def test_pages_follow_the_records_order_with_nulls_where_postgresql_puts_them(deals, ordering):
    records = deals.order_by(*ordering)
    expected = list(records.values_list("pk", flat=True))
    pages = [drill_page(records=records, number=number, per_page=3, cap=100) for number in (1, 2, 3)]
    assert [d.pk for page in pages for d in page.object_list] == expected
    assert pages[0].paginator.count == 7 and not pages[0].paginator.is_capped
    assert pages[0].object_list[0].customer.name  # the records' own select_related survives


def test_a_page_costs_two_queries_and_an_empty_drill_none(deals, django_assert_num_queries):
    with django_assert_num_queries(2):
        page = drill_page(records=deals.order_by("-created_at"), number=1, per_page=3, cap=100)
        assert len(page.object_list) == 3
    with django_assert_num_queries(1):
        assert (
            list(drill_page(records=deals.filter(title="nobody"), number=1, per_page=3, cap=100).object_list)
            == []
        )


def test_beyond_the_cap_sql_sorts_the_ids_and_the_page_reads_its_rows_by_id(deals, django_assert_num_queries):
    records = deals.order_by("-expected_close_date", "id")
    expected = list(records.values_list("pk", flat=True))[3:6]
    with django_assert_num_queries(4):  # found (over the cap), the ids of the page, their count, the rows
        page = drill_page(records=records, number=2, per_page=3, cap=5)
        assert [d.pk for d in page.object_list] == expected
        assert page.paginator.count == 7
        assert page.object_list[0].customer.name  # the records' own select_related survives

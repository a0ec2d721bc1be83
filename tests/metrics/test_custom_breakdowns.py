"""KPI breakdowns by a custom choice field: live from the records, per option, within a rep's scope."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from crm.custom_fields.services import field_create
from metrics import dashboard, pages
from metrics.kpis import get_kpi
from metrics.kpis.custom import EMPTY, breakdown_fields, source_of
from metrics.kpis.dimensions import custom_dimensions
from metrics.periods import period_of
from metrics.services import bump_generation
from tests.factories import make_closed_deal, make_customer, make_manager, make_user

pytestmark = pytest.mark.django_db
LINES = [{"key": "hw", "en": "Hardware", "zh": "硬件"}, {"key": "sw", "en": "Software", "zh": "软件"}]


@pytest.fixture
def boss(db):
    return make_manager(username="boss")


@pytest.fixture
def product_line(boss):
    return field_create(
        actor=boss, entity="deal", key="product_line", label_en="Product line", kind="choice", choices=LINES
    )


@pytest.fixture
def last_month():
    return period_of(timezone.now(), "month").previous()


def _filters(user, period) -> dashboard.Filters:
    return dashboard.resolve_filters(
        user=user, granularity="month", period=period.first_day.isoformat(), count=None, team=None, rep=None
    )


def _table(user, code, period, label):
    tables = pages.kpi_breakdowns(user=user, kpi=get_kpi(code), filters=_filters(user, period))
    found = [t for t in tables if t["label"] == label]
    if not found:
        return None
    return {row["name"]: row["snapshot"] for row in found[0]["rows"]}


def _close(customer, period, *, won, line=None, days=3, amount=Decimal("1000")):
    custom = {"product_line": line} if line else {}
    return make_closed_deal(
        customer, won=won, closed=period.start + timedelta(days=days, hours=10), amount=amount, custom=custom
    )


def _expected(deals):
    """(numerator, denominator) of the win rate per product line, from the deals themselves."""
    found: dict[str, list[int]] = {}
    for deal, won in deals:
        counts = found.setdefault(deal.custom.get("product_line", ""), [0, 0])
        counts[0] += won
        counts[1] += 1
    return found


def test_win_rate_by_a_custom_choice_field_counts_each_option(boss, product_line, last_month):
    rita, otto = make_user(first_name="Rita"), make_user(first_name="Otto")
    deals = []
    for owner, plan in ((rita, [("hw", 1), ("hw", 0), ("sw", 1), (None, 0)]), (otto, [("hw", 1), ("sw", 0)])):
        customer = make_customer(owner)
        deals += [(_close(customer, last_month, won=bool(won), line=line), won) for line, won in plan]
    # Outside the period, or still open: not counted.
    _close(make_customer(rita), last_month.previous(), won=True, line="hw")
    expected = _expected(deals)
    table = _table(boss, "win_rate", last_month, "By Product line")
    assert table is not None
    names = {"hw": "Hardware", "sw": "Software", "": "(empty)"}
    assert set(table) == {names[key] for key in expected}
    for key, (won, closed) in expected.items():
        row = table[names[key]]
        assert (row.numerator, row.denominator, row.sample_size) == (won, closed, closed)
        assert row.value == Decimal(100) * won / closed
    assert sum(row.denominator for row in table.values()) == len(deals)


def test_a_reps_breakdown_counts_only_their_records(boss, product_line, last_month):
    rita, otto = make_user(first_name="Rita"), make_user(first_name="Otto")
    mine = [(_close(make_customer(rita), last_month, won=True, line="hw"), 1)]
    mine.append((_close(make_customer(rita), last_month, won=False, line="hw"), 0))
    for _ in range(3):
        _close(make_customer(otto), last_month, won=True, line="hw")
        _close(make_customer(otto), last_month, won=False, line="sw")
    table = _table(rita, "win_rate", last_month, "By Product line")
    assert set(table) == {"Hardware"}
    assert (table["Hardware"].numerator, table["Hardware"].denominator) == (1, 2)
    everyone = _table(boss, "win_rate", last_month, "By Product line")
    assert (everyone["Hardware"].numerator, everyone["Hardware"].denominator) == (4, 5)
    assert everyone["Software"].denominator == 3
    # Someone who may see no deals (a support agent) gets no such table.
    agent = make_user(role="agent")
    assert _table(agent, "win_rate", last_month, "By Product line") is None


def test_a_manager_looking_at_one_rep_sees_that_reps_deals(client, boss, product_line, last_month):
    rita, otto = make_user(first_name="Rita"), make_user(first_name="Otto")
    _close(make_customer(rita), last_month, won=True, line="hw")
    _close(make_customer(otto), last_month, won=False, line="hw")
    filters = dashboard.resolve_filters(
        user=boss,
        granularity="month",
        period=last_month.first_day.isoformat(),
        count=None,
        team=None,
        rep=rita,
    )
    tables = pages.kpi_breakdowns(user=boss, kpi=get_kpi("win_rate"), filters=filters)
    hardware = next(t for t in tables if t["label"] == "By Product line")["rows"][0]["snapshot"]
    assert (hardware.numerator, hardware.denominator) == (1, 1)


def test_revenue_won_by_option_sums_the_won_amounts(boss, product_line, last_month):
    customer = make_customer(make_user())
    _close(customer, last_month, won=True, line="hw", amount=Decimal("1200.50"))
    _close(customer, last_month, won=True, line="hw", amount=Decimal("300"))
    _close(customer, last_month, won=False, line="hw", amount=Decimal("9999"))
    _close(customer, last_month, won=True, line="sw", amount=Decimal("50"))
    table = _table(boss, "revenue_won", last_month, "By Product line")
    assert table["Hardware"].value == Decimal("1500.50") and table["Hardware"].sample_size == 2
    assert table["Software"].value == Decimal("50") and table["Software"].sample_size == 1


def test_customer_kpis_break_down_by_a_customer_choice_field(boss, last_month):
    field_create(
        actor=boss,
        entity="customer",
        key="tier",
        label_en="Tier",
        kind="choice",
        choices=[{"key": "gold", "en": "Gold"}, {"key": "silver", "en": "Silver"}],
    )
    rita = make_user()
    at = last_month.start + timedelta(days=2)
    for tier in ("gold", "gold", "silver", None):
        make_customer(rita, at=at, custom={"tier": tier} if tier else {})
    make_customer(rita, at=last_month.previous().start + timedelta(days=2), custom={"tier": "gold"})
    table = _table(boss, "new_customers", last_month, "By Tier")
    assert {name: row.value for name, row in table.items()} == {"Gold": 2, "Silver": 1, "(empty)": 1}
    # A deal KPI is not broken down by a customer field.
    assert _table(boss, "win_rate", last_month, "By Tier") is None


def test_only_single_choice_fields_of_breakable_kpis_are_dimensions(boss, product_line):
    field_create(
        actor=boss, entity="deal", key="regions", label_en="Regions", kind="multi_choice", choices=LINES
    )
    field_create(actor=boss, entity="deal", key="note", label_en="Note", kind="text")
    archived = field_create(
        actor=boss, entity="deal", key="old", label_en="Old", kind="choice", choices=LINES, is_active=False
    )
    assert [f.key for f in breakdown_fields(get_kpi("win_rate"))] == ["product_line"]
    assert archived not in breakdown_fields(get_kpi("win_rate"))
    assert [d.scope for d in custom_dimensions(get_kpi("win_rate"))] == ["cf-product_line"]
    # A stock (the pipeline) has no records per period to group.
    assert source_of(get_kpi("pipeline_value")) is None
    assert custom_dimensions(get_kpi("pipeline_value")) == []


def test_kpi_page_shows_the_custom_breakdown_and_why_it_changed(client, boss, product_line, last_month):
    rita = make_user()
    customer = make_customer(rita)
    for won in (1, 1, 0):
        _close(customer, last_month, won=bool(won), line="hw")
    for won in (0, 0, 0, 1):
        _close(customer, last_month.previous(), won=bool(won), line="hw")
    _close(customer, last_month, won=False)
    client.force_login(boss)
    url = reverse("metrics:kpi_detail", args=["win_rate"])
    body = client.get(url, {"period": last_month.first_day.isoformat()}).content.decode()
    section = body[body.index("By Product line") :]
    assert '<th scope="col">Product line</th>' in section
    assert "Hardware" in section and "(empty)" in section
    assert 'data-plotly="chart-cf-product_line"' in section
    assert "Why it changed from the previous period" in section
    assert EMPTY == ""


def test_a_reps_kpi_page_shows_their_custom_breakdown_only(client, boss, product_line, last_month):
    rita, otto = make_user(first_name="Rita"), make_user(first_name="Otto")
    _close(make_customer(rita), last_month, won=True, line="hw")
    _close(make_customer(otto), last_month, won=True, line="sw")
    client.force_login(rita)
    url = reverse("metrics:kpi_detail", args=["win_rate"])
    body = client.get(url, {"period": last_month.first_day.isoformat()}).content.decode()
    section = body[body.index("By Product line") :]
    assert "Hardware" in section and "Software" not in section
    assert "Why it changed" not in section


def test_custom_breakdowns_cost_a_query_per_field_whatever_the_records(
    client, boss, product_line, last_month, django_assert_max_num_queries
):
    field_create(actor=boss, entity="deal", key="size", label_en="Size", kind="choice", choices=LINES)
    customer = make_customer(make_user())
    client.force_login(boss)
    url = reverse("metrics:kpi_detail", args=["win_rate"])
    query = {"period": last_month.first_day.isoformat()}

    def add(n):
        for i in range(n):
            deal = _close(customer, last_month, won=bool(i % 2), line=("hw", "sw")[i % 2])
            deal.custom["size"] = "sw"
            deal.save(update_fields=["custom"])

    add(2)
    client.get(url, query)
    bump_generation()
    with django_assert_max_num_queries(45) as few:
        assert "By Size" in client.get(url, query).content.decode()
    add(10)
    bump_generation()
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(url, query)


def test_the_breakdown_download_has_the_custom_rows(client, boss, product_line, last_month):
    customer = make_customer(make_user())
    _close(customer, last_month, won=True, line="hw")
    _close(customer, last_month, won=False, line="sw")
    client.force_login(boss)
    url = reverse("metrics:kpi_export", args=["win_rate"])
    response = client.get(
        url, {"period": last_month.first_day.isoformat(), "what": "breakdown", "format": "csv"}
    )
    body = b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()
    lines = [line for line in body.splitlines() if "By Product line" in line]
    assert len(lines) == 2
    assert any("Hardware" in line and "100" in line for line in lines)

"""Custom fields on the customer, deal and ticket lists: filters, search, the column chooser, rep scope."""

import re
from datetime import date

import pytest
from django.urls import reverse

from accounts.models import User
from crm import selectors
from crm.custom_fields import query
from crm.custom_fields.services import field_create
from crm.forms import CustomerFilterForm, DealFilterForm
from tests.factories import make_customer, make_deal, make_manager, make_ticket, make_user

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
PRODUCT_LINES = [
    {"key": "hw", "en": "Hardware", "zh": "硬件"},
    {"key": "sw", "en": "Software", "zh": "软件"},
    {"key": "svc", "en": "Services", "zh": "服务"},
]


@pytest.fixture
def boss(db):
    return make_manager(username="boss")


@pytest.fixture
def rep(client):
    user = make_user(username="rita", first_name="Rita")
    client.force_login(user)
    return user


@pytest.fixture
def deal_fields(boss):
    return {
        "product_line": field_create(
            actor=boss,
            entity="deal",
            key="product_line",
            label_en="Product line",
            kind="choice",
            choices=PRODUCT_LINES,
        ),
        "go_live": field_create(actor=boss, entity="deal", key="go_live", label_en="Go-live", kind="date"),
        "budget": field_create(actor=boss, entity="deal", key="budget", label_en="Budget", kind="money"),
        "po_number": field_create(
            actor=boss, entity="deal", key="po_number", label_en="PO number", kind="text"
        ),
        "champion": field_create(actor=boss, entity="deal", key="champion", label_en="Champion", kind="user"),
        "regions": field_create(
            actor=boss,
            entity="deal",
            key="regions",
            label_en="Regions",
            kind="multi_choice",
            choices=[{"key": "eu", "en": "Europe"}, {"key": "apac", "en": "Asia-Pacific"}],
        ),
    }


@pytest.fixture
def customer_fields(boss):
    return {
        "tier": field_create(
            actor=boss,
            entity="customer",
            key="tier",
            label_en="Tier",
            kind="choice",
            choices=[{"key": "gold", "en": "Gold"}, {"key": "silver", "en": "Silver"}],
        ),
        "employees": field_create(
            actor=boss, entity="customer", key="employees", label_en="Employees", kind="integer"
        ),
        "vat_id": field_create(actor=boss, entity="customer", key="vat_id", label_en="VAT ID", kind="text"),
    }


@pytest.fixture
def ticket_fields(boss):
    return {
        "vip": field_create(actor=boss, entity="ticket", key="vip", label_en="VIP", kind="yes_no"),
        "hours": field_create(actor=boss, entity="ticket", key="hours", label_en="Hours", kind="decimal"),
        "ref": field_create(actor=boss, entity="ticket", key="ref", label_en="Reference", kind="long_text"),
        "area": field_create(
            actor=boss,
            entity="ticket",
            key="area",
            label_en="Area",
            kind="choice",
            choices=[{"key": "billing", "en": "Billing"}, {"key": "tech", "en": "Technical"}],
        ),
    }


def _titles(response):
    """The records listed: the link in each row's first cell (a customer's name, a deal's title, …)."""
    assert response.status_code == 200
    return set(re.findall(r'<td><a href="[^"]+">([^<]+)</a></td>', response.content.decode()))


def _main(response):
    """The page's main part (the header's and footer's forms carry the page's own address back)."""
    body = response.content.decode()
    return body[body.index("<main") : body.index("</main>")] if "<main" in body else body


def _deals(client, **params):
    return _titles(client.get(reverse("crm:deal_list"), params))


# Filters
# ---------------------------------------------------------------------------------------------------------


def test_deal_list_filters_by_choice_multi_choice_and_user(client, rep, deal_fields):
    customer = make_customer(rep)
    make_deal(customer, title="Deal hw", custom={"product_line": "hw", "regions": ["eu"], "champion": rep.pk})
    make_deal(customer, title="Deal sw", custom={"product_line": "sw", "regions": ["eu", "apac"]})
    make_deal(customer, title="Deal none")
    assert _deals(client) == {"Deal hw", "Deal sw", "Deal none"}
    assert _deals(client, cf_product_line="hw") == {"Deal hw"}
    assert _deals(client, cf_product_line="svc") == set()
    assert _deals(client, cf_regions="apac") == {"Deal sw"}
    assert _deals(client, cf_regions="eu") == {"Deal hw", "Deal sw"}
    assert _deals(client, cf_champion=str(rep.pk)) == {"Deal hw"}
    assert _deals(client, cf_champion_search="rita") == {"Deal hw"}  # typed, not picked (no JavaScript)
    assert _deals(client, cf_product_line="") == {"Deal hw", "Deal sw", "Deal none"}  # "any"


def test_a_user_field_filter_is_a_type_ahead_that_finds_people_who_left(client, rep, deal_fields):
    left = make_user(first_name="Lena", last_name="Left")
    make_deal(make_customer(rep), title="Deal of Lena", custom={"champion": left.pk})
    User.objects.filter(pk=left.pk).update(is_active=False)
    form = client.get(reverse("crm:deal_list")).context["form"]
    picker = str(form["cf_champion"])
    assert 'role="combobox"' in picker and "<option" not in picker and "Lena" not in picker
    url = reverse("accounts:staff_options", args=["custom-user-filter"])
    found = client.get(url, {"field": "cf_champion", "cf_champion_search": "lena"}, headers=HTMX)
    assert f'data-value="{left.pk}"' in found.content.decode()
    assert _deals(client, cf_champion=str(left.pk)) == {"Deal of Lena"}
    assert _deals(client, cf_champion_search="Lena Left") == {"Deal of Lena"}


def test_deal_list_filters_by_date_and_money_ranges(client, rep, deal_fields):
    customer = make_customer(rep)
    make_deal(customer, title="Deal early", custom={"go_live": "2026-01-10", "budget": "500"})
    make_deal(customer, title="Deal mid", custom={"go_live": "2026-03-01", "budget": "1250.50"})
    make_deal(customer, title="Deal late", custom={"go_live": "2026-12-31", "budget": "99000"})
    make_deal(customer, title="Deal blank")
    assert _deals(client, cf_go_live_from="2026-02-01") == {"Deal mid", "Deal late"}
    assert _deals(client, cf_go_live_to="2026-03-01") == {"Deal early", "Deal mid"}
    assert _deals(client, cf_go_live_from="2026-03-01", cf_go_live_to="2026-03-01") == {"Deal mid"}
    # Numbers compare as numbers, not as text ("99000" < "500" as text).
    assert _deals(client, cf_budget_from="1000") == {"Deal mid", "Deal late"}
    assert _deals(client, cf_budget_from="1250.50", cf_budget_to="1250.50") == {"Deal mid"}
    assert _deals(client, cf_budget_to="1000.00") == {"Deal early"}


def test_customer_list_filters_by_choice_and_integer_range(client, rep, customer_fields):
    make_customer(rep, name="Customer gold-big", custom={"tier": "gold", "employees": 5000})
    make_customer(rep, name="Customer gold-small", custom={"tier": "gold", "employees": 12})
    make_customer(rep, name="Customer silver", custom={"tier": "silver", "employees": 800})
    make_customer(rep, name="Customer plain")
    url = reverse("crm:customer_list")

    def names(**params):
        return _titles(client.get(url, params))

    assert names(cf_tier="gold") == {"Customer gold-big", "Customer gold-small"}
    assert names(cf_employees_from="100") == {"Customer gold-big", "Customer silver"}
    assert names(cf_tier="gold", cf_employees_to="100") == {"Customer gold-small"}
    assert names(cf_tier="gold", status="lead") == set()


def test_ticket_list_filters_by_yes_no_number_and_choice_within_the_queue(client, rep, ticket_fields):
    customer = make_customer(rep)
    make_ticket(customer, subject="Ticket vip", custom={"vip": True, "hours": "1.5", "area": "billing"})
    make_ticket(customer, subject="Ticket normal", custom={"vip": False, "hours": "12", "area": "tech"})
    make_ticket(customer, subject="Ticket unknown")
    url = reverse("crm:ticket_list")

    def subjects(**params):
        return _titles(client.get(url, {"queue": "all", **params}))

    assert subjects(cf_vip="yes") == {"Ticket vip"}
    assert subjects(cf_vip="no") == {"Ticket normal"}
    assert subjects(cf_hours_from="2") == {"Ticket normal"}
    assert subjects(cf_hours_to="2", cf_area="billing") == {"Ticket vip"}
    body = client.get(url, {"queue": "all", "cf_vip": "yes"}).content.decode()
    # The queue tabs keep the filters; the queue shown goes with the filter form.
    assert 'href="?cf_vip=yes&queue=open"' in body
    assert 'name="queue" value="all" form="ticket-filters"' in body


BAD_VALUES = [
    ("cf_budget_from", "abc"),
    ("cf_budget_from", "12\x0034"),
    ("cf_budget_to", "9" * 10_000),
    ("cf_budget_from", "-5"),
    ("cf_go_live_from", "0000-01-01"),
    ("cf_go_live_to", "9999-12-31"),
    ("cf_go_live_from", "2026-02-30"),
    ("cf_go_live_from", "x" * 10_000),
    ("cf_product_line", "nope"),
    ("cf_product_line", "hw\x00"),
    ("cf_champion", "99999999999999999999999"),
    ("cf_champion", "abc"),
    ("cf_regions", "x" * 10_000),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_filter_values_are_field_messages_not_errors(client, rep, deal_fields, name, value):
    customer = make_customer(rep)
    make_deal(customer, title="Deal hw", custom={"product_line": "hw"})
    make_deal(customer, title="Deal sw", custom={"product_line": "sw"})
    for headers in ({}, HTMX):
        response = client.get(reverse("crm:deal_list"), {name: value}, headers=headers)
        assert response.status_code == 200
        body = response.content.decode()
        assert "Some filters are not valid" in body
        # Shown without the filters rather than wrongly narrowed.
        assert {"Deal hw", "Deal sw"} <= _titles(response)
    full = client.get(reverse("crm:deal_list"), {name: value}).content.decode()
    assert 'class="field-error"' in full and "<details" in full and " open>" in full


def test_a_range_that_ends_before_it_starts_is_a_field_message(client, rep, deal_fields):
    response = client.get(reverse("crm:deal_list"), {"cf_budget_from": "100", "cf_budget_to": "10"})
    assert response.status_code == 200
    assert "This is before the start of the range." in response.content.decode()


@pytest.mark.parametrize("name", ["crm:customer_list", "crm:ticket_list"])
@pytest.mark.parametrize("value", ["0000-01-01", "9999-12-31", "\x00", "9" * 10_000])
def test_bad_values_on_the_other_lists(client, rep, customer_fields, ticket_fields, name, value):
    params = {"cf_employees_from": value, "cf_hours_to": value, "cf_vip": value, "cf_tier": value}
    for headers in ({}, HTMX):
        response = client.get(reverse(name), params, headers=headers)
        assert response.status_code == 200
        assert "Some filters are not valid" in response.content.decode()


def test_more_filters_only_when_there_are_custom_filters(client, rep):
    assert "More filters" not in client.get(reverse("crm:deal_list")).content.decode()
    field_create(
        actor=make_manager(),
        entity="deal",
        key="product_line",
        label_en="Product line",
        kind="choice",
        choices=PRODUCT_LINES,
    )
    body = client.get(reverse("crm:deal_list")).content.decode()
    assert "More filters" in body and 'name="cf_product_line"' in body and " open>" not in body
    assert " open>" in client.get(reverse("crm:deal_list"), {"cf_product_line": "hw"}).content.decode()


def test_pagination_keeps_the_custom_filters(client, rep, deal_fields):
    customer = make_customer(rep)
    for n in range(27):
        make_deal(customer, title=f"Deal {n}", custom={"product_line": "hw"})
    make_deal(customer, title="Deal other", custom={"product_line": "sw"})
    body = client.get(
        reverse("crm:deal_list"), {"cf_product_line": "hw", "cf_budget_from": ""}
    ).content.decode()
    assert "27 deals" in body
    assert 'href="?cf_product_line=hw&amp;cf_budget_from=&page=2"' in body
    second = client.get(reverse("crm:deal_list"), {"cf_product_line": "hw", "page": "2"})
    assert "Deal other" not in second.content.decode()


def test_deal_export_applies_the_custom_filters(client, rep, deal_fields):
    customer = make_customer(rep)
    make_deal(customer, title="Deal hw", custom={"product_line": "hw"})
    make_deal(customer, title="Deal sw", custom={"product_line": "sw"})
    response = client.get(reverse("crm:deal_export"), {"cf_product_line": "hw", "format": "csv"})
    body = b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()
    assert "Deal hw" in body and "Deal sw" not in body


# Search
# ---------------------------------------------------------------------------------------------------------


def test_search_finds_text_custom_values_on_each_list(
    client, rep, deal_fields, customer_fields, ticket_fields
):
    customer = make_customer(rep, name="Customer acme", custom={"vat_id": "DE123456789"})
    make_customer(rep, name="Customer other")
    make_deal(customer, title="Deal po", custom={"po_number": "PO-7788-X"})
    make_deal(customer, title="Deal plain")
    make_ticket(customer, subject="Ticket ref", custom={"ref": "Case ZX-42 from the old system"})
    make_ticket(customer, subject="Ticket plain")
    assert _titles(client.get(reverse("crm:customer_list"), {"q": "de1234"})) == {"Customer acme"}
    assert _titles(client.get(reverse("crm:customer_list"), {"q": "Customer ot"})) == {"Customer other"}
    assert _deals(client, q="7788-x") == {"Deal po"}
    assert _deals(client, q="Deal pl") == {"Deal plain"}
    tickets = reverse("crm:ticket_list")
    assert _titles(client.get(tickets, {"queue": "all", "q": "zx-42"})) == {"Ticket ref"}
    assert _titles(client.get(tickets, {"queue": "all", "q": "plain"})) == {"Ticket plain"}
    # A search for "%" is a search for the character, not a wildcard.
    assert _deals(client, q="%") == set()


def test_search_leaves_custom_fields_out_without_text_fields(boss):
    field_create(
        actor=boss,
        entity="customer",
        key="tier",
        label_en="Tier",
        kind="choice",
        choices=[{"key": "a", "en": "A"}],
    )
    form = CustomerFilterForm({"q": "acme"}, user=boss)
    assert form.is_valid()
    qs = selectors.customer_filter(qs=selectors.customer_list(user=boss), data=form.cleaned_data)
    assert "->>" not in str(qs.query).split("WHERE")[1]
    assert query.search_q(form.custom_fields, "acme") is None
    field_create(actor=boss, entity="customer", key="vat_id", label_en="VAT ID", kind="text")
    form = CustomerFilterForm({"q": "acme"}, user=boss)
    assert form.is_valid()
    qs = selectors.customer_filter(qs=selectors.customer_list(user=boss), data=form.cleaned_data)
    assert "vat_id" in str(qs.query).split("WHERE")[1]


# Columns
# ---------------------------------------------------------------------------------------------------------


def test_column_chooser_is_remembered_per_list_and_shows_display_values(
    client, rep, deal_fields, customer_fields
):
    customer = make_customer(rep, name="Customer acme", custom={"tier": "gold"})
    make_deal(
        customer,
        title="Deal hw",
        custom={"product_line": "hw", "budget": "1250.5", "champion": rep.pk, "go_live": "2026-03-01"},
    )
    url = reverse("crm:deal_list")
    body = client.get(url).content.decode()
    assert "Show these fields as columns" in body and 'name="col" value="product_line"' in body
    assert '<th scope="col" class="hide-sm">Product line</th>' not in body
    chosen = {"columns": "1", "col": ["product_line", "budget", "champion", "nope"], "cf_product_line": "hw"}
    response = client.get(url, chosen)
    assert response.status_code == 200
    assert client.session["list_columns:deal"] == ["product_line", "budget", "champion"]
    body = client.get(url).content.decode()
    assert '<th scope="col" class="hide-sm">Product line</th>' in body
    assert '<th scope="col" class="hide-sm num">Budget</th>' in body
    assert '<th scope="col" class="hide-sm">Champion</th>' in body
    assert '<th scope="col" class="hide-sm">Go-live</th>' not in body
    assert 'data-label="Product line">Hardware<' in body
    assert '<td class="hide-sm num nowrap" data-label="Budget">1,250.50<' in body
    assert 'data-label="Champion">Rita<' in body
    assert 'name="col" value="product_line" checked' in body
    # The chooser carries the filters; the list's links do not carry the chooser.
    assert 'name="cf_product_line" value="hw"' in response.content.decode()
    assert "col=" not in _main(response) and "columns=" not in _main(response)
    # Another list has its own choice; an empty choice clears it.
    assert "Tier</th>" not in client.get(reverse("crm:customer_list")).content.decode()
    client.get(url, {"columns": "1"})
    assert client.session["list_columns:deal"] == []
    assert "Product line</th>" not in client.get(url).content.decode()


def test_columns_in_chinese_use_the_chinese_labels(client, rep, deal_fields):
    make_deal(make_customer(rep), title="Deal hw", custom={"product_line": "hw"})
    client.get(reverse("crm:deal_list"), {"columns": "1", "col": "product_line"})
    rep.language = "zh-hans"
    rep.save(update_fields=["language"])
    assert 'data-label="硬件"' not in (body := client.get(reverse("crm:deal_list")).content.decode())
    assert ">硬件<" in body


def test_column_fragment_and_chooser_on_htmx(client, rep, ticket_fields):
    make_ticket(make_customer(rep), subject="Ticket vip", custom={"vip": True, "hours": "2.25"})
    response = client.get(
        reverse("crm:ticket_list"), {"queue": "all", "columns": "1", "col": ["vip", "hours"]}, headers=HTMX
    )
    body = response.content.decode()
    assert "<html" not in body and 'id="ticket-table"' in body
    assert 'data-label="VIP">yes<' in body and 'data-label="Hours">2.25<' in body


def test_list_queries_do_not_grow_with_rows_or_user_columns(
    client, rep, deal_fields, django_assert_max_num_queries
):
    customer = make_customer(rep)
    client.get(reverse("crm:deal_list"), {"columns": "1", "col": ["champion", "product_line"]})
    other = make_user()

    def fill(n):
        for i in range(n):
            make_deal(customer, custom={"champion": (rep if i % 2 else other).pk, "product_line": "sw"})

    fill(2)
    with django_assert_max_num_queries(14) as few:
        client.get(reverse("crm:deal_list"), {"cf_product_line": "sw"})
    fill(20)
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(reverse("crm:deal_list"), {"cf_product_line": "sw"})


# Access
# ---------------------------------------------------------------------------------------------------------


def test_a_rep_never_sees_another_reps_records_through_filters_search_or_columns(
    client, rep, deal_fields, customer_fields, ticket_fields
):
    other = make_user(username="otto")
    theirs = make_customer(other, name="Customer theirs", custom={"tier": "gold", "vat_id": "SECRET-1"})
    make_deal(theirs, title="Deal theirs", custom={"product_line": "hw", "po_number": "SECRET-2"})
    make_ticket(theirs, subject="Ticket theirs", custom={"vip": True, "ref": "SECRET-3"})
    mine = make_customer(rep, name="Customer mine", custom={"tier": "gold"})
    make_deal(mine, title="Deal mine", custom={"product_line": "hw"})
    make_ticket(mine, subject="Ticket mine", custom={"vip": True})
    for entity in ("customer", "deal", "ticket"):
        client.get(
            reverse(f"crm:{entity}_list"),
            {"columns": "1", "col": list({**customer_fields, **deal_fields, **ticket_fields})},
        )
    checks = [
        ("crm:customer_list", {"cf_tier": "gold"}, {"Customer mine"}),
        ("crm:customer_list", {"q": "SECRET"}, set()),
        ("crm:deal_list", {"cf_product_line": "hw"}, {"Deal mine"}),
        ("crm:deal_list", {"q": "SECRET"}, set()),
        ("crm:ticket_list", {"queue": "all", "cf_vip": "yes"}, {"Ticket mine"}),
        ("crm:ticket_list", {"queue": "all", "q": "SECRET"}, set()),
    ]
    for name, params, expected in checks:
        for headers in ({}, HTMX):
            response = client.get(reverse(name), params, headers=headers)
            assert _titles(response) == expected, (name, params)
            shown = _main(response).replace('value="SECRET"', "").replace("q=SECRET", "")
            assert "theirs" not in shown and "SECRET" not in shown


def test_a_manager_sees_everyones_records_through_the_filters(client, rep, deal_fields):
    make_deal(make_customer(rep), title="Deal rita", custom={"product_line": "hw"})
    make_deal(make_customer(make_user()), title="Deal otto", custom={"product_line": "hw"})
    make_deal(make_customer(make_user()), title="Deal sw", custom={"product_line": "sw"})
    client.force_login(make_manager())
    assert _deals(client, cf_product_line="hw") == {"Deal rita", "Deal otto"}


# Forms and queries
# ---------------------------------------------------------------------------------------------------------


def test_filter_form_gives_conditions_for_the_query(boss, deal_fields):
    form = DealFilterForm(
        {"cf_product_line": "hw", "cf_go_live_from": "2026-01-01", "cf_budget_to": "10", "cf_regions": "eu"},
        user=boss,
        stages=selectors.stage_list(),
    )
    assert form.is_valid(), form.errors
    found = [(field.key, op, value) for field, op, value in form.cleaned_data["custom"]]
    assert found == [
        ("product_line", "eq", "hw"),
        ("go_live", "gte", date(2026, 1, 1).isoformat()),
        ("budget", "lte", "10.00"),
        ("regions", "eq", "eu"),
    ]
    assert [f.key for f in form.cleaned_data["custom_search"]] == ["po_number"]


def test_keys_with_double_underscores_are_one_key(boss):
    field = field_create(actor=boss, entity="deal", key="lot__no", label_en="Lot", kind="integer")
    customer = make_customer(make_user())
    make_deal(customer, title="Deal lot", custom={"lot__no": 7})
    make_deal(customer, title="Deal none", custom={})
    deals = selectors.deal_list(user=boss)
    assert [d.title for d in query.between(deals, field, 5, 9)] == ["Deal lot"]
    text = field_create(actor=boss, entity="deal", key="a__b", label_en="AB", kind="text")
    make_deal(customer, title="Deal ab", custom={"a__b": "needle"})
    assert [d.title for d in deals.filter(query.search_q([text], "NEEDLE"))] == ["Deal ab"]


@pytest.mark.django_db
def test_the_ticket_export_keeps_the_lists_search_and_custom_filters(client, no_auto_assign):
    manager = make_manager()
    field_create(
        actor=manager,
        entity="ticket",
        key="device",
        label_en="Device",
        kind="choice",
        choices=[{"key": "pump", "en": "Pump"}, {"key": "valve", "en": "Valve"}],
    )
    pump = make_ticket(subject="Pump leaks", custom={"device": "pump"})
    make_ticket(subject="Valve sticks", custom={"device": "valve"})
    client.force_login(manager)
    page = client.get("/crm/tickets/?queue=all&cf_device=pump")
    assert "cf_device=pump" in page.content.decode()
    response = client.get("/crm/tickets/export/?queue=all&cf_device=pump&format=csv")
    body = b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()
    assert pump.subject in body and "Valve sticks" not in body

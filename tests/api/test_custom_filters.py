"""The lists' custom-field filters in the API: the list pages' own filters (choice, yes/no, user, date and
number ranges) as ``cf_…`` query parameters, listed per field in the OpenAPI document, and a bad value or
an unknown filter a 422 naming it."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.custom_fields.services import field_create, field_update
from tests.factories import make_customer, make_deal, make_manager, make_ticket, make_user

pytestmark = pytest.mark.django_db

REGIONS = [{"key": "north", "en": "North", "zh": "北区"}, {"key": "south", "en": "South", "zh": "南区"}]


@pytest.fixture
def manager():
    return make_manager()


@pytest.fixture
def customer_fields(manager):
    for key, kind in (
        ("region", "choice"),
        ("tags", "multi_choice"),
        ("since", "date"),
        ("budget", "money"),
        ("size", "integer"),
        ("vip", "yes_no"),
        ("buddy", "user"),
        ("notes", "text"),
    ):
        choices = REGIONS if "choice" in kind else None
        field_create(
            actor=manager, entity="customer", key=key, label_en=key.title(), kind=kind, choices=choices
        )


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return sorted(row["id"] for row in response.json()["results"])


def test_customers_filter_by_choice_range_yes_no_and_user(api, customer_fields, manager):
    rep = make_user()
    north = make_customer(
        rep,
        custom={
            "region": "north",
            "tags": ["north", "south"],
            "since": "2024-03-01",
            "budget": "1250.50",
            "size": 12,
            "vip": True,
            "buddy": manager.pk,
        },
    )
    south = make_customer(
        rep, custom={"region": "south", "tags": ["south"], "since": "2025-06-30", "budget": "90", "size": 3}
    )
    bare = make_customer(rep)
    make_customer(make_user(), custom={"region": "north"})  # someone else's: never listed
    client = api(rep)
    assert _ids(client.get("/customers/", cf_region="north")) == [north.pk]
    assert _ids(client.get("/customers/", cf_tags="south")) == [north.pk, south.pk]
    assert _ids(client.get("/customers/", cf_since_from="2025-01-01")) == [south.pk]
    assert _ids(client.get("/customers/", cf_since_to="2024-12-31")) == [north.pk]
    assert _ids(client.get("/customers/", cf_budget_from="100", cf_budget_to="2000")) == [north.pk]
    assert _ids(client.get("/customers/", cf_size_to="3")) == [south.pk]
    assert _ids(client.get("/customers/", cf_vip="yes")) == [north.pk]
    assert _ids(client.get("/customers/", cf_buddy=str(manager.pk))) == [north.pk]
    assert _ids(client.get("/customers/", cf_region="", cf_size_from="")) == [north.pk, south.pk, bare.pk]
    # With the built-in filters and the search, as on the page.
    assert _ids(client.get("/customers/", cf_region="south", q=south.name)) == [south.pk]
    assert _ids(client.get("/customers/", cf_region="south", q=north.name)) == []


def test_deals_and_tickets_filter_by_their_custom_fields(api, manager, no_auto_assign):
    field_create(actor=manager, entity="deal", key="line", label_en="Line", kind="choice", choices=REGIONS)
    field_create(actor=manager, entity="ticket", key="opened", label_en="Opened", kind="date")
    field_create(actor=manager, entity="ticket", key="serial", label_en="Serial", kind="text")
    rep = make_user()
    customer = make_customer(rep)
    north, _south = (
        make_deal(customer, custom={"line": "north"}),
        make_deal(customer, custom={"line": "south"}),
    )
    early = make_ticket(customer, custom={"opened": "2024-01-05", "serial": "SN-123"})
    late = make_ticket(customer, custom={"opened": "2026-01-05"})
    client = api(rep)
    assert _ids(client.get("/deals/", cf_line="north")) == [north.pk]
    assert _ids(client.get("/deals/", cf_line="north", status="won")) == []
    assert _ids(client.get("/tickets/", cf_opened_from="2025-01-01")) == [late.pk]
    assert _ids(client.get("/tickets/", cf_opened_to="2025-01-01", queue="all")) == [early.pk]
    assert _ids(client.get("/tickets/", q="sn-12")) == [early.pk]


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"cf_region": "west"}, "cf_region", "Select a valid choice."),
        ({"cf_since_from": "yesterday"}, "cf_since_from", "Enter a date as YYYY-MM-DD."),
        ({"cf_since_to": "0001-01-01"}, "cf_since_to", "Enter a date between"),
        ({"cf_budget_from": "a lot"}, "cf_budget_from", "Enter a number such as 12.5."),
        ({"cf_budget_from": "-5"}, "cf_budget_from", "An amount cannot be negative."),
        ({"cf_size_from": "1e400"}, "cf_size_from", ""),
        ({"cf_size_from": "9", "cf_size_to": "2"}, "cf_size_to", "before the start of the range"),
        ({"cf_vip": "maybe"}, "cf_vip", "Select a valid choice."),
        ({"cf_buddy": "99999999999999999999"}, "cf_buddy", "No one matches"),
        ({"cf_since": "2024-01-01"}, "cf_since", "There is no such filter."),
        ({"cf_notes": "x"}, "cf_notes", "There is no such filter."),
        ({"cf_": "x"}, "cf_", "There is no such filter."),
    ],
)
def test_a_bad_filter_is_a_422_naming_it(api, customer_fields, params, field, message):
    response = api(make_user()).get("/customers/", **params)
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and list(error["fields"]) == [field]
    assert message in error["fields"][field][0]


def test_an_archived_field_is_no_filter(api, manager):
    field = field_create(
        actor=manager, entity="deal", key="line", label_en="Line", kind="choice", choices=REGIONS
    )
    field_update(actor=manager, field=field, is_active=False)
    response = api(make_user()).get("/deals/", cf_line="north")
    assert response.status_code == 422 and list(response.json()["error"]["fields"]) == ["cf_line"]


def test_the_openapi_document_lists_each_fields_filters(api, customer_fields, manager):
    field_create(actor=manager, entity="ticket", key="opened", label_en="Opened", kind="date")
    field_create(actor=manager, entity="activity", key="mood", label_en="Mood", kind="yes_no")
    paths = api(make_user()).get("/openapi.json").json()["paths"]

    def parameters(path):
        return {p["name"]: p for p in paths[path]["get"]["parameters"] if p["name"].startswith("cf_")}

    customers = parameters("/api/v1/customers/")
    assert set(customers) == {
        "cf_region", "cf_tags", "cf_since_from", "cf_since_to", "cf_budget_from", "cf_budget_to",
        "cf_size_from", "cf_size_to", "cf_vip", "cf_buddy",
    }  # fmt: skip
    assert customers["cf_region"]["schema"] == {"type": "string", "enum": ["north", "south"]}
    assert customers["cf_since_from"]["schema"] == {"type": "string", "format": "date"}
    assert customers["cf_budget_to"]["schema"] == {"type": "number", "minimum": 0}
    assert customers["cf_size_from"]["schema"] == {"type": "integer"}
    assert customers["cf_vip"]["schema"]["enum"] == ["yes", "no"]
    assert all(p["in"] == "query" and not p["required"] and p["description"] for p in customers.values())
    assert set(parameters("/api/v1/tickets/")) == {"cf_opened_from", "cf_opened_to"}
    assert parameters("/api/v1/deals/") == {}
    assert "x-custom-filters" not in paths["/api/v1/customers/"]["get"]


FILTER_NAMES = [
    "cf_region", "cf_tags", "cf_since_from", "cf_since_to", "cf_budget_from", "cf_budget_to",
    "cf_size_from", "cf_size_to", "cf_vip", "cf_buddy", "cf_notes", "cf_x",
]  # fmt: skip


def test_any_filter_value_is_answered_or_refused_never_a_500(api, customer_fields):
    rep = make_user()
    make_customer(rep, custom={"region": "north", "budget": "10", "since": "2024-01-01", "size": 1})
    client = api(rep)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(params=st.dictionaries(st.sampled_from(FILTER_NAMES), st.text(max_size=30), max_size=4))
    def query(params):
        response = client.get("/customers/", **params)
        assert response.status_code in (200, 422), response.content
        if response.status_code == 422:
            assert set(response.json()["error"]["fields"]) <= set(params)

    query()


def test_an_unknown_filter_is_named_in_the_language_asked_for(api, customer_fields):
    client = api(make_user())
    response = client.client.get(
        "/api/v1/customers/", {"cf_nope": "1"}, headers={**client.headers, "Accept-Language": "zh-hans"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["fields"] == {"cf_nope": ["没有这个筛选条件。"]}

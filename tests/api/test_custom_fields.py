"""Custom fields in the API: the records' ``custom`` values in and out, and a bad value as a 422 at
``custom.<key>``."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.custom_fields.models import CustomField
from crm.custom_fields.services import field_create
from crm.models import Customer
from tests.factories import make_customer, make_manager, make_user

pytestmark = pytest.mark.django_db

REGIONS = [
    {"key": "north", "en": "North", "zh": "北区"},
    {"key": "south", "en": "South", "zh": "南区"},
]


@pytest.fixture
def manager():
    return make_manager()


@pytest.fixture
def region(manager):
    return field_create(
        actor=manager, entity="customer", key="region", label_en="Region", kind="choice", choices=REGIONS
    )


@pytest.fixture
def budget(manager):
    return field_create(actor=manager, entity="customer", key="budget", label_en="Budget", kind="money")


def test_api_creates_reads_and_changes_custom_values(api, region, budget):
    rep = make_user()
    client = api(rep)
    created = client.post("/customers/", {"name": "Acme", "custom": {"region": "South", "budget": 1250.5}})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["custom"] == {"region": "south", "budget": "1250.50"}
    read = client.get(f"/customers/{body['id']}").json()
    assert read["custom"] == body["custom"]
    changed = client.patch(
        f"/customers/{body['id']}",
        {"version": read["version"], "custom": {"budget": None, "region": "north"}},
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["custom"] == {"region": "north"}
    renamed = client.patch(
        f"/customers/{body['id']}", {"version": changed.json()["version"], "name": "Acme 2"}
    )
    assert renamed.json()["custom"] == {"region": "north"}


def test_api_refuses_a_bad_custom_value_at_its_key(api, region):
    rep = make_user()
    client = api(rep)
    response = client.post("/customers/", {"name": "Acme", "custom": {"region": "west", "nope": 1}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert set(error["fields"]) == {"custom.region", "custom.nope"}
    assert "is not one of the choices" in error["fields"]["custom.region"][0]
    assert not Customer.objects.exists()
    customer = make_customer(rep)
    response = client.patch(
        f"/customers/{customer.pk}", {"version": 1, "custom": {"region": ["north", "south"]}}
    )
    assert response.status_code == 422 and "custom.region" in response.json()["error"]["fields"]


def test_api_deals_tickets_and_activities_carry_custom_values(api, manager, no_auto_assign):
    for entity, key, kind in (
        ("deal", "po", "text"),
        ("ticket", "serial", "integer"),
        ("activity", "mood", "yes_no"),
    ):
        field_create(actor=manager, entity=entity, key=key, label_en=key.title(), kind=kind)
    rep = make_user()
    customer = make_customer(rep)
    client = api(rep)
    deal = client.post("/deals/", {"customer": customer.pk, "title": "Big", "custom": {"po": "PO-1"}}).json()
    assert deal["custom"] == {"po": "PO-1"}
    patched = client.patch(f"/deals/{deal['id']}", {"version": deal["version"], "custom": {"po": "PO-2"}})
    assert patched.json()["custom"] == {"po": "PO-2"}
    bad = client.patch(
        f"/deals/{deal['id']}", {"version": patched.json()["version"], "custom": {"po": "x" * 300}}
    )
    assert bad.status_code == 422 and list(bad.json()["error"]["fields"]) == ["custom.po"]
    ticket = client.post(
        "/tickets/",
        {
            "customer": customer.pk,
            "subject": "Hi",
            "category": "question",
            "channel": "email",
            "custom": {"serial": "7"},
        },
    )
    assert ticket.status_code == 201, ticket.content
    assert ticket.json()["custom"] == {"serial": 7}
    activity = client.post(
        "/activities/",
        {"customer": customer.pk, "kind": "call", "subject": "Hello", "custom": {"mood": "yes"}},
    )
    assert activity.status_code == 201, activity.content
    assert activity.json()["custom"] == {"mood": True}
    assert client.get("/activities/").json()["results"][0]["custom"] == {"mood": True}


def test_the_openapi_document_describes_custom(api):
    schema = api(make_user()).get("/openapi.json").json()["components"]["schemas"]
    for name in ("CustomerOut", "DealOut", "TicketOut", "ActivityOut"):
        assert "custom" in schema[name]["required"], name
    for name in ("CustomerIn", "DealIn", "TicketIn", "ActivityIn"):
        assert "custom" in schema[name]["properties"], name


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def test_any_custom_payload_is_stored_or_refused_at_its_key_never_a_500(api, manager):
    keys = []
    for kind in CustomField.Kind.values:
        choices = REGIONS if kind in ("choice", "multi_choice") else None
        field_create(
            actor=manager, entity="customer", key=f"f_{kind}", label_en=kind, kind=kind, choices=choices
        )
        keys.append(f"f_{kind}")
    client = api(make_user())

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(custom=st.dictionaries(st.sampled_from(keys) | st.text(max_size=45), JSON, max_size=4))
    def post(custom):
        response = client.post("/customers/", {"name": "Fuzzed", "custom": custom})
        assert response.status_code in (201, 422), response.content
        if response.status_code == 422:
            assert all(name.startswith("custom.") for name in response.json()["error"]["fields"])
        else:
            stored = Customer.objects.get(pk=response.json()["id"]).custom
            assert stored == response.json()["custom"] and set(stored) <= set(keys)

    post()

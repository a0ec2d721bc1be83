"""The campaigns of customers (first touch) and deals (last touch) through the API (KPIS.md §10.11)."""

import pytest

from crm.models import CampaignTouch, Customer
from tests.factories import make_campaign, make_customer, make_manager, make_user

pytestmark = pytest.mark.django_db


def test_the_api_reads_and_writes_the_campaigns_of_customers_and_deals(api):
    manager = make_manager()
    fair, webinar = make_campaign(name="Fair", actor=manager), make_campaign(name="Webinar", actor=manager)
    client = api(manager)
    created = client.post("/customers/", {"name": "Acme", "campaign": fair.pk})
    assert created.status_code == 201 and created.json()["campaign"] == fair.pk
    customer = Customer.objects.get(name="Acme")
    assert CampaignTouch.objects.filter(customer=customer, campaign=fair).count() == 1
    for bad in (999999, -1, "x", "\u0000"):
        refused = client.post("/customers/", {"name": "B", "campaign": bad})
        assert refused.status_code == 422, bad
    assert not Customer.objects.filter(name="B").exists()
    patched = client.patch(f"/customers/{customer.pk}", {"campaign": webinar.pk, "version": customer.version})
    assert patched.status_code == 200 and patched.json()["campaign"] == webinar.pk
    assert list(customer.campaign_touches.order_by("at", "id").values_list("campaign", flat=True)) == [
        fair.pk,
        webinar.pk,
    ]
    # A new deal without a campaign takes the one that touched its customer last; one can be named.
    found = client.post("/deals/", {"customer": customer.pk, "title": "Found"})
    assert found.status_code == 201 and found.json()["campaign"] == webinar.pk
    named = client.post("/deals/", {"customer": customer.pk, "title": "Named", "campaign": fair.pk})
    assert named.json()["campaign"] == fair.pk
    # Changing another field keeps the campaign.
    renamed = client.patch(f"/deals/{found.json()['id']}", {"title": "Renamed", "version": 1})
    assert renamed.status_code == 200 and renamed.json()["campaign"] == webinar.pk
    assert [d["title"] for d in client.get("/deals/", campaign=fair.pk).json()["results"]] == ["Named"]
    assert [c["name"] for c in client.get("/customers/", campaign=webinar.pk).json()["results"]] == ["Acme"]


def test_a_rep_lists_only_their_own_customers_of_a_campaign(api):
    manager = make_manager()
    fair = make_campaign(name="Fair", actor=manager)
    rep, other = make_user(), make_user()
    make_customer(rep, name="Mine", campaign=fair)
    make_customer(other, name="Theirs", campaign=fair)
    names = [c["name"] for c in api(rep).get("/customers/", campaign=fair.pk).json()["results"]]
    assert names == ["Mine"]

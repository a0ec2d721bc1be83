"""Reads on the replica (crm.ops.replica). In tests the replica alias mirrors the test database (TEST MIRROR),
on a connection of its own: which connection ran a query shows where it was routed. The tests commit
(transaction=True), as a real replica only sees committed rows. tests/bench/bench_replica.py checks the
same against a real streaming replica."""

import pytest
from django.core.cache import cache
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from crm.models import Customer
from crm.ops import replica
from metrics.services import bump_generation
from tests.api.conftest import token_for
from tests.conftest import seed_defaults
from tests.factories import make_customer, make_manager, make_usage_event, make_user

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


@pytest.fixture
def routed(settings):
    settings.READ_REPLICA = True
    seed_defaults()  # an emptied test database would create the company settings row: a write
    replica.forget_lag()
    bump_generation()  # the dashboard renders afresh, not from fragments another test cached
    yield settings
    replica.forget_lag()


def _sql(captured: CaptureQueriesContext) -> str:
    return "\n".join(q["sql"] for q in captured.captured_queries)


def _get(client, url: str, **kwargs):
    with (
        CaptureQueriesContext(connections["default"]) as primary,
        CaptureQueriesContext(connections["replica"]) as mirror,
    ):
        response = client.get(url, **kwargs)
        body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body.decode(), _sql(primary), _sql(mirror)


def test_the_dashboard_reads_its_snapshots_from_the_replica_and_the_user_from_the_primary(client, routed):
    client.force_login(make_manager())
    response, _, primary, mirror = _get(client, reverse("metrics:dashboard"))
    assert response.status_code == 200
    assert "metrics_kpisnapshot" in mirror and "metrics_kpisnapshot" not in primary
    assert "django_session" in primary and "django_session" not in mirror
    assert "accounts_user" in primary
    assert "crm_primary" not in response.cookies  # a read pins nobody


def test_without_a_replica_everything_reads_from_the_primary(client, settings):
    settings.READ_REPLICA = False
    client.force_login(make_manager())
    response, _, primary, mirror = _get(client, reverse("metrics:dashboard"))
    assert response.status_code == 200
    assert "metrics_kpisnapshot" in primary and mirror == ""


def test_pages_outside_the_routes_read_from_the_primary(client, routed):
    rep = make_user()
    client.force_login(rep)
    make_customer(owner=rep, name="Alpha GmbH")
    response, body, primary, mirror = _get(client, reverse("crm:customer_list"))
    assert response.status_code == 200 and "Alpha GmbH" in body
    assert "crm_customer" in primary and mirror == ""


def test_a_user_who_wrote_reads_from_the_primary_until_the_pin_expires(client, routed):
    rep = make_user()
    client.force_login(rep)
    payload = {"name": "Gamma AG", "kind": "company", "source": "referral", "language": "en"}
    response = client.post(reverse("crm:customer_create"), payload)
    assert response.status_code == 302, response.content.decode()[-2000:]
    pin = response.cookies["crm_primary"]
    assert pin["max-age"] == routed.READ_REPLICA_PIN_SECONDS and pin["httponly"]

    # The streamed export right after the write: every row from the primary, the new customer in it.
    response, body, primary, mirror = _get(client, reverse("crm:customer_export"))
    assert response.status_code == 200 and "Gamma AG" in body
    assert "crm_customer" in primary and "crm_customer" not in mirror

    del client.cookies["crm_primary"]  # what the browser does once max-age has passed …
    assert "crm_customer" not in _get(client, reverse("crm:customer_export"))[3]  # … the user's pin holds
    cache.delete(f"replica-pin:{rep.pk}")  # … and so does the cache
    response, body, primary, mirror = _get(client, reverse("crm:customer_export"))
    assert "Gamma AG" in body
    assert "crm_customer" in mirror and "crm_customer" not in primary


def test_reads_after_a_write_in_the_same_request_go_to_the_primary(routed):
    router = replica.ReplicaRouter()
    reads = replica.Reads(allowed=True)
    rep = make_user()
    token = replica._reads.set(reads)
    try:
        with connections["default"].execute_wrapper(replica.WriteWatch(reads)):
            assert router.db_for_read(Customer) == replica.REPLICA
            with transaction.atomic():
                Customer.objects.select_for_update().filter(pk=0).exists()  # a locking read is no write
            make_usage_event(rep, timezone.now())  # nor is the request's bookkeeping
            assert not reads.wrote and router.db_for_read(Customer) == replica.REPLICA
            make_customer(name="Delta AG")
            assert reads.wrote and router.db_for_read(Customer) is None  # the primary
    finally:
        replica._reads.reset(token)
    assert router.db_for_read(Customer) is None  # outside a request (tasks, commands): the primary


def test_a_lagging_replica_is_left_for_the_primary(client, routed):
    assert replica.replica_lag() == 0  # the mirror is no replica: nothing to replay
    routed.READ_REPLICA_MAX_LAG_SECONDS = -1  # so any lag is too much
    rep = make_user()
    make_customer(owner=rep, name="Eta AG")
    client.force_login(rep)
    response, body, primary, mirror = _get(client, reverse("crm:customer_export"))
    assert response.status_code == 200 and "Eta AG" in body
    assert "crm_customer" in primary
    assert "pg_last_xact_replay_timestamp" in mirror and "crm_customer" not in mirror


def test_the_lag_is_asked_once_per_check_interval(client, routed):
    routed.READ_REPLICA_LAG_CHECK_SECONDS = 3600  # however slow the requests
    client.force_login(make_user())
    url = reverse("crm:customer_export")
    asked = [_get(client, url)[3].count("pg_is_in_recovery") for _ in range(3)]
    assert asked == [1, 0, 0]
    replica.forget_lag()
    assert _get(client, url)[3].count("pg_is_in_recovery") == 1


def test_an_unreachable_replica_is_left_for_the_primary(client, routed):
    client.force_login(make_manager())
    conn = connections["replica"]
    conn.close()
    port = conn.settings_dict["PORT"]
    conn.settings_dict["PORT"] = 1  # nothing listens there
    try:
        with CaptureQueriesContext(connections["default"]) as primary:
            response = client.get(reverse("metrics:dashboard"))
    finally:
        conn.close()
        conn.settings_dict["PORT"] = port
    assert response.status_code == 200
    assert "metrics_kpisnapshot" in _sql(primary)


def test_api_reads_go_to_the_replica_and_api_writes_to_the_primary(client, routed):
    rep = make_user()
    make_customer(owner=rep, name="Epsilon AG")
    headers = {"Authorization": f"Bearer {token_for(rep)}"}
    response, body, primary, mirror = _get(client, "/api/v1/customers/", headers=headers)
    assert response.status_code == 200 and "Epsilon AG" in body
    assert "crm_customer" in mirror and "crm_customer" not in primary
    assert "accounts_apitoken" in primary and "accounts_apitoken" not in mirror

    with CaptureQueriesContext(connections["replica"]) as mirror_write:
        response = client.post(
            "/api/v1/customers/",
            {"name": "Zeta AG", "kind": "company"},
            content_type="application/json",
            headers=headers,
        )
    assert response.status_code == 201, response.content
    assert "crm_customer" not in _sql(mirror_write)

    # A script keeps no cookie: its user is pinned in the cache, so its next read has the new customer.
    client.cookies.clear()
    response, body, primary, mirror = _get(client, "/api/v1/customers/", headers=headers)
    assert "Zeta AG" in body and "crm_customer" in primary and "crm_customer" not in mirror
    cache.delete(f"replica-pin:{rep.pk}")  # the pin has run out
    response, body, primary, mirror = _get(client, "/api/v1/customers/", headers=headers)
    assert "crm_customer" in mirror and "crm_customer" not in primary

"""Webhooks: signed deliveries (Standard Webhooks) to a receiver on 127.0.0.1, the outbox written with the
change (and rolled back with it), retries and switching off, secret rotation, the SSRF guard, and a worker
killed mid-delivery."""

import json
import os
import signal
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from celery import Celery
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from crm import services
from crm.models import WebhookDelivery, WebhookSubscription
from crm.webhooks import signing
from crm.webhooks.services import (
    RETRY_DELAYS,
    subscription_create,
    subscription_rotate_secret,
    webhook_deliver,
)
from tests.conftest import seed_defaults
from tests.factories import make_customer, make_deal, make_manager, make_ticket, stage
from tests.fault_kit import redis_server
from tests.test_faults import celery_worker, pool_children, wait_until

Event = WebhookSubscription.Event


class Receiver:
    """An HTTP receiver on 127.0.0.1 that records every request and answers ``status`` (after ``hold``
    seconds, the first time only)."""

    def __init__(self, status: int = 200, hold: float = 0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status, self.hold = status, hold
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                first = not receiver.requests
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if first and receiver.hold:
                    threading.Event().wait(receiver.hold)
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/crm"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ids(self) -> set[str]:
        return {headers["webhook-id"] for headers, _body in self.requests}


@pytest.fixture
def receiver(settings):
    settings.CRM_WEBHOOKS_ALLOW_PRIVATE = True
    receiver = Receiver()
    yield receiver
    receiver.close()


def due(delivery: WebhookDelivery) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


@pytest.mark.django_db
def test_a_won_deal_is_delivered_signed_and_verifiable(receiver):
    manager = make_manager()
    _subscription, secret = subscription_create(
        actor=manager, name="Billing", url=receiver.url, events=[Event.DEAL_WON, Event.DEAL_STAGE_CHANGED]
    )
    deal = make_deal()
    services.deal_move_stage(deal=deal, stage=stage("won"), actor=deal.owner)
    deliveries = list(WebhookDelivery.objects.order_by("event"))
    assert [d.event for d in deliveries] == ["deal.stage_changed", "deal.won"]
    for delivery in deliveries:
        webhook_deliver(delivery_id=delivery.pk)
    assert len(receiver.requests) == 2
    headers, body = receiver.requests[-1]
    assert signing.verify(secret, headers, body)
    assert not signing.verify(signing.new_secret(), headers, body)
    payload = json.loads(body)
    assert payload["type"] == "deal.won" and payload["data"]["id"] == deal.pk
    assert payload["data"]["status"] == "won" and payload["data"]["version"] == deal.version + 1
    delivered = WebhookDelivery.objects.get(event="deal.won")
    assert delivered.status == WebhookDelivery.Status.DELIVERED and delivered.attempts == 1
    assert headers["webhook-id"] == delivered.message_id
    assert webhook_deliver(delivery_id=delivered.pk) is None  # never sent twice by us


@pytest.mark.django_db
def test_the_outbox_rolls_back_with_the_change(receiver, django_capture_on_commit_callbacks):
    subscription_create(actor=make_manager(), name="All", url=receiver.url, events=[Event.CUSTOMER_CREATED])
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError), transaction.atomic():
        make_customer()
        assert WebhookDelivery.objects.count() == 1
        raise RuntimeError("the change fails after the event was written")
    assert WebhookDelivery.objects.count() == 0 and callbacks == []
    with django_capture_on_commit_callbacks() as callbacks:
        make_customer()
    assert WebhookDelivery.objects.count() == 1 and len(callbacks) == 1


@pytest.mark.django_db
def test_failures_are_retried_then_given_up_and_the_subscription_switched_off(
    receiver, settings, django_capture_on_commit_callbacks
):
    settings.CRM_WEBHOOKS_DISABLE_AFTER = 2
    receiver.status = 503
    manager = make_manager(email="boss@example.com")
    subscription, _secret = subscription_create(
        actor=manager, name="Flaky", url=receiver.url, events=[Event.CUSTOMER_CREATED]
    )
    make_customer()
    make_customer()
    first, second = WebhookDelivery.objects.order_by("id")
    webhook_deliver(delivery_id=first.pk)
    first.refresh_from_db()
    assert first.status == WebhookDelivery.Status.PENDING and first.attempts == 1
    assert first.last_status_code == 503 and first.last_error == "HTTP 503"
    assert timedelta(seconds=4) < first.next_attempt_at - timezone.now() <= RETRY_DELAYS[0]
    assert webhook_deliver(delivery_id=first.pk) is None  # not due yet
    for delivery in (first, second):
        for _ in range(len(RETRY_DELAYS) + 1):
            due(delivery)
            with django_capture_on_commit_callbacks(execute=True):
                webhook_deliver(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        assert delivery.status == WebhookDelivery.Status.FAILED
        assert delivery.attempts == len(RETRY_DELAYS) + 1
    subscription.refresh_from_db()
    assert not subscription.is_active and subscription.failures_in_a_row == 2
    assert mail.outbox and mail.outbox[0].to == ["boss@example.com"]
    assert len({headers["webhook-id"] for headers, _ in receiver.requests}) == 2  # retries keep their id


@pytest.mark.django_db
def test_after_a_rotation_both_secrets_sign_for_a_day(receiver):
    manager = make_manager()
    subscription, old = subscription_create(
        actor=manager, name="R", url=receiver.url, events=[Event.TICKET_CREATED]
    )
    new = subscription_rotate_secret(actor=manager, subscription=subscription)
    assert new != old
    make_deal()  # no ticket event
    make_ticket()
    webhook_deliver(delivery_id=WebhookDelivery.objects.get().pk)
    headers, body = receiver.requests[0]
    assert len(headers["webhook-signature"].split()) == 2
    assert signing.verify(old, headers, body) and signing.verify(new, headers, body)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/x",
        "http://localhost/x",
        "http://10.0.0.5/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "ftp://example.com/x",
        "http://no-such-host.invalid/x",
    ],
)
def test_private_and_odd_targets_are_refused(settings, url):
    settings.CRM_WEBHOOKS_ALLOW_PRIVATE = False
    with pytest.raises(ValidationError) as refused:
        subscription_create(actor=make_manager(), name="SSRF", url=url, events=[Event.DEAL_WON])
    assert "url" in refused.value.message_dict


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_delivery_still_delivers_once_by_webhook_id(tmp_path, settings):
    """The pool process dies while the receiver holds the request: the delivery's transaction goes with it,
    the message is redelivered (acks_late), and the receiver sees the same webhook-id again."""
    seed_defaults()
    settings.CRM_WEBHOOKS_ALLOW_PRIVATE = True
    receiver = Receiver(hold=30)
    os.environ["CRM_WEBHOOKS_ALLOW_PRIVATE"] = "1"
    try:
        with (
            redis_server() as (redis_url, _redis),
            celery_worker(redis_url, tmp_path / "worker.log") as worker,
        ):
            subscription_create(
                actor=make_manager(), name="Kill", url=receiver.url, events=[Event.CUSTOMER_CREATED]
            )
            make_customer()
            delivery = WebhookDelivery.objects.get()
            sender = Celery("webhook-probe", broker=redis_url, set_as_current=False)
            sender.send_task("crm.tasks.deliver_webhook", args=[delivery.pk])
            sender.close()
            wait_until(lambda: receiver.requests, timeout=60, what="the first attempt")
            children = pool_children(worker.pid)
            assert len(children) == 1, children
            os.kill(children[0], signal.SIGKILL)

            def delivered() -> bool:
                delivery.refresh_from_db()
                return delivery.status == WebhookDelivery.Status.DELIVERED

            wait_until(delivered, timeout=60, what="the redelivered attempt")
        assert len(receiver.requests) == 2 and receiver.ids() == {delivery.message_id}
        assert delivery.attempts == 1  # the killed attempt left nothing behind
    finally:
        os.environ.pop("CRM_WEBHOOKS_ALLOW_PRIVATE", None)
        receiver.close()


@pytest.mark.django_db
def test_managers_manage_webhooks_on_their_pages_and_others_get_404(client, receiver):
    from django.urls import reverse

    from tests.factories import make_user

    client.force_login(make_user())
    assert client.get(reverse("crm:webhook_list")).status_code == 404
    client.force_login(make_manager())
    response = client.post(
        reverse("crm:webhook_list"),
        {"name": "Shop", "url": receiver.url, "events": ["deal.won"], "is_active": "on"},
    )
    subscription = WebhookSubscription.objects.get()
    assert response.status_code == 302
    page = client.get(response.url)
    secret = page.context["new_secret"]
    assert secret == subscription.secret and secret in page.text and page["Cache-Control"] == "no-store"
    assert secret not in client.get(response.url).text  # shown once
    bad = client.post(
        reverse("crm:webhook_list"), {"name": "", "url": "javascript:alert(1)", "events": ["nope"]}
    )
    assert bad.status_code == 200 and {"name", "url", "events"} <= set(bad.context["form"].errors)
    deal = make_deal()
    services.deal_move_stage(deal=deal, stage=stage("won"), actor=deal.owner)
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=WebhookDelivery.Status.FAILED)
    again = client.post(reverse("crm:webhook_redeliver", args=[subscription.pk, delivery.pk]))
    assert again.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PENDING
    log = client.get(reverse("crm:webhook_detail", args=[subscription.pk]))
    assert "deal.won" in log.text


@pytest.mark.django_db
def test_the_readme_snippet_verifies_a_real_delivery(receiver):
    """The receiver code in the README works on what we send (and refuses a tampered body)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = (
        readme.split("Checking a delivery in the receiver", 1)[1]
        .split("```python\n", 1)[1]
        .split("```", 1)[0]
    )
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    _subscription, secret = subscription_create(
        actor=make_manager(), name="Doc", url=receiver.url, events=[Event.CUSTOMER_CREATED]
    )
    make_customer()
    webhook_deliver(delivery_id=WebhookDelivery.objects.get().pk)
    headers, body = receiver.requests[0]
    assert namespace["verify"](secret, headers, body)
    assert not namespace["verify"](secret, headers, body + b" ")


@pytest.mark.django_db
def test_a_refused_target_is_a_field_message_on_the_page_not_an_error(client, settings):
    from django.urls import reverse

    settings.CRM_WEBHOOKS_ALLOW_PRIVATE = False
    client.force_login(make_manager())
    data = {"name": "Private", "url": "http://10.0.0.5/hook", "events": ["deal.won"], "is_active": "on"}
    response = client.post(reverse("crm:webhook_list"), data)
    assert response.status_code == 200
    assert "public addresses only" in response.context["form"].errors["url"][0]
    assert not WebhookSubscription.objects.exists()


@pytest.mark.django_db
def test_without_a_listener_a_change_builds_no_payload_and_writes_no_outbox_row(django_assert_num_queries):
    from crm.webhooks.services import webhook_emit

    def payload() -> dict:
        raise AssertionError("built although nobody listens")

    with django_assert_num_queries(1):
        webhook_emit(event=(Event.DEAL_STAGE_CHANGED, Event.DEAL_WON), data=payload)
    assert not WebhookDelivery.objects.exists()


def _merge(manager):
    from crm.data.merge import customer_merge

    survivor, merged = make_customer(), make_customer()
    return lambda: customer_merge(survivor=survivor, merged=merged, actor=manager), survivor.pk


def _churn(manager):
    customer = make_customer()
    return (
        lambda: services.customer_set_status(
            customer=customer, status="churned", actor=customer.owner, reason="Moved to a rival"
        ),
        customer.pk,
    )


def _solve(manager):
    ticket = make_ticket()
    return lambda: services.ticket_set_status(ticket=ticket, status="solved", actor=manager), ticket.pk


def _reply(manager):
    ticket = make_ticket()
    return lambda: services.ticket_reply(ticket=ticket, actor=manager, body="On it"), ticket.pk


def _assign(manager):
    ticket = make_ticket()
    return lambda: services.ticket_assign(ticket=ticket, assignee=manager, actor=manager), ticket.pk


def _answer(manager):
    from surveys import services as survey_services
    from surveys.models import SurveyResponse
    from tests.factories import make_invitation

    invitation = make_invitation()

    def answer() -> None:
        survey_services.response_submit_score(invitation_id=invitation.pk, score=9)

    return answer, lambda: SurveyResponse.objects.get(invitation=invitation).pk


def _lose(manager):
    deal = make_deal()

    def lose() -> None:
        services.deal_move_stage(deal=deal, stage=stage("lost"), actor=deal.owner, lost_reason="Price")

    return lose, deal.pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("action", "events"),
    [
        (_merge, ["customer.merged"]),
        (_churn, ["customer.churned"]),
        (_solve, ["ticket.solved"]),
        (_reply, ["ticket.updated"]),
        (_assign, ["ticket.updated"]),
        (_answer, ["survey_response.created"]),
        (_lose, ["deal.lost", "deal.stage_changed"]),
    ],
)
def test_each_change_sends_its_event_to_a_subscriber_of_every_event(receiver, action, events):
    """Merged, churned, solved, updated (a reply, an assignment), answered and lost: the change puts
    exactly its events in the outbox of a webhook that listens to all of them, and the receiver gets
    each, signed, about the record that changed."""
    manager = make_manager()
    change, record = action(manager)
    _subscription, secret = subscription_create(
        actor=manager, name="All", url=receiver.url, events=WebhookSubscription.Event.values
    )
    change()
    record_id = record() if callable(record) else record
    deliveries = list(WebhookDelivery.objects.order_by("event"))
    assert [d.event for d in deliveries] == events
    for delivery in deliveries:
        webhook_deliver(delivery_id=delivery.pk)
    assert len(receiver.requests) == len(events)
    for headers, body in receiver.requests:
        assert signing.verify(secret, headers, body)
        payload = json.loads(body)
        assert payload["type"] in events and payload["data"]["id"] == record_id
    sent = {json.loads(body)["type"]: json.loads(body)["data"] for _headers, body in receiver.requests}
    if "customer.merged" in sent:
        assert sent["customer.merged"]["merged_id"] != record_id
    if "customer.churned" in sent:
        assert sent["customer.churned"]["status"] == "churned"
    if "ticket.solved" in sent:
        assert sent["ticket.solved"]["status"] == "solved"
    if "deal.lost" in sent:
        assert sent["deal.lost"]["status"] == "lost" and sent["deal.lost"]["lost_reason"] == "Price"
    if "survey_response.created" in sent:
        assert sent["survey_response.created"]["score"] == 9

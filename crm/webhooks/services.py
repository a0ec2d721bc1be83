"""Webhook subscriptions (managers and admins), the outbox (``webhook_emit``) and delivery with retries.

A delivery is tried at once, then after 5 s, 5 min, 30 min, 2 h, 5 h, 8 h and 8 h (about 24 h in all);
then it is given up. A subscription whose deliveries are given up ``CRM_WEBHOOKS_DISABLE_AFTER`` times in
a row is switched off and its owner is told by e-mail. Each attempt holds the delivery's row lock, so two
workers never send the same delivery at once; a worker that dies mid-attempt leaves it pending, and it
is sent again with the same ``webhook-id``.
"""

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from crm.models import WebhookDelivery, WebhookSubscription
from crm.webhooks import signing, targets

logger = logging.getLogger(__name__)

RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=8),
    timedelta(hours=8),
)
ROTATION_OVERLAP = timedelta(hours=24)
SWEEP_BATCH = 500


def _ensure_manager(actor: User) -> None:
    if not actor.is_manager:
        raise PermissionDenied


def _clean_events(events: Iterable[str]) -> list[str]:
    chosen = sorted(set(events))
    if not chosen or not set(chosen) <= set(WebhookSubscription.Event.values):
        raise ValidationError({"events": _("Choose at least one event.")})
    return chosen


@transaction.atomic
def subscription_create(
    *, actor: User, name: str, url: str, events: Iterable[str]
) -> tuple[WebhookSubscription, str]:
    """A new subscription and its secret (shown once to the user who made it)."""
    _ensure_manager(actor)
    targets.check_url(url)
    secret = signing.new_secret()
    subscription = WebhookSubscription.objects.create(
        name=name,
        url=url,
        events=_clean_events(events),
        secret=secret,
        owner=actor,
        created_at=timezone.now(),
    )
    return subscription, secret


@transaction.atomic
def subscription_update(
    *,
    actor: User,
    subscription: WebhookSubscription,
    name: str,
    url: str,
    events: Iterable[str],
    is_active: bool,
) -> WebhookSubscription:
    """Change a subscription; switching it on again clears its failure count."""
    _ensure_manager(actor)
    targets.check_url(url)
    subscription.name, subscription.url, subscription.events = name, url, _clean_events(events)
    if is_active and not subscription.is_active:
        subscription.failures_in_a_row, subscription.disabled_reason = 0, ""
    subscription.is_active = is_active
    subscription.save()
    return subscription


@transaction.atomic
def subscription_rotate_secret(*, actor: User, subscription: WebhookSubscription) -> str:
    """A new secret; the old one keeps signing too for ``ROTATION_OVERLAP``, while receivers switch."""
    _ensure_manager(actor)
    subscription.previous_secret = subscription.secret
    subscription.previous_secret_until = timezone.now() + ROTATION_OVERLAP
    subscription.secret = signing.new_secret()
    subscription.save(update_fields=["secret", "previous_secret", "previous_secret_until"])
    return subscription.secret


def webhook_emit(*, event: str | tuple[str, ...], data: Callable[[], dict[str, Any]]) -> None:
    """Put ``event`` (or each of several events about one change) in the outbox of every active
    subscription to it, in the caller's transaction; it is sent after the commit (nothing is sent for a
    change that rolls back). ``data`` is only built when someone listens: one indexed query is all a
    write pays otherwise."""
    events = (event,) if isinstance(event, str) else event
    _outbox(events, lambda: [data()])


def webhook_emit_each(*, event: str, data: Callable[[], list[dict[str, Any]]]) -> None:
    """Like ``webhook_emit`` for several records of one kind at once (a KPI evaluation's alerts): one
    ``event`` per item of ``data``, which is built only when someone listens, so the caller pays one query
    whatever the number of records."""
    _outbox((event,), data)


def _outbox(events: tuple[str, ...], data: Callable[[], list[dict[str, Any]]]) -> None:
    subscriptions = list(WebhookSubscription.objects.filter(is_active=True, events__overlap=list(events)))
    if not subscriptions:
        return
    now = timezone.now()
    payloads = data()
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            subscription=subscription,
            message_id=f"msg_{uuid.uuid4().hex}",
            event=name,
            payload={"type": name, "timestamp": now.isoformat(), "data": payload},
            created_at=now,
            next_attempt_at=now,
        )
        for payload in payloads
        for subscription in subscriptions
        for name in events
        if name in subscription.events
    )
    if not deliveries:
        return
    ids = [delivery.pk for delivery in deliveries]
    transaction.on_commit(lambda: _enqueue(ids), robust=True)


def _enqueue(ids: list[int]) -> None:
    from crm.tasks import deliver_webhook

    for pk in ids:
        try:
            deliver_webhook.delay(pk)
        except Exception:  # the broker is down: the sweep sends it within a minute
            logger.warning("webhook %s not queued; the sweep will send it", pk, exc_info=True)


def _secrets(subscription: WebhookSubscription) -> list[str]:
    keys = [subscription.secret]
    until = subscription.previous_secret_until
    if subscription.previous_secret and until is not None and until > timezone.now():
        keys.append(subscription.previous_secret)
    return keys


def webhook_deliver(*, delivery_id: int) -> WebhookDelivery | None:
    """One attempt at a pending delivery that is due (None: delivered, given up, not due, or another
    worker is on it)."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("subscription")
            .filter(
                pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=timezone.now()
            )
            .first()
        )
        if delivery is None:
            return None
        subscription = delivery.subscription
        body = json.dumps(delivery.payload, ensure_ascii=False).encode()
        timestamp = int(timezone.now().timestamp())
        answer = targets.post(
            subscription.url,
            body,
            signing.headers(_secrets(subscription), delivery.message_id, timestamp, body),
        )
        _record(delivery, answer)
    return delivery


def _record(delivery: WebhookDelivery, answer: targets.Answer) -> None:
    now = timezone.now()
    delivery.attempts += 1
    delivery.last_status_code, delivery.last_error, delivery.last_duration_ms = (
        answer.status,
        answer.error,
        answer.duration_ms,
    )
    subscription = delivery.subscription
    if not answer.error:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
            WebhookDelivery.Status.DELIVERED,
            now,
            None,
        )
        if subscription.failures_in_a_row:  # not a write on every delivery to a healthy receiver
            WebhookSubscription.objects.filter(pk=subscription.pk).update(failures_in_a_row=0)
    elif delivery.attempts <= len(RETRY_DELAYS):
        delivery.next_attempt_at = now + RETRY_DELAYS[delivery.attempts - 1]
    else:
        delivery.status, delivery.next_attempt_at = WebhookDelivery.Status.FAILED, None
        _count_failure(subscription)
    delivery.save()


def _count_failure(subscription: WebhookSubscription) -> None:
    """One more delivery given up in a row (counted in the row itself, so concurrent workers add up);
    at ``CRM_WEBHOOKS_DISABLE_AFTER`` the subscription is switched off and its owner told."""
    WebhookSubscription.objects.filter(pk=subscription.pk).update(
        failures_in_a_row=F("failures_in_a_row") + 1
    )
    subscription.refresh_from_db(fields=["failures_in_a_row", "is_active"])
    if subscription.is_active and subscription.failures_in_a_row >= settings.CRM_WEBHOOKS_DISABLE_AFTER:
        subscription.is_active = False
        subscription.disabled_reason = _("%(n)s deliveries in a row failed for a day.") % {
            "n": subscription.failures_in_a_row
        }
        subscription.save(update_fields=["is_active", "disabled_reason"])
        transaction.on_commit(lambda: _tell_owner(subscription), robust=True)


def _tell_owner(subscription: WebhookSubscription) -> None:
    owner = subscription.owner
    if owner.email:
        send_mail(
            _("Webhook %(name)s was switched off") % {"name": subscription.name},
            _("Its deliveries to %(url)s kept failing: %(reason)s Switch it on when the receiver works.")
            % {"url": subscription.url, "reason": subscription.disabled_reason},
            None,
            [owner.email],
        )


@transaction.atomic
def webhook_redeliver(*, actor: User, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again (the log's button): pending and due now, with the same ``webhook-id`` and a
    new series of retries (so a given-up delivery is not counted as given up again at its next failure)."""
    _ensure_manager(actor)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=WebhookDelivery.Status.PENDING, next_attempt_at=timezone.now(), attempts=0
    )
    transaction.on_commit(lambda: _enqueue([delivery.pk]), robust=True)
    delivery.refresh_from_db()
    return delivery


def due_delivery_ids() -> list[int]:
    """Pending deliveries whose time has come (retries, and any whose task was lost), oldest first."""
    return list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=timezone.now()
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )

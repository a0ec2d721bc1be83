"""What other apps keep about a customer, reached without importing those apps.

``crm`` sits below ``surveys``: surveys use the CRM's customers, never the other way round. Yet a
customer's timeline shows their survey answers, and a privacy export or erasure must cover what the
surveys hold. An app that keeps data about customers registers a ``CustomerData`` in its
``AppConfig.ready()``; the timeline (``selectors.customer_timeline``) and the privacy tools
(``crm.data.privacy``) go through what is registered.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from django.db import models
from django.db.models import QuerySet

from accounts.models import User
from crm.models import Customer


class TimelineEntry(TypedDict):
    """One line of a customer's timeline: when, what kind of record (the template's branch: ``deal``,
    ``ticket``, ``activity``, ``survey``) and the record."""

    at: datetime
    kind: str
    object: models.Model


@dataclass(frozen=True)
class CustomerData:
    app: str
    # The customer's entries on their timeline that the user may see, newest first, at most ``limit``.
    timeline: Callable[[Customer, User, int], Iterable[TimelineEntry]]
    # The sections of a personal-data export, each a queryset in the order to export it.
    export: Callable[[Customer], Mapping[str, QuerySet]]
    # Blank the free text about the customer (an erasure keeps the rows, so the KPIs still add up).
    erase: Callable[[Customer], None]


_registered: dict[str, CustomerData] = {}


def register(source: CustomerData) -> None:
    _registered[source.app] = source


def registered() -> tuple[CustomerData, ...]:
    return tuple(_registered.values())

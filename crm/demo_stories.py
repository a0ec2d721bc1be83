"""What other apps add to the demo company, seeded without the CRM importing those apps.

The demo (``crm.demo``) seeds every app, but ``crm`` sits below ``metrics`` and never imports it. An app
with a part of the demo's story of its own registers it in its ``AppConfig.ready()``, as apps add to a
customer's record through ``crm.customer_data``: ``MetricsConfig`` registers the alerts' story (KPIS.md
§10.8, ``metrics.alerts.demo``). ``crm.demo.seeding.seed`` runs the registered stories in the order they
were registered, inside the seed's transaction, once the CRM's own data is in. A story is registered by its
dotted path and imported only when a seed runs, so starting the web or a worker imports none of the demo.
"""

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from crm.demo.config import SeedConfig

# A story: seeds its rows for the demo's configuration; rows written per table.
Story = Callable[["SeedConfig"], Mapping[str, int]]

_registered: dict[str, str] = {}


def register(app: str, story: str) -> None:
    """Register the dotted path of ``app``'s story (a later registration replaces it)."""
    _registered[app] = story


def registered() -> tuple[Story, ...]:
    return tuple(import_string(path) for path in _registered.values())

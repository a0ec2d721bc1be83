"""Every read of customer health, scoped by the CRM's access rules: a rep sees their own customers' scores,
an agent those of the customers their tickets let them see, managers all of them."""

from datetime import date

from django.db.models import Count, Q, QuerySet

from accounts.models import User
from crm.models import Customer
from crm.selectors import customer_list
from metrics.health.models import FLAGGED, Band, CustomerHealth, CustomerHealthRun, HealthSettings

# The list's orders: riskiest first (default), healthiest first, by customer name.
SORTS = {
    "score": ("score", "customer_id"),
    "-score": ("-score", "customer_id"),
    "name": ("customer__name", "customer_id"),
}
DEFAULT_SORT = "score"


def health_run_latest() -> CustomerHealthRun | None:
    """The newest scoring run (the backtest shown beside the list), or None before the first one."""
    return CustomerHealthRun.objects.order_by("-as_of").first()


def _visible(user: User, as_of: date | None = None) -> QuerySet[CustomerHealth]:
    """The stored scores (of the scoring as of ``as_of``, when given) of the customers ``user`` may see."""
    scores = CustomerHealth.objects.filter(customer__merged_into__isnull=True)
    if as_of is not None:
        scores = scores.filter(as_of=as_of)
    if user.is_manager:
        return scores
    return scores.filter(customer__in=customer_list(user=user).values("pk"))


def customer_health_list(
    *, user: User, as_of: date | None, band: str | None = None, sort: str = DEFAULT_SORT
) -> QuerySet:
    """The scores of the scoring as of ``as_of`` that ``user`` may see, of one band (all when None), in the
    order ``sort`` names, each with its customer and owner."""
    scores = _visible(user, as_of).select_related("customer", "customer__owner")
    if band:
        scores = scores.filter(band=band)
    return scores.order_by(*SORTS.get(sort, SORTS[DEFAULT_SORT]))


def customer_health_bands(*, user: User, run: CustomerHealthRun | None) -> dict[str, int]:
    """How many of the customers ``user`` may see are in each band, in all and flagged (at risk or
    critical): a manager's from the scoring run itself, anyone else's with one aggregate of their own."""
    if run is None:
        counts: dict[str, int] = dict.fromkeys(Band.values, 0)
    elif user.is_manager:
        counts = {band: int(run.bands.get(band, 0)) for band in Band.values}
    else:
        counts = _visible(user, run.as_of).aggregate(
            **{band: Count("pk", filter=Q(band=band)) for band in Band.values}
        )
    return {
        **counts,
        "total": sum(counts[band] for band in Band.values),
        "flagged": sum(counts[band] for band in FLAGGED),
    }


def customer_health_of(*, user: User, customer: Customer) -> CustomerHealth | None:
    """The newest score of ``customer`` if ``user`` may see the customer (None when not scored)."""
    return _visible(user).filter(customer=customer).first()


def health_settings() -> HealthSettings:
    return HealthSettings.load()

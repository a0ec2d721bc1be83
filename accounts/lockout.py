"""Sign-in lockout: django-axes' per (username, address) lock plus a limit per address across usernames."""

from axes.handlers.database import AxesDatabaseHandler
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest
from django.utils import timezone


def address_failures(ip_address: str | None) -> int:
    """Failed sign-ins from ``ip_address`` within the cool-off, whatever the usernames tried."""
    if not ip_address:
        return 0
    since = timezone.now() - settings.AXES_COOLOFF_TIME
    total = AccessAttempt.objects.filter(ip_address=ip_address, attempt_time__gte=since).aggregate(
        total=Sum("failures_since_start")
    )["total"]
    return total or 0


class AddressLimitedAxesHandler(AxesDatabaseHandler):
    """Axes' database handler; an address is also locked once its failures over all usernames reach
    ``AXES_ADDRESS_FAILURE_LIMIT``, so one address cannot try a few passwords on every user."""

    def is_locked(self, request: HttpRequest, credentials: dict | None = None) -> bool:
        return super().is_locked(request, credentials) or self._address_locked(request)

    def user_login_failed(
        self, sender, credentials: dict, request: HttpRequest | None = None, **kwargs
    ) -> None:
        """Axes records the failure and locks the pair; a failure that the address limit refused (or that
        reaches it) gets the same lockout answer."""
        super().user_login_failed(sender, credentials, request, **kwargs)
        if request is None or getattr(request, "axes_locked_out", False) or not self._address_locked(request):
            return
        request.axes_locked_out = True
        request.axes_credentials = credentials
        user_locked_out.send(
            "axes",
            request=request,
            username=credentials.get("username") if credentials else None,
            ip_address=request.axes_ip_address,
        )

    @staticmethod
    def _address_locked(request: HttpRequest) -> bool:
        ip_address = getattr(request, "axes_ip_address", None)
        return address_failures(ip_address) >= settings.AXES_ADDRESS_FAILURE_LIMIT

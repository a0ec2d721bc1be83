"""The Django admin behind the CRM's own sign-in, so that the admin never offers a login without 2FA, and
with its URLs and query strings checked before Django's admin (and django-simple-history's) read them."""

import functools
import re
from collections.abc import Callable

from django.contrib import admin, messages
from django.contrib.admin.views.main import ERROR_FLAG, TO_FIELD_VAR
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _

from accounts.text import is_record_id

# URL arguments that name a row (and every positional one): every model in our admin has an integer key.
ROW_ARGUMENTS = ("object_id", "history_id")
# The admin's date drill-down (``created_at__year=2026``) turns these into a datetime without bounds
# (and the next year's, so year 9999 fails too).
_DATE_PART = re.compile(r"__(year|month|day)$")
_DATE_PART_RANGE = {"year": (1, 9998), "month": (1, 12), "day": (1, 31)}


def _is_row_key(value: str) -> bool:
    return is_record_id(value)


def _in_range(value: str, low: int, high: int) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 4 and low <= int(value) <= high


def _bad_lookup(query: QueryDict) -> bool:
    """A filter value PostgreSQL or Python cannot take: a NUL, or a date part that is not a small number."""
    for key, values in query.lists():
        for value in values:
            if "\x00" in value or "\x00" in key:
                return True
            if (part := _DATE_PART.search(key)) and not _in_range(value, *_DATE_PART_RANGE[part[1]]):
                return True
    return False


class CrmAdminSite(admin.AdminSite):
    """Django's admin site whose login page is the CRM's two-step sign-in (password, then the code)."""

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        next_url = request.GET.get(REDIRECT_FIELD_NAME, "")
        if not url_has_allowed_host_and_scheme(
            next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            next_url = reverse("admin:index", current_app=self.name)
        if self.has_permission(request):
            return redirect(next_url)
        if request.user.is_authenticated:
            messages.error(request, _("Your account cannot use the administration."))
            return redirect("home")
        return redirect_to_login(next_url, login_url=reverse("accounts:login"))

    def admin_view(self, view: Callable, cacheable: bool = False) -> Callable:
        """Every admin page, with its arguments checked first (after the admin's own permission check):
        an id that is not a number is a 404 (simple-history's views raise ValueError on it), an empty
        ``_to_field`` is ignored (the admin looks up a field named "" otherwise), and a filter Python or
        PostgreSQL cannot take gets the admin's own "incorrect filter" answer; a row that does not exist is a
        404 on every page (not only the admin's own)."""

        @functools.wraps(view)
        def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            # django-simple-history passes its object and version ids positionally.
            ids = [*args, *(kwargs[name] for name in ROW_ARGUMENTS if name in kwargs)]
            if not all(_is_row_key(str(value)) for value in ids):
                raise Http404
            for name in ("GET", "POST"):
                query = getattr(request, name)
                if TO_FIELD_VAR in query and not query.get(TO_FIELD_VAR):
                    query = query.copy()
                    del query[TO_FIELD_VAR]
                    setattr(request, name, query)
            if _bad_lookup(request.GET):
                return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
            try:
                return view(request, *args, **kwargs)
            except ObjectDoesNotExist:
                # django-otp's device config and QR code pages look their device up with .get().
                raise Http404 from None

        return super().admin_view(checked, cacheable)

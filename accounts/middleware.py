from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import translation


class UserLanguageMiddleware:
    """Use the signed-in user's language unless they picked one with the language switcher (cookie)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (
            user is not None
            and user.is_authenticated
            and settings.LANGUAGE_COOKIE_NAME not in request.COOKIES
        ):
            translation.activate(user.language)
            request.LANGUAGE_CODE = translation.get_language()
        return self.get_response(request)


class RefusedAccessLogMiddleware:
    """Log refused access of signed-in users: every 403, and 404s on record URLs (a forbidden record is a
    404 by design, so an auditor sees who probed which ids). Path and status only, never the query."""

    LOGGED_404_PREFIXES = ("/crm/", "/metrics/", "/surveys/")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        status = response.status_code
        if status == 403 or (status == 404 and request.path.startswith(self.LOGGED_404_PREFIXES)):
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                from accounts.security import security_log

                security_log(kind="access_refused", request=request, status=status, method=request.method)
        return response


class TwoFactorRequiredMiddleware:
    """When the company requires 2FA of managers and admins, send one without a confirmed device to the
    setup page on every request (sign-out, the 2FA pages, static files and language switch still work)."""

    EXEMPT_PREFIXES = ("/accounts/2fa/", "/accounts/logout/", "/i18n/")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (
            user is not None
            and user.is_authenticated
            and user.is_manager
            and not request.path.startswith((*self.EXEMPT_PREFIXES, settings.STATIC_URL or "/static/"))
        ):
            from accounts import totp

            if totp.two_factor_required(user) and totp.confirmed_device(user) is None:
                return redirect("accounts:totp_setup")
        return self.get_response(request)

import codecs
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import translation


class Utf8RequestMiddleware:
    """Read every request's query string and form data as UTF-8, whatever charset it declares.

    Our pages are UTF-8, so browsers send UTF-8. Django otherwise decodes the body with any codec Python
    knows, named in ``Content-Type: …; charset=``: ``utf-7`` or ``unicode_escape`` turn a few bytes into
    lone surrogates or NUL characters, which no text column can store.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.encoding and codecs.lookup(request.encoding).name != "utf-8":
            request.encoding = "utf-8"
        return self.get_response(request)


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


class TwoFactorSessionMiddleware:
    """End a signed-in session that did not pass the second step of its user's sign-in.

    Every way to create a session (our sign-in, the admin's, a future one) goes through Django's
    ``login()``, whose signal records how the second step went (``accounts.signals.record_login``). A
    session marked as having skipped the code, or one from before the mark existed whose user now has a
    device, is signed out here and sent to the real sign-in. Costs no query for a marked session.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            from accounts.services import two_factor

            state = request.session.get(two_factor.SESSION_KEY)
            if state is None:
                state = (
                    two_factor.SKIPPED if two_factor.has_confirmed_device(user) else two_factor.NOT_ENROLLED
                )
                if state == two_factor.NOT_ENROLLED:
                    request.session[two_factor.SESSION_KEY] = state
            if state not in (two_factor.VERIFIED, two_factor.NOT_ENROLLED):
                return self._sign_out(request)
        return self.get_response(request)

    @staticmethod
    def _sign_out(request: HttpRequest) -> HttpResponse:
        from django.contrib import messages
        from django.contrib.auth import logout
        from django.utils.translation import gettext as _
        from django_htmx.http import HttpResponseClientRedirect

        from accounts.security import security_log

        security_log(kind="two_factor_skipped", request=request, username=request.user.username)
        logout(request)
        messages.error(request, _("Please sign in with your password and your authenticator code."))
        url = settings.LOGIN_URL
        if request.headers.get("HX-Request"):
            from django.urls import reverse

            return HttpResponseClientRedirect(reverse(url))
        return redirect(url)


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
            from accounts.services import two_factor

            if two_factor.two_factor_required(user) and two_factor.confirmed_device(user) is None:
                return redirect("accounts:totp_setup")
        return self.get_response(request)

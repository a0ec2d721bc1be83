import time
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import selectors
from accounts.forms import (
    ApiTokenForm,
    FeedbackForm,
    LoginForm,
    SecondStepForm,
    SecurityEventFilterForm,
    ServiceAccountForm,
    TotpCodeForm,
)
from accounts.models import User
from accounts.pickers import PICKER_FIELD, PICKER_OPTIONS
from accounts.redirects import safe_local_path
from accounts.security import security_log
from accounts.services import api_tokens, feedback_send, two_factor
from accounts.text import storable_text
from accounts.web import PAGE_SIZE, CappedPaginator, form_errors_from, partial_template


class TwoFactorLoginView(auth_views.LoginView):
    """Django's sign-in; a user with a confirmed authenticator device must also give a code."""

    def form_valid(self, form: LoginForm) -> HttpResponse:
        user = form.get_user()
        if two_factor.confirmed_device(user) is None:
            return super().form_valid(form)
        session = self.request.session
        session.cycle_key()
        session[two_factor.PENDING_USER_KEY] = user.pk
        session[two_factor.PENDING_AT_KEY] = time.time()
        session[two_factor.PENDING_BACKEND_KEY] = user.backend
        session[two_factor.PENDING_NEXT_KEY] = self.get_success_url()
        session[two_factor.PENDING_ATTEMPTS_KEY] = 0
        return redirect("accounts:totp_verify")


login_view = TwoFactorLoginView.as_view(
    template_name="accounts/login.html", authentication_form=LoginForm, redirect_authenticated_user=True
)


def _pending_clear(request: HttpRequest) -> None:
    for key in two_factor.PENDING_KEYS:
        request.session.pop(key, None)


def totp_verify_view(request: HttpRequest) -> HttpResponse:
    """Second step of a sign-in: the code from the authenticator app (5 tries, 5 minutes)."""
    pending = two_factor.pending_sign_in(request.session)
    if pending is None:
        expired = bool(request.session.get(two_factor.PENDING_USER_KEY))
        _pending_clear(request)
        if expired:
            messages.error(request, _("Your sign-in expired. Please sign in again."))
        return redirect("accounts:login")
    user, device = pending
    form = SecondStepForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        passed = two_factor.sign_in_code_verify(user=user, device=device, code=form.cleaned_data["code"])
        if passed is not None:
            return _sign_in(request, user, recovery=passed == "recovery")
        if (start_over := _wrong_code(request, user)) is not None:
            return start_over
        form.add_error(
            "code",
            _("That code is not right. Check your authenticator app (or a recovery code) and try again."),
        )
    return render(request, "accounts/totp_verify.html", {"form": form})


def _sign_in(request: HttpRequest, user: User, *, recovery: bool) -> HttpResponse:
    """Finish the pending sign-in (its code was right) and go where the password step was headed."""
    if recovery:
        security_log(
            kind="recovery_code_used", request=request, user=user, username=user.username,
            left=two_factor.recovery_codes_left(user),
        )  # fmt: skip
    session = request.session
    backend = session.get(two_factor.PENDING_BACKEND_KEY)
    next_url = session.get(two_factor.PENDING_NEXT_KEY) or settings.LOGIN_REDIRECT_URL
    _pending_clear(request)
    request.two_factor_verified = True  # read by accounts.signals.record_login
    auth_login(request, user, backend=backend)
    return redirect(next_url)


def _wrong_code(request: HttpRequest, user: User) -> HttpResponse | None:
    """Count a wrong code (in the security log too); the last allowed one sends the user back to sign in."""
    session = request.session
    attempts = int(session.get(two_factor.PENDING_ATTEMPTS_KEY, 0)) + 1
    session[two_factor.PENDING_ATTEMPTS_KEY] = attempts
    security_log(
        kind="two_factor_failed", request=request, user=user, username=user.username, attempt=attempts
    )
    if attempts < two_factor.MAX_ATTEMPTS:
        return None
    _pending_clear(request)
    # One failed sign-in for django-axes per exhausted round, so password + code rounds cannot be
    # repeated without end: after AXES_FAILURE_LIMIT rounds the username and address are locked.
    user_login_failed.send(sender=__name__, credentials={"username": user.username}, request=request)
    messages.error(request, _("Too many wrong codes. Please sign in again."))
    return redirect("accounts:login")


@login_required
def totp_setup_view(request: HttpRequest) -> HttpResponse:
    """Turn two-factor sign-in on (scan the QR code, confirm a code from the app: the recovery codes are
    shown once), make new recovery codes, or turn it off (a current code, unless the role requires it)."""
    user = request.user
    required = two_factor.two_factor_required(user)
    device = two_factor.device_get_or_create(user=user)
    form = TotpCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        action = request.POST.get("action", "confirm")
        code = form.cleaned_data["code"]
        done = two_factor.setup_step(device=device, action=action, code=code, required=required)
        if done == "disable":
            messages.success(request, _("Two-factor sign-in is off."))
            return redirect("accounts:totp_setup")
        if done == "confirm":
            request.session[two_factor.SESSION_KEY] = two_factor.VERIFIED
            messages.success(request, _("Two-factor sign-in is on."))
        if done in ("confirm", "recovery"):
            codes = two_factor.recovery_codes_create(user=user)
            return _recovery_codes_page(request, codes, required=required)
        security_log(kind="two_factor_failed", request=request, action=action)
        form.add_error("code", _("That code is not right. Check your authenticator app and try again."))
    return _setup_page(request, form, device, required=required)


def _setup_page(
    request: HttpRequest, form: TotpCodeForm, device: TOTPDevice, *, required: bool
) -> HttpResponse:
    """The setup page: the key and QR code while the device is unconfirmed, the recovery codes left after."""
    context = {
        "form": form,
        "device": device,
        "required": required,
        "secret": two_factor.secret(device),
        "uri": two_factor.provisioning_uri(device),
        # segno's SVG of our own otpauth URI: markup we make, nothing a user typed.
        "qr": mark_safe(two_factor.qr_svg(device)) if not device.confirmed else "",
        "recovery_left": two_factor.recovery_codes_left(request.user) if device.confirmed else None,
    }
    return render(request, "accounts/totp_setup.html", context)


def _recovery_codes_page(request: HttpRequest, codes: list[str], *, required: bool) -> HttpResponse:
    """The new recovery codes, once: they are never shown again (a new set replaces them), and the page is
    not kept by the browser."""
    response = render(
        request,
        "accounts/recovery_codes.html",
        {"codes": codes, "next": settings.LOGIN_REDIRECT_URL if required else ""},
    )
    response["Cache-Control"] = "no-store"
    return response


def locked_out_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """What django-axes answers a locked-out sign-in with: a page saying when to try again (429)."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return render(request, "accounts/locked_out.html", {"minutes": minutes}, status=429)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    return auth_views.LogoutView.as_view()(request)


@login_required
@require_POST
def feedback_view(request: HttpRequest) -> HttpResponse:
    """Staff feedback on the CRM, from the form every page carries; htmx swaps in a thank-you."""
    form = FeedbackForm(request.POST)
    if form.is_valid():
        feedback_send(user=request.user, **form.cleaned_data)
        if not request.htmx:
            messages.success(request, _("Thank you for your feedback."))
            return redirect(safe_local_path(request, form.cleaned_data["page"]) or "home")
        return render(request, "accounts/_feedback.html", {"feedback_form": FeedbackForm(), "sent": True})
    return render(request, "accounts/_feedback.html", {"feedback_form": form, "open": True})


@login_required
@require_GET
@vary_on_headers("HX-Request")
def security_event_list_view(request: HttpRequest) -> HttpResponse:
    """The security log for managers and admins (a 404 for everyone else), filtered by kind and user."""
    if not request.user.is_manager:
        raise Http404
    form = SecurityEventFilterForm(request.GET)
    filters = form.cleaned_data if form.is_valid() else {}
    events = selectors.security_event_list(
        user=request.user, kind=filters.get("kind", ""), actor=filters.get("user")
    )
    page = CappedPaginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "query": query.urlencode()}
    return render(
        request, partial_template(request, "accounts/security_event_list.html", "security-events"), context
    )


@login_required
@require_GET
def staff_options_view(request: HttpRequest, kind: str) -> HttpResponse:
    """The people matching what is typed in a people picker of ``kind`` (``accounts.selectors.STAFF_KINDS``),
    as listbox options; picking nobody (owners of a filter: everyone) comes first when it means something."""
    spec = selectors.STAFF_KINDS.get(kind)
    if spec is None or (spec.managers_only and not request.user.is_manager):
        raise Http404
    field = request.GET.get("field", "owner")
    if not PICKER_FIELD.match(field):
        field = "owner"
    q = storable_text(request.GET.get(f"{field}_search", request.GET.get("q", ""))[:200])
    found = list(selectors.staff_search(qs=selectors.staff_of_kind(kind=kind), q=q)[: PICKER_OPTIONS + 1])
    context = {
        "people": found[:PICKER_OPTIONS],
        "more": len(found) > PICKER_OPTIONS,
        "field": field,
        "q": q,
        "empty_label": spec.empty_label,
    }
    return render(request, "accounts/_staff_options.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def api_token_list_view(request: HttpRequest) -> HttpResponse:
    """The user's API tokens (admins: also the service accounts'). A new token goes through the session to
    the page the browser is sent to next, so it is shown exactly once and a reload does not make another."""
    form = ApiTokenForm(request.POST or None, user=request.user)
    if form.is_bound and form.is_valid():
        try:
            new = api_tokens.api_token_create(actor=request.user, request=request, **form.token_fields())
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            request.session[NEW_TOKEN_KEY] = {"secret": new.secret, "name": new.token.name}
            return redirect("accounts:api_tokens")
    return _api_tokens_page(request, form=form, created=request.session.pop(NEW_TOKEN_KEY, None))


@login_required
@require_POST
def service_account_create_view(request: HttpRequest) -> HttpResponse:
    if not request.user.is_admin:
        raise Http404
    account_form = ServiceAccountForm(request.POST)
    if account_form.is_valid():
        try:
            account = api_tokens.service_account_create(actor=request.user, **account_form.cleaned_data)
        except ValidationError as exc:
            form_errors_from(exc, account_form)
        else:
            messages.success(
                request, _("Service account %(name)s created: now give it a token.") % {"name": account}
            )
            return redirect("accounts:api_tokens")
    return _api_tokens_page(request, form=ApiTokenForm(user=request.user), account_form=account_form)


NEW_TOKEN_KEY = "api_token_new"  # noqa: S105 (a session key, not a secret)


def _api_tokens_page(request: HttpRequest, **context: Any) -> HttpResponse:
    user = request.user
    context.setdefault("account_form", ServiceAccountForm() if user.is_admin else None)
    context["tokens"] = selectors.api_token_list(user=user)
    context["api_docs"] = reverse("api_docs")
    response = render(request, "accounts/api_tokens.html", context)
    response["Cache-Control"] = "no-store"  # a new token is on the page
    return response


@login_required
@require_POST
def api_token_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(selectors.api_token_list(user=request.user), pk=pk)
    api_tokens.api_token_revoke(actor=request.user, token=token, request=request)
    messages.success(request, _("Token %(name)s revoked: it no longer works.") % {"name": token.name})
    return redirect("accounts:api_tokens")

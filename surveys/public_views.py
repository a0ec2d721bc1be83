"""The public survey pages at ``/s/…``: no account, no CRM navigation, in the customer's language.

Rules (KPIS.md §9.2): a GET never records an answer (``?score=N`` only preselects); the answer is saved
by a CSRF-checked POST; an unknown token is a 404 that writes nothing; every response carries
``no-store``, ``noindex`` and ``no-referrer``; each client address is rate-limited. The page shows only
the question and the company name, nothing about the customer.
"""

from collections.abc import Callable
from functools import wraps

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.utils import timezone, translation
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import csrf_exempt

from crm.models import CompanySettings
from surveys import emails, ratelimit, selectors, services
from surveys.forms import CommentForm, ScoreForm
from surveys.models import SurveyInvitation, SurveySuppression

ALLOWED_METHODS = ("GET", "HEAD", "POST")
MESSAGES = {
    "not_found": (
        _("This link does not work"),
        _(
            "Please open the complete link from the e-mail. "
            "If it still does not work, the survey may have been withdrawn."
        ),
    ),
    "answered": (
        _("You have already answered"),
        _("Thank you! We have your answer; there is nothing more to do."),
    ),
    "thanks": (_("Thank you!"), _("Your answer helps us get better.")),
    "expired": (
        _("This survey has closed"),
        _("The link was valid for a limited time only. Thank you all the same."),
    ),
    "closed": (_("This survey is no longer open"), _("There is nothing to answer here any more.")),
    "rate_limited": (_("Too many requests"), _("Please wait a minute, then try again.")),
    "method": (
        _("This is not possible here"),
        _("Please open the link from the e-mail to answer the survey."),
    ),
    "csrf": (
        _("Please try again"),
        _(
            "Your answer could not be saved: the page was open for a long time or your browser blocks "
            "cookies. Reload the page and answer again."
        ),
    ),
    "unsubscribe": (
        _("No more surveys?"),
        _("Confirm, and we will not send you any more survey e-mails."),
    ),
    "unsubscribed": (_("You will get no more surveys"), _("We have noted it. Thank you for your time.")),
}


def public_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Method check, per-client rate limit and the privacy headers for every public survey response."""

    @wraps(view)
    def wrapped(request: HttpRequest, token: str) -> HttpResponse:
        if request.method not in ALLOWED_METHODS:
            response = _message(request, "method", status=405)
            response["Allow"] = ", ".join(ALLOWED_METHODS)
        elif not ratelimit.allow(request):
            response = _message(request, "rate_limited", status=429)
            response["Retry-After"] = "60"
        else:
            response = view(request, token)
        add_never_cache_headers(response)
        response["X-Robots-Tag"] = "noindex, nofollow"
        response["Referrer-Policy"] = "no-referrer"
        return response

    return csrf_exempt(wrapped)


def _company() -> str:
    return CompanySettings.load().company_name


def _message(
    request: HttpRequest, kind: str, *, status: int = 200, context: dict | None = None
) -> HttpResponse:
    title, text = MESSAGES[kind]
    language = translation.get_language()
    page = {
        "company": _company(),
        "language": language,
        "title": title,
        "text": text,
        "kind": kind,
        **(context or {}),
    }
    response = render(request, "surveys/public/message.html", page, status=status)
    response["Content-Language"] = language
    return response


class NoReferrerCsrfCheck(CsrfViewMiddleware):
    """Django's CSRF check for pages served with ``Referrer-Policy: no-referrer``.

    With that policy browsers send the form's POST with ``Origin: null`` and no Referer, which Django's
    origin and (HTTPS) referer checks refuse. The heart of the check, the token in the form matching the
    CSRF cookie, stays, and a real foreign Origin is still refused. The cookie injection that the HTTPS
    referer check guards against is ruled out in production by the ``__Host-`` CSRF cookie.
    """

    def _origin_verified(self, request: HttpRequest) -> bool:
        return request.META.get("HTTP_ORIGIN") == "null" or super()._origin_verified(request)

    def _check_referer(self, request: HttpRequest) -> None:
        return None


def _csrf_failed(request: HttpRequest) -> bool:
    """The CSRF check, run by hand so that a failure gets a friendly page in the customer's language."""
    return NoReferrerCsrfCheck(lambda r: HttpResponse()).process_view(request, None, (), {}) is not None


def _language(invitation: SurveyInvitation) -> str:
    return invitation.language or invitation.customer.language


def _preselected(request: HttpRequest, invitation: SurveyInvitation) -> int | None:
    raw = request.GET.get("score", "")
    if raw.isascii() and raw.isdigit() and len(raw) <= 2 and int(raw) in invitation.survey.scores:
        return int(raw)
    return None


def _render_step(
    request: HttpRequest, invitation: SurveyInvitation, step: str, form, *, selected: int | None = None
) -> HttpResponse:
    survey, language, company = invitation.survey, _language(invitation), _company()
    context = {
        "company": company,
        "language": language,
        "step": step,
        "form": form,
        "question": survey.text("question", language, company),
        "label_low": survey.text("label_low", language, company),
        "label_high": survey.text("label_high", language, company),
        "scores": list(survey.scores),
        "scale_min": survey.scale_min,
        "scale_max": survey.scale_max,
        "selected": selected,
    }
    if step == "comment":
        bucket = survey.bucket(invitation.response.score)
        context["followup"] = survey.text(f"followup_{bucket}", language, company)
    response = render(request, "surveys/public/answer.html", context)
    response["Content-Language"] = language
    return response


@public_page
def answer_view(request: HttpRequest, token: str) -> HttpResponse:
    invitation = selectors.invitation_by_token(token=token)
    if invitation is None:
        return _message(request, "not_found", status=404)
    with translation.override(_language(invitation)):
        if request.method == "POST":
            return _answer_post(request, invitation)
        return _answer_get(request, invitation)


def _answer_get(request: HttpRequest, invitation: SurveyInvitation) -> HttpResponse:
    now = timezone.now()
    state = services.link_state(invitation, now)
    if state not in ("score", "comment"):
        return _message(request, state)
    if request.method == "GET":
        services.invitation_mark_opened(invitation=invitation, now=now)
    if state == "comment":
        return _render_step(request, invitation, "comment", CommentForm())
    selected = _preselected(request, invitation)
    return _render_step(request, invitation, "score", ScoreForm(survey=invitation.survey), selected=selected)


def _answer_post(request: HttpRequest, invitation: SurveyInvitation) -> HttpResponse:
    if _csrf_failed(request):
        return _message(request, "csrf", status=403)
    if request.POST.get("step") == "comment":
        return _comment_post(request, invitation)
    form = ScoreForm(request.POST, survey=invitation.survey)
    state = services.link_state(invitation, timezone.now())
    if state == "comment":
        # A repeated submit (double tap, back button): the score is already saved and stays as it was.
        return _render_step(request, invitation, "comment", CommentForm())
    if state != "score":
        return _message(request, state)
    if not form.is_valid():
        return _render_step(request, invitation, "score", form)
    try:
        response, _created = services.response_submit_score(
            invitation_id=invitation.pk, score=form.cleaned_data["score"]
        )
    except services.SurveyUnavailable as exc:
        return _message(request, exc.state)
    except ValidationError as exc:
        form.add_error("score", exc.messages)
        return _render_step(request, invitation, "score", form)
    invitation.response = response
    return _render_step(request, invitation, "comment", CommentForm())


def _comment_post(request: HttpRequest, invitation: SurveyInvitation) -> HttpResponse:
    state = services.link_state(invitation, timezone.now())
    if state == "score":
        return _render_step(request, invitation, "score", ScoreForm(survey=invitation.survey))
    if state != "comment":
        return _message(request, state)
    form = CommentForm(request.POST)
    if request.POST.get("skip"):
        form = CommentForm({"comment": ""})
    if not form.is_valid():
        return _render_step(request, invitation, "comment", form)
    try:
        services.response_finish(invitation_id=invitation.pk, comment=form.cleaned_data["comment"])
    except services.SurveyUnavailable as exc:
        return _message(request, exc.state)
    except ValidationError as exc:
        form.add_error("comment", exc.messages)
        return _render_step(request, invitation, "comment", form)
    return _message(request, "thanks")


@public_page
def unsubscribe_view(request: HttpRequest, token: str) -> HttpResponse:
    """GET asks for confirmation (mail scanners follow links); POST opts out. The signed token is the
    credential, so the one-click POST of mail clients (RFC 8058, no CSRF token) is accepted."""
    invitation_id = emails.unsubscribe_invitation_id(token)
    invitation = selectors.invitation_for_unsubscribe(invitation_id=invitation_id) if invitation_id else None
    if invitation is None:
        return _message(request, "not_found", status=404)
    with translation.override(_language(invitation)):
        if request.method != "POST":
            return _message(request, "unsubscribe", context={"confirm": True})
        services.suppression_add(
            customer=invitation.customer, reason=SurveySuppression.Reason.UNSUBSCRIBED, invitation=invitation
        )
        return _message(request, "unsubscribed")

"""The survey e-mail: HTML and plain text in the customer's language, with the link, one link per score
(``?score=N`` only preselects it) and an unsubscribe link (also as a one-click List-Unsubscribe header)."""

from django.conf import settings
from django.core import signing
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _

from crm.models import CompanySettings
from surveys.models import SurveyInvitation

UNSUBSCRIBE_SALT = "surveys.unsubscribe.v1"


def absolute(path: str) -> str:
    """An absolute URL for links in e-mails (there is no request to build it from)."""
    return settings.SURVEYS_PUBLIC_URL.rstrip("/") + path


def unsubscribe_token(invitation: SurveyInvitation) -> str:
    """A signed token naming the invitation: re-creatable for the reminder, unforgeable without the key."""
    return signing.dumps(invitation.pk, salt=UNSUBSCRIBE_SALT)


def unsubscribe_invitation_id(token: str) -> int | None:
    """The invitation id inside a genuine unsubscribe token, or None."""
    try:
        value = signing.loads(token, salt=UNSUBSCRIBE_SALT)
    except signing.BadSignature:
        return None
    return value if isinstance(value, int) else None


def invitation_email(invitation: SurveyInvitation, *, token: str, reminder: bool) -> EmailMultiAlternatives:
    """The invitation (or reminder) e-mail for ``invitation``, whose raw link token is ``token``."""
    survey = invitation.survey
    company = CompanySettings.load().company_name
    language = invitation.language or invitation.customer.language
    link = absolute(reverse("surveys_public:answer", args=[token]))
    unsubscribe = absolute(reverse("surveys_public:unsubscribe", args=[unsubscribe_token(invitation)]))
    with translation.override(language):
        context = {
            "company": company,
            "language": language,
            "question": survey.text("question", language, company),
            "label_low": survey.text("label_low", language, company),
            "label_high": survey.text("label_high", language, company),
            "scores": [(score, f"{link}?score={score}") for score in survey.scores],
            "scale_min": survey.scale_min,
            "scale_max": survey.scale_max,
            "link": link,
            "unsubscribe_url": unsubscribe,
            "reminder": reminder,
            "days": survey.response_window_days,
        }
        if reminder:
            subject = _("Reminder: %(company)s would like your feedback") % {"company": company}
        else:
            subject = _("%(company)s would like your feedback") % {"company": company}
        text = render_to_string("surveys/email/invitation.txt", context)
        html = render_to_string("surveys/email/invitation.html", context)
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        to=[invitation.email],
        headers={
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Auto-Submitted": "auto-generated",
        },
    )
    message.attach_alternative(html, "text/html")
    return message

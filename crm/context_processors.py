from django.conf import settings
from django.http import HttpRequest


def company(request: HttpRequest) -> dict:
    from accounts.forms import FeedbackForm

    return {
        "company_name": settings.CRM_COMPANY_NAME,
        "currency": settings.CRM_CURRENCY,
        # The staff-feedback form in every page's footer (unbound: rendering it costs no query).
        "feedback_form": FeedbackForm(),
    }

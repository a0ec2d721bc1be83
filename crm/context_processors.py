from django.conf import settings
from django.http import HttpRequest


def company(request: HttpRequest) -> dict[str, str]:
    return {"company_name": settings.CRM_COMPANY_NAME, "currency": settings.CRM_CURRENCY}

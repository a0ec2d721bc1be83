import logging

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

# Loggers that write request paths: a survey link's token must never reach the logs (KPIS.md §9.2 item 9).
PATH_LOGGERS = ("django.request", "django.server", "django.security.csrf", "gunicorn.access")


class SurveysConfig(AppConfig):
    name = "surveys"
    verbose_name = _("Surveys")

    def ready(self) -> None:
        from crm import customer_data
        from surveys.customer_data import SURVEYS
        from surveys.log_filters import RedactSurveyTokens

        customer_data.register(SURVEYS)

        for name in PATH_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, RedactSurveyTokens) for f in logger.filters):
                logger.addFilter(RedactSurveyTokens())

import importlib

import pytest


@pytest.fixture(autouse=True)
def _survey_settings(settings):
    """No rate limit unless a test turns it on; links in e-mails point at a known host."""
    settings.SURVEYS_RATE_LIMIT = ""
    settings.SURVEYS_PUBLIC_URL = "https://crm.example.com"
    settings.SURVEYS_INTERNAL_DOMAINS = ["ourcompany.example"]


@pytest.fixture
def default_surveys(db):
    """The surveys the data migration creates (browser tests empty the tables, so seed them again)."""
    from django.apps import apps

    from surveys.models import Survey

    importlib.import_module("surveys.migrations.0002_default_surveys").seed(apps, None)
    return {(s.kind, s.trigger): s for s in Survey.objects.all()}

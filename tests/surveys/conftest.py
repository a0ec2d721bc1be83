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
    from surveys.models import Survey
    from surveys.services import default_surveys_seed

    default_surveys_seed()
    return {(s.kind, s.trigger): s for s in Survey.objects.all()}

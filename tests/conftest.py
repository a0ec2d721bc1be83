import pytest


def seed_defaults() -> None:
    """The rows the data migrations create (default pipeline, SLA hours, company settings); idempotent."""
    from crm.services import defaults_seed

    defaults_seed()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """A reused test database may have been emptied by browser tests (real transactions flush tables)."""
    with django_db_blocker.unblock():
        seed_defaults()


@pytest.fixture(autouse=True)
def _test_settings(settings):
    """Fast, local settings for every test: cheap hashing, in-memory mail, plain HTTP (the browser tests
    talk to a live server on http://localhost; tests/test_deploy.py checks the production settings)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
    settings.SECURE_SSL_REDIRECT = False
    settings.SECURE_HSTS_SECONDS = 0
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME = "sessionid", "csrftoken"
    settings.LANGUAGE_CODE = "en"
    # django-otp slows a device down after a wrong code (1 s, 2 s, ...): off, except where a test checks it.
    settings.OTP_TOTP_THROTTLE_FACTOR = settings.OTP_STATIC_THROTTLE_FACTOR = 0
    # Pages render without a prior collectstatic: no manifest lookup, no STATIC_ROOT to scan.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.STATIC_ROOT = None
    settings.WHITENOISE_USE_FINDERS = True
    # A second connection cannot see a test's uncommitted rows: KPI rebuilds scan on the test's own
    # (tests/metrics/test_incremental.py runs the second connection on committed data).
    settings.KPI_PREFETCH_SCANS = False


@pytest.fixture
def no_auto_assign(db):
    """New tickets stay unassigned unless a test assigns them."""
    from crm.automation.builtins import seed
    from crm.models import AutomationRule

    seed()
    AutomationRule.objects.filter(builtin=AutomationRule.Builtin.TICKET_AUTO_ASSIGN).update(is_active=False)

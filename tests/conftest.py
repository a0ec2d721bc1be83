import pytest


@pytest.fixture(autouse=True)
def _test_settings(settings):
    """Fast, local settings for every test: cheap hashing, in-memory mail, no HTTPS redirect."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
    settings.SECURE_SSL_REDIRECT = False
    settings.LANGUAGE_CODE = "en"
    # Pages render without a prior collectstatic: no manifest lookup, no STATIC_ROOT to scan.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.STATIC_ROOT = None
    settings.WHITENOISE_USE_FINDERS = True


@pytest.fixture
def no_auto_assign(db):
    """New tickets stay unassigned unless a test assigns them."""
    from crm.models import CompanySettings

    CompanySettings.objects.filter(pk=CompanySettings.load().pk).update(auto_assign_tickets=False)

import pytest


@pytest.fixture(autouse=True)
def _test_settings(settings):
    """Fast, local settings for every test: cheap hashing, in-memory mail, no HTTPS redirect."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
    settings.SECURE_SSL_REDIRECT = False
    settings.LANGUAGE_CODE = "en"

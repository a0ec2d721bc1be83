"""Personal API tokens: shown once, stored hashed, revocable, expiring; service accounts by admins."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken, SecurityEvent, User
from accounts.services.api_tokens import api_token_authenticate, token_hash
from tests.factories import make_admin, make_manager, make_user

pytestmark = pytest.mark.django_db


def test_a_token_is_shown_once_and_stored_hashed(client):
    user = make_user()
    client.force_login(user)
    page = client.post(reverse("accounts:api_tokens"), {"name": "Shop sync", "scope": "write"}, follow=True)
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    token = ApiToken.objects.get(user=user)
    secret = page.context["created"]["secret"]
    assert secret.startswith("mcrm_") and secret in page.text
    assert token.key_hash == token_hash(secret) and secret not in str(ApiToken.objects.values().get())
    again = client.get(reverse("accounts:api_tokens"))
    assert secret not in again.text and token.prefix in again.text
    assert SecurityEvent.objects.filter(kind="api_token_created", user=user).exists()


def test_revoked_and_expired_tokens_stop_working(client, api):
    user = make_user()
    client.force_login(user)
    client.post(reverse("accounts:api_tokens"), {"name": "A", "scope": "read"})
    token = ApiToken.objects.get(user=user)
    client.post(reverse("accounts:api_token_revoke", args=[token.pk]))
    token.refresh_from_db()
    assert token.revoked_at is not None
    expired = api(user)
    ApiToken.objects.filter(user=user, revoked_at=None).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert expired.get("/pipelines/").status_code == 401
    assert SecurityEvent.objects.filter(kind="api_token_refused", user=user).exists()


def test_use_is_logged_once_an_hour_and_sets_last_used(api):
    user = make_user()
    client = api(user)
    for _ in range(3):
        assert client.get("/pipelines/").status_code == 200
    assert SecurityEvent.objects.filter(kind="api_token_used", user=user).count() == 1
    assert ApiToken.objects.get(user=user).last_used_at is not None


def test_nobody_revokes_someone_elses_token(client, api):
    owner = make_user()
    api(owner)
    token = ApiToken.objects.get(user=owner)
    client.force_login(make_manager())
    assert client.post(reverse("accounts:api_token_revoke", args=[token.pk])).status_code == 404
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None


def test_admins_create_service_accounts_that_are_not_licensed(client):
    admin = make_admin()
    client.force_login(admin)
    response = client.post(
        reverse("accounts:service_account_create"),
        {"username": "shop-sync", "first_name": "Shop", "role": "rep"},
    )
    assert response.status_code == 302
    account = User.objects.get(username="shop-sync")
    assert account.is_service_account and not account.has_usable_password()
    page = client.post(
        reverse("accounts:api_tokens"), {"name": "Shop", "scope": "write", "owner": account.pk}
    )
    assert page.status_code == 302 and ApiToken.objects.filter(user=account).exists()
    client.force_login(make_manager())
    refused = client.post(reverse("accounts:service_account_create"), {"username": "x", "role": "rep"})
    assert refused.status_code == 404


def test_bad_input_on_the_token_form_is_a_field_message(client):
    client.force_login(make_user())
    page = client.post(reverse("accounts:api_tokens"), {"name": "", "scope": "root", "expires": "0001-01-01"})
    assert page.status_code == 200
    assert set(page.context["form"].errors) >= {"name", "scope", "expires"}
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("secret", ["", "mcrm_", "mcrm_" + "x" * 500, "\x00", "mcrm_\udc80"])
def test_odd_secrets_are_refused_without_error(secret):
    assert api_token_authenticate(secret=secret) is None

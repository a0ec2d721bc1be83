"""Sign-in protection (django-axes): a (username, address) pair is locked after 5 failures, for 15 minutes."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from accounts.models import SecurityEvent
from tests.factories import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def sign_in(client, username: str, password: str, ip: str = "10.0.0.1", **headers):
    return client.post(
        reverse("accounts:login"), {"username": username, "password": password}, REMOTE_ADDR=ip, **headers
    )


def fail(client, username: str, times: int, ip: str = "10.0.0.1") -> None:
    for _ in range(times):
        sign_in(client, username, "wrong password", ip)


def test_settings_lock_the_username_and_address_pair_for_a_limited_time():
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60
    assert settings.AXES_RESET_ON_SUCCESS is True
    assert settings.AXES_HANDLER == "accounts.lockout.AddressLimitedAxesHandler"
    assert settings.AXES_ADDRESS_FAILURE_LIMIT == 20


def test_fifth_failure_locks_out_with_a_friendly_429_page(client):
    user = make_user()
    fail(client, user.username, 3)
    assert sign_in(client, user.username, "wrong password").status_code == 200
    assert sign_in(client, user.username, "wrong password").status_code == 429
    response = sign_in(client, user.username, PASSWORD)
    assert response.status_code == 429
    assert b"Too many sign-in attempts" in response.content
    assert b"15 minutes" in response.content
    assert "_auth_user_id" not in client.session
    assert SecurityEvent.objects.filter(kind="locked_out", username=user.username, ip="10.0.0.1").exists()


def test_lockout_page_in_chinese(client):
    user = make_user()
    fail(client, user.username, 5)
    response = sign_in(client, user.username, PASSWORD, HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9")
    assert response.status_code == 429
    assert "登录尝试次数过多".encode() in response.content


def test_other_users_and_other_addresses_can_still_sign_in(client):
    victim, colleague = make_user(), make_user()
    fail(client, victim.username, 5, ip="10.0.0.66")
    assert sign_in(client, colleague.username, PASSWORD, ip="10.0.0.66").status_code == 302
    client.logout()
    assert sign_in(client, victim.username, PASSWORD, ip="10.0.0.2").status_code == 302


def test_the_lock_lifts_after_the_cool_off(client):
    user = make_user()
    fail(client, user.username, 5)
    assert sign_in(client, user.username, PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert sign_in(client, user.username, PASSWORD).status_code == 302


def test_a_successful_sign_in_resets_the_failures(client):
    user = make_user()
    fail(client, user.username, 4)
    assert sign_in(client, user.username, PASSWORD).status_code == 302
    client.logout()
    fail(client, user.username, 4)
    assert sign_in(client, user.username, PASSWORD).status_code == 302


def test_login_page_keeps_working_for_get_requests_while_locked(client):
    user = make_user()
    fail(client, user.username, 5)
    assert client.get(reverse("accounts:login"), REMOTE_ADDR="10.0.0.1").status_code == 200


def test_behind_a_proxy_the_forwarded_address_is_locked_not_the_proxy(client, settings):
    settings.SURVEYS_CLIENT_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    user = make_user()
    for _ in range(5):
        sign_in(client, user.username, "wrong password", ip="10.9.9.9", HTTP_X_FORWARDED_FOR="198.51.100.7")
    locked = sign_in(client, user.username, PASSWORD, ip="10.9.9.9", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert locked.status_code == 429
    assert SecurityEvent.objects.filter(kind="locked_out", ip="198.51.100.7").exists()
    other = sign_in(client, user.username, PASSWORD, ip="10.9.9.9", HTTP_X_FORWARDED_FOR="198.51.100.8")
    assert other.status_code == 302


def test_one_address_cannot_try_a_few_passwords_on_every_user(client):
    """Four wrong passwords per user stay under the pair's limit, but the address as a whole is locked
    after AXES_ADDRESS_FAILURE_LIMIT failures, for every username, until the cool-off ends."""
    users = [make_user() for _ in range(6)]
    for user in users[:5]:
        fail(client, user.username, 4, ip="10.0.0.77")
    untouched = users[5]
    response = sign_in(client, untouched.username, PASSWORD, ip="10.0.0.77")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    # Another address is not affected; the locked one is free again after the cool-off.
    assert sign_in(client, untouched.username, PASSWORD, ip="10.0.0.78").status_code == 302
    client.logout()
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert sign_in(client, untouched.username, PASSWORD, ip="10.0.0.77").status_code == 302


def test_the_address_limit_leaves_an_office_with_a_few_typos_alone(client):
    users = [make_user() for _ in range(6)]
    for user in users:
        fail(client, user.username, 2, ip="10.0.0.79")
    assert sign_in(client, users[0].username, PASSWORD, ip="10.0.0.79").status_code == 302

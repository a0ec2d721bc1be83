"""Optional TOTP two-factor sign-in: setup, the second sign-in step, replay, and the role requirement."""

import pytest
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import SecurityEvent, User
from accounts.services import two_factor
from crm.models import CompanySettings
from tests.factories import make_manager, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def code_for(device: TOTPDevice) -> str:
    """The authenticator app's current code for ``device``."""
    return f"{TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token():06d}"


def enrol(user: User) -> TOTPDevice:
    """A confirmed device for ``user`` (no code used yet)."""
    device = two_factor.device_get_or_create(user=user)
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    return device


def sign_in(client, user: User):
    return client.post(reverse("accounts:login"), {"username": user.username, "password": PASSWORD})


def test_setup_shows_secret_and_confirming_turns_2fa_on(client):
    user = make_user()
    client.force_login(user)
    response = client.get(reverse("accounts:totp_setup"))
    assert response.status_code == 200
    device = TOTPDevice.objects.get(user=user)
    assert two_factor.secret(device) in response.text and "<svg" in response.text
    assert "otpauth://totp/" in response.text
    assert not device.confirmed

    response = client.post(reverse("accounts:totp_setup"), {"action": "confirm", "code": "000000"})
    assert response.status_code == 200
    assert "That code is not right" in response.text
    device.refresh_from_db()
    assert not device.confirmed

    response = client.post(reverse("accounts:totp_setup"), {"action": "confirm", "code": code_for(device)})
    # On: the recovery codes, shown this once and not kept by the browser.
    assert response.status_code == 200 and "Your recovery codes" in response.text
    assert response["Cache-Control"] == "no-store"
    assert (
        response.text.count("<li><code>") == two_factor.RECOVERY_CODES == two_factor.recovery_codes_left(user)
    )
    assert two_factor.confirmed_device(user) is not None


def test_turning_off_needs_a_current_code(client):
    user = make_user()
    device = enrol(user)
    client.force_login(user)
    session = client.session
    session[two_factor.SESSION_KEY] = two_factor.VERIFIED  # as if the code had been given at sign-in
    session.save()
    response = client.post(reverse("accounts:totp_setup"), {"action": "disable", "code": "000000"})
    assert response.status_code == 200
    assert TOTPDevice.objects.filter(pk=device.pk).exists()
    response = client.post(reverse("accounts:totp_setup"), {"action": "disable", "code": code_for(device)})
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=user).exists()


def test_login_without_2fa_is_unchanged(client):
    user = make_user()
    response = sign_in(client, user)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)


def test_login_with_2fa_requires_the_code(client):
    user = make_user()
    device = enrol(user)
    response = sign_in(client, user)
    assert response.status_code == 302
    assert response.url == reverse("accounts:totp_verify")
    assert "_auth_user_id" not in client.session

    response = client.post(reverse("accounts:totp_verify"), {"code": "000000"})
    assert response.status_code == 200
    assert "That code is not right" in response.text
    assert "_auth_user_id" not in client.session
    assert SecurityEvent.objects.filter(kind="two_factor_failed", user=user).count() == 1

    response = client.post(reverse("accounts:totp_verify"), {"code": code_for(device)}, follow=True)
    assert response.redirect_chain[-1] == (reverse("crm:workspace"), 302)
    assert client.session["_auth_user_id"] == str(user.pk)
    assert response.context["user"] == user


def test_verify_without_pending_sign_in_goes_to_login(client):
    response = client.get(reverse("accounts:totp_verify"))
    assert response.status_code == 302
    assert response.url == reverse("accounts:login")


def test_five_wrong_codes_send_back_to_login(client):
    user = make_user()
    enrol(user)
    sign_in(client, user)
    for _ in range(4):
        assert client.post(reverse("accounts:totp_verify"), {"code": "000000"}).status_code == 200
    response = client.post(reverse("accounts:totp_verify"), {"code": "000000"})
    assert response.status_code == 302
    assert response.url == reverse("accounts:login")
    assert client.get(reverse("accounts:totp_verify")).url == reverse("accounts:login")


def test_expired_pending_sign_in_goes_back_to_login(client):
    user = make_user()
    device = enrol(user)
    sign_in(client, user)
    session = client.session
    session[two_factor.PENDING_AT_KEY] -= two_factor.PENDING_MAX_AGE + 1
    session.save()
    response = client.post(reverse("accounts:totp_verify"), {"code": code_for(device)})
    assert response.status_code == 302
    assert response.url == reverse("accounts:login")
    assert "_auth_user_id" not in client.session


def test_code_replay_is_refused(client):
    user = make_user()
    device = enrol(user)
    code = code_for(device)
    assert two_factor.code_verify(device=device, code=code)
    assert not two_factor.code_verify(device=device, code=code)

    sign_in(client, user)
    response = client.post(reverse("accounts:totp_verify"), {"code": code})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_required_for_managers_redirects_unenrolled_manager_to_setup(client):
    CompanySettings.objects.filter(pk=CompanySettings.load().pk).update(require_2fa_for_managers=True)
    manager = make_manager()
    client.force_login(manager)
    response = client.get(reverse("crm:workspace"))
    assert response.status_code == 302
    assert response.url == reverse("accounts:totp_setup")
    response = client.get(reverse("accounts:totp_setup"))
    assert response.status_code == 200
    assert "requires two-factor sign-in for your role" in response.text

    device = TOTPDevice.objects.get(user=manager)
    client.post(reverse("accounts:totp_setup"), {"action": "confirm", "code": code_for(device)})
    assert client.get(reverse("crm:workspace")).status_code == 200
    # Required: it cannot be turned off.
    client.post(reverse("accounts:totp_setup"), {"action": "disable", "code": code_for(device)})
    assert two_factor.confirmed_device(manager) is not None


def test_required_for_managers_does_not_touch_reps(client):
    CompanySettings.objects.filter(pk=CompanySettings.load().pk).update(require_2fa_for_managers=True)
    rep = make_user()
    client.force_login(rep)
    assert client.get(reverse("crm:workspace")).status_code == 200


def test_not_required_leaves_managers_alone(client):
    client.force_login(make_manager())
    assert client.get(reverse("crm:workspace")).status_code == 200


def test_setup_page_renders_in_simplified_chinese(client):
    user = make_user(language=User.Language.ZH_HANS)
    client.force_login(user)
    response = client.get(reverse("accounts:totp_setup"))
    assert response.status_code == 200
    assert "<h1>两步验证登录</h1>" in response.text
    assert "密钥" in response.text
    assert "Two-factor sign-in" not in response.text


def test_repeated_rounds_of_wrong_codes_lock_the_user_out_with_axes(client):
    user = make_user()
    enrol(user)
    statuses = []
    for _round in range(5):
        assert sign_in(client, user).status_code == 302
        for _ in range(two_factor.MAX_ATTEMPTS):
            response = client.post(reverse("accounts:totp_verify"), {"code": "000000"})
        statuses.append(response.status_code)
    assert statuses == [302, 302, 302, 302, 429]
    # Locked: even the right password is refused now.
    assert sign_in(client, user).status_code == 429


# Recovery codes, throttling
# ---------------------------------------------------------------------------------------------------------


def _pending(client, user: User) -> None:
    response = sign_in(client, user)
    assert response.url == reverse("accounts:totp_verify")


def test_each_recovery_code_signs_in_once(client):
    user = make_user()
    enrol(user)
    codes = two_factor.recovery_codes_create(user=user)
    assert len(set(codes)) == two_factor.RECOVERY_CODES
    first, second = codes[0], codes[1]

    _pending(client, user)
    response = client.post(reverse("accounts:totp_verify"), {"code": first.upper()})  # as typed, any case
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(user.pk)
    assert two_factor.recovery_codes_left(user) == two_factor.RECOVERY_CODES - 1
    assert SecurityEvent.objects.filter(kind="recovery_code_used", user=user).exists()
    client.logout()

    _pending(client, user)
    response = client.post(reverse("accounts:totp_verify"), {"code": first})
    assert response.status_code == 200 and "That code is not right" in response.text  # used up
    assert "_auth_user_id" not in client.session
    response = client.post(reverse("accounts:totp_verify"), {"code": second})
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(user.pk)


def test_new_recovery_codes_need_a_current_code_and_replace_the_old_ones(client):
    user = make_user()
    device = enrol(user)
    old = two_factor.recovery_codes_create(user=user)
    client.force_login(user)
    session = client.session
    session[two_factor.SESSION_KEY] = two_factor.VERIFIED
    session.save()
    response = client.post(reverse("accounts:totp_setup"), {"action": "recovery", "code": "123456"})
    assert "That code is not right" in response.text
    response = client.post(reverse("accounts:totp_setup"), {"action": "recovery", "code": code_for(device)})
    assert response.status_code == 200 and "Your recovery codes" in response.text
    assert not two_factor.recovery_code_verify(user=user, code=old[0])  # the old set no longer works
    assert two_factor.recovery_codes_left(user) == two_factor.RECOVERY_CODES


@pytest.mark.parametrize("code", ["", "12345", "1234567", "٣٣٣٣٣٣", "\x00" * 6, "x" * 20, "' OR 1=1 --"])
def test_codes_that_cannot_be_codes_are_refused_without_an_error(client, code):
    user = make_user()
    device = enrol(user)
    two_factor.recovery_codes_create(user=user)
    assert not two_factor.code_verify(device=device, code=code)
    assert not two_factor.recovery_code_verify(user=user, code=code)


def test_a_wrong_code_slows_the_device_down(client, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 1
    user = make_user()
    device = enrol(user)
    assert not two_factor.code_verify(
        device=device, code="000000" if code_for(device) != "000000" else "111111"
    )
    # Within the second that follows, even the right code is refused (django-otp's throttling) ...
    assert not two_factor.code_verify(device=device, code=code_for(device))
    device.refresh_from_db()
    assert device.throttling_failure_count >= 1
    # ... and once the wait is over, it is accepted.
    TOTPDevice.objects.filter(pk=device.pk).update(
        throttling_failure_timestamp=None, throttling_failure_count=0
    )
    assert two_factor.code_verify(device=device, code=code_for(device))


def test_pending_sign_in_is_the_user_and_device_while_fresh_and_active(client):
    user = make_user()
    device = enrol(user)
    sign_in(client, user)
    session = client.session
    assert two_factor.pending_sign_in(session) == (user, device)
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert two_factor.pending_sign_in(session) is None
    User.objects.filter(pk=user.pk).update(is_active=True)
    session[two_factor.PENDING_AT_KEY] -= two_factor.PENDING_MAX_AGE + 1
    assert two_factor.pending_sign_in(session) is None


def test_sign_in_code_verify_tells_an_app_code_from_a_recovery_code():
    user = make_user()
    device = enrol(user)
    codes = two_factor.recovery_codes_create(user=user)
    assert two_factor.sign_in_code_verify(user=user, device=device, code=code_for(device)) == "totp"
    assert two_factor.sign_in_code_verify(user=user, device=device, code=codes[0]) == "recovery"
    assert two_factor.sign_in_code_verify(user=user, device=device, code=codes[0]) is None  # used up

"""Every way to sign in passes the same second step: no URL creates a session without the user's code."""

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import LoginEvent, SecurityEvent, User
from accounts.services import two_factor
from tests.factories import make_admin, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def code_for(device: TOTPDevice) -> str:
    """The authenticator app's current code for ``device``."""
    return f"{TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token():06d}"


def enrol(user: User) -> TOTPDevice:
    device = two_factor.device_get_or_create(user=user)
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    return device


def _all_routes() -> list[str]:
    """Every URL of the site without path arguments (the ones a login form could be posted to)."""

    def walk(patterns, prefix: str) -> list[str]:
        out = []
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                out += walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern) and "<" not in str(pattern.pattern):
                out.append("/" + prefix + str(pattern.pattern))
        return out

    return sorted(set(walk(get_resolver().url_patterns, "")))


@pytest.fixture
def staff():
    """An admin (staff, superuser) with a confirmed authenticator."""
    user = make_admin()
    User.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
    user.refresh_from_db()
    return user, enrol(user)


def _signed_in_user_id(client: Client) -> str | None:
    """Whom the client's session lets through to the workspace (None: sent to sign in)."""
    response = client.get(reverse("crm:workspace"))
    return client.session.get("_auth_user_id") if response.status_code == 200 else None


def test_admin_login_sends_to_the_two_step_sign_in(client, staff):
    user, device = staff
    response = client.get("/admin/login/?next=/admin/crm/deal/")
    assert response.status_code == 302
    assert response.url == reverse("accounts:login") + "?next=/admin/crm/deal/"

    response = client.post("/admin/login/", {"username": user.username, "password": PASSWORD})
    assert "_auth_user_id" not in client.session
    assert _signed_in_user_id(client) is None

    # Through the real sign-in: password, then code, then the admin opens.
    response = client.post(
        reverse("accounts:login") + "?next=/admin/",
        {"username": user.username, "password": PASSWORD, "next": "/admin/"},
    )
    assert response.url == reverse("accounts:totp_verify")
    response = client.post(reverse("accounts:totp_verify"), {"code": code_for(device)})
    assert response.url == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_admin_login_does_not_loop_for_a_signed_in_user_without_admin_access(client):
    rep = make_user()
    client.force_login(rep)
    response = client.get("/admin/", follow=True)
    assert response.redirect_chain[-1][0] == reverse("crm:workspace")
    assert "cannot use the administration" in response.text


def test_admin_login_refuses_an_outside_next(client):
    response = client.get("/admin/login/?next=https://evil.example/")
    assert response.url == reverse("accounts:login") + "?next=/admin/"


@pytest.mark.parametrize("route", _all_routes())
def test_no_url_creates_a_session_from_a_password_alone(staff, route):
    """Post the user's username and password to every URL of the site, as a login form would."""
    user, _device = staff
    client = Client()
    data = {"username": user.username, "password": PASSWORD, "next": "/crm/"}
    client.post(route, data)
    client.post(route, data, headers={"HX-Request": "true"})
    assert _signed_in_user_id(client) is None, f"{route} signed in without a code"


def test_a_session_made_without_the_code_is_ended_on_its_next_request(client, staff):
    """Whatever path calls Django's login() without the code (here the test client's force_login), the
    session is signed out before it reaches a page, logged, and not counted as a sign-in."""
    user, _device = staff
    client.force_login(user)
    assert client.session[two_factor.SESSION_KEY] == two_factor.SKIPPED
    response = client.get(reverse("crm:workspace"))
    assert response.status_code == 302
    assert response.url == reverse("accounts:login")
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302
    assert SecurityEvent.objects.filter(kind="two_factor_skipped", user=user).exists()
    assert not LoginEvent.objects.filter(user=user).exists()


def test_an_htmx_request_on_such_a_session_is_sent_to_sign_in(client, staff):
    user, _device = staff
    client.force_login(user)
    response = client.get(reverse("crm:deal_list"), headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("accounts:login")


def test_a_session_from_before_the_mark_is_checked_once(client):
    """Sessions made before this check existed carry no mark: the device decides."""
    plain, enrolled = make_user(), make_user()
    enrol(enrolled)
    for user, expected in ((plain, 200), (enrolled, 302)):
        client.force_login(user)
        session = client.session
        del session[two_factor.SESSION_KEY]
        session.save()
        assert client.get(reverse("crm:workspace")).status_code == expected
    client.force_login(plain)
    assert client.session[two_factor.SESSION_KEY] == two_factor.NOT_ENROLLED


def test_the_two_step_sign_in_marks_the_session_verified(client, staff):
    user, device = staff
    client.post(reverse("accounts:login"), {"username": user.username, "password": PASSWORD})
    client.post(reverse("accounts:totp_verify"), {"code": code_for(device)})
    assert client.session[two_factor.SESSION_KEY] == two_factor.VERIFIED
    assert client.get(reverse("crm:workspace")).status_code == 200
    assert LoginEvent.objects.filter(user=user).count() == 1


def test_turning_2fa_on_keeps_the_current_session(client):
    user = make_user()
    client.force_login(user)
    device = two_factor.device_get_or_create(user=user)
    code = code_for(device)
    client.post(reverse("accounts:totp_setup"), {"action": "confirm", "code": code})
    assert two_factor.confirmed_device(user) is not None
    assert client.get(reverse("crm:workspace")).status_code == 200

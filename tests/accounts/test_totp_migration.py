"""Two-factor devices moved to django-otp (accounts 0009): a user who had set up an authenticator before
still signs in with the codes it shows, and a code accepted before the move is not accepted again."""

from base64 import b32decode
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("accounts", "0008_storable_json")]
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # what the old setup page showed, base32


def _latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    # Every app's: going back to BEFORE also unapplies other apps' migrations that depend on later accounts
    # ones, and the tests after this one need them back.
    return executor.loader.graph.leaf_nodes()


def _code(at: float | None = None) -> str:
    totp = TOTP(b32decode(SECRET), step=30, t0=0, digits=6, drift=0)
    if at is not None:
        totp.time = at
    return f"{totp.token():06d}"


def test_a_device_from_before_still_signs_in_with_its_code(client):
    user = make_user(username="alte", password="correct horse battery")
    latest = _latest()
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old_apps = executor.loader.project_state(BEFORE).apps
    OldDevice = old_apps.get_model("accounts", "TotpDevice")
    now = datetime.now(UTC)
    step = int(now.timestamp() // 30)
    # Confirmed before the move, the code of the previous step already used.
    OldDevice.objects.create(user_id=user.pk, secret=SECRET, confirmed_at=now, last_used_step=step - 1)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(latest)

    device = TOTPDevice.objects.get(user=user)
    assert device.confirmed and device.last_t == step - 1
    response = client.post(
        reverse("accounts:login"), {"username": "alte", "password": "correct horse battery"}
    )
    assert response.url == reverse("accounts:totp_verify")
    # The code accepted before the move is refused; today's code signs in.
    refused = client.post(reverse("accounts:totp_verify"), {"code": _code(now.timestamp() - 30)})
    assert refused.status_code == 200 and "_auth_user_id" not in client.session
    response = client.post(reverse("accounts:totp_verify"), {"code": _code()})
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(user.pk)

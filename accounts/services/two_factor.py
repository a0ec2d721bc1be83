"""Optional two-factor sign-in on django-otp: the authenticator device (TOTP, with replay protection and
throttling), recovery codes (static tokens, each usable once), the setup QR code, and the role rule."""

import time
from base64 import b32encode
from typing import Literal

import segno
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.db import transaction
from django.utils.module_loading import import_string
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User

DEVICE_NAME = "Authenticator app"
RECOVERY_DEVICE_NAME = "Recovery codes"
# Recovery codes made at a time; each signs in once when the phone is lost.
RECOVERY_CODES = 10

# Seconds a correct password stays valid while the user types the code.
PENDING_MAX_AGE = 5 * 60
# Wrong codes allowed in one pending sign-in before it starts over at the login page.
MAX_ATTEMPTS = 5
# Session keys of a pending sign-in (password right, code not yet given).
PENDING_USER_KEY = "totp_pending_user_id"
PENDING_AT_KEY = "totp_pending_at"
PENDING_BACKEND_KEY = "totp_pending_backend"
PENDING_NEXT_KEY = "totp_pending_next"
PENDING_ATTEMPTS_KEY = "totp_pending_attempts"
PENDING_KEYS = (PENDING_USER_KEY, PENDING_AT_KEY, PENDING_BACKEND_KEY, PENDING_NEXT_KEY, PENDING_ATTEMPTS_KEY)

# How a signed-in session passed the second step, set when the session is created (accounts.signals):
# VERIFIED (a code was given) or NOT_ENROLLED (the user had no confirmed device). Any other value, or none,
# means the session was made by a path that skipped the code; TwoFactorSessionMiddleware ends it.
SESSION_KEY = "two_factor"
VERIFIED = "verified"
NOT_ENROLLED = "not_enrolled"
SKIPPED = "skipped"


def confirmed_device(user: User) -> TOTPDevice | None:
    """The user's confirmed authenticator device, or None when 2FA is off for them."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("id").first()


def has_confirmed_device(user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def session_state_at_sign_in(*, user: User, code_given: bool) -> str:
    """What a new session records about the second step: skipped when the user has a device but the
    sign-in path gave no code (e.g. a login form other than ours)."""
    if code_given:
        return VERIFIED
    return SKIPPED if has_confirmed_device(user) else NOT_ENROLLED


def pending_sign_in(session: SessionBase) -> tuple[User, TOTPDevice] | None:
    """The user and device of the sign-in waiting in ``session`` for its code; None when there is none, it
    is older than PENDING_MAX_AGE, or the user is inactive or has no confirmed device any more."""
    user_id = session.get(PENDING_USER_KEY)
    started = session.get(PENDING_AT_KEY)
    user = User.objects.filter(pk=user_id, is_active=True).first() if user_id else None
    device = confirmed_device(user) if user is not None else None
    if user is None or device is None or started is None or time.time() - float(started) > PENDING_MAX_AGE:
        return None
    return user, device


def device_get_or_create(*, user: User) -> TOTPDevice:
    """The user's device (the confirmed one first); a new unconfirmed one with a fresh random key if they
    have none."""
    device = TOTPDevice.objects.filter(user=user).order_by("-confirmed", "id").first()
    return device or TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)


def secret(device: TOTPDevice) -> str:
    """The key as authenticator apps take it typed in: base32, in groups of four."""
    text = b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def provisioning_uri(device: TOTPDevice) -> str:
    """The ``otpauth://`` URI an authenticator app scans (the QR code) or takes pasted."""
    return device.config_url


def qr_svg(device: TOTPDevice) -> str:
    """The setup QR code as inline SVG, drawn on the server (no script, no image request)."""
    return segno.make(provisioning_uri(device), error="m").svg_inline(scale=4, border=2, dark="#101828")


def _token(code: str) -> str | None:
    """The code as typed, without spaces, if it is 6 ASCII digits (``int()`` would take "٣" too)."""
    code = "".join(code.split())
    return code if len(code) == 6 and code.isascii() and code.isdigit() else None


def code_verify(*, device: TOTPDevice, code: str) -> bool:
    """Accept a 6-digit code of the current, previous or next 30-second step, once only, through
    django-otp: the accepted step is stored (a code, or an older one, is never accepted again) and wrong
    codes slow the device down (each failure doubles the wait before the next try)."""
    token = _token(code)
    if token is None:
        return False
    with transaction.atomic():
        locked = TOTPDevice.objects.select_for_update().get(pk=device.pk)
        verified = locked.verify_token(token)
    if verified:
        device.refresh_from_db()
    return verified


def device_confirm(*, device: TOTPDevice, code: str) -> bool:
    """Turn 2FA on for the device's user if the code is right."""
    if not code_verify(device=device, code=code):
        return False
    TOTPDevice.objects.filter(pk=device.pk).update(confirmed=True)
    device.confirmed = True
    return True


def device_delete(*, device: TOTPDevice) -> None:
    """Turn 2FA off: the device and the recovery codes go; the next setup starts with a new key."""
    TOTPDevice.objects.filter(user_id=device.user_id).delete()
    StaticDevice.objects.filter(user_id=device.user_id).delete()


def recovery_codes_create(*, user: User) -> list[str]:
    """New recovery codes for ``user`` (the old ones stop working): shown once, each usable once."""
    with transaction.atomic():
        device, _created = StaticDevice.objects.get_or_create(
            user=user, name=RECOVERY_DEVICE_NAME, defaults={"confirmed": True}
        )
        device.token_set.all().delete()
        codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
        StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


def recovery_codes_left(user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def recovery_code_verify(*, user: User, code: str) -> bool:
    """Accept one of the user's recovery codes and use it up (django-otp deletes it; throttled like codes)."""
    code = "".join(code.split()).lower()
    if not code or len(code) > 16 or not code.isascii() or not code.isalnum():
        return False
    for device_id in StaticDevice.objects.filter(user=user, confirmed=True).values_list("pk", flat=True):
        with transaction.atomic():
            if StaticDevice.objects.select_for_update().get(pk=device_id).verify_token(code):
                return True
    return False


def sign_in_code_verify(*, user: User, device: TOTPDevice, code: str) -> Literal["totp", "recovery"] | None:
    """Which second step of a sign-in ``code`` passes: a code from the app ("totp"), else one of the
    user's recovery codes ("recovery", now used up), else none (None)."""
    if code_verify(device=device, code=code):
        return "totp"
    return "recovery" if recovery_code_verify(user=user, code=code) else None


def two_factor_required(user: User) -> bool:
    """Whether the company requires 2FA of this user: the policy named by ``TWO_FACTOR_REQUIRED`` (a dotted
    path; the CRM's reads its company settings), none when unset. A setting rather than an import keeps
    ``accounts`` free of the other apps."""
    policy = getattr(settings, "TWO_FACTOR_REQUIRED", "")
    return bool(policy and import_string(policy)(user))


def setup_step(*, device: TOTPDevice, action: str, code: str, required: bool) -> str | None:
    """One step on the setup page, if ``code`` is right for it: "disable" (deletes the device; not when
    the role requires 2FA), "recovery" (new codes are due) or "confirm" (the new device is on); None when
    nothing was done."""
    if action == "disable" and device.confirmed and not required and code_verify(device=device, code=code):
        device_delete(device=device)
        return "disable"
    if action == "recovery" and device.confirmed and code_verify(device=device, code=code):
        return "recovery"
    if action == "confirm" and not device.confirmed and device_confirm(device=device, code=code):
        return "confirm"
    return None

"""Optional TOTP two-factor sign-in: devices, code checks with replay protection, and the role rule."""

import time

import pyotp
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from accounts.models import TotpDevice, User

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


def confirmed_device(user: User) -> TotpDevice | None:
    """The user's confirmed device, or None when 2FA is off for them."""
    return TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).first()


def has_confirmed_device(user: User) -> bool:
    return TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).exists()


def session_state_at_sign_in(*, user: User, code_given: bool) -> str:
    """What a new session records about the second step: skipped when the user has a device but the
    sign-in path gave no code (e.g. a login form other than ours)."""
    if code_given:
        return VERIFIED
    return SKIPPED if has_confirmed_device(user) else NOT_ENROLLED


def device_get_or_create(*, user: User) -> TotpDevice:
    """The user's device; a new unconfirmed one with a fresh random secret if they have none."""
    device, _created = TotpDevice.objects.get_or_create(user=user, defaults={"secret": pyotp.random_base32()})
    return device


def provisioning_uri(device: TotpDevice) -> str:
    """The ``otpauth://`` URI an authenticator app accepts (typed or pasted, no QR code)."""
    issuer = getattr(settings, "CRM_COMPANY_NAME", "Mini CRM") or "Mini CRM"
    return pyotp.TOTP(device.secret).provisioning_uri(name=device.user.username, issuer_name=issuer)


def code_verify(*, device: TotpDevice, code: str, at: float | None = None) -> bool:
    """Accept a 6-digit code of the current, previous or next 30-second step, once only.

    The accepted step is stored under a row lock, so the same code (or an older one) cannot be replayed.
    """
    code = "".join(code.split())
    if len(code) != 6 or not code.isdigit():
        return False
    now = time.time() if at is None else at
    totp = pyotp.TOTP(device.secret)
    current = int(now // totp.interval)
    with transaction.atomic():
        locked = TotpDevice.objects.select_for_update().get(pk=device.pk)
        for step in (current - 1, current, current + 1):
            if locked.last_used_step is not None and step <= locked.last_used_step:
                continue
            if pyotp.utils.strings_equal(totp.generate_otp(step), code):
                locked.last_used_step = step
                locked.save(update_fields=["last_used_step"])
                device.last_used_step = step
                return True
    return False


def device_confirm(*, device: TotpDevice, code: str) -> bool:
    """Turn 2FA on for the device's user if the code is right."""
    if not code_verify(device=device, code=code):
        return False
    device.confirmed_at = timezone.now()
    device.save(update_fields=["confirmed_at"])
    return True


def device_delete(*, device: TotpDevice) -> None:
    """Turn 2FA off: the next setup starts with a new secret."""
    device.delete()


def two_factor_required(user: User) -> bool:
    """Whether the company requires 2FA of this user: the policy named by ``TWO_FACTOR_REQUIRED`` (a dotted
    path; the CRM's reads its company settings), none when unset. A setting rather than an import keeps
    ``accounts`` free of the other apps."""
    policy = getattr(settings, "TWO_FACTOR_REQUIRED", "")
    return bool(policy and import_string(policy)(user))

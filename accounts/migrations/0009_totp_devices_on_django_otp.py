"""Two-factor devices move to django-otp: each authenticator device becomes a TOTP device with the same
key, confirmed or not as before, and remembering the last time step it accepted (so no code is accepted
twice across the move). Nobody loses two-factor sign-in; then the old table goes."""

from base64 import b32decode

from django.db import migrations

DEVICE_NAME = "Authenticator app"


def to_django_otp(apps, schema_editor):
    Old = apps.get_model("accounts", "TotpDevice")
    TOTPDevice = apps.get_model("otp_totp", "TOTPDevice")
    for old in Old.objects.all().iterator():
        base32 = old.secret.strip().upper().replace(" ", "")
        key = b32decode(base32 + "=" * (-len(base32) % 8)).hex()
        TOTPDevice.objects.create(
            user_id=old.user_id,
            name=DEVICE_NAME,
            confirmed=old.confirmed_at is not None,
            key=key,
            step=30,
            t0=0,
            digits=6,
            tolerance=1,
            drift=0,
            last_t=-1 if old.last_used_step is None else old.last_used_step,
        )


def back_from_django_otp(apps, schema_editor):
    Old = apps.get_model("accounts", "TotpDevice")
    TOTPDevice = apps.get_model("otp_totp", "TOTPDevice")
    for device in TOTPDevice.objects.filter(step=30, t0=0, digits=6).order_by("-confirmed", "id").iterator():
        if Old.objects.filter(user_id=device.user_id).exists():
            continue
        Old.objects.create(
            user_id=device.user_id,
            secret=b32encode_key(device.key),
            confirmed_at=device.created_at if device.confirmed else None,
            last_used_step=None if device.last_t < 0 else device.last_t,
        )


def b32encode_key(hex_key: str) -> str:
    from base64 import b32encode

    return b32encode(bytes.fromhex(hex_key)).decode().rstrip("=")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0008_storable_json"),
        ("otp_totp", "0003_add_timestamps"),
        ("otp_static", "0003_add_timestamps"),
    ]

    operations = [
        migrations.RunPython(to_django_otp, back_from_django_otp),
        migrations.DeleteModel(name="TotpDevice"),
    ]

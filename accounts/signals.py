from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver


@receiver(user_logged_in, dispatch_uid="accounts.record_login")
def record_login(sender, request, user, **kwargs) -> None:
    """Count the sign-in for adoption and log it in the security log."""
    from accounts.security import security_log
    from accounts.services import login_record

    login_record(user=user)
    security_log(kind="sign_in", request=request, user=user)


@receiver(user_login_failed, dispatch_uid="accounts.record_login_failed")
def record_login_failed(sender, credentials, request=None, **kwargs) -> None:
    """Log a failed sign-in with the username tried (Django already masks the password)."""
    from accounts.security import security_log

    security_log(kind="sign_in_failed", request=request, username=str(credentials.get("username") or ""))


@receiver(user_locked_out, dispatch_uid="accounts.record_locked_out")
def record_locked_out(sender, request, username=None, ip_address=None, **kwargs) -> None:
    """Log that django-axes locked a (username, address) pair out."""
    from accounts.security import security_log

    security_log(kind="locked_out", request=request, username=str(username or ""))

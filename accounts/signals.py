from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver


@receiver(user_logged_in, dispatch_uid="accounts.record_login")
def record_login(sender, request, user, **kwargs) -> None:
    """Record in the new session whether the second step was passed; count the sign-in for adoption and
    log it. A sign-in that skipped a required code is logged as such and not counted: the next request
    ends that session (accounts.middleware.TwoFactorSessionMiddleware)."""
    from accounts.security import security_log
    from accounts.services import login_record, two_factor

    state = two_factor.session_state_at_sign_in(
        user=user, code_given=getattr(request, "two_factor_verified", False)
    )
    if request is not None and hasattr(request, "session"):
        request.session[two_factor.SESSION_KEY] = state
    if state == two_factor.SKIPPED:
        security_log(kind="two_factor_skipped", request=request, user=user, username=user.username)
        return
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

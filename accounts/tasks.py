from celery import shared_task


@shared_task(name="accounts.tasks.clear_expired_sessions", expires=3600)
def clear_expired_sessions() -> None:
    """Delete expired sessions (Django's ``clearsessions``); idempotent."""
    from django.core.management import call_command

    call_command("clearsessions")

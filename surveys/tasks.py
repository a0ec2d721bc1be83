"""Celery tasks of the surveys app: thin wrappers that each call one service.

All are idempotent by construction: only ``scheduled`` invitations are ever sent, ticket and campaign
invitations are unique per (survey, ticket) and (campaign, customer), the trickle takes its daily quota
once, a reminder goes out once. Mail-server and transient database errors retry; whatever is still
scheduled after a failure is picked up by the next periodic run.
"""

import smtplib

from celery import shared_task
from django.db import OperationalError

RETRY = {
    "autoretry_for": (OperationalError, smtplib.SMTPException, ConnectionError, TimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 600,
    "max_retries": 5,
}


@shared_task(
    name="surveys.tasks.send_ticket_surveys",
    soft_time_limit=10 * 60,
    time_limit=12 * 60,
    expires=14 * 60,
    ignore_result=True,
    **RETRY,
)
def send_ticket_surveys() -> dict[str, int]:
    """Schedule CES/CSAT for tickets solved at least 24 h ago and still solved; send what is due."""
    from surveys.services import ticket_surveys_run

    result = ticket_surveys_run()
    return {"sent": result.sent, "suppressed": result.suppressed}


@shared_task(
    name="surveys.tasks.send_nps_trickle",
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
    expires=6 * 3600,
    ignore_result=True,
    **RETRY,
)
def send_nps_trickle() -> dict[str, int]:
    """Ask today's share (about 1/90) of the eligible customers the relationship NPS question."""
    from surveys.services import nps_trickle_run

    result = nps_trickle_run()
    return {"sent": result.sent, "suppressed": result.suppressed}


@shared_task(
    name="surveys.tasks.send_survey_reminders",
    soft_time_limit=10 * 60,
    time_limit=12 * 60,
    expires=55 * 60,
    ignore_result=True,
    **RETRY,
)
def send_survey_reminders() -> int:
    """Send the one reminder to invitations still not completed 3–5 days after they were sent."""
    from surveys.services import reminders_send

    return reminders_send()


@shared_task(
    name="surveys.tasks.expire_survey_invitations",
    soft_time_limit=5 * 60,
    time_limit=6 * 60,
    expires=55 * 60,
    ignore_result=True,
    **RETRY,
)
def expire_survey_invitations() -> int:
    """Mark unanswered invitations past their response window as expired."""
    from surveys.services import invitations_expire

    return invitations_expire()


@shared_task(
    name="surveys.tasks.launch_survey_campaign",
    soft_time_limit=30 * 60,
    time_limit=35 * 60,
    ignore_result=True,
    **RETRY,
)
def launch_survey_campaign(campaign_id: int) -> dict[str, int]:
    """Invite every customer matching a manager's campaign (throttling applies; skips are recorded)."""
    from surveys.services import campaign_run

    result = campaign_run(campaign_id=campaign_id)
    return {"sent": result.sent, "suppressed": result.suppressed}

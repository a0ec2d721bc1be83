"""Celery tasks of the crm app: thin wrappers that take JSON-safe arguments and call one service."""

from celery import shared_task
from django.db import OperationalError, transaction


@shared_task(name="crm.tasks.run_import", soft_time_limit=45 * 60, time_limit=50 * 60, ignore_result=True)
def run_import(job_id: int) -> None:
    """Run one queued import. Idempotent: a finished job, or one another worker holds, is left alone;
    the run is one transaction, so a lost worker leaves nothing written and the redelivery starts over."""
    from crm.data.imports import import_job_run

    import_job_run(job_id=job_id)


@shared_task(name="crm.tasks.check_import", soft_time_limit=20 * 60, time_limit=25 * 60, ignore_result=True)
def check_import(job_id: int) -> None:
    """Check every row of a long import file into its preview. Idempotent: a job already checked (or
    being checked by another worker) is left alone."""
    from crm.data.imports import import_job_check

    import_job_check(job_id=job_id)


@shared_task(
    name="crm.tasks.scan_duplicates",
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
    expires=6 * 3600,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def scan_duplicates() -> None:
    """Find duplicate candidate pairs among all customers. Idempotent (upsert keyed by the pair); an
    advisory lock makes an overlapping run return at once."""
    from crm.data.dedupe import duplicate_scan

    duplicate_scan()


@shared_task(
    name="crm.tasks.deliver_webhook",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=60,
    time_limit=90,
    ignore_result=True,
)
def deliver_webhook(delivery_id: int) -> None:
    """One attempt at one webhook delivery. Idempotent: one delivered, given up, not yet due, or being
    sent by another worker is left alone; a worker lost mid-attempt leaves it pending for the redelivery
    (or the sweep), which sends it with the same ``webhook-id``."""
    from crm.webhooks.services import webhook_deliver

    webhook_deliver(delivery_id=delivery_id)


@shared_task(name="crm.tasks.sweep_webhooks", expires=50, ignore_result=True)
def sweep_webhooks() -> None:
    """Every minute: queue the deliveries that are due (retries, and any whose task was lost)."""
    from crm.webhooks.services import due_delivery_ids

    for delivery_id in due_delivery_ids():
        deliver_webhook.delay(delivery_id)


@shared_task(
    name="crm.tasks.run_automation",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=120,
    time_limit=150,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def run_automation(run_id: int) -> None:
    """Do one rule's run on one record. Idempotent: a run already done, or held by another worker, is
    left alone; a worker lost mid-run rolls the run back, and the redelivery (or the sweep) does it."""
    from crm.automation.engine import run_one

    run_one(run_id)


@shared_task(
    name="crm.tasks.run_automations",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=600,
    time_limit=660,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def run_automations(run_ids: list[int]) -> None:
    """Do several runs, each in its own transaction (as ``run_automation``); a redelivered batch skips
    the runs already done."""
    from crm.automation.engine import run_one

    for run_id in run_ids:
        run_one(run_id)


@shared_task(name="crm.tasks.sweep_automation", expires=240, ignore_result=True)
def sweep_automation() -> None:
    """Fire the time-based triggers (idle deals, tickets near their SLA) and hand lost runs over again."""
    from crm.automation.engine import sweep

    sweep()


@shared_task(
    name="crm.tasks.create_partitions_ahead",
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
    expires=6 * 3600,
    ignore_result=True,
)
def create_partitions_ahead() -> int:
    """The monthly partitions of the growing tables for the coming months, and for months whose rows
    landed in a default partition (crm/ops/partitions.py); returns how many were created."""
    from crm.ops.partitions import create_ahead

    with transaction.atomic():
        return len(create_ahead())

"""Celery must neither lose nor repeat work: the settings, and a request made while the broker is down."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from crm.celery import app as celery_app
from crm.models import Deal
from metrics.models import SnapshotRun
from metrics.tasks import recompute_recent_kpi_snapshots
from tests.factories import make_customer, make_deal, make_manager, make_user
from tests.fault_kit import celery_broker, free_port

pytestmark = pytest.mark.django_db

OUR_APPS = ("metrics.", "surveys.", "crm.", "accounts.")
ROOT = Path(__file__).resolve().parents[2]
REBUILD_LIMITS = (
    "import django, json; django.setup(); from metrics import tasks; "
    "print(json.dumps([(t.soft_time_limit, t.time_limit) for t in "
    "(tasks.rebuild_all_kpi_snapshots, tasks.rebuild_kpi_snapshots_part)]))"
)


def deal_form_data(deal: Deal, **overrides: object) -> dict[str, object]:
    """The edit form of ``deal`` as the browser posts it, at the deal's current version."""
    return {
        "customer": deal.customer_id,
        "title": deal.title,
        "amount": deal.amount or "",
        "kind": deal.kind,
        "probability": deal.probability if deal.probability is not None else "",
        "source": deal.source,
        "expected_close_date": deal.expected_close_date or "",
        "version": deal.version,
        **overrides,
    }


@pytest.fixture
def dead_redis(settings):
    """Cache and broker pointed at a port nothing listens on (Redis is down)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": url, "KEY_PREFIX": "fault-dead"},
    }
    with celery_broker(url):
        yield url


def test_celery_settings_acknowledge_late_and_requeue_lost_work():
    conf = celery_app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_always_eager is False


def test_every_time_limit_is_below_the_visibility_timeout():
    """A task still running when its message becomes visible again would run twice."""
    celery_app.loader.import_default_modules()
    visibility = celery_app.conf.broker_transport_options["visibility_timeout"]
    ours = {name: task for name, task in celery_app.tasks.items() if name.startswith(OUR_APPS)}
    assert ours, "no project tasks registered"
    for name, task in ours.items():
        hard = task.time_limit or celery_app.conf.task_time_limit
        soft = task.soft_time_limit or celery_app.conf.task_soft_time_limit
        assert hard is not None and hard < visibility, name
        assert soft is not None and soft < hard, name


def rebuild_limits(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", REBUILD_LIMITS],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "crm.settings", **env},
        capture_output=True,
        text=True,
    )


def test_the_rebuild_time_limit_follows_the_setting_and_stays_below_the_visibility_timeout():
    """A 10 M-deal rebuild needs more than the default half hour: the limit is a setting, which the
    settings refuse above the visibility timeout (the rebuild would be delivered again while it runs)."""
    found = rebuild_limits(KPI_REBUILD_TIME_LIMIT="3600")
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().splitlines()[-1] == "[[3600, 3900], [3600, 3900]]"
    refused = rebuild_limits(KPI_REBUILD_TIME_LIMIT="3600", CELERY_VISIBILITY_TIMEOUT="3600")
    assert refused.returncode != 0
    assert "KPI_REBUILD_TIME_LIMIT (3600 s) must be positive and below" in refused.stderr
    # a short visibility timeout (the queue test's workers) brings the default limits down with it
    short = rebuild_limits(CELERY_VISIBILITY_TIMEOUT="30")
    assert short.returncode == 0, short.stderr
    assert short.stdout.strip().splitlines()[-1] == "[[20, 25], [20, 25]]"


def test_recompute_request_succeeds_while_the_queue_is_unreachable(client, dead_redis):
    client.force_login(make_manager())
    response = client.post(reverse("metrics:recompute"), headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "The task queue is unreachable" in response.content.decode()
    assert not SnapshotRun.objects.exists()


def test_the_next_scheduled_run_does_the_work_the_outage_dropped(client, dead_redis, settings):
    manager = make_manager()
    client.force_login(manager)
    client.post(reverse("metrics:recompute"))
    page = client.get(reverse("metrics:dashboard")).content.decode()
    assert "The task queue is unreachable" in page

    # Redis is back; beat's next tick runs the task (called here as the worker would).
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": settings.REDIS_URL}}
    recompute_recent_kpi_snapshots()
    run = SnapshotRun.objects.get()
    assert run.status == SnapshotRun.Status.OK
    page = client.get(reverse("metrics:dashboard")).content.decode()
    assert "Data as of" in page
    assert "may be stale" not in page and "The task queue is unreachable" not in page


def test_saving_a_deal_works_while_redis_is_down(client, dead_redis):
    rep = make_user()
    deal = make_deal(make_customer(rep))
    client.force_login(rep)
    response = client.post(
        reverse("crm:deal_update", args=[deal.pk]), deal_form_data(deal, title="Saved during the outage")
    )
    assert response.status_code == 302
    deal.refresh_from_db()
    assert deal.title == "Saved during the outage"

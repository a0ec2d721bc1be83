"""Webhook delivery throughput and latency, end to end (not run by CI).

    DATABASE_URL=.../minicrm_1m REDIS_URL=redis://…/9 python tests/bench/bench_webhooks.py [--events 500]

A receiver on 127.0.0.1 records when each request arrives; Celery workers (``--workers`` processes, on
the REDIS_URL broker) deliver. The script changes ``--events`` customers through the service, each
change in its own transaction (one ``customer.updated`` event), as fast as it can, and reports the events
per second that reached the receiver and the latency from the commit to the receiver (median, p95, max).
With ``--burst`` every change is in one transaction: all events are queued at the commit, and the rate is
how fast the workers drain them (the latency then includes the wait in the queue).
The subscription it makes is deleted at the end.
"""

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
os.environ["CRM_WEBHOOKS_ALLOW_PRIVATE"] = "1"

import django  # noqa: E402

django.setup()

from django.db import transaction  # noqa: E402

from accounts.models import User  # noqa: E402
from crm import services  # noqa: E402
from crm.models import Customer, WebhookDelivery, WebhookSubscription  # noqa: E402
from crm.webhooks.services import subscription_create  # noqa: E402
from tests.bench.machine import cpu_check  # noqa: E402

arrivals: dict[str, float] = {}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        arrivals.setdefault(self.headers["webhook-id"], time.time())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--burst", action="store_true", help="all changes in one transaction: the queue drains at full speed"
    )
    args = parser.parse_args()
    print(f"CPU check (10 M Python additions): {cpu_check():.2f} s")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    manager = User.objects.filter(role=User.Role.MANAGER, is_active=True).order_by("id").first()
    subscription, _secret = subscription_create(
        actor=manager, name="bench", url=url, events=[WebhookSubscription.Event.CUSTOMER_UPDATED]
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "crm", "worker", "--concurrency", str(args.workers),
         "--loglevel", "warning", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=os.environ.copy(),
    )  # fmt: skip
    try:
        time.sleep(6)  # the worker starts
        customers = list(Customer.objects.filter(owner__isnull=False).order_by("id")[: args.events])
        started = time.time()
        with transaction.atomic(durable=False) if args.burst else contextlib.nullcontext():
            for customer in customers:
                with transaction.atomic():
                    services.customer_update(customer=customer, actor=manager, data={"city": "Webhook"})
        changed = time.time() - started
        if args.burst:
            started = time.time()  # the events are queued at the commit
        deadline = time.time() + 120
        while len(arrivals) < len(customers) and time.time() < deadline:
            time.sleep(0.2)
        deliveries = WebhookDelivery.objects.filter(subscription=subscription)
        latencies = []
        for message_id, created_at in deliveries.values_list("message_id", "created_at"):
            if message_id in arrivals:
                since = started if args.burst else created_at.timestamp()
                latencies.append((arrivals[message_id] - since) * 1000)
        latencies.sort()
        span = max(arrivals.values()) - started
        print(f"{len(customers)} changes in {changed:.1f} s ({len(customers) / changed:.0f}/s made)")
        rate = len(arrivals) / span
        print(f"delivered {len(arrivals)} of {deliveries.count()} in {span:.1f} s: {rate:.0f} events/s")
        print(
            f"latency change → receiver: median {statistics.median(latencies):.0f} ms, "
            f"p95 {latencies[int(len(latencies) * 0.95) - 1]:.0f} ms, max {latencies[-1]:.0f} ms"
        )
    finally:
        worker.terminate()
        worker.wait(30)
        server.shutdown()
        subscription.delete()
        print(f"cleaned up at {datetime.now():%H:%M:%S}")


if __name__ == "__main__":
    main()

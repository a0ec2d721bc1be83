"""Load run: 50 concurrent users for 60 s against gunicorn on 127.0.0.1 (not collected by pytest).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/minicrm_bench REDIS_URL=redis://127.0.0.1:6379/3 \\
    .venv/bin/python tests/bench/bench_load.py [--users 50] [--seconds 60] [--think 1,4] [--port N]

Mix: 60 % reps (deal list, workspace, open a deal and save it unchanged), 20 % managers (dashboard and
KPI drill-downs), 20 % customers answering surveys through their public links. Every user thinks
between two pages, a random ``--think`` seconds (default 1 to 4, as a person reading a page; locust's
``between(1, 4)``); ``--think 0,0`` makes every user fire requests back to back (a stress test).
Sessions are created directly in the database for existing users (no passwords needed); a few survey
invitations with known tokens are created at the start and removed, with their answers, at the end.
Deal saves touch only ``--deals`` deals (their version goes up; the values are posted unchanged). The
survey rate limit is switched off for the server, as every simulated customer comes from 127.0.0.1.

Bounded: at most ``--max-requests`` requests and ``--seconds`` seconds; traffic only to 127.0.0.1.
Prints requests/s, p50/p95 per page, errors, and the load average before and after.
"""

import argparse
import http.cookiejar
import os
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.machine import cpu_check  # noqa: E402

VERSION_RE = re.compile(rb'name="version" value="(\d+)"')
CSRF_RE = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass
class Stats:
    """Latencies per page label, error samples, and the request budget shared by every user."""

    max_requests: int
    timings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    samples: list[str] = field(default_factory=list)
    conflicts: int = 0
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        with self.lock:
            if self.count >= self.max_requests:
                return False
            self.count += 1
            return True

    def record(self, label: str, seconds: float, error: str | None) -> None:
        with self.lock:
            self.timings[label].append(seconds)
            if error:
                self.errors[label] += 1
                if len(self.samples) < 10:
                    self.samples.append(f"{label}: {error}")


class Browser:
    """One user: a cookie jar with a session cookie, requests to the local server only."""

    def __init__(self, base: str, session_key: str | None, stats: Stats, think: tuple[float, float]) -> None:
        self.base, self.stats, self.think = base, stats, think
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect())
        if session_key:
            self._cookie("sessionid", session_key)

    def _cookie(self, name: str, value: str) -> None:
        self.jar.set_cookie(
            http.cookiejar.Cookie(0, name, value, None, False, "127.0.0.1", False, False, "/", True,
                                  False, None, True, None, None, {})
        )  # fmt: skip

    def csrf(self) -> str:
        return next((c.value for c in self.jar if c.name == "csrftoken"), "")

    def request(self, label: str, path: str, data: dict | None = None, ok=(200,)) -> tuple[int, bytes]:
        if not self.stats.take():
            raise Budget
        body = urllib.parse.urlencode(data, doseq=True).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body)  # noqa: S310 — 127.0.0.1 only
        if body is not None:
            req.add_header("X-CSRFToken", self.csrf())
        started = time.perf_counter()
        status, content, error = 0, b"", None
        try:
            with self.opener.open(req, timeout=30) as response:
                status, content = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, content = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            error = repr(exc)
        if error is None and status not in ok:
            error = f"HTTP {status}"
        self.stats.record(label, time.perf_counter() - started, error)
        time.sleep(random.uniform(*self.think))  # the user reads the page
        return status, content


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

    def http_error_302(self, req, fp, code, msg, headers):
        return fp


class Budget(Exception):
    """The request budget is spent."""


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
    import django

    django.setup()


def make_session(user) -> str:
    """A logged-in session for ``user`` stored in the database, as ``login()`` would create it."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key


def prepare(args: argparse.Namespace) -> dict:
    """Sessions for reps and managers, the deals reps save, survey links with known tokens."""
    from django.utils import timezone

    from accounts.models import User
    from crm.models import Customer, Deal
    from metrics.kpis import registry
    from surveys.models import Survey, SurveyInvitation
    from surveys.selectors import token_hash

    reps = list(User.objects.filter(role=User.Role.REP, is_active=True).order_by("id")[: args.users])
    managers = list(User.objects.filter(role=User.Role.MANAGER, is_active=True).order_by("id"))
    deals = []
    for rep in reps:
        deal = Deal.objects.filter(owner=rep, stage__kind="open").order_by("id").first()
        if deal is not None and len(deals) < args.deals:
            deals.append((rep, deal))
    survey = Survey.objects.filter(kind="nps", is_active=True).order_by("id").first()
    now = timezone.now()
    tokens = []
    customers = Customer.objects.filter(email__contains="@").order_by("-id")[: args.invitations]
    for customer in customers:
        token = secrets.token_urlsafe(32)
        SurveyInvitation.objects.create(
            survey=survey, customer=customer, trigger=survey.trigger, status="sent", email=customer.email,
            language=customer.language, token_hash=token_hash(token=token), created_at=now, scheduled_for=now,
            sent_at=now, expires_at=now + timedelta(days=survey.response_window_days),
        )  # fmt: skip
        tokens.append(token)
    return {
        "reps": [(make_session(rep), deal.pk) for rep, deal in deals],
        "managers": [make_session(m) for m in managers],
        "tokens": tokens,
        "token_hashes": [token_hash(token=t) for t in tokens],
        "deal_form": {deal.pk: deal_form(deal) for _rep, deal in deals},
        "kpis": list(registry())[:12],
    }


def deal_form(deal) -> dict:
    return {
        "customer": deal.customer_id,
        "title": deal.title,
        "amount": deal.amount if deal.amount is not None else "",
        "kind": deal.kind,
        "probability": deal.probability if deal.probability is not None else "",
        "source": deal.source,
        "expected_close_date": deal.expected_close_date or "",
    }


def cleanup(plan: dict) -> str:
    from surveys.models import SurveyInvitation, SurveyResponse

    invitations = SurveyInvitation.objects.filter(token_hash__in=plan["token_hashes"])
    answered = SurveyResponse.objects.filter(invitation__in=invitations).delete()[0]
    removed = invitations.delete()[0]
    return f"removed {removed} bench rows (incl. {answered} survey answers)"


def rep_user(browser: Browser, deal_pk: int, form: dict, stats: Stats, stop: float) -> None:
    while time.monotonic() < stop:
        browser.request("rep: deal list", "/crm/deals/")
        browser.request("rep: workspace", "/crm/")
        _status, page = browser.request("rep: deal edit (GET)", f"/crm/deals/{deal_pk}/edit/")
        match = VERSION_RE.search(page)
        if match:
            status, body = browser.request(
                "rep: deal save (POST)", f"/crm/deals/{deal_pk}/edit/", {**form, "version": match[1]},
                ok=(200, 302),
            )  # fmt: skip
            if status == 200 and b"Someone else saved" in body:
                with stats.lock:
                    stats.conflicts += 1


def manager_user(browser: Browser, kpis: list[str], stop: float) -> None:
    while time.monotonic() < stop:
        browser.request("manager: dashboard", "/metrics/?granularity=month&count=12")
        code = random.choice(kpis)
        browser.request("manager: KPI drill-down", f"/metrics/kpi/{code}/", ok=(200, 404))


def customer_user(browser: Browser, tokens: list[str], lock: threading.Lock, stop: float) -> None:
    while time.monotonic() < stop:
        with lock:
            token = tokens.pop() if tokens else None
        if token is None:
            return
        browser.request("customer: survey (GET)", f"/s/{token}/")
        browser.request("customer: survey answer (POST)", f"/s/{token}/", {"score": random.randint(0, 10)})


def run(args: argparse.Namespace) -> None:
    setup_django(args.database_url)
    plan = prepare(args)
    env = {**os.environ, "DATABASE_URL": args.database_url, "SURVEYS_RATE_LIMIT": "", "DJANGO_DEBUG": "false"}
    command = [sys.executable, "-m", "gunicorn", "crm.wsgi", "--bind", f"127.0.0.1:{args.port}",
               "--workers", str(args.workers), "--threads", str(args.threads), "--worker-class", "gthread",
               "--timeout", "60", "--log-level", "warning"]  # fmt: skip
    web = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        wait_for_port(args.port, web)
        base = f"http://127.0.0.1:{args.port}"
        warm_up(base, plan, args)
        stats = Stats(max_requests=args.max_requests)
        load_before, cpu = os.getloadavg(), cpu_check()
        n_reps = round(args.users * 0.6)
        n_managers = round(args.users * 0.2)
        n_customers = args.users - n_reps - n_managers
        tokens, token_lock = list(plan["tokens"]), threading.Lock()
        started = time.monotonic()
        stop = started + args.seconds

        def arrival() -> float:
            return random.uniform(0, args.think[1])

        threads = []
        for i in range(n_reps):
            session, deal_pk = plan["reps"][i % len(plan["reps"])]
            browser = Browser(base, session, stats, args.think)
            target = (rep_user, (browser, deal_pk, plan["deal_form"][deal_pk], stats, stop))
            threads.append(threading.Thread(target=guarded, args=(*target, arrival())))
        for i in range(n_managers):
            browser = Browser(base, plan["managers"][i % len(plan["managers"])], stats, args.think)
            threads.append(
                threading.Thread(
                    target=guarded, args=(manager_user, (browser, plan["kpis"], stop), arrival())
                )
            )
        for _ in range(n_customers):
            browser = Browser(base, None, stats, args.think)
            target = (customer_user, (browser, tokens, token_lock, stop))
            threads.append(threading.Thread(target=guarded, args=(*target, arrival())))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=args.seconds + 60)
        elapsed = time.monotonic() - started
        report(stats, elapsed, load_before, os.getloadavg(), args)
        print(f"CPU check before the run: 10 million additions in {cpu:.2f} s")
    finally:
        web.send_signal(signal.SIGTERM)
        try:
            web.wait(timeout=30)
        except subprocess.TimeoutExpired:
            web.kill()
        print(cleanup(plan))


def warm_up(base: str, plan: dict, args: argparse.Namespace) -> None:
    """Every page a few times per gunicorn thread before the clock starts (templates, translations and
    database connections are loaded on first use); these requests are not counted."""
    stats = Stats(max_requests=10**6)
    rep_session, deal_pk = plan["reps"][0]
    rep, manager = (
        Browser(base, rep_session, stats, (0, 0)),
        Browser(base, plan["managers"][0], stats, (0, 0)),
    )
    customer = Browser(base, None, stats, (0, 0))
    for _ in range(args.workers * args.threads * 2):
        rep.request("warm", "/crm/deals/")
        rep.request("warm", "/crm/")
        rep.request("warm", f"/crm/deals/{deal_pk}/edit/")
        manager.request("warm", "/metrics/?granularity=month&count=12")
        manager.request("warm", f"/metrics/kpi/{plan['kpis'][0]}/")
        customer.request("warm", "/s/not-a-token/", ok=(404,))


def guarded(function, args: tuple, delay: float) -> None:
    time.sleep(delay)  # users arrive one by one, not all in the same millisecond
    try:
        function(*args)
    except Budget:
        return


def wait_for_port(port: int, web: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until our gunicorn listens; stop if it exited (e.g. the port was taken by someone else)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if web.poll() is not None:
            raise SystemExit(f"gunicorn exited with code {web.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not open port {port}")


def report(stats: Stats, elapsed: float, before: tuple, after: tuple, args: argparse.Namespace) -> None:
    total = sum(len(t) for t in stats.timings.values())
    errors = sum(stats.errors.values())
    think = f"{args.think[0]:g}-{args.think[1]:g} s"
    workers = f"{args.workers} gunicorn workers × {args.threads} threads"
    print(f"\n{args.users} users thinking {think}, {elapsed:.1f} s, {workers}")
    print(f"load average before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}; "
          f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}; {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{total} requests, {total / elapsed:.1f} req/s, {errors} errors, {stats.conflicts} save conflicts")
    print(f"{'page':34} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'errors':>6}")
    for label in sorted(stats.timings):
        times = sorted(stats.timings[label])
        p50 = statistics.median(times) * 1000
        p95 = times[max(0, int(len(times) * 0.95) - 1)] * 1000
        print(
            f"{label:34} {len(times):6} {p50:8.0f} {p95:8.0f} {times[-1] * 1000:8.0f} {stats.errors[label]:6}"
        )
    for sample in stats.samples:
        print("  error:", sample)


def think_range(text: str) -> tuple[float, float]:
    low, high = (float(part) for part in text.split(","))
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError("MIN,MAX with 0 <= MIN <= MAX")
    return low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--max-requests", type=int, default=20_000)
    # As docker-compose.yml runs it: one thread per process, so a page's Python never waits for another
    # request's on the same interpreter lock (four threads per worker doubled p95 here).
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--deals", type=int, default=10)
    parser.add_argument("--invitations", type=int, default=300)
    parser.add_argument(
        "--think", type=think_range, default=(1.0, 4.0), help="seconds between pages: MIN,MAX (default 1,4)"
    )
    args = parser.parse_args()
    if not args.database_url:
        raise SystemExit("set DATABASE_URL (or --database-url)")
    if not args.port:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            args.port = sock.getsockname()[1]
    run(args)


if __name__ == "__main__":
    main()

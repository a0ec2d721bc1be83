"""Mini CRM settings.

One settings module for every environment: each difference between development, CI and production
comes from an environment variable (see ``.env.example``). Reference:
https://docs.djangoproject.com/en/6.1/ref/settings/
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP
from django.utils.translation import gettext_lazy as _
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _embedded_service_url(name: str) -> str | None:
    """URL written by ``crm.ops.embedded`` for a running embedded server, so ``manage.py`` finds it too."""
    env_file = VAR_DIR / "embedded.env"
    if not env_file.exists():
        return None
    for line in env_file.read_text().splitlines():
        key, _sep, value = line.partition("=")
        if key == name:
            return value
    return None


# GENERAL
# ------------------------------------------------------------------------------
# CRM_ENV=production (docker-compose sets it): HTTPS-only, a real secret key, hashed static files.
# Without it (development, the demo, the tests) the app runs on plain HTTP.
PRODUCTION = os.environ.get("CRM_ENV") == "production"
DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production.")
    SECRET_KEY = "dev-only-not-secret-" + "x" * 40
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# The company's reporting time zone: KPI periods are half-open intervals in this zone (KPIS.md G1).
TIME_ZONE = os.environ.get("CRM_TIME_ZONE", "Europe/Berlin")
USE_TZ = True
USE_I18N = True
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "crm" / "locale"]
FORMAT_MODULE_PATH = ["crm.formats"]

CRM_COMPANY_NAME = os.environ.get("CRM_COMPANY_NAME", "Mini CRM")
# Absolute base of links in e-mails sent by tasks (no request to build them from).
CRM_BASE_URL = os.environ.get("CRM_BASE_URL", "http://localhost:8000")
CRM_CURRENCY = os.environ.get("CRM_CURRENCY", "EUR")
# Region used to put phone numbers without a country code into E.164 form.
CRM_PHONE_REGION = os.environ.get("CRM_PHONE_REGION", "DE")

# APPS
# ------------------------------------------------------------------------------
INSTALLED_APPS = [
    "crm.apps.CrmAdminConfig",  # django.contrib.admin, signed in to through accounts' two-step sign-in
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "django.forms",
    "django_htmx",
    "simple_history",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "django_ratelimit",  # its checks: the survey rate limit's cache must count atomically (Redis does)
    "ninja",  # the API (crm/api/): its Swagger UI is served from our static files, not a CDN
    "accounts",
    "crm",
    "surveys",
    "metrics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Query strings and forms are read as UTF-8 whatever charset a request declares (no lone surrogates).
    "accounts.middleware.Utf8RequestMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # An API POST with an Idempotency-Key that was seen in the last 24 h gets the first answer again.
    "crm.api.common.IdempotencyMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # GETs of the dashboard, KPI pages, exports and API may read from the replica; a user who wrote is pinned.
    "crm.ops.replica.ReplicaReadsMiddleware",
    "accounts.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # A session that skipped its user's two-factor code (any login path but ours) is signed out.
    "accounts.middleware.TwoFactorSessionMiddleware",
    # Managers and admins without a confirmed 2FA device go to its setup page when the company requires it.
    "accounts.middleware.TwoFactorRequiredMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    # Records refused access (403, and 404 on record URLs) of signed-in users in the security log.
    "accounts.middleware.RefusedAccessLogMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "crm.urls"
ADMIN_URL = os.environ.get("DJANGO_ADMIN_URL", "admin/")
WSGI_APPLICATION = "crm.wsgi.application"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Widgets render through TEMPLATES: templates/django/forms/widgets/select.html replaces Django's (faster).
FORM_RENDERER = "django.forms.renderers.TemplatesSetting"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "crm.context_processors.company",
            ],
        },
    },
]

# DATABASE
# ------------------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL") or _embedded_service_url("DATABASE_URL")
if not DATABASE_URL:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. Run `make demo` (it starts an embedded PostgreSQL) "
        "or point DATABASE_URL at a PostgreSQL server, e.g. postgres://user@127.0.0.1:5432/minicrm."
    )
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 60))}
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get("DJANGO_TEST_DATABASE") or None
if not DATABASES["default"]["TEST"]["NAME"]:
    del DATABASES["default"]["TEST"]["NAME"]
# Connections. By default each process keeps one connection open (DJANGO_CONN_MAX_AGE seconds): with one
# thread per process that is all a pool would hold too (tests/bench/bench_connections.py measured both).
# DATABASE_POOL=<max size> switches to Django's psycopg pool (needs psycopg-pool; for threaded servers).
# Behind PgBouncer in transaction mode set DATABASE_PGBOUNCER=true: a server-side cursor lives in one
# server session, which transaction pooling does not keep, so they are switched off.
if env_int("DATABASE_POOL", 0):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("DATABASE_POOL", 0),
    }
if env_bool("DATABASE_PGBOUNCER", False):
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = None  # no prepared statements

# A PostgreSQL streaming replica for read-only traffic (crm.ops.replica). Without one the alias names the
# primary and nothing is routed to it; in tests it mirrors the test database (TEST MIRROR).
DATABASE_REPLICA_URL = os.environ.get("DATABASE_REPLICA_URL", "")
DATABASES["replica"] = {
    **(
        dj_database_url.parse(DATABASE_REPLICA_URL, conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 60))
        if DATABASE_REPLICA_URL
        else {k: v for k, v in DATABASES["default"].items() if k != "TEST"}
    ),
    "CONN_HEALTH_CHECKS": True,
    "TEST": {"MIRROR": "default"},
}
# A replica host that is gone must not hold a page for the kernel's two minutes of connection retries.
DATABASES["replica"]["OPTIONS"] = {**DATABASES["replica"].get("OPTIONS", {}), "connect_timeout": 2}
DATABASE_ROUTERS = ["crm.ops.replica.ReplicaRouter"]
READ_REPLICA = bool(DATABASE_REPLICA_URL)
# Namespaces and view names whose GET and HEAD requests may read from the replica.
READ_REPLICA_ROUTES = env_list(
    "READ_REPLICA_ROUTES",
    ["metrics", "api", "crm:customer_export", "crm:deal_export", "crm:ticket_export", "crm:activity_export"],
)
# The request's own bookkeeping: always read from the primary, and writing it pins nobody.
READ_REPLICA_PRIMARY_MODELS = [
    "sessions.session",
    "accounts.apitoken",
    "accounts.usageevent",
    "accounts.securityevent",
    "accounts.loginevent",
]
# A replica further behind than this is left for the primary; each process trusts a lag reading this long.
READ_REPLICA_MAX_LAG_SECONDS = env_int("READ_REPLICA_MAX_LAG_SECONDS", 5)
READ_REPLICA_LAG_CHECK_SECONDS = env_int("READ_REPLICA_LAG_CHECK_SECONDS", 2)
# A user who wrote reads from the primary for this long: at least the lag allowed plus how long a reading
# is trusted, so the replica has their write by then.
READ_REPLICA_PIN_SECONDS = env_int("READ_REPLICA_PIN_SECONDS", 8)
if READ_REPLICA_PIN_SECONDS < READ_REPLICA_MAX_LAG_SECONDS + READ_REPLICA_LAG_CHECK_SECONDS:
    raise ImproperlyConfigured(
        "READ_REPLICA_PIN_SECONDS must be at least READ_REPLICA_MAX_LAG_SECONDS +"
        " READ_REPLICA_LAG_CHECK_SECONDS, or a user could read from the replica before their own write"
        " reached it."
    )

# REDIS: cache (locks, rate limits) and the Celery broker
# ------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL") or _embedded_service_url("REDIS_URL") or "redis://127.0.0.1:6379/0"
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": os.environ.get("CRM_CACHE_PREFIX", "minicrm"),
        # A cache outage must not take pages down: fail fast instead of hanging.
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
    }
}
# Sessions live in PostgreSQL so sign-in keeps working while Redis is down.
SESSION_ENGINE = "django.contrib.sessions.backends.db"

# AUTHENTICATION
# ------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
SESSION_COOKIE_AGE = env_int("DJANGO_SESSION_MAX_AGE", 12 * 3600)
# Axes first: it refuses a locked-out sign-in before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# SIGN-IN PROTECTION (django-axes, https://django-axes.readthedocs.io/en/latest/4_configuration.html)
# ------------------------------------------------------------------------------
# Lock the pair (username, address): an attacker elsewhere cannot lock a colleague out, and an office
# behind one NAT address is not locked out as a whole. The lock lifts by itself after the cool-off, so
# nobody can be locked out for ever; a successful sign-in clears the failures. On top of the pair, one
# address is locked after AXES_ADDRESS_FAILURE_LIMIT failures over all usernames (accounts/lockout.py), so
# it cannot try a few passwords on every user; high enough for an office behind one NAT address.
AXES_HANDLER = "accounts.lockout.AddressLimitedAxesHandler"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_ADDRESS_FAILURE_LIMIT = env_int("AXES_ADDRESS_FAILURE_LIMIT", 20)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15))
AXES_RESET_ON_SUCCESS = True
# A friendly page (templates/accounts/locked_out.html) with status 429 Too Many Requests.
AXES_LOCKOUT_CALLABLE = "accounts.views.locked_out_response"
# The client's address the same way as the survey rate limit (SURVEYS_CLIENT_IP_HEADER behind a proxy).
AXES_CLIENT_IP_CALLABLE = "accounts.security.client_ip"

# SECURITY (https://docs.djangoproject.com/en/6.1/howto/deployment/checklist/)
# ------------------------------------------------------------------------------
SECURE = env_bool("DJANGO_SECURE", PRODUCTION)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = SECURE and env_bool("DJANGO_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000) if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
if SECURE:
    # __Host- cookies are only accepted over HTTPS, for this exact host, with path "/".
    SESSION_COOKIE_NAME = "__Host-sessionid"
    CSRF_COOKIE_NAME = "__Host-csrftoken"
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Scripts only from our own origin (htmx, plotly, charts.js) or carrying the per-request nonce.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    # Plotly sets inline styles on the SVG it draws.
    "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:", "blob:"],
    "font-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
    "base-uri": [CSP.SELF],
    "object-src": [CSP.NONE],
}

# STATIC FILES
# ------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION
MEDIA_ROOT = VAR_DIR / "media"

# E-MAIL: the console by default; SMTP when DJANGO_EMAIL_HOST is set
# (https://docs.djangoproject.com/en/6.1/topics/email/#mailers)
# ------------------------------------------------------------------------------
if os.environ.get("DJANGO_EMAIL_HOST"):
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": os.environ["DJANGO_EMAIL_HOST"],
                "port": env_int("DJANGO_EMAIL_PORT", 587),
                "username": os.environ.get("DJANGO_EMAIL_HOST_USER", ""),
                "password": os.environ.get("DJANGO_EMAIL_HOST_PASSWORD", ""),
                "use_tls": env_bool("DJANGO_EMAIL_USE_TLS", True),
                "timeout": 10,
            },
        }
    }
else:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
DEFAULT_FROM_EMAIL = os.environ.get("DJANGO_DEFAULT_FROM_EMAIL", "Mini CRM <crm@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# CELERY (https://docs.celeryq.dev/en/stable/userguide/configuration.html)
# ------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Work survives a worker crash: acknowledge after the task ran, requeue when the worker dies,
# and reserve one task at a time so a long rebuild does not hold short tasks hostage.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A task whose worker died with its host goes back to the queue once the Redis visibility timeout has
# passed (a worker that lost only a pool process requeues at once). Time limits stay well below it, or a
# running task would be delivered twice.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 2 * 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    # How often a worker looks for such tasks (every interval × throttle seconds).
    "unacked_restore_interval": min(10, max(1, CELERY_VISIBILITY_TIMEOUT // 10)),
    "unacked_restore_throttle": 1 if CELERY_VISIBILITY_TIMEOUT < 600 else 10,
}
CELERY_TASK_SOFT_TIME_LIMIT = min(50 * 60, CELERY_VISIBILITY_TIMEOUT * 5 // 6)
CELERY_TASK_TIME_LIMIT = min(55 * 60, CELERY_VISIBILITY_TIMEOUT * 11 // 12)
# One queue per kind of work, so each can have workers of its own on any host (docker-compose runs a
# worker per group). A worker started without -Q consumes every queue (the demo's, the tests').
CELERY_TASK_DEFAULT_QUEUE = "celery"  # automation runs and housekeeping
TASK_QUEUES = ("celery", "kpis", "mail", "imports", "surveys", "webhooks")
CELERY_TASK_QUEUES = [Queue(name, routing_key=name) for name in TASK_QUEUES]
CELERY_TASK_ROUTES = {
    "metrics.tasks.send_weekly_reports": {"queue": "mail"},
    "metrics.tasks.*": {"queue": "kpis"},
    "crm.tasks.run_import": {"queue": "imports"},
    "crm.tasks.check_import": {"queue": "imports"},
    "crm.tasks.scan_duplicates": {"queue": "imports"},
    "crm.tasks.deliver_webhook": {"queue": "webhooks"},
    "crm.tasks.sweep_webhooks": {"queue": "webhooks"},
    "surveys.tasks.*": {"queue": "surveys"},
}
CELERY_WORKER_SEND_TASK_EVENTS = False
# Each beat entry states its cadence and why; apps add theirs in their own settings block below.
CELERY_BEAT_SCHEDULE: dict = {
    # Every minute: webhook deliveries that are due (retries, and any whose task was lost).
    "webhooks-sweep": {"task": "crm.tasks.sweep_webhooks", "schedule": 60.0, "options": {"expires": 50}},
    # Every five minutes: automation's time-based triggers (a deal idle for N days, a ticket near its
    # SLA) and rule runs whose hand-over to a worker was lost.
    "automation-sweep": {
        "task": "crm.tasks.sweep_automation",
        "schedule": 300.0,
        "options": {"expires": 240},
    },
    # Nightly at a quiet hour: drop expired sessions so the session table does not grow for ever.
    "clear-expired-sessions": {
        "task": "accounts.tasks.clear_expired_sessions",
        "schedule": crontab(minute=17, hour=3),
    },
    # Nightly: the monthly partitions of the growing tables (events, histories, KPI facts) three months
    # ahead, so rows never wait for one; and those of months that landed in a default partition.
    "partitions-ahead": {
        "task": "crm.tasks.create_partitions_ahead",
        "schedule": crontab(minute=47, hour=1),
        "options": {"expires": 6 * 3600},
    },
}
# METRICS: KPI snapshots and RFM segments (metrics/tasks.py). Every run takes a PostgreSQL advisory lock,
# so a run that would overlap the previous one is recorded as skipped instead of piling up.
# ------------------------------------------------------------------------------
CELERY_BEAT_SCHEDULE |= {
    # Every 5 minutes: the current and the three previous periods of each granularity, incrementally
    # (the KPI facts of the days whose records changed since the last run), so the dashboard stays
    # fresh and back-dated edits show up; expires before the next tick.
    "kpi-snapshots-recent": {
        "task": "metrics.tasks.recompute_recent_kpi_snapshots",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 4 * 60},
    },
    # Hourly at :07: medians and percentiles of the recent quarters and years, which need every record
    # of the period and are left out of the 5-minute run; expires before the next hour.
    "kpi-long-period-statistics": {
        "task": "metrics.tasks.recompute_long_period_statistics",
        "schedule": crontab(minute=7),
        "options": {"expires": 55 * 60},
    },
    # Nightly at 02:30, a quiet hour: rebuild every period and every KPI fact from the records
    # (reconciles edits the incremental runs do not see, and definition changes).
    "kpi-snapshots-nightly-rebuild": {
        "task": "metrics.tasks.rebuild_all_kpi_snapshots",
        "schedule": crontab(minute=30, hour=2),
        "options": {"expires": 3 * 3600},
    },
    # Mondays at 07:00, before the managers' day starts: last week's headline KPIs by e-mail.
    "kpi-weekly-report": {
        "task": "metrics.tasks.send_weekly_reports",
        "schedule": crontab(minute=0, hour=7, day_of_week="mon"),
        "options": {"expires": 6 * 3600},
    },
    # Nightly at 03:45, after the rebuild: re-score RFM as of today; quintiles move as others buy.
    "rfm-segments-nightly": {
        "task": "metrics.tasks.refresh_rfm_segments",
        "schedule": crontab(minute=45, hour=3),
        "options": {"expires": 3 * 3600},
    },
    # Nightly at 04:05, after the RFM scoring: every active customer's health score as of today and its
    # backtest over the last 12 month starts (KPIS.md §10.10); the 5-minute run then snapshots the bands.
    "customer-health-nightly": {
        "task": "metrics.tasks.refresh_customer_health",
        "schedule": crontab(minute=5, hour=4),
        "options": {"expires": 3 * 3600},
    },
    # Every 15 minutes: freeze the forecast of a week, month or quarter that has just begun (KPIS.md
    # §10.6). Idempotent, so the ticks after the first do nothing; a start missed while beat was down is
    # frozen at the next tick (late, and its frozen_at says so).
    "forecasts-freeze": {
        "task": "metrics.tasks.freeze_forecasts",
        "schedule": crontab(minute="*/15"),
        "options": {"expires": 14 * 60},
    },
    # Nightly at 04:10, after the rebuild and RFM: each stage's win rate and the Brier scores over the last
    # four quarters' closed deals (a pass over their stage history), stored for the calibration page.
    "forecast-calibration-nightly": {
        "task": "metrics.tasks.compute_forecast_calibration",
        "schedule": crontab(minute=10, hour=4),
        "options": {"expires": 3 * 3600},
    },
    # Nightly at 04:20, after the rebuild: cohorts, NRR, GRR and the revenue waterfall (KPIS.md §10.9), a
    # pass over every customer's status history and won revenue, too heavy for the 5-minute run.
    "cohort-snapshots-nightly": {
        "task": "metrics.tasks.recompute_cohort_snapshots",
        "schedule": crontab(minute=20, hour=4),
        "options": {"expires": 3 * 3600},
    },
}
CELERY_BEAT_SCHEDULE |= {
    # Hourly at :27, clear of the 5-minute runs: time in stage of the recent weeks and months from the stage
    # history (KPIS.md §10.7), too heavy a scan for the 5-minute run; expires before the next hour.
    "time-in-stage-recent": {
        "task": "metrics.tasks.recompute_time_in_stage",
        "schedule": crontab(minute=27),
        "options": {"expires": 55 * 60},
    },
    # Nightly at 03:17, after the rebuild: time in stage of every period of the whole history.
    "time-in-stage-nightly": {
        "task": "metrics.tasks.recompute_time_in_stage",
        "schedule": crontab(minute=17, hour=3),
        "kwargs": {"full": True},
        "options": {"expires": 3 * 3600},
    },
}
# Full rebuilds scan the records on a second database connection ahead of the first (metrics.kpis.facts.
# Prefetch): both cores work. Off, a rebuild scans them one by one on its own connection.
KPI_PREFETCH_SCANS = env_bool("KPI_PREFETCH_SCANS", True)
# Months of KPI day facts a rebuild keeps (from the Monday before the first of the month this many back):
# a change to a record of a later day rewrites that day; an earlier one rescans its week and month from the
# records. Every day of 3 years made the rebuild 28 % slower at 1 M deals.
KPI_DAY_FACTS_MONTHS = env_int("KPI_DAY_FACTS_MONTHS", 12)
if KPI_DAY_FACTS_MONTHS < 1:
    raise ImproperlyConfigured(f"KPI_DAY_FACTS_MONTHS ({KPI_DAY_FACTS_MONTHS}) must be 1 or more.")
# The nightly full rebuild in parts across the workers of the kpis queue (metrics.services.fanout): pays
# with two worker processes or more (docker-compose); with one, a rebuild in one process is faster.
KPI_REBUILD_FANOUT = env_bool("KPI_REBUILD_FANOUT", False)
# Soft time limit in seconds of the full rebuild's task and of each of its parts; the hard limit is up to
# 5 minutes more, below the visibility timeout (or a rebuild still running is delivered again). At 10 M
# deals a rebuild runs about the default half hour on 2 cores: raise both with the data.
KPI_REBUILD_TIME_LIMIT = env_int("KPI_REBUILD_TIME_LIMIT", min(30 * 60, CELERY_VISIBILITY_TIMEOUT * 2 // 3))
if not 0 < KPI_REBUILD_TIME_LIMIT < CELERY_VISIBILITY_TIMEOUT - 1:
    raise ImproperlyConfigured(
        f"KPI_REBUILD_TIME_LIMIT ({KPI_REBUILD_TIME_LIMIT} s) must be positive and below "
        f"CELERY_VISIBILITY_TIMEOUT ({CELERY_VISIBILITY_TIMEOUT} s): raise that too."
    )
KPI_REBUILD_HARD_TIME_LIMIT = KPI_REBUILD_TIME_LIMIT + min(
    5 * 60, (CELERY_VISIBILITY_TIMEOUT - KPI_REBUILD_TIME_LIMIT) // 2
)

# SURVEYS: NPS / CES / CSAT links (surveys/; KPIS.md §9.2). Throttling is checked at send time.
# ------------------------------------------------------------------------------
# Absolute base of the links in survey e-mails (tasks have no request to build them from).
SURVEYS_PUBLIC_URL = os.environ.get("SURVEYS_PUBLIC_URL", "http://localhost:8000")
# No survey of any kind to the same customer within this many days (Formbricks' default cooldown).
SURVEYS_COOLDOWN_DAYS = env_int("SURVEYS_COOLDOWN_DAYS", 7)
# The one reminder goes out this many days after the invitation, to those who have not completed.
SURVEYS_REMINDER_AFTER_DAYS = 3
SURVEYS_REMINDER_UNTIL_DAYS = 5
# Relationship NPS asks customers who have been customers for at least this long.
SURVEYS_NPS_MIN_TENURE_DAYS = 60
# Tickets solved longer ago than delay + this many days are never surveyed (no backlog after an outage).
SURVEYS_TICKET_SCAN_DAYS = 3
# E-mail domains of our own staff and test accounts: never surveyed (as internal customers).
SURVEYS_INTERNAL_DOMAINS = env_list("SURVEYS_INTERNAL_DOMAINS", [])
# Requests per client address on the public survey pages ("N/s", "N/m" or "N/h"; empty: no limit).
SURVEYS_RATE_LIMIT = os.environ.get("SURVEYS_RATE_LIMIT", "60/m")
# django-ratelimit: a cache that cannot be reached allows the request (surveys/ratelimit.py also catches
# the Redis errors it lets through).
RATELIMIT_FAIL_OPEN = True
# django-ratelimit 4.1 names the cache backends it knew; Django's own RedisCache (newer than it) counts
# with INCR, atomically, which is what its warning is about.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]
# Who must set up two-factor sign-in (accounts.services.two_factor): managers and admins, if the company
# says so.
TWO_FACTOR_REQUIRED = "crm.services.two_factor_required"
# django-otp: the name authenticator apps show, and wrong codes slow a device down (1 s, 2 s, 4 s, ...).
OTP_TOTP_ISSUER = CRM_COMPANY_NAME or "Mini CRM"
OTP_TOTP_THROTTLE_FACTOR = env_int("OTP_THROTTLE_FACTOR", 1)
OTP_STATIC_THROTTLE_FACTOR = env_int("OTP_THROTTLE_FACTOR", 1)
# Behind a reverse proxy: the META key of the header carrying the client's address, e.g. HTTP_X_REAL_IP
# (or HTTP_X_FORWARDED_FOR, whose last entry is used). Empty: REMOTE_ADDR.
SURVEYS_CLIENT_IP_HEADER = os.environ.get("SURVEYS_CLIENT_IP_HEADER", "")
# Satisfaction KPIs from fewer answers than this are flagged as a low sample (KPIS.md G4).
SURVEYS_LOW_SAMPLE = 30
CELERY_BEAT_SCHEDULE |= {
    # Every 15 minutes: tickets solved >= 24 h ago (and still solved) get their CES/CSAT invitation within
    # a quarter of an hour of becoming due; everything else that is due is sent too.
    "survey-ticket-trigger": {
        "task": "surveys.tasks.send_ticket_surveys",
        "schedule": crontab(minute="*/15"),
        "options": {"expires": 14 * 60},
    },
    # Daily at 10:00 local, office hours for the customer: today's 1/90 share of the relationship NPS.
    "survey-nps-trickle": {
        "task": "surveys.tasks.send_nps_trickle",
        "schedule": crontab(minute=0, hour=10),
        "options": {"expires": 6 * 3600},
    },
    # Hourly at :20: the one reminder (3–5 days after sending), checked hourly so it is never late by much.
    "survey-reminders": {
        "task": "surveys.tasks.send_survey_reminders",
        "schedule": crontab(minute=20),
        "options": {"expires": 55 * 60},
    },
    # Hourly at :40: unanswered links past their window become "expired" for the funnel.
    "survey-expiry": {
        "task": "surveys.tasks.expire_survey_invitations",
        "schedule": crontab(minute=40),
        "options": {"expires": 55 * 60},
    },
}

# DATA QUALITY: imports, duplicate scan (crm/data/imports/, crm/data/dedupe.py)
# ------------------------------------------------------------------------------
# Largest CSV/XLSX file accepted for import; the file is kept in the database until the import has run.
CRM_IMPORT_MAX_BYTES = env_int("CRM_IMPORT_MAX_MB", 50) * 1024 * 1024
# Files up to this many rows are checked while the user waits (≈ 3 s); longer ones by a Celery task.
CRM_IMPORT_SYNC_CHECK_ROWS = env_int("CRM_IMPORT_SYNC_CHECK_ROWS", 20_000)
CELERY_BEAT_SCHEDULE |= {
    # Nightly at 01:40, before the KPI rebuild (02:30) so the duplicate rate and the review list agree:
    # find duplicate candidates among all customers (blocking keys + trigram index, ~1 min at 100 000).
    "duplicate-scan-nightly": {
        "task": "crm.tasks.scan_duplicates",
        "schedule": crontab(minute=40, hour=1),
        "options": {"expires": 6 * 3600},
    },
}

# LOGGING
# ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Local time of TIME_ZONE with its offset (Django sets the process's TZ to it), as gunicorn and Celery
    # write theirs: one clock in every log.
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "datefmt": "%Y-%m-%d %H:%M:%S %z",
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# API (crm/api/): requests per token (429 with Retry-After beyond it).
CRM_API_RATE = os.environ.get("CRM_API_RATE", "600/min")
# Webhooks (crm/webhooks/): targets on private, loopback or link-local addresses are refused unless this is
# set (development, tests); a subscription is switched off after this many deliveries given up in a row.
CRM_WEBHOOKS_ALLOW_PRIVATE = os.environ.get("CRM_WEBHOOKS_ALLOW_PRIVATE", "").lower() in ("1", "true", "yes")
CRM_WEBHOOKS_DISABLE_AFTER = int(os.environ.get("CRM_WEBHOOKS_DISABLE_AFTER", "5"))

"""Deterministic demo data: a company with years of customer, deal, ticket and staff history.

Everything comes from one ``random.Random(seed)``, customer by customer, and is streamed into PostgreSQL
with COPY by a loader thread, so memory stays flat and generating rows overlaps loading them. Primary keys
are assigned here, so foreign keys need no round trips; the sequences are moved past them at the end.
"""

import itertools
import math
import queue
import random
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.apps import apps
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.utils import translation
from django.utils.translation import gettext_noop
from psycopg import sql as pg
from tqdm import tqdm

from crm import normalize
from crm.models import CompanySettings, PipelineStage, SlaPolicy

SIZES = {"tiny": 300, "small": 5_000, "medium": 50_000, "large": 1_000_000, "xl": 2_000_000}
MAX_DEALS = 5_000_000
MAX_YEARS = 10
DEMO_PASSWORD = "minicrm-demo"  # noqa: S105 (printed with the demo logins)
DEALS_PER_CUSTOMER = 10
TICKETS_PER_DEAL = 1 / 3

# The tables the seed writes, in COPY column order. Rows are tab-separated COPY text lines.
COLUMNS = {
    "accounts_team": "id, name, kind, created_at",
    "accounts_user": "id, password, last_login, is_superuser, username, first_name, last_name, email, "
    "is_staff, is_active, date_joined, role, language, is_service_account, deactivated_at, team_id",
    "accounts_seat": "id, user_id, started_at, ended_at",
    "accounts_loginevent": "id, user_id, at",
    "accounts_usageevent": "id, user_id, verb, object_type, object_id, at, via",
    "crm_customer": "id, name, kind, email, phone, industry, city, segment, language, source, owner_id, "
    "status, created_at, updated_at, became_customer_at, churned_at, churn_reason, is_internal, "
    "email_key, phone_key, name_key",
    "crm_customerstatuschange": "id, customer_id, from_status, to_status, at, by_id, reason",
    "crm_deal": "id, customer_id, owner_id, title, amount, kind, stage_id, status, probability, source, "
    "expected_close_date, created_at, updated_at, closed_at, lost_reason, term_start, term_end, "
    "renewal_of_id, version, last_activity_at",
    "crm_dealstagechange": "id, deal_id, from_stage_id, to_stage_id, at, by_id",
    "crm_ticket": "id, customer_id, assignee_id, created_by_id, subject, description, priority, status, "
    "category, channel, is_spam, created_at, updated_at, first_response_at, first_solved_at, solved_at, "
    "closed_at, reopen_count, first_response_due_at, resolution_due_at",
    "crm_ticketstatuschange": "id, ticket_id, from_status, to_status, at, by_id",
    "crm_ticketmessage": "id, ticket_id, author_id, body, is_public, created_at",
    "crm_activity": "id, kind, subject, notes, user_id, customer_id, deal_id, ticket_id, created_at, "
    "due_at, done_at",
    "crm_spendentry": "id, month, category, channel, amount, note",
    "crm_crmcostitem": "id, name, kind, amount, start_month, end_month",
}
# Kept by --reset: the seeded pipeline, the SLA hours and the company settings row.
KEPT_MODELS = {"crm.pipeline", "crm.pipelinestage", "crm.slapolicy", "crm.companysettings"}
RESET_APPS = ("accounts", "crm", "surveys", "metrics", "admin", "sessions")

NULL = "\\N"
DAY = 86_400
YEAR = 365.25 * DAY
PAD_DAYS = 800  # the day grid reaches this far around the history: imported terms, future due dates

# Seasonality: relative volume per calendar month (Q4 strong, August and Christmas weak), yearly growth.
MONTH_WEIGHT = (0.9, 1.0, 1.05, 1.0, 1.0, 0.95, 0.85, 0.6, 1.05, 1.15, 1.25, 0.95)
GROWTH_PER_YEAR = 1.35
HOLIDAYS = {(1, 1), (12, 24), (12, 25), (12, 26), (12, 31), (5, 1), (10, 3)}

SEGMENTS = ("smb", "mid", "enterprise")
SEGMENT_WEIGHTS = (60, 30, 10)
SEGMENT_VALUE = {"smb": 4_800, "mid": 24_000, "enterprise": 120_000}  # median yearly contract value
SEGMENT_PACE = {"smb": 0.7, "mid": 1.0, "enterprise": 2.0}  # how slowly deals move
SEGMENT_UPSELLS = {"smb": 1.0, "mid": 2.0, "enterprise": 4.0}  # relative upsell rate
SEGMENT_TICKETS = {"smb": 1.0, "mid": 2.0, "enterprise": 4.5}  # relative ticket rate
SEGMENT_CHECKINS = {"smb": 1.0, "mid": 3.0, "enterprise": 6.0}  # account-management touches per year
SEGMENT_RENEWAL = {"smb": 0.76, "mid": 0.84, "enterprise": 0.91}

SOURCES = ("website", "referral", "event", "outbound", "partner", "ads", "other")
SOURCE_WEIGHTS = (30, 12, 10, 18, 10, 15, 5)
SOURCE_WIN = {
    "website": 0.30,
    "referral": 0.48,
    "event": 0.32,
    "outbound": 0.20,
    "partner": 0.42,
    "ads": 0.24,
    "other": 0.27,
}
# Monthly spend per expected lead, by acquisition channel: (category, cost per lead).
CHANNEL_COST = {
    "website": ("marketing", 70),
    "ads": ("marketing", 190),
    "event": ("marketing", 340),
    "partner": ("marketing", 160),
    "referral": ("marketing", 45),
    "outbound": ("sales", 230),
}

# Texts of the demo records (marked with gettext_noop where defined) come in the language being seeded
# (SeedConfig.language).
_TEXTS: dict[tuple[str, str], str] = {}


def _t(text: str) -> str:
    """``text`` translated into the language active while seeding (looked up once per language)."""
    key = (translation.get_language() or settings.LANGUAGE_CODE, text)
    found = _TEXTS.get(key)
    if found is None:
        found = _TEXTS[key] = translation.gettext(text)
    return found


STEP_DAYS = (6.0, 10.0, 12.0, 9.0)  # median days spent in each open stage before moving on
LOST_REASONS = {
    "new": (
        (gettext_noop("Price too high"), 25),
        (gettext_noop("Chose a competitor"), 25),
        (gettext_noop("No decision / went silent"), 20),
        (gettext_noop("No budget"), 15),
        (gettext_noop("Timing not right"), 10),
        (gettext_noop("Missing feature"), 8),
        (gettext_noop("Duplicate deal"), 2),
    ),
    "upsell": (
        (gettext_noop("No budget"), 35),
        (gettext_noop("Not needed right now"), 35),
        (gettext_noop("Price too high"), 20),
        (gettext_noop("Timing"), 10),
    ),
    "renewal": (
        (gettext_noop("Switched to a competitor"), 30),
        (gettext_noop("Price increase"), 20),
        (gettext_noop("No longer needed"), 20),
        (gettext_noop("Budget cuts"), 15),
        (gettext_noop("Unhappy with support"), 10),
        (gettext_noop("Company closed"), 5),
    ),
}
PRODUCTS = (
    gettext_noop("Starter plan"),
    gettext_noop("Team plan"),
    gettext_noop("Business plan"),
    gettext_noop("Enterprise plan"),
    gettext_noop("Onboarding package"),
)
DEAL_TOUCHES = (
    ("call", gettext_noop("Discovery call")),
    ("email", gettext_noop("Sent information")),
    ("meeting", gettext_noop("Demo meeting")),
    ("email", gettext_noop("Proposal sent")),
    ("meeting", gettext_noop("Negotiation meeting")),
)
CHECKINS = (
    ("call", gettext_noop("Check-in call")),
    ("meeting", gettext_noop("Business review")),
    ("email", gettext_noop("Usage report sent")),
    ("call", gettext_noop("Usage review")),
    ("note", gettext_noop("Account notes updated")),
)
UPSELLS = (
    gettext_noop("Additional seats"),
    gettext_noop("Analytics add-on"),
    gettext_noop("Premium support"),
    gettext_noop("Training day"),
    gettext_noop("API access"),
)

PRIORITIES = ("low", "normal", "high", "urgent")
PRIORITY_WEIGHTS = (20, 55, 20, 5)
FIRST_RESPONSE_HOURS = {"low": 11.0, "normal": 4.5, "high": 1.8, "urgent": 0.35}  # medians
RESOLUTION_HOURS = {"low": 70.0, "normal": 36.0, "high": 14.0, "urgent": 4.5}
CATEGORIES = ("question", "problem", "request", "complaint")
CATEGORY_WEIGHTS = (40, 30, 20, 10)
CHANNELS = ("email", "web", "phone", "chat")
CHANNEL_WEIGHTS = (50, 20, 20, 10)
TICKET_SUBJECTS = {
    "question": (
        gettext_noop("How do I export my data?"),
        gettext_noop("Question about the invoice"),
        gettext_noop("Where do I change my plan?"),
    ),
    "problem": (
        gettext_noop("Cannot log in"),
        gettext_noop("Sync fails since the update"),
        gettext_noop("Report shows wrong numbers"),
    ),
    "request": (
        gettext_noop("Please add a new user"),
        gettext_noop("Feature request: calendar sync"),
        gettext_noop("Change of billing address"),
    ),
    "complaint": (
        gettext_noop("Nobody answered my last e-mail"),
        gettext_noop("Unacceptable downtime"),
        gettext_noop("Wrong invoice again"),
    ),
}

FIRST_NAMES = (
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Greta", "Hannes", "Ida", "Jonas", "Katrin", "Lukas",
    "Mia", "Noah", "Olivia", "Paul", "Quirin", "Rosa", "Simon", "Tanja", "Ulrich", "Vera", "Wei", "Xiaoming",
    "Yvonne", "Zoe", "Li", "Mei", "Jan", "Lea", "Tim", "Sara", "Ole", "Nina", "Max", "Julia",
)  # fmt: skip
LAST_NAMES = (
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
    "Koch", "Richter", "Klein", "Wolf", "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger", "Hartmann",
    "Lange", "Werner", "Krause", "Lehmann", "Köhler", "Maier", "Zhang", "Wang", "Chen", "Liu", "Novak",
    "Rossi", "Dubois", "Jansen", "Berg", "Frank",
)  # fmt: skip
NAME_PREFIXES = (
    "Nord", "Süd", "Ost", "West", "Alpen", "Rhein", "Elb", "Hanse", "Sonnen", "Stern", "Falken", "Adler",
    "Linden", "Birken", "Kronen", "Blue", "Silver", "Green", "Bright", "Quantum", "Apex", "Nova", "Terra",
    "Aqua", "Vita", "Urban", "Prime", "Smart", "Clear", "Swift", "Iron", "Oak", "Pine", "Delta", "Orbit",
    "Pixel", "Vertex", "Polar", "Cedar", "Maple", "Harbor", "Summit", "Nexus", "Lumen", "Astra", "Borealis",
    "Contor", "Helio",
)  # fmt: skip
NAME_ROOTS = (
    "wind", "licht", "feld", "berg", "tal", "werk", "haus", "stein", "bridge", "line", "point", "gate",
    "field", "stone", "wave", "path", "form", "tec", "net", "ware", "bau", "hof", "mark", "quelle",
)  # fmt: skip
NAME_CORES = (
    "Logistik", "Bau", "Software", "Analytics", "Consulting", "Medical", "Foods", "Energy", "Media",
    "Design", "Systems", "Solutions", "Technik", "Handel", "Immobilien", "Finanz", "Robotics", "Textil",
    "Optik", "Pharma", "Metall", "Druck", "Reisen", "Versand", "Werke", "Labs", "Data", "Cloud", "Security",
    "Mobility", "Automation", "Kunststoff", "Elektro", "Möbel", "Getränke", "Verpackung", "Dental",
    "Sanitär", "Agrar", "Marine",
)  # fmt: skip
LEGAL_FORMS = ("GmbH", "GmbH", "GmbH", "AG", "GmbH & Co. KG", "UG", "KG", "SE", "Ltd", "Inc.")
CITIES = (
    "Berlin", "Hamburg", "München", "Köln", "Frankfurt am Main", "Stuttgart", "Düsseldorf", "Leipzig",
    "Dresden", "Hannover", "Nürnberg", "Bremen", "Wien", "Zürich", "Graz", "Basel",
)  # fmt: skip
ZH_CITIES = (("Shanghai", "上海"), ("Beijing", "北京"), ("Shenzhen", "深圳"), ("Suzhou", "苏州"))
INDUSTRIES = (
    "Manufacturing", "Retail", "Logistics", "Software", "Healthcare", "Construction", "Finance",
    "Education", "Hospitality", "Media", "Energy", "Consulting", "Automotive", "Food & beverage",
)  # fmt: skip
AREA_CODES = ("30", "40", "89", "221", "69", "711", "211", "341", "351", "511", "911", "421")
FREE_MAIL = ("gmail.com", "web.de", "gmx.de", "outlook.com", "t-online.de")
COMPANY_MAILBOXES = ("info", "kontakt", "office", "hello", "sales", "einkauf")
UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})

# Tools of an account manager or agent, by how much they use them:
# chance an action is recorded, share of recorded actions that came by CSV import, sign-ins per working
# day, win-probability bonus.
PROFILES = {
    "power": (0.95, 0.02, 3.0, 0.04),
    "normal": (0.75, 0.05, 1.4, 0.0),
    "low": (0.30, 0.30, 0.4, -0.02),
    "barely": (0.04, 0.60, 0.08, -0.05),
    "manager": (0.20, 0.05, 1.6, 0.0),
    "admin": (0.30, 0.50, 0.5, 0.0),
    "service": (1.0, 0.0, 0.0, 0.0),
}

_MASK = (1 << 64) - 1
_TIME_OF_DAY: list[str] = []


class SeedError(Exception):
    """The database cannot be seeded as asked (existing data, a pipeline without won/lost stages…)."""


@dataclass(frozen=True)
class SeedConfig:
    """What to generate: the data depends on these values only (the language only changes its texts)."""

    until: date
    seed: int = 42
    deals: int = SIZES["small"]
    years: int = 3
    language: str = "en"


@dataclass
class SeedResult:
    rows: dict[str, int]
    seconds: float
    logins: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, for tuning

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0


def _mix(*parts: int) -> int:
    """A well-spread 64-bit hash of integers (splitmix64 finaliser), for choices that must not use the RNG."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        h = (h ^ (part & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK
        h ^= h >> 31
    return h


def _minus_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


# Time
# ---------------------------------------------------------------------------------------------------------


class Calendar:
    """The history's day grid in the reporting time zone. Times are UTC epoch seconds (int).

    Days are absolute indices into the grid; ``first`` (the first day of the history) is index
    ``PAD_DAYS`` and ``until`` (the first day after it) is ``PAD_DAYS + days``.
    """

    def __init__(self, *, until: date, years: int, tz: ZoneInfo) -> None:
        if not _TIME_OF_DAY:
            _TIME_OF_DAY.extend(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00" for s in range(DAY))
        self.first = _minus_years(until, years)
        self.days = (until - self.first).days
        self.dates = [self.first + timedelta(i) for i in range(-PAD_DAYS, self.days + PAD_DAYS)]
        self.epochs = [int(datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()) for d in self.dates]
        self.isodates = [d.isoformat() for d in self.dates]
        self.months = [d.month for d in self.dates]
        workday = [d.weekday() < 5 and (d.month, d.day) not in HOLIDAYS for d in self.dates]
        self.workday = workday
        self._next_work = list(range(len(self.dates)))
        for k in range(len(self.dates) - 2, -1, -1):
            if not workday[k]:
                self._next_work[k] = self._next_work[k + 1]
        self.k0 = PAD_DAYS
        self.k_end = PAD_DAYS + self.days
        self.start = self.epochs[self.k0]
        self.end = self.epochs[self.k_end]
        self._utc0 = self.epochs[0] // DAY - 1
        last = self.epochs[-1] // DAY + 2
        self._utc = [(date(1970, 1, 1) + timedelta(u)).isoformat() + " " for u in range(self._utc0, last)]

    def ts(self, t: int) -> str:
        """COPY text of an aware timestamp."""
        return self._utc[t // DAY - self._utc0] + _TIME_OF_DAY[t % DAY]

    def day(self, t: int) -> int:
        k = (t - self.epochs[0]) // DAY
        if t < self.epochs[k]:
            return k - 1
        if k + 1 < len(self.epochs) and t >= self.epochs[k + 1]:
            return k + 1
        return k

    def next_workday(self, k: int) -> int:
        return self._next_work[min(k, len(self._next_work) - 1)]

    def work_time(self, k: int, rng: random.Random) -> int:
        """A moment during business hours (08:00–18:00) of day ``k``, or of the next working day."""
        return self.epochs[self._next_work[k]] + 28_800 + int(rng.random() * 36_000)

    def business_start(self, t: int) -> int:
        """``t`` if it falls in business hours, else the next opening (08:00 of the next working day)."""
        k = self.day(t)
        offset = t - self.epochs[k]
        if self.workday[k] and 28_800 <= offset < 64_800:
            return t
        if self.workday[k] and offset < 28_800:
            return self.epochs[k] + 28_800
        return self.epochs[self._next_work[k + 1]] + 28_800

    def add_year(self, k: int) -> int:
        d = self.dates[k]
        try:
            later = d.replace(year=d.year + 1)
        except ValueError:
            later = d.replace(year=d.year + 1, day=28)
        return k + (later - d).days

    def month_starts(self) -> list[int]:
        """Day indices of the first day of every month that starts before ``until``."""
        k = self.k0 - self.dates[self.k0].day + 1
        starts = []
        while k < self.k_end:
            starts.append(k)
            d = self.dates[k]
            k += (d.replace(year=d.year + d.month // 12, month=d.month % 12 + 1) - d).days
        return starts


# Staff
# ---------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Person:
    """A member of staff: their tenure and how they use the CRM."""

    id: int
    username: str
    role: str
    team_id: int | None
    first_name: str
    last_name: str
    joined: int
    profile: str = "normal"
    left: int | None = None
    successor: "Person | None" = None
    usage: float = 0.75
    imports: float = 0.05
    logins: float = 1.0
    skill: float = 0.0
    last_login: int | None = None

    def at(self, t: int) -> "Person":
        """Who holds this person's accounts at ``t``: their successor once they have left."""
        if self.left is not None and t >= self.left and self.successor is not None:
            return self.successor
        return self


class Staff:
    """Teams and users, hired over the history; a couple of them leave and hand over their accounts."""

    def __init__(self, rng: random.Random, cal: Calendar, deals: int) -> None:
        n_reps = max(8, round(8 * (deals / 300) ** 0.4))
        n_agents = max(3, round(n_reps * 0.3))
        sales = ["Sales North", "Sales South", "Key Accounts"][: 2 if n_reps < 20 else 3]
        support = ["Customer Support", "Technical Support"][: 1 if n_agents < 10 else 2]
        founded = cal.start - 800 * DAY
        self.teams = [(i + 1, name, "sales", founded) for i, name in enumerate(sales)]
        self.teams += [(len(sales) + i + 1, name, "support", founded) for i, name in enumerate(support)]
        sales_ids = [t[0] for t in self.teams if t[2] == "sales"]
        support_ids = [t[0] for t in self.teams if t[2] == "support"]
        self.people: list[Person] = []
        self._rng = rng
        self._cal = cal

        def hire(username: str, role: str, team_id: int | None, joined: int, profile: str) -> Person:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            usage, imports, logins, bonus = PROFILES[profile]
            person = Person(
                id=len(self.people) + 1,
                username=username,
                role=role,
                team_id=team_id,
                first_name=first,
                last_name=last,
                joined=joined,
                profile=profile,
                usage=usage,
                imports=imports,
                logins=logins * rng.uniform(0.7, 1.3),
                skill=bonus + rng.gauss(0, 0.04),
            )
            self.people.append(person)
            return person

        def joined_at(index: int, count: int) -> int:
            if index < max(2, round(count * 0.65)):
                return cal.start - rng.randint(20, 700) * DAY - rng.randint(0, DAY)
            span = cal.end - 90 * DAY - cal.start
            return cal.start + 30 * DAY + int(span * math.sqrt(rng.random()))

        self.admin = hire("admin", "admin", None, founded, "admin")
        self.manager = hire("manager", "manager", None, founded, "manager")
        # the website's lead form creates customers through the API: a service account, no seat
        self.web_forms = hire("web-forms", "admin", None, founded, "service")
        self.web_forms.first_name, self.web_forms.last_name = "Website", "lead form"
        for i, team_id in enumerate(sales_ids + support_ids, start=2):
            hire(f"manager{i}", "manager", team_id, founded + i * DAY, "manager")
        rep_profiles = self._profiles(n_reps)
        rep_joins = sorted(joined_at(i, n_reps) for i in range(n_reps))
        self.reps = [
            hire(f"rep{i + 1}", "rep", sales_ids[i % len(sales_ids)], rep_joins[i], rep_profiles[i])
            for i in range(n_reps)
        ]
        agent_joins = sorted(joined_at(i, n_agents) for i in range(n_agents))
        self.agents = [
            hire(
                f"agent{i + 1}",
                "agent",
                support_ids[i % len(support_ids)],
                agent_joins[i],
                "power" if rng.random() < 0.3 else "normal",
            )
            for i in range(n_agents)
        ]
        self._depart(self.reps, 2 if n_reps >= 12 else 1)
        if n_agents >= 6:
            self._depart(self.agents, 1)
        self._rep_joined = [p.joined for p in self.reps]
        self._agent_joined = [p.joined for p in self.agents]

    def _profiles(self, n: int) -> list[str]:
        """rep1 is a power user (the demo login); two reps barely use the CRM, a few use it little."""
        rest = ["barely", "barely"] + ["low"] * max(1, n // 10) + ["power"] * max(1, n // 5)
        rest += ["normal"] * (n - 1 - len(rest))
        self._rng.shuffle(rest)
        return ["power", *rest[: n - 1]]

    def _depart(self, people: list[Person], count: int) -> None:
        cal, rng = self._cal, self._rng
        span = cal.end - cal.start
        early = [p for p in people[1:] if p.joined < cal.start + span * 0.3]
        for person in rng.sample(early, min(count, len(early))):
            person.left = cal.start + int(span * rng.uniform(0.4, 0.75))
        for person in people:
            if person.left is not None:
                stayers = [p for p in people if p.left is None and p.joined < person.left]
                person.successor = rng.choice(stayers)

    def rep_at(self, rng: random.Random, t: int) -> Person:
        """A rep on the payroll at ``t`` (new customers go to whoever is there)."""
        person = self.reps[rng.randrange(max(1, bisect_right(self._rep_joined, t)))]
        return person.at(t)

    def agent_at(self, rng: random.Random, t: int) -> Person:
        person = self.agents[rng.randrange(max(1, bisect_right(self._agent_joined, t)))]
        return person.at(t)

    def seats_at(self, t: int) -> int:
        return sum(
            1
            for p in self.people
            if p.profile != "service" and p.joined <= t and (p.left is None or p.left > t)
        )


# Output
# ---------------------------------------------------------------------------------------------------------


class _Loader(threading.Thread):
    """Runs the COPY statements on the seed's connection while the main thread generates the next rows."""

    def __init__(self, raw_connection: Any) -> None:
        super().__init__(name="seed-demo-loader", daemon=True)
        self._connection = raw_connection
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=8)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self._connection.cursor() as cursor:
                while (item := self._queue.get()) is not None:
                    table, data = item
                    with cursor.copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as copy:
                        copy.write(data)
        except Exception as exc:  # handed over to the main thread, which raises it
            self.error = exc
            while self._queue.get() is not None:
                pass  # the transaction is aborted: drain, so that the producer never blocks

    def put(self, table: str, data: str) -> None:
        self.raise_error()
        self._queue.put((table, data))

    def stop(self) -> None:
        """Wait for the queued chunks; the connection is the main thread's again afterwards."""
        if self.is_alive():
            self._queue.put(None)
            self.join()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


class Sink:
    """Buffers COPY lines per table and hands full chunks to the loader (without one it only counts)."""

    CHUNK = 20_000

    def __init__(self, loader: _Loader | None = None) -> None:
        self._loader = loader
        self._buffers: dict[str, list[str]] = {table: [] for table in COLUMNS}
        self.counts = dict.fromkeys(COLUMNS, 0)

    def adder(self, table: str) -> Callable[[str], None]:
        """A fast ``add(line)`` for one table."""
        buffer = self._buffers[table]
        append = buffer.append
        chunk = self.CHUNK

        def add(line: str) -> None:
            append(line)
            if len(buffer) >= chunk:
                self._flush(table)

        return add

    def _flush(self, table: str) -> None:
        lines = self._buffers[table]
        if lines:
            self.counts[table] += len(lines)
            if self._loader is not None:
                self._loader.put(table, "".join(lines))
            lines.clear()

    def flush(self) -> None:
        for table in COLUMNS:
            self._flush(table)


def _n(value: object) -> str:
    return NULL if value is None else str(value)


def _ts(ts: Callable[[int], str], t: int | None) -> str:
    return NULL if t is None else ts(t)


def _pick(rng: random.Random, choices: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([c for c, _w in choices], [w for _c, w in choices])[0]


def _touch(stage_kind: str, rng: random.Random) -> tuple[str, str]:
    """The call, e-mail or meeting that goes with a stage change."""
    if stage_kind == "won":
        return "email", gettext_noop("Contract signed")
    if stage_kind == "lost":
        return "call", gettext_noop("Loss review")
    return rng.choice(DEAL_TOUCHES)


# The company's history
# ---------------------------------------------------------------------------------------------------------


class _Account:
    """A customer being lived through: what its final row needs."""

    __slots__ = (
        "became",
        "churned",
        "id",
        "reason",
        "rep",
        "segment",
        "short",
        "source",
        "status",
        "updated",
    )

    def __init__(self, cid: int, segment: str, source: str, rep: Person) -> None:
        self.id = cid
        self.segment = segment
        self.source = source
        self.rep = rep
        self.short = f"Customer {cid}"
        self.status = ""
        self.became: int | None = None
        self.churned: int | None = None
        self.reason = ""
        self.updated = 0


@dataclass(frozen=True)
class Setup:
    """The seeded pipeline (stage ids by kind, in order) and the SLA hours per priority."""

    open: tuple[int, ...]
    won: int
    lost: int
    sla: dict[str, tuple[int, int]]


class History:
    """Lives through the company's history customer by customer and writes every row it produces.

    ``upsell_rate`` (upsell opportunities per customer-year) and ``ticket_rate`` (tickets per customer-year)
    are calibrated so that the data has the asked number of deals and about a third as many tickets.
    """

    def __init__(
        self,
        *,
        seed: int,
        rng: random.Random,
        cal: Calendar,
        staff: Staff,
        pipeline: Setup,
        sink: Sink,
        golive: int,
        upsell_rate: float,
        ticket_rate: float,
        with_identities: bool = True,
    ) -> None:
        self.seed = seed
        self.rng = rng
        self.cal = cal
        self.ts = cal.ts
        self.end = cal.end
        self.staff = staff
        self.pipeline = pipeline
        self.stage_kind = dict.fromkeys(pipeline.open, "open") | {pipeline.won: "won", pipeline.lost: "lost"}
        self.sink = sink
        self.golive = golive
        self.upsell_rate = upsell_rate
        self.ticket_rate = ticket_rate
        self.with_identities = with_identities
        self.active_years = 0.0  # segment-weighted customer-years, to calibrate the ticket rate
        self.active_delta: dict[int, int] = {}  # month start day → change in active customers
        self._ids = {table: itertools.count(1) for table in COLUMNS}
        self._customer = sink.adder("crm_customer")
        self._status_change = sink.adder("crm_customerstatuschange")
        self._deal_row = sink.adder("crm_deal")
        self._stage_change = sink.adder("crm_dealstagechange")
        self._ticket_row = sink.adder("crm_ticket")
        self._ticket_change = sink.adder("crm_ticketstatuschange")
        self._message = sink.adder("crm_ticketmessage")
        self._activity_row = sink.adder("crm_activity")
        self._usage = sink.adder("accounts_usageevent")
        self._next_deal = self._ids["crm_deal"].__next__
        self._next_stage_change = self._ids["crm_dealstagechange"].__next__
        self._next_activity = self._ids["crm_activity"].__next__
        self._next_usage = self._ids["accounts_usageevent"].__next__

    # Adoption: the CRM went live a third into the history; before that it was a pilot.

    def _gl(self, t: int) -> float:
        """0 before go-live, rising to 1 over the 90 days after it."""
        if t <= self.golive:
            return 0.0
        return min(1.0, (t - self.golive) / (90 * DAY))

    def _use(self, person: Person, verb: str, object_type: str, object_id: int, t: int) -> None:
        """A usage event for an action, recorded as often as the person really uses the CRM."""
        rng = self.rng
        if rng.random() < person.usage * (0.4 + 0.6 * self._gl(t)):
            via = "import" if rng.random() < person.imports else "web"
            self._usage(
                f"{self._next_usage()}\t{person.id}\t{verb}\t{object_type}\t{object_id}\t{self.ts(t)}\t{via}\n"
            )

    # Customers

    def live(self, created: list[int], legacy: int, progress: Callable[[int], object] | None = None) -> None:
        """Live through every customer; the first ``legacy`` ones were imported as active customers."""
        for index, t in enumerate(created):
            self.customer(index + 1, t, legacy=index < legacy)
            if progress is not None and index % 256 == 255:
                progress(256)
        if progress is not None:
            progress(len(created) % 256)

    def customer(self, cid: int, created: int, *, legacy: bool) -> None:
        rng = self.rng
        segment = _segment(cid)
        source = "other" if legacy and rng.random() < 0.5 else rng.choices(SOURCES, SOURCE_WEIGHTS)[0]
        acc = _Account(cid, segment, source, self.staff.rep_at(rng, created))
        identity = self.identity(cid) if self.with_identities else None
        if identity is not None:
            acc.short = identity[1]
        if legacy:
            # imported at ``created`` with its original dates: a customer since it signed, up to a year ago
            imported, created = created, self.cal.work_time(self.cal.day(created) - rng.randint(1, 365), rng)
            self._status(acc, "active", created, self.staff.admin)
            self._use(self.staff.admin, "create", "customer", cid, imported)
            deal_id, value = self._imported_contract(acc, created, imported)
            self._contracts(acc, deal_id, value, self.cal.day(created), imported, onboarding=False)
        else:
            owner = acc.rep.at(created)
            self._status(acc, "lead", created, owner)
            if source == "website":
                bot = self.staff.web_forms
                self._usage(
                    f"{self._next_usage()}\t{bot.id}\tcreate\tcustomer\t{cid}\t{self.ts(created)}\tapi\n"
                )
            else:
                self._use(owner, "create", "customer", cid, created)
            if rng.random() < 0.05:
                self._tickets(acc, created, created + 60 * DAY)
            if rng.random() < 0.9:
                won = self._acquire(acc, created + rng.randint(600, 10 * DAY))
                if won is not None:
                    deal_id, won_at, value = won
                    self._status(acc, "active", won_at, acc.rep.at(won_at))
                    self._contracts(acc, deal_id, value, self.cal.day(won_at), won_at)
        if identity is not None:
            self._emit_customer(acc, created, identity)

    def _status(self, acc: _Account, status: str, at: int, by: Person | None, reason: str = "") -> None:
        """A status change with the dates ``customer_set_status`` keeps (reactivation keeps ``became``)."""
        previous = acc.status
        if status == "active":
            acc.became = acc.became or at
            acc.churned = None
            acc.reason = ""
        elif status == "churned":
            acc.churned = at
            acc.reason = reason
        acc.status = status
        acc.updated = at
        by_id = NULL if by is None else by.id
        self._status_change(
            f"{self._ids['crm_customerstatuschange'].__next__()}\t{acc.id}\t{previous}\t{status}\t"
            f"{self.ts(at)}\t{by_id}\t{reason}\n"
        )
        if previous and by is not None:
            self._use(by, "update", "customer", acc.id, at)
        delta = {"active": 1, "churned": -1}.get(status, 0) - (1 if previous == "active" else 0)
        if delta:
            month = self._month_of(at)
            self.active_delta[month] = self.active_delta.get(month, 0) + delta

    def _month_of(self, t: int) -> int:
        k = self.cal.day(t)
        return k - self.cal.dates[k].day + 1

    def _churn(self, acc: _Account, at: int, reason: str) -> bool:
        """Churn ``acc`` at ``at`` unless that is after the end of the history."""
        if at >= self.end:
            return False
        self._status(acc, "churned", at, acc.rep.at(at), reason)
        return True

    def _acquire(self, acc: _Account, t: int, *, attempts: int = 3, winback: bool = False) -> tuple | None:
        """Try to win the customer with new-business deals; returns (deal id, won at, contract value)."""
        rng = self.rng
        for attempt in range(attempts):
            if t >= self.end:
                return None
            owner = acc.rep.at(t)
            closes_in_q4 = self.cal.months[self.cal.day(t) + 40] >= 10
            p = SOURCE_WIN[acc.source] + owner.skill + 0.06 * self._gl(t) + 0.05 * closes_in_q4
            p += 0.1 * winback - 0.05 * attempt
            value = self._contract_value(acc.segment)
            product = _t(PRODUCTS[min(len(PRODUCTS) - 2, SEGMENTS.index(acc.segment) + rng.randrange(2))])
            deal_id, status, last, _reason = self._deal(
                acc, kind="new", t0=t, won=rng.random() < p, amount=value, start=0, title=product
            )
            if status == "won":
                return deal_id, last, value
            if status == "open" or rng.random() > 0.3:
                return None
            t = last + rng.randint(60, 400) * DAY
        return None

    def _contract_value(self, segment: str) -> int:
        return max(500, int(round(SEGMENT_VALUE[segment] * self.rng.lognormvariate(0, 0.5), -2)))

    def _imported_contract(self, acc: _Account, signed: int, imported: int) -> tuple[int, int]:
        """The running contract of an imported customer, won at ``signed``; returns (deal id, value)."""
        value = self._contract_value(acc.segment)
        deal_id = self._emit_deal(
            acc,
            kind="new",
            title=_t(PRODUCTS[SEGMENTS.index(acc.segment) + 1]),
            amount=value,
            path=[(self.pipeline.won, signed)],
            reason="",
            imported=(self.staff.admin, imported),
        )
        return deal_id, value

    def _contracts(
        self,
        acc: _Account,
        deal_id: int,
        value: int,
        start: int,
        active_from: int,
        *,
        onboarding: bool = True,
    ) -> None:
        """Yearly terms from day ``start``: tickets, upsells, then a renewal (or churn) at each term end."""
        rng, cal = self.rng, self.cal
        first_term = onboarding
        while True:
            term_end = cal.add_year(start)
            ends = cal.epochs[term_end]
            complaints = self._tickets(acc, active_from, min(ends, self.end), onboarding=first_term)
            self._checkins(acc, active_from, min(ends, self.end))
            value += self._upsells(acc, active_from, ends, term_end, value)
            opened = max(ends - rng.randint(35, 90) * DAY, active_from + DAY)
            if opened >= self.end:
                return
            owner = acc.rep.at(opened)
            p = (
                SEGMENT_RENEWAL[acc.segment]
                + 0.04 * self._gl(ends)
                + owner.skill / 2
                - 0.08 * min(complaints, 3)
            )
            renew = rng.random() < p
            if not renew and rng.random() < 0.2:
                # nobody opened a renewal: the term simply ran out
                self._churn(acc, ends + rng.randint(0, 3 * DAY), "Did not renew")
                return
            amount = int(round(value * (rng.uniform(0.94, 1.07) if rng.random() > 0.08 else 0.75), -1))
            close = ends - rng.randint(0, 25 * DAY) if renew else ends + rng.randint(-20 * DAY, 10 * DAY)
            deal_id_new, status, last, reason = self._deal(
                acc,
                kind="renewal",
                t0=opened,
                won=renew,
                amount=amount,
                start=min(2, len(self.pipeline.open) - 1),
                title=_t(gettext_noop("Renewal %(year)s")) % {"year": cal.dates[term_end].year},
                close_at=max(close, opened + 2 * DAY),
                renewal_of=deal_id,
                term_start=term_end,
                expected=term_end,
            )
            if status == "open":
                return
            if status == "won":
                deal_id, value, start, active_from, first_term = deal_id_new, amount, term_end, ends, False
                continue
            churned_at = max(ends, last) + rng.randint(0, 3 * DAY)
            if not self._churn(acc, churned_at, reason):
                return
            if rng.random() >= 0.15 + 0.05 * self._gl(churned_at):
                return
            won = self._acquire(acc, churned_at + rng.randint(60, 400) * DAY, attempts=1, winback=True)
            if won is None:
                return
            deal_id, won_at, value = won
            self._status(acc, "active", won_at, acc.rep.at(won_at))
            start, active_from, first_term = cal.day(won_at), won_at, True

    def _upsells(self, acc: _Account, begin: int, ends: int, term_end: int, value: int) -> int:
        """Upsell deals during a term (co-termed with it); returns the recurring value they add."""
        rng, cal = self.rng, self.cal
        last_start = min(ends - 45 * DAY, self.end)
        rate = self.upsell_rate * SEGMENT_UPSELLS[acc.segment] * (1 + 0.15 * self._gl(begin))
        t, added = begin, 0
        while True:
            t += int(rng.expovariate(rate) * YEAR) + 1
            if t >= last_start:
                return min(int(round(added * 0.3, -1)), value // 4)
            k = cal.day(t)
            if rng.random() * 1.25 > MONTH_WEIGHT[cal.months[k] - 1]:
                continue
            t0 = cal.work_time(k, rng)
            if t0 >= self.end:
                continue
            owner = acc.rep.at(t0)
            amount = max(100, int(round(value * 0.035 * rng.lognormvariate(0, 0.6), -1)))
            _id, status, _last, _reason = self._deal(
                acc,
                kind="upsell",
                t0=t0,
                won=rng.random() < 0.5 + owner.skill + 0.05 * self._gl(t0),
                amount=amount,
                start=min(1, len(self.pipeline.open) - 1),
                title=_t(rng.choice(UPSELLS)),
                win_before=ends - 14 * DAY,
                term_end=term_end,
            )
            if status == "won":
                added += amount

    # Deals

    def _deal(
        self,
        acc: _Account,
        *,
        kind: str,
        t0: int,
        won: bool,
        amount: int,
        start: int,
        title: str,
        close_at: int | None = None,
        win_before: int | None = None,
        renewal_of: int | None = None,
        term_start: int | None = None,
        term_end: int | None = None,
        expected: int | None = None,
    ) -> tuple[int, str, int, str]:
        """Walk a deal through the pipeline; returns (id, final status, last change time, lost reason)."""
        rng = self.rng
        opens, pipeline = self.pipeline.open, self.pipeline
        top = len(opens) - 1
        pace = SEGMENT_PACE[acc.segment] * {"new": 1.0, "upsell": 0.8, "renewal": 0.6}[kind]
        depth = top
        if not won:
            depth = start
            while depth < top and rng.random() < 0.55:
                depth += 1
        stages, waits = [opens[start]], []
        i = start
        while i < depth:
            step = i + 2 if i + 2 <= depth and rng.random() < 0.08 else i + 1  # a skipped stage
            stages.append(opens[step])
            waits.append(STEP_DAYS[min(i, 3)] * pace)
            if step >= 2 and rng.random() < 0.05:  # back one stage (proposal revised), then forward again
                stages += [opens[step - 1], opens[step]]
                waits += [4 * pace, 5 * pace]
            i = step
        stages.append(pipeline.won if won else pipeline.lost)
        waits.append(STEP_DAYS[min(depth, 3)] * pace)
        reason = "" if won else _t(_pick(rng, LOST_REASONS[kind]))
        if close_at is None and not won and rng.random() < 0.03:  # reopened after the loss
            won = rng.random() < 0.4
            stages += [opens[depth], pipeline.won if won else pipeline.lost]
            waits += [25.0, 10 * pace]
        path = self._timed(stages, waits, t0, close_at)
        if win_before is not None and path[-1][0] == pipeline.won and path[-1][1] >= win_before:
            path[-1] = (pipeline.lost, path[-1][1])  # too late for this term: part of the renewal talks
            reason = _t(gettext_noop("Bundled into renewal"))
        if path[-1][1] >= self.end:
            path = [p for p in path if p[1] < self.end]
        if expected is None:
            expected = self.cal.day(t0) + int(sum(waits) * rng.uniform(0.6, 1.2)) + 1
        deal_id = self._emit_deal(
            acc,
            kind=kind,
            title=title,
            amount=None if kind != "renewal" and rng.random() < 0.01 else amount,
            path=path,
            reason=reason,
            renewal_of=renewal_of,
            term_start=term_start,
            term_end=term_end,
            expected=expected,
        )
        stage, last = path[-1]
        return deal_id, self.stage_kind[stage], last, reason

    def _timed(
        self, stages: list[int], waits: list[float], t0: int, close_at: int | None
    ) -> list[tuple[int, int]]:
        """Give each stage change a time: working hours, seasonal delays, or spread up to ``close_at``."""
        rng, cal = self.rng, self.cal
        path = [(stages[0], t0)]
        if close_at is not None:
            gaps = [w * rng.uniform(0.5, 1.5) for w in waits]
            scale = (close_at - t0) / sum(gaps)
            t = float(t0)
            for stage, gap in zip(stages[1:], gaps, strict=True):
                t = max(t + gap * scale, path[-1][1] + 60)
                path.append((stage, int(t)))
            return path
        t = t0
        last = len(stages) - 1
        for n, (stage, wait) in enumerate(zip(stages[1:], waits, strict=True), start=1):
            if t >= self.end:
                path.append((stage, t + DAY))  # after the end of the history: cut off by the caller
                t += DAY
                continue
            k = cal.day(t + int(min(120.0, wait * rng.lognormvariate(0, 0.75)) * DAY))
            if n == last:
                month, day = cal.months[k], cal.dates[k].day
                if month == 8 and rng.random() < 0.4:  # decision makers on holiday
                    k += rng.randint(14, 28)
                elif month == 12 and day >= 20 and rng.random() < 0.8:
                    k += rng.randint(14, 21)
            later = cal.work_time(k, rng)
            t = later if later > t else t + rng.randint(600, 7_200)
            path.append((stage, t))
        return path

    def _emit_deal(
        self,
        acc: _Account,
        *,
        kind: str,
        title: str,
        amount: int | None,
        path: list[tuple[int, int]],
        reason: str,
        renewal_of: int | None = None,
        term_start: int | None = None,
        term_end: int | None = None,
        expected: int | None = None,
        imported: tuple[Person, int] | None = None,
    ) -> int:
        rng, cal, ts = self.rng, self.cal, self.ts
        deal_id = self._next_deal()
        created = path[0][1]
        stage, last = path[-1]
        status = self.stage_kind[stage]
        owner = acc.rep.at(created)
        term = f"{NULL}\t{NULL}"
        if status == "won":
            begins = cal.day(last) if term_start is None else term_start
            ends = cal.add_year(begins) if term_end is None else term_end
            term = f"{cal.isodates[begins]}\t{cal.isodates[ends]}"
        probability = rng.choice((10, 20, 30, 40, 60, 70, 80, 90)) if rng.random() < 0.08 else NULL
        self._deal_row(
            f"{deal_id}\t{acc.id}\t{owner.id}\t{acc.short} – {title}\t{_n(amount)}\t{kind}\t{stage}\t"
            f"{status}\t"
            f"{probability}\t{acc.source}\t{cal.isodates[expected] if expected else NULL}\t{ts(created)}\t"
            f"{ts(last)}\t{ts(last) if status != 'open' else NULL}\t{reason if status == 'lost' else ''}\t"
            # Every activity of a generated deal is logged at one of its stage moves: the last move is
            # its last activity.
            f"{term}\t{_n(renewal_of)}\t{len(path)}\t{ts(last)}\n"
        )
        if imported is not None:  # one stage change, straight to won; the usage event is the import's
            importer, at = imported
            self._stage_change(
                f"{self._next_stage_change()}\t{deal_id}\t{NULL}\t{stage}\t{ts(created)}\t{importer.id}\n"
            )
            self._usage(f"{self._next_usage()}\t{importer.id}\tcreate\tdeal\t{deal_id}\t{ts(at)}\timport\n")
            return deal_id
        previous = NULL
        for n, (to_stage, at) in enumerate(path):
            by = owner.at(at)
            self._stage_change(
                f"{self._next_stage_change()}\t{deal_id}\t{previous}\t{to_stage}\t{ts(at)}\t{by.id}\n"
            )
            previous = to_stage
            self._use(by, "stage" if n else "create", "deal", deal_id, at)
            if n and rng.random() < 0.5:
                kind_, subject = _touch(self.stage_kind[to_stage], rng)
                done = max(created, at - rng.randint(0, 2 * DAY))
                self._activity(by, acc.id, kind_, f"{_t(subject)}: {title}", done, done=done, deal=deal_id)
        self._deal_tasks(acc, deal_id, title, path, status, owner)
        return deal_id

    def _deal_tasks(
        self, acc: _Account, deal_id: int, title: str, path: list[tuple[int, int]], status: str, owner: Person
    ) -> None:
        """A next step for recent open deals (due or overdue now), and done follow-ups on some others."""
        rng = self.rng
        last = path[-1][1]
        if status == "open" and last >= self.end - 45 * DAY:
            person = owner.at(last)
            due = self.cal.work_time(self.cal.day(last) + rng.randint(1, 21), rng)
            self._activity(
                person,
                acc.id,
                "task",
                _t(gettext_noop("Follow up: %(title)s")) % {"title": title},
                last,
                due=due,
                deal=deal_id,
            )
        elif rng.random() < 0.25:
            at = path[rng.randrange(len(path))][1]
            due = at + rng.randint(1, 7) * DAY
            done = max(at + 600, due + rng.randint(-2 * DAY, 2 * DAY))
            person = owner.at(at)
            self._activity(
                person,
                acc.id,
                "task",
                _t(gettext_noop("Send documents: %(title)s")) % {"title": title},
                at,
                due=due,
                done=done,
                deal=deal_id,
            )

    def _activity(
        self,
        person: Person,
        customer_id: int,
        kind: str,
        subject: str,
        at: int,
        *,
        due: int | None = None,
        done: int | None = None,
        deal: int | None = None,
        ticket: int | None = None,
    ) -> None:
        if at >= self.end:
            return
        ts = self.ts
        activity_id = self._next_activity()
        if done is not None and done >= self.end:
            done = None
        self._activity_row(
            f"{activity_id}\t{kind}\t{subject}\t\t{person.id}\t{customer_id}\t{_n(deal)}\t{_n(ticket)}\t"
            f"{ts(at)}\t{NULL if due is None else ts(due)}\t{NULL if done is None else ts(done)}\n"
        )
        self._use(person, "create", "activity", activity_id, at)
        if kind == "task" and done is not None:
            self._use(person, "complete", "activity", activity_id, done)

    def _checkins(self, acc: _Account, begin: int, end: int) -> None:
        """Account-management calls, meetings and business reviews with an active customer."""
        rng, cal = self.rng, self.cal
        rate = SEGMENT_CHECKINS[acc.segment]
        t = begin
        while True:
            t += int(rng.expovariate(rate) * YEAR) + 1
            if t >= end:
                return
            at = cal.work_time(cal.day(t), rng)
            kind, subject = rng.choice(CHECKINS)
            self._activity(acc.rep.at(at), acc.id, kind, _t(subject), at, done=at)

    # Tickets

    def _tickets(self, acc: _Account, begin: int, end: int, *, onboarding: bool = False) -> int:
        """Tickets of a customer between ``begin`` and ``end``; returns how many were complaints."""
        if end <= begin:
            return 0
        rng = self.rng
        weight = SEGMENT_TICKETS[acc.segment]
        self.active_years += weight * (end - begin) / YEAR
        rate = self.ticket_rate * weight
        complaints = 0
        t = begin
        if onboarding and rng.random() < 0.5:
            t = begin + rng.randint(DAY, 30 * DAY)
            if t < end:
                complaints += self._ticket(acc, self._arrival(t))
        while True:
            t += int(rng.expovariate(rate) * YEAR) + 1
            if t >= end:
                return complaints
            at = self._arrival(t)
            if at < end:
                complaints += self._ticket(acc, at)

    def _arrival(self, t: int) -> int:
        """Tickets come in mostly on working days, mostly in business hours."""
        rng, cal = self.rng, self.cal
        k = cal.day(t)
        if not cal.workday[k] and rng.random() < 0.75:
            k = cal.next_workday(k)
        if rng.random() < 0.85:
            return cal.work_time(k, rng)
        return cal.epochs[k] + rng.randrange(DAY)

    def _ticket(self, acc: _Account, t0: int) -> int:
        """One ticket with its status history, replies and SLA due times; 1 if it is a complaint."""
        if t0 >= self.end:
            return 0
        rng, ts = self.rng, self.ts
        ticket_id = self._ids["crm_ticket"].__next__()
        priority = rng.choices(PRIORITIES, PRIORITY_WEIGHTS)[0]
        category = rng.choices(CATEGORIES, CATEGORY_WEIGHTS)[0]
        channel = rng.choices(CHANNELS, CHANNEL_WEIGHTS)[0]
        agent = self.staff.agent_at(rng, t0)
        spam = channel in ("email", "web") and rng.random() < 0.012
        events: list[tuple[str, int, Person | None]] = [("new", t0, agent if channel == "phone" else None)]
        if spam:
            events.append(("closed", t0 + rng.randint(300, DAY), agent))
        else:
            better = 1 - 0.3 * self._gl(t0)
            begin = t0 if priority == "urgent" else self.cal.business_start(t0)
            reply = max(
                t0 + 60,
                begin + int(FIRST_RESPONSE_HOURS[priority] * better * rng.lognormvariate(0, 0.9) * 3600),
            )
            solve = max(
                reply + 600,
                begin + int(RESOLUTION_HOURS[priority] * better * rng.lognormvariate(0, 1.0) * 3600),
            )
            events.append(("open", reply, agent))
            waits_for_fix = category == "problem" and rng.random() < 0.2
            if waits_for_fix or rng.random() < 0.3:  # waiting on the customer, or on a bug fix
                pending = reply + int((solve - reply) * rng.uniform(0.1, 0.4)) + 60
                events.append(("pending", pending, agent))
                if waits_for_fix:
                    solve = pending + int(14 * DAY * rng.lognormvariate(0, 0.7)) + 600
                if rng.random() < 0.6:
                    events.append(
                        ("open", pending + int((solve - pending) * rng.uniform(0.2, 0.7)) + 60, None)
                    )
            events.append(("solved", solve, agent))
            if rng.random() < (0.15 if category == "complaint" else 0.06):  # the customer reopened it
                reopened = solve + rng.randint(3_600, 3 * DAY)
                again = (
                    reopened + int(RESOLUTION_HOURS[priority] * 0.5 * rng.lognormvariate(0, 0.8) * 3600) + 600
                )
                events += [("open", reopened, None), ("solved", again, agent)]
            events.append(("closed", events[-1][1] + 4 * DAY, None))  # closed automatically after four days
        events = [e for e in events if e[1] < self.end]
        first_response = first_solved = solved = closed = None
        reopens = 0
        previous = ""
        first_agent = agent
        for status, at, actor in events:
            agent = first_agent.at(at)  # whoever holds the queue when the agent has left
            by = None if actor is None else agent
            self._ticket_change(
                f"{self._ids['crm_ticketstatuschange'].__next__()}\t{ticket_id}\t{previous}\t{status}\t"
                f"{ts(at)}\t{NULL if by is None else by.id}\n"
            )
            if status == "open" and previous == "new":
                first_response = at
                self._reply(ticket_id, agent, "Thanks for your message – we are looking into it.", at)
                if rng.random() < 0.1:
                    self._activity(
                        agent, acc.id, "call", "Call about the ticket", at, done=at, ticket=ticket_id
                    )
            elif status == "solved":
                first_solved = first_solved or at
                solved = at
                if rng.random() < 0.7:
                    self._reply(
                        ticket_id, agent, "This should be fixed now. Tell us if anything is still wrong.", at
                    )
                else:
                    self._use(agent, "update", "ticket", ticket_id, at)
            elif status == "pending":
                if rng.random() < 0.3:
                    self._note(ticket_id, agent, at)
                self._use(agent, "update", "ticket", ticket_id, at)
            elif status == "closed":
                closed = at
                if spam:
                    self._use(agent, "update", "ticket", ticket_id, at)
            if status == "open" and previous == "solved":
                reopens += 1
            previous = status
        if events[0][2] is not None:
            self._use(first_agent, "create", "ticket", ticket_id, t0)
        assignee = agent if first_response is not None or spam or rng.random() < 0.5 else None
        policy = self.pipeline.sla.get(priority)
        subject = _t(rng.choice(TICKET_SUBJECTS[category]))
        creator = NULL if events[0][2] is None else first_agent.id
        self._ticket_row(
            f"{ticket_id}\t{acc.id}\t{NULL if assignee is None else assignee.id}\t{creator}\t{subject}\t"
            f"Received by {channel}.\t{priority}\t{previous}\t{category}\t{channel}\t{'t' if spam else 'f'}\t"
            f"{ts(t0)}\t{ts(events[-1][1])}\t{_ts(ts, first_response)}\t{_ts(ts, first_solved)}\t"
            f"{_ts(ts, solved)}\t{_ts(ts, closed)}\t{reopens}\t"
            f"{NULL if policy is None else ts(t0 + policy[0] * 3600)}\t"
            f"{NULL if policy is None else ts(t0 + policy[1] * 3600)}\n"
        )
        return category == "complaint"

    def _reply(self, ticket_id: int, agent: Person, body: str, at: int) -> None:
        self._message(
            f"{self._ids['crm_ticketmessage'].__next__()}\t{ticket_id}\t{agent.id}\t{body}\tt\t{self.ts(at)}\n"
        )
        self._use(agent, "reply", "ticket", ticket_id, at)

    def _note(self, ticket_id: int, agent: Person, at: int) -> None:
        self._message(
            f"{self._ids['crm_ticketmessage'].__next__()}\t{ticket_id}\t{agent.id}\t"
            f"Internal: asked the customer for log files.\tf\t{self.ts(at)}\n"
        )

    # Identities: a pure function of (seed, customer id), so a near-duplicate can copy an earlier one.

    def identity(self, cid: int) -> tuple[str, str, str, str, str, str, str, str]:
        """(name, short name, kind, e-mail, phone, industry, city, language) of a customer."""
        h = _mix(self.seed, cid, 2)
        if cid > 20 and h % 1000 < 25:  # a near-duplicate of an earlier customer, entered again
            return _near_duplicate(self._base_identity(1 + (h >> 10) % (cid - 1)), h >> 40)
        return self._base_identity(cid)

    def _base_identity(self, cid: int) -> tuple[str, str, str, str, str, str, str, str]:
        h = _mix(self.seed, cid, 1)
        h, person = divmod(h, 100)
        h, chinese = divmod(h, 100)
        h, industry = divmod(h, len(INDUSTRIES))
        h, city = divmod(h, len(CITIES))
        h, style = divmod(h, 10)
        h, missing = divmod(h, 100)
        number = str(1_000_000 + (cid * 48_271 + self.seed) % 8_999_999)
        language = "zh-hans" if chinese < 6 else "en"
        town = ZH_CITIES[city % len(ZH_CITIES)] if chinese < 6 else (CITIES[city], "")
        if person < 12:
            first, last = FIRST_NAMES[h % len(FIRST_NAMES)], LAST_NAMES[(h >> 8) % len(LAST_NAMES)]
            name = short = f"{first} {last}"
            local = f"{first}.{last}".translate(UMLAUTS).lower()
            email = f"{local}{cid % 97}@{FREE_MAIL[style % len(FREE_MAIL)]}"
            phone = f"+49 15{style} {number}{cid % 10}"
            kind = "person"
        else:
            short = _company_base(cid, self.seed)
            name = (
                f"{short} ({town[1]}) 有限公司" if town[1] else f"{short} {LEGAL_FORMS[h % len(LEGAL_FORMS)]}"
            )
            slug = short.translate(UMLAUTS).lower().replace(" & ", "-").replace(" ", "-")
            mailbox = COMPANY_MAILBOXES[style % len(COMPANY_MAILBOXES)] if style < 7 else None
            if mailbox is None:
                first, last = FIRST_NAMES[h % len(FIRST_NAMES)], LAST_NAMES[(h >> 8) % len(LAST_NAMES)]
                mailbox = f"{first[0]}.{last}".translate(UMLAUTS).lower()
            email = f"{mailbox}@{slug}.{'cn' if town[1] else 'de' if h % 3 else 'com'}"
            phone = _phone(AREA_CODES[h % len(AREA_CODES)], number, style, chinese=bool(town[1]))
            kind = "company"
        return (
            name,
            short,
            kind,
            "" if missing < 7 else email,
            "" if 10 <= missing < 25 else phone,
            "" if 30 <= missing < 36 else INDUSTRIES[industry],
            "" if 40 <= missing < 44 else town[0],
            language,
        )

    def _emit_customer(self, acc: _Account, created: int, identity: tuple[str, ...]) -> None:
        name, _short, kind, email, phone, industry, city, language = identity
        segment = "" if _mix(self.seed, acc.id, 3) % 100 < 4 else acc.segment
        self._customer(
            f"{acc.id}\t{name}\t{kind}\t{email}\t{phone}\t{industry}\t{city}\t{segment}\t{language}\t"
            f"{acc.source}\t{acc.rep.at(self.end).id}\t{acc.status}\t{self.ts(created)}\t{self.ts(acc.updated)}\t"
            f"{_ts(self.ts, acc.became)}\t{_ts(self.ts, acc.churned)}\t{acc.reason}\tf\t"
            f"{normalize.email_key(email)}\t{normalize.phone_key(phone)}\t{normalize.name_key(name)}\n"
        )

    def internal_customers(self, first_id: int) -> None:
        """Two internal test records, which every KPI must leave out (KPIS.md G9)."""
        admin, at = self.staff.admin, self.golive + 3 * DAY
        for cid, name, status, email in (
            (first_id, "Mini CRM Test Account", "active", "test@minicrm-demo.example"),
            (first_id + 1, "Internal – Demo", "lead", "internal@minicrm-demo.example"),
        ):
            acc = _Account(cid, "smb", "other", admin)
            acc.short = name
            self._status(acc, "lead", at, admin)
            if status == "active":
                path = [(self.pipeline.open[0], at + 600), (self.pipeline.won, at + 1_200)]
                self._emit_deal(
                    acc,
                    kind="new",
                    title=_t(gettext_noop("Test deal – please ignore")),
                    amount=1,
                    path=path,
                    reason="",
                )
                self._status(acc, "active", at + 1_200, admin)
            self._customer(
                f"{cid}\t{name}\tcompany\t{email}\t\t\t\t\ten\tother\t{admin.id}\t{acc.status}\t"
                f"{self.ts(at)}\t{self.ts(acc.updated)}\t{_ts(self.ts, acc.became)}\t{NULL}\t\tt\t"
                f"{normalize.email_key(email)}\t\t{normalize.name_key(name)}\n"
            )


def _segment(cid: int) -> str:
    """Segments in exact proportions at any size (a golden-ratio sequence, not a draw): less noise."""
    share = (cid * 0.618_033_988_75) % 1.0 * sum(SEGMENT_WEIGHTS)
    for segment, weight in zip(SEGMENTS, SEGMENT_WEIGHTS, strict=True):
        share -= weight
        if share < 0:
            return segment
    return SEGMENTS[-1]


def _company_base(cid: int, seed: int) -> str:
    """A unique company name for every customer id (a bijection onto the name space, cycling cities)."""
    pattern_a = len(NAME_PREFIXES) * len(NAME_ROOTS) * len(NAME_CORES)
    space = pattern_a + len(LAST_NAMES) ** 2 * len(NAME_CORES)
    cycle, index = divmod(cid - 1, space)
    p = (index * 7_919 + seed) % space  # 7919 is prime and does not divide ``space``: a permutation
    if p < pattern_a:
        p, a = divmod(p, len(NAME_PREFIXES))
        c, b = divmod(p, len(NAME_ROOTS))
        base = f"{NAME_PREFIXES[a]}{NAME_ROOTS[b]} {NAME_CORES[c]}"
    else:
        p, a = divmod(p - pattern_a, len(LAST_NAMES))
        c, b = divmod(p, len(LAST_NAMES))
        base = f"{LAST_NAMES[a]} & {LAST_NAMES[b]} {NAME_CORES[c]}"
    return f"{base} {CITIES[(cycle - 1) % len(CITIES)]}" if cycle else base


def _phone(area: str, number: str, style: int, *, chinese: bool) -> str:
    if chinese:
        return f"+86 21 {number}{style}"
    return (
        f"+49 {area} {number}",
        f"0{area} {number}",
        f"0{area}/{number}",
        f"+49 ({area}) {number[:3]}-{number[3:]}",
        f"0049 {area} {number}",
    )[style % 5]


def _near_duplicate(identity: tuple[str, ...], h: int) -> tuple[str, ...]:
    """The same customer entered again: other casing or legal form, the phone written differently."""
    name, short, kind, email, phone, industry, city, language = identity
    variant = h % 3
    if variant == 0:
        name, email = name.upper(), email.upper()
    elif variant == 1:
        name = short if kind == "company" else name.lower()
        if phone.startswith("+49 ") and "(" not in phone:
            phone = "0" + phone[4:]
        elif phone.startswith("0") and not phone.startswith("00"):
            phone = "+49 " + phone[1:]
    else:
        name = name.replace(" GmbH", " Gmbh.").replace(" AG", " A.G.")
        phone = ""
    return (name, short, kind, email, phone, industry, city, language)


# Staff rows, spend and CRM costs
# ---------------------------------------------------------------------------------------------------------


def _write_staff(sink: Sink, staff: Staff, cal: Calendar, rng: random.Random, golive: int, seed: int) -> None:
    """Teams, users with their seats, and every sign-in (frequency per person, more after go-live)."""
    ts = cal.ts
    add_team = sink.adder("accounts_team")
    for team_id, name, kind, created in staff.teams:
        add_team(f"{team_id}\t{name}\t{kind}\t{ts(created)}\n")
    add_login = sink.adder("accounts_loginevent")
    login_ids = itertools.count(1)
    for person in staff.people:
        first = max(cal.k0, cal.day(person.joined) + 1)
        last = cal.k_end if person.left is None else cal.day(person.left)
        for k in range(first, last):
            at = cal.epochs[k]
            ramp = 0.4 + 0.6 * min(1.0, max(0.0, (at - golive) / (90 * DAY)))
            rate = person.logins * ramp * (1.0 if cal.workday[k] else 0.05)
            for _ in range(_poisson(rng, rate)):
                t = at + 25_200 + int(rng.random() * 46_800)
                add_login(f"{next(login_ids)}\t{person.id}\t{ts(t)}\n")
                person.last_login = max(person.last_login or t, t)
    password = make_password(DEMO_PASSWORD, salt=f"minicrmdemo{seed & 0xFFFFFFFF}")
    add_user = sink.adder("accounts_user")
    add_seat = sink.adder("accounts_seat")
    seat_ids = itertools.count(1)
    for person in staff.people:
        service = person.profile == "service"
        admin = "t" if person.role == "admin" and not service else "f"
        language = "zh-hans" if person.last_name in ("Zhang", "Wang", "Chen", "Liu") else "en"
        add_user(
            f"{person.id}\t{'!service-account' if service else password}\t{_ts(ts, person.last_login)}\t"
            f"{admin}\t{person.username}\t{person.first_name}\t{person.last_name}\t"
            f"{person.username}@minicrm-demo.example\t{admin}\t{'t' if person.left is None else 'f'}\t"
            f"{ts(person.joined)}\t{person.role}\t{language}\t{'t' if service else 'f'}\t"
            f"{_ts(ts, person.left)}\t{_n(person.team_id)}\n"
        )
        if not service:
            add_seat(f"{next(seat_ids)}\t{person.id}\t{ts(person.joined)}\t{_ts(ts, person.left)}\n")


def _poisson(rng: random.Random, rate: float) -> int:
    limit, n, p = math.exp(-rate), 0, rng.random()
    while p > limit:
        n += 1
        p *= rng.random()
    return n


def _write_spend(
    sink: Sink, cal: Calendar, rng: random.Random, staff: Staff, created: list[int], history: History
) -> None:
    """Monthly spend: marketing and outbound by channel (per expected lead), sales, retention and CRM."""
    add = sink.adder("crm_spendentry")
    ids = itertools.count(1)
    months = cal.month_starts()
    leads = dict.fromkeys(months, 0)
    for t in created:
        leads[history._month_of(t)] = leads.get(history._month_of(t), 0) + 1
    total_weight = sum(SOURCE_WEIGHTS)
    active = 0
    for k in months:
        at = cal.epochs[k]
        active += history.active_delta.get(k, 0)
        month = cal.isodates[k]
        for channel, (category, per_lead) in CHANNEL_COST.items():
            share = SOURCE_WEIGHTS[SOURCES.index(channel)] / total_weight
            amount = (leads.get(k, 0) * share * per_lead + 300) * rng.uniform(0.85, 1.15)
            add(f"{next(ids)}\t{month}\t{category}\t{channel}\t{amount:.2f}\t\n")
        reps = sum(1 for p in staff.reps if p.joined <= at and (p.left is None or p.left > at))
        seats = staff.seats_at(at)
        licence = seats * 49 + 400 if at >= history.golive else seats * 15
        rows = (
            ("marketing", 2_500 + 40 * leads.get(k, 0), "Brand, website and content"),
            ("sales", reps * 5_500, "Sales team: salaries, travel, commissions"),
            ("retention", 500 + 12 * max(active, 0), "Customer success programmes"),
            ("crm", licence, "CRM licences and hosting" if at >= history.golive else "Previous tools"),
        )
        for category, amount, note in rows:
            add(f"{next(ids)}\t{month}\t{category}\t\t{amount * rng.uniform(0.95, 1.05):.2f}\t{note}\n")


def _write_costs(sink: Sink, cal: Calendar, staff: Staff, golive_day: int) -> None:
    """CRM cost items: implementation and training once, licences per month (re-priced yearly), hosting."""
    add = sink.adder("crm_crmcostitem")
    month = golive_day - cal.dates[golive_day].day + 1
    before = month - cal.dates[month - 1].day
    items = [
        ("Implementation partner", "one_off", 25_000 + 150 * staff.seats_at(cal.epochs[month]), before, None),
        (
            "Data migration and training",
            "one_off",
            8_000 + 80 * staff.seats_at(cal.epochs[month]),
            month,
            None,
        ),
        ("Hosting and support", "monthly", 400, month, None),
    ]
    starts = [k for k in cal.month_starts() if k >= month]
    for n in range(0, len(starts), 12):
        first, last = starts[n], starts[min(n + 11, len(starts) - 1)]
        end = None if n + 12 >= len(starts) else last
        items.append(("CRM licences", "monthly", 49 * staff.seats_at(cal.epochs[first]), first, end))
    for item_id, (name, kind, amount, begins, ends) in enumerate(items, start=1):
        end_month = NULL if ends is None else cal.isodates[ends]
        add(f"{item_id}\t{name}\t{kind}\t{amount:.2f}\t{cal.isodates[begins]}\t{end_month}\n")


# Generation
# ---------------------------------------------------------------------------------------------------------


def _creation_times(rng: random.Random, cal: Calendar, n: int) -> tuple[list[int], int]:
    """When each customer was first entered: a tenth imported at the start, the rest seasonal and growing."""
    legacy = round(n * 0.1)
    days = range(cal.k0, cal.k_end)
    weights = [
        MONTH_WEIGHT[cal.months[k] - 1]
        * GROWTH_PER_YEAR ** ((k - cal.k0) / 365)
        * (1.0 if cal.workday[k] else 0.1)
        * (0.3 if cal.months[k] == 12 and cal.dates[k].day >= 22 else 1.0)
        for k in days
    ]
    picked = sorted(rng.choices(days, weights, k=n - legacy))
    imported = sorted(cal.work_time(cal.k0 + rng.randrange(14), rng) for _ in range(legacy))
    return imported + [cal.work_time(k, rng) for k in picked], legacy


def _calibrate(config: SeedConfig, customers: int, **world: Any) -> tuple[float, float]:
    """Upsell and ticket rates that give the asked deals per customer and a third as many tickets.

    Runs the same simulation, without writing, on a sample of customers: deals grow almost linearly with
    the upsell rate, so two runs give it; a third measures the customer-years that tickets come from.
    """
    target = config.deals / customers
    sample_rng = random.Random(_mix(config.seed, 7))
    created, legacy = _creation_times(sample_rng, world["cal"], min(1_000, max(300, 3 * customers)))

    def run(upsell_rate: float, ticket_rate: float) -> tuple[float, float]:
        sink = Sink()
        history = History(
            seed=config.seed,
            rng=random.Random(_mix(config.seed, 11)),
            sink=sink,
            upsell_rate=upsell_rate,
            ticket_rate=ticket_rate,
            with_identities=False,
            **world,
        )
        history.live(created, legacy)
        sink.flush()
        return sink.counts["crm_deal"] / len(created), history.active_years / len(created)

    low, years = run(2.0, 3.0)
    ticket_rate = target * TICKETS_PER_DEAL / max(years, 0.01)
    high, _years = run(10.0, ticket_rate)
    rate = 2.0 + 8.0 * (target - low) / (high - low) if high > low else 2.0
    rate = min(100.0, max(0.02, rate))
    _deals, years = run(rate, ticket_rate)
    return rate, target * TICKETS_PER_DEAL / max(years, 0.01)


def _golive(cal: Calendar) -> int:
    """Go-live day: the first working day of the month about a third into the history."""
    starts = cal.month_starts()
    return cal.next_workday(starts[len(starts) // 3])


def generate(
    config: SeedConfig, *, sink: Sink, pipeline: Setup, progress: bool = False
) -> tuple[Staff, date]:
    """Generate the whole company into ``sink``; returns the staff and the go-live date."""
    cal = Calendar(until=config.until, years=config.years, tz=ZoneInfo(settings.TIME_ZONE))
    rng = random.Random(config.seed)
    staff = Staff(rng, cal, config.deals)
    golive_day = _golive(cal)
    golive = cal.epochs[golive_day] + 9 * 3600
    customers = max(10, round(config.deals / DEALS_PER_CUSTOMER))
    world = {"cal": cal, "staff": staff, "pipeline": pipeline, "golive": golive}
    upsell_rate, ticket_rate = _calibrate(config, customers, **world)
    _write_staff(sink, staff, cal, rng, golive, config.seed)
    created, legacy = _creation_times(rng, cal, customers)
    history = History(
        seed=config.seed, rng=rng, sink=sink, upsell_rate=upsell_rate, ticket_rate=ticket_rate, **world
    )
    with tqdm(total=customers, unit=" customers", disable=not progress, desc="seed_demo") as bar:
        history.live(created, legacy, bar.update)
    history.internal_customers(customers + 1)
    _write_spend(sink, cal, rng, staff, created, history)
    _write_costs(sink, cal, staff, golive_day)
    sink.flush()
    return staff, cal.dates[golive_day]


# Database
# ---------------------------------------------------------------------------------------------------------


def existing_data() -> dict[str, int]:
    """Row counts of the seeded tables that are not empty (an empty dict: nothing to overwrite)."""
    found = {}
    with connection.cursor() as cursor:
        for table in COLUMNS:
            cursor.execute(pg.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(pg.Identifier(table)))
            if cursor.fetchone()[0]:
                cursor.execute(pg.SQL("SELECT count(*) FROM {}").format(pg.Identifier(table)))
                found[table] = cursor.fetchone()[0]
    return found


def _reset_tables() -> list[str]:
    """Every table of the project's apps except the pipeline, SLA hours and company settings."""
    existing = set(connection.introspection.table_names())
    tables = {
        model._meta.db_table
        for config in apps.get_app_configs()
        if config.label in RESET_APPS
        for model in config.get_models(include_auto_created=True)
        if model._meta.label_lower not in KEPT_MODELS and model._meta.managed and not model._meta.proxy
    }
    return sorted(tables & existing)


def _load_pipeline() -> Setup:
    stages = list(PipelineStage.objects.filter(pipeline__is_default=True).order_by("order"))
    opens = tuple(s.pk for s in stages if s.kind == PipelineStage.Kind.OPEN)
    won = [s.pk for s in stages if s.kind == PipelineStage.Kind.WON]
    lost = [s.pk for s in stages if s.kind == PipelineStage.Kind.LOST]
    if not opens or not won or not lost:
        raise SeedError("The default pipeline needs at least one open stage, a won stage and a lost stage.")
    sla = {p.priority: (p.first_response_hours, p.resolution_hours) for p in SlaPolicy.objects.all()}
    return Setup(open=opens, won=won[0], lost=lost[0], sla=sla)


@contextmanager
def _foreign_keys_dropped(cursor: Any, tables: list[str]) -> Iterator[None]:
    """Drop the tables' foreign keys for the load and add them back (validated in one pass each).

    Checking a deferred foreign key per row costs more than generating the row; re-adding the constraint
    checks all rows with one join. On an error the transaction rolls back, which restores them too.
    """
    cursor.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND conrelid = ANY(%s::regclass[]) ORDER BY 1, 2",
        [tables],
    )
    keys = cursor.fetchall()
    # ``table`` is regclass text (already quoted where it must be); the definition is PostgreSQL's own.
    for table, name, _definition in keys:
        cursor.execute(pg.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(pg.SQL(table), pg.Identifier(name)))
    yield
    for table, name, definition in keys:
        cursor.execute(
            pg.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                pg.SQL(table), pg.Identifier(name), pg.SQL(definition)
            )
        )


def seed(
    config: SeedConfig, *, reset: bool = False, if_empty: bool = False, progress: bool = False
) -> SeedResult | None:
    """Fill the database with the demo company, all or nothing; None when ``if_empty`` found data.

    Raises SeedError when there is data and neither ``reset`` nor ``if_empty`` says what to do.
    """
    started = time.monotonic()
    tables = list(COLUMNS)
    with transaction.atomic(), connection.cursor() as cursor:
        # one seed at a time; and fire pending deferred checks now, or TRUNCATE and ALTER TABLE refuse
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('minicrm.seed_demo'))")
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        existing = existing_data()
        if existing and not reset:
            if if_empty:
                return None
            summary = ", ".join(f"{table}: {n:,}" for table, n in list(existing.items())[:3])
            raise SeedError(
                f"The database already has data ({summary}…). Use --reset to replace it with the demo "
                "company (this deletes all CRM and account data), or --if-empty to skip seeding."
            )
        if reset:
            tables_sql = pg.SQL(", ").join(map(pg.Identifier, _reset_tables()))
            cursor.execute(pg.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(tables_sql))
        pipeline = _load_pipeline()
        loader = _Loader(cursor.cursor.connection)
        sink = Sink(loader)
        phases = {"prepare": time.monotonic() - started}
        with _foreign_keys_dropped(cursor, tables):
            loader.start()
            try:
                with translation.override(config.language):
                    staff, go_live = generate(config, sink=sink, pipeline=pipeline, progress=progress)
                phases["generate"] = time.monotonic() - started - sum(phases.values())
            finally:
                loader.stop()
            loader.raise_error()
            phases["load"] = time.monotonic() - started - sum(phases.values())
        phases["foreign keys"] = time.monotonic() - started - sum(phases.values())
        next_id = pg.SQL(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {}"
        )
        for table in tables:
            cursor.execute(next_id.format(pg.Identifier(table)), [table])
        CompanySettings.objects.update_or_create(pk=1, defaults={"go_live_date": go_live})
        for table in tables:
            cursor.execute(pg.SQL("ANALYZE {}").format(pg.Identifier(table)))
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        phases["analyze"] = time.monotonic() - started - sum(phases.values())
    phases["commit"] = time.monotonic() - started - sum(phases.values())
    logins = [p.username for p in staff.people if p.left is None and p.profile != "service"]
    return SeedResult(
        rows=dict(sink.counts), seconds=time.monotonic() - started, logins=logins, phases=phases
    )

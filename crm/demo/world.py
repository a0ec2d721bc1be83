"""The demo company's world: sizes, tables, seasonality, segments, sources, staff profiles and the
texts of its records (in the language being seeded).
"""

from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext_noop
from psycopg import sql as pg

SIZES = {
    "tiny": 300,
    "small": 5_000,
    "medium": 50_000,
    "large": 1_000_000,
    "xl": 2_000_000,
    "xxl": 10_000_000,  # the scale-out measurements: about 45 GB
}
MAX_DEALS = 10_000_000
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
    "renewal_of_id, version, last_activity_at, custom",
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


def copy_from_stdin(table: str, columns: str) -> pg.Composed:
    """``COPY table (columns) FROM STDIN`` with every name quoted; ``columns`` as in ``COLUMNS``."""
    names = pg.SQL(", ").join(pg.Identifier(name.strip()) for name in columns.split(","))
    return pg.SQL("COPY {} ({}) FROM STDIN").format(pg.Identifier(table), names)


# Kept by --reset: the seeded pipeline, the SLA hours and the company settings row.
# The demo's deal custom field "product line" (crm.demo.setup), its option picked by the deal's id.
PRODUCT_LINES = (
    ("pumps", "Pumps", "泵"),
    ("valves", "Valves", "阀门"),
    ("sensors", "Sensors", "传感器"),
    ("service", "Service contracts", "服务合同"),
)
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


# Median days spent in each open stage before moving on. Proposals stall: they wait for the customer's legal
# and procurement review, far longer than in any other stage (time in stage, KPIS.md §10.7).
STEP_DAYS = (6.0, 10.0, 28.0, 9.0)
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

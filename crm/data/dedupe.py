"""Finding duplicate customers at scale: blocking keys and the trigram index, never all pairs.

A scan proposes pairs of live customers (not merged, not internal) from a few *blocks*, each one SQL
statement whose cost grows with the number of customers, not with its square:

- same normalised e-mail (``email_key``) or phone (``phone_key``, E.164): GROUP BY the key;
- same company name without legal form and punctuation (``name_key``): GROUP BY the key;
- similar company names: sorted neighbourhoods — every name is compared with the next few in
  alphabetical order of the name and of the reversed name (catching changed endings and beginnings);
- the same company e-mail domain with a similar name (``similarity ≥ 0.4``); free-mail domains (gmail.com,
  qq.com, …) and role mailboxes (info@, sales@, …) do not count as a company's domain;
- customers created or changed in the last days are looked up against all others through the GIN
  trigram index on ``name_key`` (``%`` operator): a new record that resembles an old one is caught even
  when sorting puts them far apart.

Key groups larger than ``GROUP_LIMIT`` pair their oldest member with each other one (a star, not a
clique). Every proposed pair is then scored in one query, and written with one upsert that never touches
a pair a manager has decided ("not a duplicate" stays decided; merged customers are not live any more).
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import batched, combinations

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from psycopg import sql as pg

from accounts.models import User
from crm.models import Customer, DuplicateCandidate

logger = logging.getLogger(__name__)

FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "hotmail.de",
        "live.com",
        "live.de",
        "msn.com",
        "yahoo.com",
        "yahoo.de",
        "ymail.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "proton.me",
        "protonmail.com",
        "gmx.de",
        "gmx.net",
        "gmx.at",
        "gmx.ch",
        "web.de",
        "t-online.de",
        "freenet.de",
        "mail.de",
        "posteo.de",
        "arcor.de",
        "yandex.ru",
        "mail.ru",
        "qq.com",
        "foxmail.com",
        "163.com",
        "126.com",
        "yeah.net",
        "sina.com",
        "sina.cn",
        "sohu.com",
        "aliyun.com",
        "139.com",
        "189.cn",
    }
)
# Shared mailboxes: many different people and branches write from them, so their domain says little.
ROLE_MAILBOXES = frozenset(
    {
        "info",
        "sales",
        "support",
        "service",
        "contact",
        "kontakt",
        "office",
        "hello",
        "hallo",
        "mail",
        "post",
        "admin",
        "team",
        "einkauf",
        "vertrieb",
        "buchhaltung",
        "billing",
        "invoice",
        "invoices",
        "accounts",
        "accounting",
        "marketing",
        "hr",
        "jobs",
        "careers",
        "enquiries",
        "inquiries",
        "noreply",
        "no-reply",
        "webmaster",
        "orders",
        "order",
        "purchasing",
    }
)
NAME_THRESHOLD = 0.8  # a similar name on its own
DOMAIN_NAME_THRESHOLD = 0.4  # a similar name with the same company domain
WINDOW = 4  # sorted neighbourhood: each name against the next four
GROUP_LIMIT = 10
DOMAIN_GROUP_LIMIT = 50
RECENT_DAYS = 2  # nightly scans look up what changed since the night before last through the index
INDEX_PROBES = 2000
UPSERT_BATCH = 5000
LAST_SCAN_KEY = "crm:duplicate-scan:last"
_LOCK_ID = 0x6475_7065  # "dupe": one scan at a time


@dataclass
class Evidence:
    email: bool = False
    role_email: bool = False
    phone: bool = False
    name: bool = False
    domain: bool = False
    similarity: float = 0.0

    def score(self) -> Decimal:
        """0–1, each piece of evidence combined as independent signals (1 − Π(1 − p)): the same e-mail
        (0.9; a shared role mailbox 0.6), phone (0.85), company name (0.7 × similarity), the same company
        domain with a similar name (0.5 + 0.4 × similarity); a similar name supports the others a little."""
        signals = []
        if self.email:
            signals.append(0.6 if self.role_email else 0.9)
        if self.phone:
            signals.append(0.85)
        if self.name:
            signals.append(0.7 * self.similarity)
        elif self.similarity >= 0.5:
            signals.append(0.3 * self.similarity)
        if self.domain:
            signals.append(0.5 + 0.4 * self.similarity)
        doubt = 1.0
        for p in signals:
            doubt *= 1 - p
        return Decimal(str(round(min(1 - doubt, 0.999), 3)))

    def reason(self) -> str:
        reasons = []
        if self.email:
            reasons.append(DuplicateCandidate.Reason.EMAIL)
        if self.phone:
            reasons.append(DuplicateCandidate.Reason.PHONE)
        if self.similarity >= 0.999:
            reasons.append(DuplicateCandidate.Reason.NAME)
        elif self.similarity >= DOMAIN_NAME_THRESHOLD and (self.name or self.domain):
            reasons.append(DuplicateCandidate.Reason.SIMILAR_NAME)
        if self.domain:
            reasons.append(DuplicateCandidate.Reason.DOMAIN)
        return ",".join(reasons)


@dataclass
class ScanResult:
    started_at: datetime
    pairs: int = 0
    removed: int = 0
    seconds: float = 0.0
    blocks: dict[str, int] = field(default_factory=dict)


def _table() -> pg.Identifier:
    return pg.Identifier(Customer._meta.db_table)


LIVE = pg.SQL("merged_into_id IS NULL AND NOT is_internal")
NOTHING = pg.SQL("")
# Company names long enough to compare.
COMPANY_NAMES = pg.SQL("AND kind = 'company' AND length(name_key) >= 3")


def _key_groups(column: str, extra: pg.Composable = NOTHING) -> list[list[int]]:
    """Ids of live customers sharing a non-empty value of ``column``, oldest first, per value."""
    query = pg.SQL(
        "SELECT array_agg(id ORDER BY id) FROM {table} WHERE {live} AND {column} <> '' {extra} "
        "GROUP BY {column} HAVING count(*) > 1"
    ).format(table=_table(), live=LIVE, column=pg.Identifier(column), extra=extra)
    with connection.cursor() as cursor:
        cursor.execute(query)
        return [row[0] for row in cursor.fetchall()]


def _group_pairs(ids: list[int]) -> list[tuple[int, int]]:
    if len(ids) <= GROUP_LIMIT:
        return list(combinations(ids, 2))
    return [(ids[0], other) for other in ids[1:]]


def _neighbour_pairs() -> list[tuple[int, int]]:
    """Company names next to each other when sorted by name and by reversed name, similar enough."""

    def following(column: str) -> pg.Composable:
        return pg.SQL(", ").join(
            pg.SQL("lead({}, {}) OVER w").format(pg.Identifier(column), pg.Literal(k))
            for k in range(1, WINDOW + 1)
        )

    part = pg.SQL(
        "SELECT a, b FROM (SELECT id AS a, name_key AS na, unnest(ARRAY[{leads}]) AS b, "
        "unnest(ARRAY[{names}]) AS nb FROM {table} WHERE {live} {companies} "
        "WINDOW w AS (ORDER BY {order}, id)) n WHERE b IS NOT NULL AND similarity(na, nb) >= %s"
    )
    parts = [
        part.format(
            leads=following("id"),
            names=following("name_key"),
            table=_table(),
            live=LIVE,
            companies=COMPANY_NAMES,
            order=order,
        )
        for order in (pg.SQL("name_key"), pg.SQL("reverse(name_key)"))
    ]
    with connection.cursor() as cursor:
        cursor.execute(pg.SQL(" UNION ").join(parts), [NAME_THRESHOLD, NAME_THRESHOLD])
        return cursor.fetchall()


def _domain_pairs() -> list[tuple[int, int]]:
    """Customers writing from the same company domain (no free mail, no role mailbox), similar names."""
    sql = pg.SQL("""
        WITH d AS (
            SELECT id, split_part(email_key, '@', 2) AS domain, name_key FROM {table}
            WHERE {live} AND email_key LIKE '%%@%%'
              AND split_part(email_key, '@', 2) <> ALL(%s) AND split_part(email_key, '@', 1) <> ALL(%s)
        ), sized AS (SELECT *, count(*) OVER (PARTITION BY domain) AS members FROM d)
        SELECT a.id, b.id FROM sized a JOIN sized b ON a.domain = b.domain AND a.id < b.id
        WHERE a.members <= %s AND similarity(a.name_key, b.name_key) >= %s
    """).format(table=_table(), live=LIVE)
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [sorted(FREE_MAIL_DOMAINS), sorted(ROLE_MAILBOXES), DOMAIN_GROUP_LIMIT, DOMAIN_NAME_THRESHOLD],
        )
        return cursor.fetchall()


def _index_pairs(since: datetime) -> list[tuple[int, int]]:
    """Companies changed since ``since`` looked up against all others through the GIN trigram index."""
    sql = pg.SQL("""
        SELECT p.id, c.id FROM (
            SELECT id, name_key FROM {table}
            WHERE {live} AND kind = 'company' AND length(name_key) >= 3 AND updated_at >= %s
            ORDER BY updated_at DESC LIMIT %s
        ) p
        JOIN LATERAL (
            SELECT id FROM {table} c
            WHERE c.name_key %% p.name_key AND c.id <> p.id AND c.merged_into_id IS NULL
              AND NOT c.is_internal AND c.kind = 'company'
        ) c ON true
    """).format(table=_table(), live=LIVE)
    with connection.cursor() as cursor:
        # The index answers "%" for the session's threshold; SET LOCAL ends with the scan's transaction.
        cursor.execute("SET LOCAL pg_trgm.similarity_threshold = %s", [NAME_THRESHOLD])
        cursor.execute(sql, [since, INDEX_PROBES])
        return cursor.fetchall()


def _assess(pairs: dict[tuple[int, int], Evidence]) -> None:
    """Name similarity, and e-mail facts, of every proposed pair: one query."""
    if not pairs:
        return
    a_ids, b_ids = zip(*pairs, strict=True)
    sql = pg.SQL("""
        SELECT p.a, p.b, similarity(ca.name_key, cb.name_key), ca.kind = 'company' AND cb.kind = 'company',
               split_part(ca.email_key, '@', 1) = ANY(%s)
        FROM unnest(%s::bigint[], %s::bigint[]) AS p(a, b)
        JOIN {table} ca ON ca.id = p.a JOIN {table} cb ON cb.id = p.b
    """).format(table=_table())
    with connection.cursor() as cursor:
        cursor.execute(sql, [sorted(ROLE_MAILBOXES), list(a_ids), list(b_ids)])
        for a, b, similarity, companies, role in cursor.fetchall():
            evidence = pairs[(a, b)]
            evidence.similarity = float(similarity)
            evidence.role_email = evidence.email and bool(role)
            # People often share a name; for them a name is only evidence together with something else.
            evidence.name = bool(companies) and evidence.similarity >= NAME_THRESHOLD


def _upsert(pairs: dict[tuple[int, int], Evidence], at: datetime) -> int:
    """Insert new pairs, refresh open ones; decided pairs are never touched. Returns pairs written."""
    table = pg.Identifier(DuplicateCandidate._meta.db_table)
    rows = [
        (a, b, ev.score(), ev.reason(), Decimal(str(round(ev.similarity, 3)))) for (a, b), ev in pairs.items()
    ]
    rows = [row for row in rows if row[3]]
    sql = pg.SQL("""
        INSERT INTO {table} (customer_a_id, customer_b_id, score, reason, name_similarity, status, found_at)
        SELECT a, b, s, r, n, 'open', %s
        FROM unnest(%s::bigint[], %s::bigint[], %s::numeric[], %s::text[], %s::numeric[]) AS t(a, b, s, r, n)
        ON CONFLICT (customer_a_id, customer_b_id) DO UPDATE
        SET score = EXCLUDED.score, reason = EXCLUDED.reason, name_similarity = EXCLUDED.name_similarity,
            found_at = EXCLUDED.found_at
        WHERE {table}.status = 'open'
    """).format(table=table)
    with connection.cursor() as cursor:
        for batch in batched(rows, UPSERT_BATCH):
            columns = [list(column) for column in zip(*batch, strict=True)]
            cursor.execute(sql, [at, *columns])
    return len(rows)


def duplicate_scan(*, now: datetime | None = None) -> ScanResult | None:
    """Find candidate pairs among all live customers and store them with score and reason.

    One transaction (readers see the old or the new candidates), guarded by an advisory lock: a second
    scan while one runs returns None. Open pairs that were not found again, and whose customers changed
    or stopped being live, are removed; decided pairs stay as decided. The number of queries does not
    depend on the number of customers.
    """
    started = now or timezone.now()
    clock = time.monotonic()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_LOCK_ID])
            if not cursor.fetchone()[0]:
                return None
        result = ScanResult(started_at=started)
        pairs: dict[tuple[int, int], Evidence] = {}

        def add(block: str, found: list[tuple[int, int]], **facts: bool) -> None:
            result.blocks[block] = len(found)
            for a, b in found:
                key = (a, b) if a < b else (b, a)
                evidence = pairs.setdefault(key, Evidence())
                for name, value in facts.items():
                    setattr(evidence, name, getattr(evidence, name) or value)

        add("email", [p for ids in _key_groups("email_key") for p in _group_pairs(ids)], email=True)
        add("phone", [p for ids in _key_groups("phone_key") for p in _group_pairs(ids)], phone=True)
        names = _key_groups("name_key", COMPANY_NAMES)
        add("name", [p for ids in names for p in _group_pairs(ids)])
        add("neighbours", _neighbour_pairs())
        add("domain", _domain_pairs(), domain=True)
        add("index", _index_pairs(started - timedelta(days=RECENT_DAYS)))
        _assess(pairs)
        result.pairs = _upsert(pairs, started)
        live = Q(merged_into__isnull=True, is_internal=False)
        stale = DuplicateCandidate.objects.filter(
            status=DuplicateCandidate.Status.OPEN, found_at__lt=started
        ).filter(
            ~Q(customer_a__in=Customer.objects.filter(live))
            | ~Q(customer_b__in=Customer.objects.filter(live))
            | Q(customer_a__updated_at__gt=started - timedelta(days=RECENT_DAYS))
            | Q(customer_b__updated_at__gt=started - timedelta(days=RECENT_DAYS))
        )
        result.removed, _deleted = stale.delete()
    result.seconds = round(time.monotonic() - clock, 2)
    try:
        cache.set(
            LAST_SCAN_KEY, {"at": started.isoformat(), "pairs": result.pairs, "seconds": result.seconds}, None
        )
    except Exception:  # a cache outage must not fail the scan that has been committed
        logger.warning("could not record the duplicate scan time", exc_info=True)
    logger.info("duplicate scan: %s pairs (%s) in %.1f s", result.pairs, result.blocks, result.seconds)
    return result


def last_scan() -> dict | None:
    """When the last scan ran, how many pairs it stored and how long it took (None if unknown)."""
    try:
        info = cache.get(LAST_SCAN_KEY)
    except Exception:
        return None
    if info:
        info = {**info, "at": datetime.fromisoformat(info["at"])}
    return info


# Selectors
# ---------------------------------------------------------------------------------------------------------


def duplicate_candidate_list(*, user: User, status: str | None = DuplicateCandidate.Status.OPEN) -> QuerySet:
    """Candidate pairs for review (of one status; None: all), best first; managers only, nobody else."""
    if not user.is_manager:
        return DuplicateCandidate.objects.none()
    qs = DuplicateCandidate.objects.select_related("customer_a__owner", "customer_b__owner", "decided_by")
    if status is not None:
        qs = qs.filter(status=status)
    return qs.order_by("-score", "id")

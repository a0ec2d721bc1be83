"""Who the customers are: names, e-mails, phones, industries and cities, a pure function of (seed,
customer id), so a near-duplicate can copy an earlier customer; and their segment.
"""

from crm.demo.days import _mix
from crm.demo.world import (
    AREA_CODES,
    CITIES,
    COMPANY_MAILBOXES,
    FIRST_NAMES,
    FREE_MAIL,
    INDUSTRIES,
    LAST_NAMES,
    LEGAL_FORMS,
    NAME_CORES,
    NAME_PREFIXES,
    NAME_ROOTS,
    SEGMENT_WEIGHTS,
    SEGMENTS,
    UMLAUTS,
    ZH_CITIES,
)


def identity(seed: int, cid: int) -> tuple[str, str, str, str, str, str, str, str]:
    """(name, short name, kind, e-mail, phone, industry, city, language) of a customer."""
    h = _mix(seed, cid, 2)
    if cid > 20 and h % 1000 < 25:  # a near-duplicate of an earlier customer, entered again
        return _near_duplicate(_base_identity(seed, 1 + (h >> 10) % (cid - 1)), h >> 40)
    return _base_identity(seed, cid)


def _base_identity(seed: int, cid: int) -> tuple[str, str, str, str, str, str, str, str]:
    h = _mix(seed, cid, 1)
    h, person = divmod(h, 100)
    h, chinese = divmod(h, 100)
    h, industry = divmod(h, len(INDUSTRIES))
    h, city = divmod(h, len(CITIES))
    h, style = divmod(h, 10)
    h, missing = divmod(h, 100)
    number = str(1_000_000 + (cid * 48_271 + seed) % 8_999_999)
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
        short = _company_base(cid, seed)
        name = f"{short} ({town[1]}) 有限公司" if town[1] else f"{short} {LEGAL_FORMS[h % len(LEGAL_FORMS)]}"
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


def segment_of(cid: int) -> str:
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

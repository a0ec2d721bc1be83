"""The demo's story for cohorts and revenue retention (KPIS.md §10.9): a spring promotion about a year and a
half before the end of the history won a wave of small customers at 40 % off. At their first renewal most
of them leave (the cohorts of those two months drop at month 12 far below the others); those who stay pay
the list price (expansion in NRR and the waterfall), and some who left are won back months later
(reactivated). Everything after that first renewal is an ordinary customer's life (``History._contracts``).

It draws from a random generator of its own, so the rest of the demo is the same with or without it.
"""

import random

from django.utils.translation import gettext_noop

from crm.demo import identities
from crm.demo.history import History
from crm.demo.people import _Account
from crm.demo.world import DAY, PRODUCTS, _t

# The promotion: its length in days, the share of the company's customers it wins, their discount, the
# chance they renew their first term, and the chance one who left is won back.
PROMOTION_DAYS = 61
PROMOTION_SHARE = 0.02
DISCOUNT = 0.4
FIRST_RENEWAL = 0.3
WIN_BACK = 0.4
PROMOTION_LOST = gettext_noop("Price after the promotion too high")


def promotion_cohort(history: History, *, customers: int, first_id: int, seed: int) -> int:
    """Live through the promotion's customers, ids from ``first_id``; returns how many there were.

    The promotion starts 19 months before the end of the history (not before its fifth month), so its
    cohorts have passed month 12 by the end."""
    cal = history.cal
    start = max(cal.k0 + 120, cal.k_end - 580)
    if start + PROMOTION_DAYS >= cal.k_end:
        return 0
    main_rng, history.rng = history.rng, random.Random(f"{seed}:promotion-cohort")
    try:
        count = max(5, round(customers * PROMOTION_SHARE))
        for i in range(count):
            _promoted(history, first_id + i, start + history.rng.randrange(PROMOTION_DAYS))
    finally:
        history.rng = main_rng
    return count


def _promoted(history: History, cid: int, day: int) -> None:
    rng, cal = history.rng, history.cal
    created = cal.work_time(day, rng)
    acc = _Account(cid, "smb", "ads", history.staff.rep_at(rng, created))
    identity = identities.identity(history.seed, cid)
    acc.short = identity[1]
    history._status(acc, "lead", created, acc.rep.at(created))
    list_price = history._contract_value("smb")
    deal_id, status, won_at, _reason = history._deal(
        acc,
        kind="new",
        t0=created,
        won=True,
        amount=int(round(list_price * (1 - DISCOUNT), -1)),
        start=0,
        title=_t(PRODUCTS[0]),
    )
    if status == "won":
        history._status(acc, "active", won_at, acc.rep.at(won_at))
        _first_renewal(history, acc, deal_id, list_price, cal.day(won_at), won_at)
    history._emit_customer(acc, created, identity)


def _first_renewal(
    history: History, acc: _Account, deal_id: int, list_price: int, start: int, won_at: int
) -> None:
    """The promotion's term, its renewal at the list price (or not), and what follows."""
    rng, cal = history.rng, history.cal
    term_end = cal.add_year(start)
    ends = cal.epochs[term_end]
    history._tickets(acc, won_at, min(ends, history.end), onboarding=True)
    history._checkins(acc, won_at, min(ends, history.end))
    opened = max(ends - rng.randint(35, 60) * DAY, won_at + DAY)
    if opened >= history.end:
        return
    renew = rng.random() < FIRST_RENEWAL
    close = ends - rng.randint(0, 20 * DAY) if renew else ends + rng.randint(-15 * DAY, 5 * DAY)
    renewal_id, status, last, _reason = history._deal(
        acc,
        kind="renewal",
        t0=opened,
        won=renew,
        amount=list_price,
        start=0,
        title=_t(gettext_noop("Renewal %(year)s")) % {"year": cal.dates[term_end].year},
        close_at=max(close, opened + 2 * DAY),
        renewal_of=deal_id,
        term_start=term_end,
        expected=term_end,
    )
    if status == "open":
        return
    if status == "won":
        history._contracts(acc, renewal_id, list_price, term_end, ends, onboarding=False)
        return
    churned_at = max(ends, last) + rng.randint(0, 3 * DAY)
    if not history._churn(acc, churned_at, _t(PROMOTION_LOST)) or rng.random() >= WIN_BACK:
        return
    back = history._acquire(acc, churned_at + rng.randint(90, 240) * DAY, attempts=1, winback=True)
    if back is not None:
        won_id, back_at, value = back
        history._status(acc, "active", back_at, acc.rep.at(back_at))
        history._contracts(acc, won_id, value, cal.day(back_at), back_at)

"""The company's history, customer by customer: acquisition, contracts, renewals, churn, win-backs.
Deals and tickets are lived by the two parts ``History`` is made of (``deals``, ``tickets``).
"""

import itertools
import random
from collections.abc import Callable

from django.utils.translation import gettext_noop

from crm import normalize
from crm.demo import identities
from crm.demo.config import Setup
from crm.demo.days import Calendar, _mix
from crm.demo.deals import DealHistory
from crm.demo.output import Sink, _ts
from crm.demo.people import Person, Staff, _Account
from crm.demo.tickets import TicketHistory
from crm.demo.world import (
    COLUMNS,
    DAY,
    MONTH_WEIGHT,
    NULL,
    PRODUCTS,
    SEGMENT_RENEWAL,
    SEGMENT_UPSELLS,
    SEGMENT_VALUE,
    SEGMENTS,
    SOURCE_WEIGHTS,
    SOURCE_WIN,
    SOURCES,
    UPSELLS,
    YEAR,
    _t,
)


class History(DealHistory, TicketHistory):
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
        segment = identities.segment_of(cid)
        source = "other" if legacy and rng.random() < 0.5 else rng.choices(SOURCES, SOURCE_WEIGHTS)[0]
        acc = _Account(cid, segment, source, self.staff.rep_at(rng, created))
        identity = identities.identity(self.seed, cid) if self.with_identities else None
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

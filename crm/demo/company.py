"""The company around its customers: staff accounts, marketing spend and costs, when customers arrive,
and the rates calibrated to reach the asked number of deals.
"""

import itertools
import math
import random
from typing import Any

from django.contrib.auth.hashers import make_password

from crm.demo.config import SeedConfig
from crm.demo.days import Calendar, _mix
from crm.demo.history import History
from crm.demo.output import Sink, _n, _ts
from crm.demo.people import Staff
from crm.demo.world import (
    CHANNEL_COST,
    DAY,
    DEMO_PASSWORD,
    GROWTH_PER_YEAR,
    MONTH_WEIGHT,
    NULL,
    SOURCE_WEIGHTS,
    SOURCES,
    TICKETS_PER_DEAL,
)


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

"""Who the history is about: the staff (reps, managers, agents and an admin, who join, leave and use the
CRM each in their own way) and the customer accounts being lived through."""

import math
import random
from bisect import bisect_right
from dataclasses import dataclass

from crm.demo.days import Calendar
from crm.demo.world import DAY, FIRST_NAMES, LAST_NAMES, PROFILES


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

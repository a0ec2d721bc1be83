"""Tickets in the history: a customer's support requests, answered and solved within the SLA or not."""

from crm.demo.output import _ts
from crm.demo.people import Person, _Account
from crm.demo.world import (
    CATEGORIES,
    CATEGORY_WEIGHTS,
    CHANNEL_WEIGHTS,
    CHANNELS,
    DAY,
    FIRST_RESPONSE_HOURS,
    NULL,
    PRIORITIES,
    PRIORITY_WEIGHTS,
    RESOLUTION_HOURS,
    SEGMENT_TICKETS,
    TICKET_SUBJECTS,
    YEAR,
    _t,
)


class TicketHistory:
    """The tickets part of ``History``: arrivals, replies and solutions, within the SLA or not."""

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
            events += self._worked(t0, priority, category, agent)
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

    def _worked(
        self, t0: int, priority: str, category: str, agent: Person
    ) -> list[tuple[str, int, Person | None]]:
        """The status changes of a ticket someone works on: answered, maybe pending (on the customer or on a
        bug fix), solved, maybe reopened, closed automatically four days after the last solution."""
        rng, events = self.rng, []
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
                events.append(("open", pending + int((solve - pending) * rng.uniform(0.2, 0.7)) + 60, None))
        events.append(("solved", solve, agent))
        if rng.random() < (0.15 if category == "complaint" else 0.06):  # the customer reopened it
            reopened = solve + rng.randint(3_600, 3 * DAY)
            again = reopened + int(RESOLUTION_HOURS[priority] * 0.5 * rng.lognormvariate(0, 0.8) * 3600) + 600
            events += [("open", reopened, None), ("solved", again, agent)]
        events.append(("closed", events[-1][1] + 4 * DAY, None))  # closed automatically after four days
        return events

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

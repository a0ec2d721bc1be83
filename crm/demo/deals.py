"""Deals in the history: new business, renewals and upsells, their stage moves, tasks and check-ins."""

import random

from django.utils.translation import gettext_noop

from crm.demo.output import _n
from crm.demo.people import Person, _Account
from crm.demo.world import (
    CHECKINS,
    DAY,
    DEAL_TOUCHES,
    LOST_REASONS,
    NULL,
    PRODUCT_LINES,
    SEGMENT_CHECKINS,
    SEGMENT_PACE,
    STEP_DAYS,
    YEAR,
    _t,
)


def _pick(rng: random.Random, choices: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([c for c, _w in choices], [w for _c, w in choices])[0]


def _touch(stage_kind: str, rng: random.Random) -> tuple[str, str]:
    """The call, e-mail or meeting that goes with a stage change."""
    if stage_kind == "won":
        return "email", gettext_noop("Contract signed")
    if stage_kind == "lost":
        return "call", gettext_noop("Loss review")
    return rng.choice(DEAL_TOUCHES)


class DealHistory:
    """The deals part of ``History``: opportunities, their stage moves, tasks and account check-ins."""

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
            f"{term}\t{_n(renewal_of)}\t{len(path)}\t{ts(last)}\t"
            f'{{"product_line": "{PRODUCT_LINES[deal_id % len(PRODUCT_LINES)][0]}"}}\n'
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

"""The day grid the history is lived on: working days, times of day, and a hash for choices that must
not use the random generator.
"""

import random
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from crm.demo.world import DAY, HOLIDAYS, PAD_DAYS

_MASK = (1 << 64) - 1
_TIME_OF_DAY: list[str] = []


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

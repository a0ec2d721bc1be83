"""What a seed is asked for (``SeedConfig``), the pipeline it seeds into (``Setup``), what it produced
(``SeedResult``) and why it refused."""

from dataclasses import dataclass, field
from datetime import date

from crm.demo.world import SIZES


class SeedError(Exception):
    """The database cannot be seeded as asked (existing data, a pipeline without won/lost stages…)."""


@dataclass(frozen=True)
class SeedConfig:
    """What to generate: the data depends on these values only (the language only changes its texts)."""

    until: date
    seed: int = 42
    deals: int = SIZES["small"]
    years: int = 3
    language: str = "en"


@dataclass
class SeedResult:
    rows: dict[str, int]
    seconds: float
    logins: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, for tuning

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Setup:
    """The seeded pipeline (stage ids by kind, in order) and the SLA hours per priority."""

    open: tuple[int, ...]
    won: int
    lost: int
    sla: dict[str, tuple[int, int]]

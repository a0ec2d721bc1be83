"""Deterministic demo data: a company with years of customer, deal, ticket, staff and survey history.

Everything comes from one ``random.Random(seed)``, customer by customer, and is streamed into PostgreSQL
with COPY by a loader thread, so memory stays flat and generating rows overlaps loading them. Primary keys
are assigned here, so foreign keys need no round trips; the sequences are moved past them at the end.

The package, by what it holds: ``world`` (sizes, tables, the company's parameters and texts), ``config``
(what a seed is asked for and produced), ``days`` (the day grid), ``people`` (staff and customer
accounts), ``identities`` (who the customers are), ``history`` with its ``deals`` and ``tickets`` parts
(the company lived customer by customer), ``company`` (staff rows, spend, costs, calibration),
``output`` (COPY), ``seeding`` (the database side), ``surveys`` (the survey history, seeded after the
CRM and read back from it) and ``health`` (the warning signs before churns); the other apps' parts (the
metrics app's alerts' story) are registered in ``crm.demo_stories`` and run by ``seed``. ``manage.py
seed_demo`` calls ``seed``, ``seed_surveys`` then ``seed_health``.
"""

from crm.demo.config import SeedConfig, SeedError, SeedResult
from crm.demo.health import seed_health
from crm.demo.seeding import seed
from crm.demo.surveys import seed_surveys
from crm.demo.world import COLUMNS, DEMO_PASSWORD, MAX_DEALS, MAX_YEARS, SIZES

__all__ = [
    "COLUMNS",
    "DEMO_PASSWORD",
    "MAX_DEALS",
    "MAX_YEARS",
    "SIZES",
    "SeedConfig",
    "SeedError",
    "SeedResult",
    "seed",
    "seed_health",
    "seed_surveys",
]

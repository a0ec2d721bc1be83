"""Seeding the database: check it may be seeded, reset it if asked, generate and load, then move the
sequences past the generated ids.
"""

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone, translation
from psycopg import sql as pg
from tqdm import tqdm

from accounts.models import User
from crm import demo_stories
from crm.demo.campaigns import seed_campaigns
from crm.demo.cohorts import promotion_cohort
from crm.demo.company import _calibrate, _creation_times, _golive, _write_costs, _write_spend, _write_staff
from crm.demo.config import SeedConfig, SeedError, SeedResult, Setup
from crm.demo.days import Calendar
from crm.demo.forecasting import seed_forecasting
from crm.demo.history import History
from crm.demo.output import Sink, _Loader
from crm.demo.people import Staff
from crm.demo.world import COLUMNS, DEALS_PER_CUSTOMER, KEPT_MODELS, PRODUCT_LINES, RESET_APPS
from crm.models import CompanySettings, PipelineStage, SlaPolicy


def generate(
    config: SeedConfig, *, sink: Sink, pipeline: Setup, progress: bool = False
) -> tuple[Staff, date]:
    """Generate the whole company into ``sink``; returns the staff and the go-live date."""
    cal = Calendar(until=config.until, years=config.years, tz=ZoneInfo(settings.TIME_ZONE))
    rng = random.Random(config.seed)
    staff = Staff(rng, cal, config.deals)
    golive_day = _golive(cal)
    golive = cal.epochs[golive_day] + 9 * 3600
    customers = max(10, round(config.deals / DEALS_PER_CUSTOMER))
    world = {"cal": cal, "staff": staff, "pipeline": pipeline, "golive": golive}
    upsell_rate, ticket_rate = _calibrate(config, customers, **world)
    _write_staff(sink, staff, cal, rng, golive, config.seed)
    created, legacy = _creation_times(rng, cal, customers)
    history = History(
        seed=config.seed, rng=rng, sink=sink, upsell_rate=upsell_rate, ticket_rate=ticket_rate, **world
    )
    with tqdm(total=customers, unit=" customers", disable=not progress, desc="seed_demo") as bar:
        history.live(created, legacy, bar.update)
    history.internal_customers(customers + 1)
    promotion_cohort(history, customers=customers, first_id=customers + 3, seed=config.seed)  # §10.9's story
    _write_spend(sink, cal, rng, staff, created, history)
    _write_costs(sink, cal, staff, golive_day)
    sink.flush()
    return staff, cal.dates[golive_day]


# Database
# ---------------------------------------------------------------------------------------------------------


def existing_data() -> dict[str, int]:
    """Row counts of the seeded tables that are not empty (an empty dict: nothing to overwrite)."""
    found = {}
    with connection.cursor() as cursor:
        for table in COLUMNS:
            cursor.execute(pg.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(pg.Identifier(table)))
            if cursor.fetchone()[0]:
                cursor.execute(pg.SQL("SELECT count(*) FROM {}").format(pg.Identifier(table)))
                found[table] = cursor.fetchone()[0]
    return found


def _reset_tables() -> list[str]:
    """Every table of the project's apps except the pipeline, SLA hours and company settings."""
    existing = set(connection.introspection.table_names())
    tables = {
        model._meta.db_table
        for config in apps.get_app_configs()
        if config.label in RESET_APPS
        for model in config.get_models(include_auto_created=True)
        if model._meta.label_lower not in KEPT_MODELS and model._meta.managed and not model._meta.proxy
    }
    return sorted(tables & existing)


def _fields_and_rules() -> None:
    """The built-in automation rules (a reset removed them), the deals' "product line" field and one rule
    of the company's own: a won deal gets an onboarding call for its owner the next day."""
    from crm.automation import builtins
    from crm.models import AutomationRule, CustomField

    builtins.seed()
    now = timezone.now()
    CustomField.objects.create(
        entity=CustomField.Entity.DEAL,
        key="product_line",
        label_en="Product line",
        label_zh="产品线",
        kind=CustomField.Kind.CHOICE,
        choices=[{"key": key, "en": en, "zh": zh} for key, en, zh in PRODUCT_LINES],
        order=10,
        created_at=now,
        updated_at=now,
    )
    AutomationRule.objects.create(
        name="Onboarding call after a win",
        trigger=AutomationRule.Trigger.DEAL_WON,
        actions=[
            {
                "type": "create_task",
                "assignee": "owner",
                "days": 1,
                "subject_en": "Onboarding call with {{ customer }}",
                "subject_zh": "与 {{ customer }} 进行上手培训电话",
            }
        ],
        is_active=True,
        created_by=User.objects.filter(role=User.Role.MANAGER, is_active=True).order_by("pk").first(),
        created_at=now,
        updated_at=now,
    )


def _load_pipeline() -> Setup:
    stages = list(PipelineStage.objects.filter(pipeline__is_default=True).order_by("order"))
    opens = tuple(s.pk for s in stages if s.kind == PipelineStage.Kind.OPEN)
    won = [s.pk for s in stages if s.kind == PipelineStage.Kind.WON]
    lost = [s.pk for s in stages if s.kind == PipelineStage.Kind.LOST]
    if not opens or not won or not lost:
        raise SeedError("The default pipeline needs at least one open stage, a won stage and a lost stage.")
    sla = {p.priority: (p.first_response_hours, p.resolution_hours) for p in SlaPolicy.objects.all()}
    return Setup(open=opens, won=won[0], lost=lost[0], sla=sla)


@contextmanager
def _foreign_keys_dropped(cursor: Any, tables: list[str]) -> Iterator[None]:
    """Drop the tables' foreign keys for the load and add them back (validated in one pass each).

    Checking a deferred foreign key per row costs more than generating the row; re-adding the constraint
    checks all rows with one join. On an error the transaction rolls back, which restores them too.
    """
    cursor.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND conrelid = ANY(%s::regclass[]) ORDER BY 1, 2",
        [tables],
    )
    keys = cursor.fetchall()
    # ``table`` is regclass text (already quoted where it must be); the definition is PostgreSQL's own.
    for table, name, _definition in keys:
        cursor.execute(pg.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(pg.SQL(table), pg.Identifier(name)))
    yield
    for table, name, definition in keys:
        cursor.execute(
            pg.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                pg.SQL(table), pg.Identifier(name), pg.SQL(definition)
            )
        )


def seed(
    config: SeedConfig, *, reset: bool = False, if_empty: bool = False, progress: bool = False
) -> SeedResult | None:
    """Fill the database with the demo company, all or nothing; None when ``if_empty`` found data.

    Raises SeedError when there is data and neither ``reset`` nor ``if_empty`` says what to do.
    """
    started = time.monotonic()
    tables = list(COLUMNS)
    with transaction.atomic(), connection.cursor() as cursor:
        # one seed at a time; and fire pending deferred checks now, or TRUNCATE and ALTER TABLE refuse
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('minicrm.seed_demo'))")
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        existing = existing_data()
        if existing and not reset:
            if if_empty:
                return None
            summary = ", ".join(f"{table}: {n:,}" for table, n in list(existing.items())[:3])
            raise SeedError(
                f"The database already has data ({summary}…). Use --reset to replace it with the demo "
                "company (this deletes all CRM and account data), or --if-empty to skip seeding."
            )
        if reset:
            tables_sql = pg.SQL(", ").join(map(pg.Identifier, _reset_tables()))
            cursor.execute(pg.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(tables_sql))
        pipeline = _load_pipeline()
        loader = _Loader(cursor.cursor.connection)
        sink = Sink(loader)
        phases = {"prepare": time.monotonic() - started}
        with _foreign_keys_dropped(cursor, tables):
            loader.start()
            try:
                with translation.override(config.language):
                    staff, go_live = generate(config, sink=sink, pipeline=pipeline, progress=progress)
                phases["generate"] = time.monotonic() - started - sum(phases.values())
            finally:
                loader.stop()
            loader.raise_error()
            phases["load"] = time.monotonic() - started - sum(phases.values())
        phases["foreign keys"] = time.monotonic() - started - sum(phases.values())
        next_id = pg.SQL(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {}"
        )
        for table in tables:
            cursor.execute(next_id.format(pg.Identifier(table)), [table])
        CompanySettings.objects.update_or_create(pk=1, defaults={"go_live_date": go_live})
        _fields_and_rules()
        seed_campaigns(config)
        seed_forecasting(until=config.until)  # stage probabilities and over-forecasting reps (§10.6)
        for story in demo_stories.registered():  # the other apps' parts: the alerts' story (§10.8)
            story(config)
        for table in tables:
            cursor.execute(pg.SQL("ANALYZE {}").format(pg.Identifier(table)))
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        phases["analyze"] = time.monotonic() - started - sum(phases.values())
    phases["commit"] = time.monotonic() - started - sum(phases.values())
    logins = [p.username for p in staff.people if p.left is None and p.profile != "service"]
    return SeedResult(
        rows=dict(sink.counts), seconds=time.monotonic() - started, logins=logins, phases=phases
    )

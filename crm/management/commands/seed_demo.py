"""``manage.py seed_demo``: fill the database with a deterministic demo company (see ``crm.demo``)."""

import sys
from datetime import date
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.utils import timezone

from crm import demo


class Command(BaseCommand):
    help = (
        "Fill the database with a demo company: staff, customers, deals, tickets, activities, usage and "
        "spend over several years. The same seed, size and --until give the same data."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sizes = ", ".join(f"{name} ≈ {deals:,} deals" for name, deals in demo.SIZES.items())
        parser.add_argument("--size", default="small", help=f"How much data: {sizes} (default small).")
        parser.add_argument(
            "--deals", type=int, help="Number of deals (overrides --size); customers ≈ deals/10."
        )
        parser.add_argument("--years", type=int, default=3, help="Years of history (1–10, default 3).")
        parser.add_argument(
            "--until",
            help="The history runs up to 00:00 of this day in the reporting time zone (YYYY-MM-DD, "
            "default today).",
        )
        parser.add_argument("--seed", type=int, default=42, help="Random seed (default 42).")
        parser.add_argument("--reset", action="store_true", help="Delete all CRM and account data first.")
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing (and succeed) when the database has data."
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
        languages = ", ".join(code for code, _name in settings.LANGUAGES)
        parser.add_argument(
            "--language",
            default=settings.LANGUAGE_CODE,
            help=f"Language of the demo records' texts (products, tasks, tickets): {languages} "
            f"(default {settings.LANGUAGE_CODE}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = self._config(options)
        if options["reset"] and options["if_empty"]:
            raise CommandError("--reset and --if-empty exclude each other.")
        progress = not options["no_progress"] and sys.stderr.isatty()
        try:
            with transaction.atomic():
                result = demo.seed(
                    config, reset=options["reset"], if_empty=options["if_empty"], progress=progress
                )
                if result is not None:
                    # Surveys (crm/demo/surveys.py): invitations, answers and follow-ups for the company.
                    for table, rows in demo.seed_surveys(until=config.until, seed=config.seed).items():
                        result.rows[table] = result.rows.get(table, 0) + rows
                    # Warning signs before most churns (crm/demo/health.py), for the health score's backtest.
                    warned = demo.seed_health(until=config.until, seed=config.seed, language=config.language)
                    for table, rows in warned.items():
                        result.rows[table] = result.rows.get(table, 0) + rows
        except demo.SeedError as exc:
            raise CommandError(str(exc)) from exc
        if result is None:
            if options["verbosity"] > 1:
                self.stdout.write("The database already has data: nothing seeded (--if-empty).")
            return
        self._vacuum()
        self._report(result, config, verbosity=options["verbosity"])

    def _vacuum(self) -> None:
        """Mark the freshly loaded pages all-visible so index-only scans (board sums) work from the start."""
        if connection.in_atomic_block:
            return  # VACUUM cannot run inside a transaction (tests); ANALYZE already ran in the seed

        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE) crm_deal, crm_customer, crm_ticket, crm_activity")

    def _config(self, options: dict[str, Any]) -> demo.SeedConfig:
        """Check the options; every nonsensical value is a CommandError that says what is allowed."""
        size = options["size"]
        if size not in demo.SIZES:
            raise CommandError(f"Unknown --size {size!r}: choose one of {', '.join(demo.SIZES)}.")
        deals = demo.SIZES[size] if options["deals"] is None else options["deals"]
        if deals < 1:
            raise CommandError("--deals must be a positive number.")
        if deals > demo.MAX_DEALS:
            raise CommandError(f"--deals may be at most {demo.MAX_DEALS:,}.")
        years = options["years"]
        if not 1 <= years <= demo.MAX_YEARS:
            raise CommandError(f"--years must be between 1 and {demo.MAX_YEARS}.")
        today = timezone.localdate()
        until = options["until"] or today
        if isinstance(until, str):
            try:
                until = date.fromisoformat(until)
            except ValueError:
                raise CommandError(f"--until {until!r} is not a date (YYYY-MM-DD).") from None
        if until > today:
            raise CommandError(f"--until {until} is in the future: history cannot run past today ({today}).")
        language = options["language"]
        if language not in dict(settings.LANGUAGES):
            choices = ", ".join(code for code, _name in settings.LANGUAGES)
            raise CommandError(f"Unknown --language {language!r}: choose one of {choices}.")
        return demo.SeedConfig(until=until, seed=options["seed"], deals=deals, years=years, language=language)

    def _report(self, result: demo.SeedResult, config: demo.SeedConfig, *, verbosity: int) -> None:
        """The rows per table and the logins (verbosity 1, the default), the timings (2); at 0 (``make
        demo``, which prints the sign-ins last) only the one-line summary."""
        if verbosity >= 1:
            width = max(len(table) for table in result.rows)
            for table, rows in sorted(result.rows.items(), key=lambda item: -item[1]):
                self.stdout.write(f"  {table:<{width}}  {rows:>12,}")
            reps = [name for name in result.logins if name.startswith("rep")]
            agents = [name for name in result.logins if name.startswith("agent")]
            others = [name for name in result.logins if not name.startswith(("rep", "agent"))]
            self.stdout.write(
                f"Demo logins (password {demo.DEMO_PASSWORD!r}): {', '.join(others)}, "
                f"{_span(reps)}, {_span(agents)}"
            )
        if verbosity > 1:
            self.stdout.write("Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.phases.items()))
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded {result.total:,} rows in {result.seconds:.1f} s ({result.rate:,.0f} rows/s): "
                f"seed {config.seed}, {config.years} year(s) until {config.until}."
            )
        )


def _span(names: list[str]) -> str:
    """rep1 … rep40 (or the names, when there are only a few)."""
    return ", ".join(names) if len(names) <= 4 else f"{names[0]} … {names[-1]} ({len(names)})"

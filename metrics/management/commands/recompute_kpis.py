"""``manage.py recompute_kpis``: recompute KPI snapshots by hand, with a progress bar."""

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from metrics.health.services import health_refresh
from metrics.kpis import registry
from metrics.models import KpiSnapshot
from metrics.periods import GRANULARITIES, local_midnight
from metrics.services import RecomputeError, history_range, rfm_refresh, snapshots_recompute


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD)") from exc


class Command(BaseCommand):
    help = (
        "Recompute KPI snapshots for every period overlapping [--start, --end) (default: the whole history "
        "of the data up to now), for one or all granularities and one, several or all KPIs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--granularity", default="all", help=f"all (default) or one of {', '.join(GRANULARITIES)}."
        )
        parser.add_argument("--start", help="First day, YYYY-MM-DD (default: the earliest record).")
        parser.add_argument("--end", help="Day after the last one, YYYY-MM-DD (default: now).")
        parser.add_argument(
            "--kpi",
            action="append",
            dest="kpis",
            metavar="CODE",
            help="A KPI code; repeat for more (default: all).",
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="Do nothing when snapshots exist already (the demo's first start).",
        )
        parser.add_argument(
            "--rfm", action="store_true", help="Also score the customers' RFM segments as of today."
        )
        parser.add_argument(
            "--health",
            action="store_true",
            help="First score every active customer's health as of today and backtest the score (the KPIs "
            "read the scores).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["if_empty"] and KpiSnapshot.objects.exists():
            return
        granularity = options["granularity"]
        if granularity != "all" and granularity not in GRANULARITIES:
            raise CommandError(
                f"unknown granularity {granularity!r}: use all or one of {', '.join(GRANULARITIES)}"
            )
        unknown = [code for code in options["kpis"] or [] if code not in registry()]
        if unknown:
            raise CommandError(f"unknown KPI code(s): {', '.join(unknown)}; known: {', '.join(registry())}")
        first, now = history_range()
        start = local_midnight(_day(options["start"])) if options["start"] else first
        end = local_midnight(_day(options["end"])) if options["end"] else now
        if end <= start:
            raise CommandError(f"--end ({end:%Y-%m-%d}) must be after --start ({start:%Y-%m-%d})")
        if options["health"]:
            health = health_refresh()
            if health is not None:
                self.stdout.write(
                    f"Customer health: {health.scored:,} customers scored, {health.get_verdict_display()}"
                )
        kpis = options["kpis"] or None
        total = len(kpis or registry())
        with tqdm(total=total, unit="kpi", disable=options["no_progress"] or None) as bar:

            def progress(code: str) -> None:
                bar.set_postfix_str(code)
                bar.update()

            try:
                run = snapshots_recompute(
                    start=start,
                    end=end,
                    granularities=None if granularity == "all" else [granularity],
                    kpis=kpis,
                    now=timezone.now(),
                    progress=progress,
                )
            except RecomputeError as exc:
                raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{run.get_status_display()}: {run.rows:,} snapshot rows for {start:%Y-%m-%d} – {end:%Y-%m-%d} "
            f"in {run.duration_seconds:.1f} s"
        )
        # Where the time went: the five slowest datasets (all of them are in the run's admin page).
        spent = {name: sum(v for k, v in t.items() if k.endswith("_ms")) for name, t in run.datasets.items()}
        for name in sorted(spent, key=spent.get, reverse=True)[: 5 if options["verbosity"] else 0]:
            rows = int(run.datasets[name].get("rows", 0))
            self.stdout.write(f"  {name}: {spent[name] / 1000:.1f} s, {rows:,} grouped rows")
        if options["rfm"]:
            rfm = rfm_refresh()
            self.stdout.write(f"RFM segments: {rfm.get_status_display()}, {rfm.rows:,} customers scored")

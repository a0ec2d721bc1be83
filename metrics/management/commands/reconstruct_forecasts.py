"""``manage.py reconstruct_forecasts``: frozen forecasts of past periods, worked out from history."""

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from metrics.forecasts.models import FROZEN_GRANULARITIES, FrozenForecast
from metrics.forecasts.services import forecast_calibration_compute, forecasts_reconstruct
from metrics.kpis import forecasting
from metrics.periods import local_midnight, shift_date
from metrics.services import RecomputeError, snapshots_recompute

DEFAULT_MONTHS = 24


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD)") from exc


class Command(BaseCommand):
    help = (
        "Reconstruct the frozen forecasts of past weeks, months and quarters that have none, as they stood "
        "when each period began: from the stage history and the stage probabilities' versions (amounts, "
        "probability overrides, categories, close dates and owners as they are now). Rows are marked "
        "reconstructed; existing ones are never changed. Then the accuracy and bias KPIs of those periods "
        "and the stage calibration are computed. For upgrades and the demo."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since", help=f"First day, YYYY-MM-DD (default: {DEFAULT_MONTHS} months before today)."
        )
        parser.add_argument(
            "--granularity",
            default="all",
            help=f"all (default) or one of {', '.join(FROZEN_GRANULARITIES)}.",
        )
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing when frozen forecasts exist already."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["if_empty"] and FrozenForecast.objects.exists():
            return
        granularity = options["granularity"]
        if granularity != "all" and granularity not in FROZEN_GRANULARITIES:
            raise CommandError(
                f"unknown granularity {granularity!r}: use all or one of {', '.join(FROZEN_GRANULARITIES)}"
            )
        now = timezone.now()
        today = timezone.localdate(now)
        since_day = (
            _day(options["since"])
            if options["since"]
            else shift_date(today.replace(day=1), "month", -DEFAULT_MONTHS)
        )
        if since_day > today:
            raise CommandError(f"--since {since_day} is in the future.")
        grans = FROZEN_GRANULARITIES if granularity == "all" else (granularity,)
        since = local_midnight(since_day)
        written = forecasts_reconstruct(since=since, granularities=grans, now=now)
        if written:
            try:
                snapshots_recompute(
                    start=min(f.period_start for f in written),
                    end=now,
                    granularities=grans,
                    kpis=[kpi.code for kpi in forecasting.KPIS],
                    now=now,
                )
            except RecomputeError as exc:
                raise CommandError(str(exc)) from exc
        forecast_calibration_compute(now=now)
        if options["verbosity"] >= 1:
            self.stdout.write(
                self.style.SUCCESS(f"Reconstructed {len(written)} frozen forecasts since {since_day}.")
            )

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MetricsConfig(AppConfig):
    name = "metrics"
    verbose_name = _("Metrics")

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from crm import demo_stories
        from metrics.models import KpiTarget
        from metrics.services import bump_generation

        # The demo's incident week and targets off pace, which raise its alerts (KPIS.md §10.8).
        demo_stories.register(self.name, "metrics.alerts.demo.seed_alert_story")

        # A target set anywhere (the KPI page, the admin) shows on the cached dashboard at once.
        for signal in (post_save, post_delete):
            signal.connect(lambda **_kwargs: bump_generation(), sender=KpiTarget, weak=False)
